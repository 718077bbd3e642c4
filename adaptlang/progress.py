"""Progress that shows wherever the output goes: a tqdm bar on a terminal, plain lines elsewhere.

Long jobs run under nohup, SLURM or CI, where stderr is a file and tqdm switches itself off
(``disable=None``). Off a terminal, ``Progress`` writes one line to stderr every ``every``
steps or ``seconds`` seconds, whichever comes first, and at the end:

    [adaptlang] stage pretrain step 25/200 loss 6.1234 lr 1.80e-03 tokens/s 41,234 elapsed 0:00:31 eta 0:03:37

The training loop writes the same lines into ``runs/<name>/train.log`` (logger
``adaptlang``), terminal or not. Evaluations use ``track``:
the same rule, one item per language.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator

from tqdm.auto import tqdm

DEFAULT_SECONDS = 30.0
log = logging.getLogger("adaptlang")


def clock(seconds: float) -> str:
    """0:03:07 (hours:minutes:seconds), or '?' when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """One progress display for ``total`` units of ``desc`` (a stage, a benchmark).

    ``enabled=False`` (ranks other than the main process) shows nothing at all. ``lines``
    forces plain lines (True) or a bar (False); None decides by whether stderr is a terminal.
    """

    def __init__(self, desc: str, total: int, unit: str = "step", every: int = 25,
                 seconds: float | None = None, initial: int = 0, enabled: bool = True,
                 lines: bool | None = None, stream=None):
        self.desc, self.total, self.unit = desc, int(total), unit
        self.every = max(1, int(every))
        self.seconds = DEFAULT_SECONDS if seconds is None else float(seconds)
        self.done = self.initial = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        terminal = bool(isatty and isatty())
        self.lines = enabled and (not terminal if lines is None else lines)
        self.bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0,
                        initial=self.initial, leave=unit == "step", file=self.stream,
                        disable=not enabled or self.lines)
        self.start = self.last = time.perf_counter()

    def due(self) -> bool:
        """A line is due: every ``every`` units, after ``seconds`` seconds, or at the end."""
        return (self.done % self.every == 0 or self.done >= self.total
                or time.perf_counter() - self.last >= self.seconds)

    def line(self, **fields) -> str:
        elapsed = time.perf_counter() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        parts = [f"{self.desc} {self.unit} {self.done}/{self.total}"]
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in fields.items()]
        parts += [f"elapsed {clock(elapsed)}", f"eta {clock(eta)}"]
        return " ".join(parts)

    def update(self, n: int = 1, **fields) -> str | None:
        """Advance by ``n``; ``fields`` (already formatted) go into the bar and the line.
        Returns the line when one is due (written to the stream off a terminal; the caller
        may log it too), else None."""
        self.done += n
        if not self.lines:
            if fields:
                self.bar.set_postfix(fields, refresh=False)
            self.bar.update(n)
        if not self.due():
            return None
        text = self.line(**fields)
        if self.lines:
            print(f"[adaptlang] {text}", file=self.stream, flush=True)
        self.last = time.perf_counter()
        return text

    def close(self) -> None:
        self.bar.close()


def track(items: Iterable, desc: str, unit: str = "lang", seconds: float | None = None,
          enabled: bool = True) -> Iterator:
    """Iterate ``items`` with progress: a transient bar on a terminal; off a terminal a line
    every ``seconds`` seconds and one at the end (evaluations: one unit per language); the same
    lines go to the ``adaptlang`` log (train.log)."""
    items = list(items)
    progress = Progress(desc, len(items), unit=unit, every=max(1, len(items)), seconds=seconds,
                        enabled=enabled)
    try:
        for item in items:
            yield item
            line = progress.update(1)
            if line:
                log.info("%s", line)
    finally:
        progress.close()


def log_seconds(cfg) -> float | None:
    """``train.log_seconds`` of a run config (None where the config has no train section)."""
    train = cfg.get("train") if hasattr(cfg, "get") else None
    return None if not train else train.get("log_seconds")
