"""The terminal progress bar draws in place on a terminal and stays silent elsewhere."""

from __future__ import annotations

import io

from labsight.progress import ProgressBar, rate_and_time_left, render_bar


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


def test_rate_and_time_left_show_what_is_known() -> None:
    assert rate_and_time_left(850.4, "rows", 65) == "850 rows/s, 1:05 left"
    assert rate_and_time_left(2.345, "images", 3725) == "2.3 images/s, 1:02:05 left"
    assert rate_and_time_left(0.0, "rows", 9.6) == "0:10 left"
    assert rate_and_time_left(12.0, "", 0.0) == ""  # a rate without a unit says nothing


def test_bar_with_lines_prints_each_new_state_on_its_own_line_when_piped() -> None:
    pipe = io.StringIO()
    bar = ProgressBar(pipe, lines=True)
    bar.update(0, 4, "files submitted")
    bar.update(0, 4, "files submitted")  # unchanged: not repeated
    bar.update(4, 4, "files submitted")
    bar.close()
    assert pipe.getvalue().splitlines() == [render_bar(0, 4, "files submitted"),
                                            render_bar(4, 4, "files submitted")]
