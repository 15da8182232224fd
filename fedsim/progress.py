"""Progress of long runs: one bar (or line) over a whole scenario or study.

A `Progress` knows the whole work upfront, as estimated seconds of the cost
model (`fedsim.cost`) split into kinds (``pretrain``, ``train``; a study's
``tasks``), and is told as work ends whether it was *computed* (`advance`)
or taken from the cache, or found unnecessary (`skip`). Both move the bar;
only computed work feeds the rate, so a run that finds half its methods cached
neither jumps to a short ETA nor counts the cache reads as speed:

* each kind's rate is its computed units over the wall time spent computing
  them (the time since the previous event goes to a computed event, and is
  dropped for a skipped one);
* ETA = Σ over kinds of remaining units / that kind's rate. A kind not yet
  measured (training while pre-training runs) borrows the rate of all the
  work measured so far, which assumes the cost model's ratio between kinds;
  the ETA is then printed with a ``~``.
* a run that stops at its targets (``rounds.stop_when_reached``) may need
  far fewer rounds than ``rounds.max``, which no estimate knows in advance:
  its ETA, to ``rounds.max``, is printed as an upper bound (``ETA <=``).

Display: on a terminal, one line redrawn in place (carriage return), with log
records printed above it; otherwise (a log file, CI) a plain line every
`PLAIN_EVERY_S` seconds and no carriage returns::

    [fedsim] training hp-fl round 40/150, 38% of scenario, elapsed 3m12s, ETA 5m10s

Disabled (``--quiet``): nothing at all. Only this module draws progress.

Several methods at once (a scenario's parallel schedule,
`fedsim.pipeline.parallel`): the workers' events reach one `Progress` in the
parent, so the time between two events from any worker counts as computing
and the rate is the whole machine's; `running_status` names every running
method in the one line.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

#: Seconds between two plain progress lines when the stream is not a terminal.
PLAIN_EVERY_S = 10.0
#: Seconds between two redraws of the terminal line (drawing is not free).
REDRAW_EVERY_S = 0.2
#: Width of the bar itself on a terminal, in characters.
BAR_CHARS = 20


def format_clock(seconds: float) -> str:
    """A duration as a compact clock: ``45s``, ``3m12s``, ``2h05m``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class _Kind:
    """The ledger of one kind of work, in estimated seconds (cost model)."""

    total: float
    done: float = 0.0  # computed + skipped
    computed: float = 0.0
    computed_s: float = 0.0  # wall seconds spent computing ``computed``

    @property
    def remaining(self) -> float:
        return max(0.0, self.total - self.done)

    @property
    def rate(self) -> float | None:
        """Computed units per wall second; None before any was measured."""
        if self.computed > 0 and self.computed_s > 0:
            return self.computed / self.computed_s
        return None


