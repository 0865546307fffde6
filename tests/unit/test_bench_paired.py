"""The benches' paired rounds: every side once per round, in an order that rotates."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._paired import paired_rounds, round_ratios, spread  # noqa: E402


def test_sides_run_once_per_round_in_rotating_order() -> None:
    calls: list[str] = []

    def side(name: str, figure: float):
        def run() -> float:
            calls.append(name)
            return figure + len(calls)
        return run

    figures = paired_rounds({"baseline": side("baseline", 0.0), "labsight": side("labsight", 100.0)}, 4)

    assert calls == ["baseline", "labsight", "labsight", "baseline",
                     "baseline", "labsight", "labsight", "baseline"]
    assert figures == {"baseline": [1.0, 4.0, 5.0, 8.0], "labsight": [102.0, 103.0, 106.0, 107.0]}


def test_three_sides_each_lead_in_turn() -> None:
    leads: list[str] = []
    order: list[str] = []

    def side(name: str):
        def run() -> float:
            if len(order) % 3 == 0:
                leads.append(name)
            order.append(name)
            return 1.0
        return run

    paired_rounds({name: side(name) for name in "abc"}, 3)

    assert leads == ["a", "b", "c"]


def test_ratios_are_taken_round_by_round_and_spread_is_min_median_max() -> None:
    ratios = round_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 4.0])

    assert ratios == [2.0, 3.0, 1.0]
    assert spread(ratios, ".1f", "x") == "1.0 / 2.0 / 3.0 x"
