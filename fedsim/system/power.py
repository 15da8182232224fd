"""Radio and device power models: the presets of ``system.energy`` (pure data).

A radio technology is described by the linear data-transfer power model of
Huang et al. ("A Close Examination of Performance and Power Characteristics of
4G LTE Networks", MobiSys 2012, Sec. 4 and Tables 3-4): while a transfer runs
at throughput t (Mbit/s) the radio draws

    P = base_w + down_w_per_mbps * t_down + up_w_per_mbps * t_up   (watts)

so a transfer of B bits lasting d seconds costs ``base_w * d + w_per_mbps *
B / 1e6`` joules (the throughput term integrates to the megabits moved, which
keeps the energy finite for an instantaneous transfer on an unlimited link).
After the last byte the radio stays in a high-power *tail* (``tail_w`` for
``tail_s`` seconds) before it demotes to idle; a transfer that starts within
the tail of the previous one ends that tail early and pays no *promotion*
(``promotion_w`` for ``promotion_s``, the idle -> connected switch), one that
starts after it pays the promotion again.

The numbers (`PRESETS`):

* ``lte``: Huang et al. 2012, Table 4 (alpha_u = 438.39 mW/Mbps, alpha_d =
  51.97 mW/Mbps, beta = 1288.04 mW) and Table 3 (promotion 260.1 ms at
  1210.7 mW; tail 11.576 s at the tail base power 1060.0 mW);
* ``wifi``: the same paper's Wi-Fi column (alpha_u = 283.17, alpha_d = 137.01
  mW/Mbps, beta = 132.86 mW; promotion 79.1 ms at 124.4 mW; tail 238.1 ms at
  119.3 mW);
* ``5g``: an approximation of 5G NSA (mmWave/low-band mix) after Narayanan et
  al., "A Variegated Look at 5G in the Wild: Performance, Power, and QoE
  Implications", SIGCOMM 2021 (higher base power than LTE, far lower energy
  per bit at high throughput, an LTE-like RRC tail), and Xu et al.,
  "Understanding Operational 5G", SIGCOMM 2020 (NSA inactivity timer about
  10 s). These 5G numbers are order-of-magnitude values chosen by fedsim,
  not a table of either paper; override them for a specific device.

The LTE and Wi-Fi numbers are the paper's values as fedsim's authors read
them from the tables (means over their measurements of one phone, an HTC
Thunderbolt); devices differ, so every number is overridable in the scenario.

``COMPUTE_W`` (2 W): the device's extra power while training, an assumption
of fedsim (the order of a phone's big CPU cores under sustained load); set
``system.energy.compute_w`` for a measured device.

This module imports nothing, so the config can name the presets without numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPUTE_W", "PRESETS", "RadioPower"]

#: Device power while training (W), a stated default (see the module docstring).
COMPUTE_W = 2.0


@dataclass(frozen=True)
class RadioPower:
    """One radio technology's power model (watts, seconds, W per Mbit/s).

    Attributes:
        base_w: power while a transfer is active, before the throughput terms
            (Huang et al.'s beta).
        down_w_per_mbps: extra watts per Mbit/s of downlink throughput (alpha_d).
        up_w_per_mbps: extra watts per Mbit/s of uplink throughput (alpha_u).
        tail_w: power during the tail after a transfer.
        tail_s: length of the tail (the RRC inactivity timer).
        promotion_w: power while the radio is promoted from idle.
        promotion_s: length of the promotion.
    """

    base_w: float
    down_w_per_mbps: float
    up_w_per_mbps: float
    tail_w: float
    tail_s: float
    promotion_w: float
    promotion_s: float


#: Presets by technology (sources: the module docstring).
PRESETS: dict[str, RadioPower] = {
    "lte": RadioPower(base_w=1.28804, down_w_per_mbps=0.05197, up_w_per_mbps=0.43839,
                      tail_w=1.0600, tail_s=11.576, promotion_w=1.2107, promotion_s=0.2601),
    "wifi": RadioPower(base_w=0.13286, down_w_per_mbps=0.13701, up_w_per_mbps=0.28317,
                       tail_w=0.1193, tail_s=0.2381, promotion_w=0.1244, promotion_s=0.0791),
    "5g": RadioPower(base_w=2.0, down_w_per_mbps=0.004, up_w_per_mbps=0.03,
                     tail_w=1.5, tail_s=10.0, promotion_w=1.5, promotion_s=0.1),
}
