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


class ProgressBar:
    """Redraws one line in place on a terminal; prints nothing when the stream is not one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = ""

    def update(self, done: int, total: int, detail: str = "") -> None:
        """Show ``done`` of ``total`` with a short ``detail``."""
        line = render_bar(done, total, detail)
        if self.enabled and line != self._last:
            self.stream.write("\r" + line.ljust(len(self._last)))
            self.stream.flush()
            self._last = line

    def close(self) -> None:
        """End the line."""
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()
