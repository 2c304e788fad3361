"""A progress line with count, rate and ETA for long loops (sharding, prediction).

On a terminal it redraws one line; in logs (CI, nohup) it prints a line every ~10% so logs stay short.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, unit: str = "images", stream=None, min_interval=0.5):
        self.total = max(int(total), 0)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._min_interval = min_interval
        self._interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._next_log_fraction = 0.1

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self._interactive:
            if now - self._last_draw >= self._min_interval:
                self._last_draw = now
                self.stream.write("\r" + self.line())
                self.stream.flush()
        elif self.total and self.done / self.total >= self._next_log_fraction and self.done < self.total:
            self._next_log_fraction = (int(self.done / self.total * 10) + 1) / 10
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        if self.total and rate > 0:
            eta = _format_seconds((self.total - self.done) / rate)
        else:
            eta = "?"
        percent = f"{100 * self.done / self.total:5.1f}%" if self.total else ""
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit} {percent} "
            f"{rate:,.1f} {self.unit}/s ETA {eta}"
        )

    def close(self) -> None:
        elapsed = _format_seconds(time.monotonic() - self._start)
        end = "\r" if self._interactive else ""
        self.stream.write(
            f"{end}{self.label}: {self.done}/{self.total} {self.unit} in {elapsed} "
            f"({self.rate():,.1f} {self.unit}/s)\n"
        )
        self.stream.flush()


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
