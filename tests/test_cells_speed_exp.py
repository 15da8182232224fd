"""An AR(1) interval's factor exp(X) is computed when a listing first needs it
(`fedsim.system.jitlinks.ar1_breakpoints`), not when the interval is drawn:
the same capacities as the scalar series, and intervals never listed stay
unexponentiated."""

import math

import numpy as np

from fedsim.system.dynamics import AR1Series


def test_listed_factors_are_the_scalar_series_and_the_rest_stay_unexponentiated():
    base = np.array([10e6, 4e6, 25e6])
    series = AR1Series(base, sigma=0.5, correlation=0.8, interval_s=1.0, seed=7, direction="uplink")
    reference = AR1Series(base, sigma=0.5, correlation=0.8, interval_s=1.0, seed=7, direction="uplink")
    clients = np.array([2, 0])
    bp = series.breakpoints(clients, 40.0, np.array([0.25, 3.0]), 5.0)  # intervals 40..45 and 43..45
    for flow, client in enumerate(clients.tolist()):
        times = bp.times_s[bp.offsets[flow]:bp.offsets[flow + 1]]
        caps = bp.cap_bps[bp.offsets[flow]:bp.offsets[flow + 1]]
        for t_s, cap_bps in zip(times.tolist(), caps.tolist(), strict=True):
            assert cap_bps == reference.segment(client, 40.0 + t_s)[0]  # bit for bit
    listed = ~np.isnan(series._factor[: series._rows, : series._cols - series._base])
    assert listed.sum() == bp.cap_bps.size  # exactly the listed intervals were exponentiated
    row, col = series._row_of[2], 41 - series._base
    assert series._factor[row, col] == math.exp(series._table[row, col])
    assert np.isnan(series._factor[series._row_of[0], 41 - series._base])  # client 0 starts at 43
    again = series.breakpoints(clients, 40.0, np.array([0.25, 3.0]), 5.0)  # a second listing reads them
    np.testing.assert_array_equal(again.cap_bps, bp.cap_bps)
