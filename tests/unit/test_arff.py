"""ARFF files as Weka reads them and the seed wrote them: numeric attributes, class last, float reprs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from labsight.arff import arff_text, write_arff

ROWS = [{"MinkLAC1": 0.19159808310376467, "MinkLAC2": 1}, {"MinkLAC1": 0.0, "MinkLAC2": 2.5e-07}]


def test_seed_layout_with_class_last(tmp_path: Path) -> None:
    path = tmp_path / "fractal.arff"
    write_arff(path, "fractal", ROWS, class_values=[0, 1], classes=[1, 0])
    assert path.read_text(encoding="utf-8") == (
        "@RELATION fractal\n"
        "\n"
        "@ATTRIBUTE MinkLAC1 numeric\n"
        "@ATTRIBUTE MinkLAC2 numeric\n"
        "@ATTRIBUTE class {0,1}\n"
        "\n"
        "@DATA\n"
        "0.19159808310376467,1.0,1\n"
        "0.0,2.5e-07,0\n"
    )


def test_values_round_trip_exactly() -> None:
    text = arff_text("r", [{"a": 0.1 + 0.2}])
    assert float(text.splitlines()[-1]) == 0.1 + 0.2


def test_without_classes_there_is_no_class_attribute() -> None:
    stream = io.StringIO()
    write_arff(stream, "r", ROWS)
    assert "class" not in stream.getvalue()
    assert stream.getvalue().endswith("@DATA\n0.19159808310376467,1.0\n0.0,2.5e-07\n")


def test_class_values_default_to_classes_in_order_of_appearance() -> None:
    text = arff_text("r", ROWS, classes=["tumour", "healthy"])
    assert "@ATTRIBUTE class {tumour,healthy}" in text


def test_non_finite_values_are_missing() -> None:
    text = arff_text("r", [{"a": float("nan"), "b": float("inf")}])
    assert text.endswith("@DATA\n?,?\n")


def test_names_weka_cannot_read_bare_are_quoted() -> None:
    text = arff_text("my relation", [{"area ratio": 1.0, "it's": 2.0}], classes=["a b"])
    assert "@RELATION 'my relation'" in text
    assert "@ATTRIBUTE 'area ratio' numeric" in text
    assert "@ATTRIBUTE 'it\\'s' numeric" in text
    assert "@ATTRIBUTE class {'a b'}" in text
    assert text.endswith("1.0,2.0,'a b'\n")


@pytest.mark.parametrize(
    ("rows", "class_values", "classes", "message"),
    [
        ([], None, None, "rows must hold at least one row"),
        ([{"a": 1.0}, {"b": 1.0}], None, None, r"rows\[1\] has columns"),
        ([{"a": "x"}], None, None, r"rows\[0\]\['a'\] must be a number"),
        ([{"a": 1.0}], None, [0, 1], "classes has 2 entries for 1 rows"),
        ([{"a": 1.0}], [0, 1], [2], "classes holds"),
        ([{"a": 1.0}], [0, 1], None, "class_values given without classes"),
    ],
)
def test_bad_input_is_refused(
    rows: list, class_values: list | None, classes: list | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        arff_text("r", rows, class_values, classes)
