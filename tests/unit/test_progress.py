"""The terminal progress bar draws in place on a terminal and stays silent elsewhere."""

from __future__ import annotations

import io

from labsight.progress import ProgressBar, render_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_bar_fills_in_proportion() -> None:
    assert render_bar(0, 10) == "[" + "." * 30 + "] 0/10"
    assert render_bar(5, 10, "done 5") == "[" + "#" * 15 + "." * 15 + "] 5/10 done 5"
    assert render_bar(0, 0).startswith("[" + "#" * 30)


def test_bar_redraws_one_line_on_a_terminal() -> None:
    terminal = _Terminal()
    bar = ProgressBar(terminal)
    bar.update(1, 4)
    bar.update(1, 4)  # unchanged: not redrawn
    bar.update(4, 4, "done 4")
    bar.close()
    text = terminal.getvalue()
    assert text.count("\r") == 2 and text.endswith("4/4 done 4\n")


def test_bar_is_silent_when_not_a_terminal() -> None:
    pipe = io.StringIO()
    bar = ProgressBar(pipe)
    bar.update(3, 4)
    bar.close()
    assert pipe.getvalue() == ""
