"""A text progress bar for job and batch watches on a terminal (stderr)."""

from __future__ import annotations

import sys
from typing import TextIO

BAR_WIDTH = 30


def render_bar(done: int, total: int, detail: str = "") -> str:
    """``[#######.......]  7/15 detail`` for ``done`` of ``total``."""
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {done}/{total} {detail}".rstrip()


def rate_and_time_left(rate: float, unit: str, seconds_left: float) -> str:
    """``850 rows/s, 1:05 left``: the parts that are known (a rate > 0 with its unit, a time
    left > 0), or ``""``."""
    parts = []
    if rate > 0 and unit:
        parts.append(f"{rate:.0f} {unit}/s" if rate >= 10 else f"{rate:.2g} {unit}/s")
    if seconds_left > 0:
        minutes, seconds = divmod(round(seconds_left), 60)
        hours, minutes = divmod(minutes, 60)
        clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
        parts.append(f"{clock} left")
    return ", ".join(parts)


class ProgressBar:
    """Redraws one line in place on a terminal; when the stream is not one, prints nothing,
    or with ``lines`` each new state as a line of its own (for logs of long runs)."""

    def __init__(self, stream: TextIO | None = None, lines: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.enabled = self.terminal or lines
        self._last = ""

    def update(self, done: int, total: int, detail: str = "") -> None:
        """Show ``done`` of ``total`` with a short ``detail``."""
        line = render_bar(done, total, detail)
        if self.enabled and line != self._last:
            self.stream.write("\r" + line.ljust(len(self._last)) if self.terminal else line + "\n")
            self.stream.flush()
            self._last = line

    def close(self) -> None:
        """End the line."""
        if self.terminal and self._last:
            self.stream.write("\n")
            self.stream.flush()