class Progress:
    """One progress display over a run whose work is known upfront.

    Args:
        what: the run, for the display (``scenario``, ``study``).
        work: kind -> total units (estimated seconds of the cost model; only
            ratios matter). Units are counted per kind; a kind's units must not
            exceed its total (extra units are ignored by the fraction).
        enabled: False shows nothing (every method is then a no-op but the
            ledger, so the arithmetic can still be asked).
        stream: where to draw (default: ``sys.stderr`` at construction).
        clock: wall clock in seconds (tests pass a fake one).
        interactive: draw in place; default: whether ``stream`` is a terminal.
        every_s: seconds between plain lines (default `PLAIN_EVERY_S`).

    Raises:
        ValueError: a negative or non-finite total.
    """

    def __init__(self, what: str, work: Mapping[str, float], *, enabled: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 interactive: bool | None = None, every_s: float | None = None,
                 upper_bound: bool = False) -> None:
        for kind, total in work.items():
            if not (math.isfinite(total) and total >= 0):
                raise ValueError(f"progress work {kind!r}: {total!r} must be a finite number >= 0")
        self.what = what
        #: the work may end early (a run that stops at its targets): the ETA
        #: is then an upper bound, printed as ``ETA <=``
        self.upper_bound = upper_bound
        self.kinds = {kind: _Kind(float(total)) for kind, total in work.items()}
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.interactive = _is_terminal(self.stream) if interactive is None else interactive
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.text = ""
        self.started = self._mark = self._drawn_at = self._line_at = clock()
        self._drawn = 0  # characters of the terminal line now on screen (0: none)
        self._lines = 0  # plain lines written
        self._handlers: list[logging.Handler] = []
        if enabled and self.interactive:
            self._hook_logging()

    # ----------------------------------------------------------------- ledger

    def skip(self, kind: str, units: float, status: str | None = None) -> None:
        """``units`` of ``kind`` need no computing (cached, or not needed after
        all): they count as done but not towards the rate."""
        self._event(kind, units, computed=False, status=status)

    def advance(self, kind: str, units: float, status: str | None = None) -> None:
        """``units`` of ``kind`` were just computed; the wall time since the
        previous event is what they took."""
        self._event(kind, units, computed=True, status=status)

    def status(self, text: str) -> None:
        """What the run is doing now (``training hp-fl round 40/150``)."""
        self.text = text
        self._show()

    def _event(self, kind: str, units: float, *, computed: bool, status: str | None) -> None:
        now = self.clock()
        elapsed, self._mark = now - self._mark, now
        ledger = self.kinds[kind]
        ledger.done += units
        if computed:
            ledger.computed += units
            ledger.computed_s += elapsed
        if status is not None:
            self.text = status
        self._show()

    @property
    def fraction(self) -> float:
        """Share of the whole work done (computed or skipped), 0..1."""
        total = sum(k.total for k in self.kinds.values())
        if total <= 0:
            return 1.0
        return min(1.0, sum(min(k.done, k.total) for k in self.kinds.values()) / total)

    def eta_s(self) -> tuple[float | None, bool]:
        """(seconds left, estimated): None before any computed work was timed;
        ``estimated`` is True when a kind with work left has no rate of its own
        yet and borrows the overall rate (the cost model's ratio)."""
        computed = sum(k.computed for k in self.kinds.values())
        computed_s = sum(k.computed_s for k in self.kinds.values())
        overall = computed / computed_s if computed > 0 and computed_s > 0 else None
        seconds, estimated = 0.0, False
        for ledger in self.kinds.values():
            if ledger.remaining <= 0:
                continue
            rate = ledger.rate
            if rate is None:
                if overall is None:
                    return None, True
                rate, estimated = overall, True
            seconds += ledger.remaining / rate
        return seconds, estimated

    # ---------------------------------------------------------------- display

    def line(self) -> str:
        """The progress line as plain text (no ``[fedsim]`` prefix)."""
        eta, estimated = self.eta_s()
        eta_text = "?" if eta is None else ("~" if estimated else "") + format_clock(eta)
        if self.upper_bound and eta is not None:
            eta_text = "<=" + eta_text
        head = f"{self.text}, " if self.text else ""
        return (f"{head}{100 * self.fraction:.0f}% of {self.what}, "
                f"elapsed {format_clock(self.clock() - self.started)}, ETA {eta_text}")

    def write(self, text: str) -> None:
        """Print a line of text (a finished task, say) above the progress line."""
        if not self.enabled:
            return
        self._clear()
        print(text, file=self.stream, flush=True)
        self._show(force=True)

    def close(self) -> None:
        """End the display: the terminal line is finished with a newline; in
        plain mode a last line is written if any was (so a log ends at 100 %)."""
        if not self.enabled:
            return
        for handler in self._handlers:
            handler.removeFilter(self._before_log)
        self._handlers = []
        if self.interactive:
            self._show(force=True)
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = 0
        elif self._lines:
            self._plain()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self.interactive:
            if force or now - self._drawn_at >= REDRAW_EVERY_S:
                self._drawn_at = now
                self._draw()
        elif force or now - self._line_at >= self.every_s:
            self._plain()

    def _plain(self) -> None:
        self._line_at = self.clock()
        self._lines += 1
        print(f"[fedsim] {self.line()}", file=self.stream, flush=True)

    def _draw(self) -> None:
        filled = int(BAR_CHARS * self.fraction)
        bar = "#" * filled + "-" * (BAR_CHARS - filled)
        text = f"[fedsim] |{bar}| {self.line()}"
        width = shutil.get_terminal_size((100, 24)).columns - 1
        text = text[:width]
        self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
        self.stream.flush()
        self._drawn = len(text)

    def _clear(self) -> None:
        if self.interactive and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0

    def _hook_logging(self) -> None:
        """Clear the terminal line before a log record goes to the same stream
        (the next event redraws it below the record)."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                handler.addFilter(self._before_log)
                self._handlers.append(handler)

    def _before_log(self, record: logging.LogRecord) -> bool:
        self._clear()
        return True


def running_status(statuses: Mapping[str, str]) -> str:
    """One status text for several tasks running at once (a scenario's
    parallel schedule), in the order they started: ``training original round
    40/150, hp-fl round 38/150``; the terminal line is cut to its width."""
    texts = list(statuses.values())
    if len(texts) <= 1:
        return texts[0] if texts else ""
    training = "training "
    head = training if all(t.startswith(training) for t in texts) else ""
    return head + ", ".join(t[len(head):] for t in texts)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


__all__ = ["BAR_CHARS", "PLAIN_EVERY_S", "REDRAW_EVERY_S", "Progress", "format_clock", "running_status"]
