"""Damage that tifffile reads past: an IFD or a tag value that lies beyond the end of the file.

tifffile opens a TIFF cut short (an upload or a copy that stopped early) without an error: it
logs that the next page's IFD, or a tag's value such as the OME-XML description, lies past
the end, and goes on with the pages and tags it found. A 4-channel OME-TIFF cut in half then
reads as a one-page grey image. :func:`watch_tiff_damage` collects those log records of the
calling thread, so the reader can refuse the file instead. tifffile logs them as errors; where
the process's logging drops errors (LABSIGHT_LOG_LEVEL=CRITICAL), the watch lets tifffile's
logger take them while it runs, without passing them on to the process's handlers, which
would have dropped them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["watch_tiff_damage"]

DAMAGE_SIGNS = ("invalid page offset", "invalid offset to page", "invalid value offset")
"""What tifffile logs when a page's IFD or a tag's value lies outside the file."""

_DAMAGE = re.compile(r"(?:TiffTag (?P<tag>\d+)[^>]*>\s*)?(?P<what>invalid [a-z ]*?(?:offset|page)[^'\")]*)")
"""The damage in a tifffile message, with the tag it concerns when it names one."""


class _DamageRecords(logging.Handler):
    """Keeps the damage messages tifffile logs from one thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = record.getMessage()
        if any(sign in message for sign in DAMAGE_SIGNS):
            self.found.append(_damage_text(message))


def _damage_text(message: str) -> str:
    """``tag 270: invalid value offset 1280722`` out of tifffile's message."""
    found = _DAMAGE.search(message)
    if found is None:
        return message
    what = found["what"].strip()
    return f"tag {found['tag']}: {what}" if found["tag"] else what


class _ErrorsKept:
    """While any watch runs, tifffile's logger takes errors even where the process's logging
    level drops them, and then passes none on (their level is below what the process logs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches = 0
        self._saved: tuple[int, bool] | None = None

    def enter(self, log: logging.Logger) -> None:
        with self._lock:
            self._watches += 1
            if self._watches == 1 and not log.isEnabledFor(logging.ERROR):
                self._saved = (log.level, log.propagate)
                log.setLevel(logging.ERROR)
                log.propagate = False

    def leave(self, log: logging.Logger) -> None:
        with self._lock:
            self._watches -= 1
            if self._watches == 0 and self._saved is not None:
                level, log.propagate = self._saved
                log.setLevel(level)
                self._saved = None


_ERRORS_KEPT = _ErrorsKept()


@contextmanager
def watch_tiff_damage() -> Iterator[list[str]]:
    """Within the block, the damage tifffile reports while this thread reads a file: each an
    IFD or a tag value outside the file, in tifffile's words (``invalid page offset 1280224``,
    ``tag 270: invalid value offset 1280722``), in the order met.

    Examples
    --------
    >>> import io, numpy as np, tifffile
    >>> buffer = io.BytesIO()
    >>> tifffile.imwrite(buffer, np.zeros((5, 8, 8), np.uint8))
    >>> with watch_tiff_damage() as damage, tifffile.TiffFile(io.BytesIO(buffer.getvalue())) as tif:
    ...     pages = len(tif.pages)
    >>> pages, damage
    (5, [])
    """
    records = _DamageRecords()
    log = logging.getLogger("tifffile")
    log.addHandler(records)
    _ERRORS_KEPT.enter(log)
    try:
        yield records.found
    finally:
        _ERRORS_KEPT.leave(log)
        log.removeHandler(records)
