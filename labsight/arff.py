"""Weka ARFF files of numeric feature rows with an optional nominal class, written as the seed wrote them."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import TextIO

__all__ = ["arff_text", "write_arff"]

# Names Weka reads without quotes: no whitespace, quotes, separators, braces or comment marks.
_PLAIN_NAME = re.compile(r"[^\s'\"\\,{}%]+")


def arff_text(
    relation: str,
    rows: Sequence[Mapping[str, float]],
    class_values: Sequence[str | int] | None = None,
    classes: Sequence[str | int] | None = None,
) -> str:
    """The ARFF document of ``rows``, one data line per row.

    Parameters
    ----------
    relation : str
        The ``@RELATION`` name.
    rows : sequence of mapping of str to float
        One mapping per instance; every row has the same keys in the same order, which become
        the ``@ATTRIBUTE <name> numeric`` lines.
    class_values : sequence of str or int, optional
        The nominal values of the class attribute, in declaration order. Default: the distinct
        ``classes`` in order of first appearance.
    classes : sequence of str or int, optional
        The class of each row, last on its data line under ``@ATTRIBUTE class {...}``. Without
        it the file has no class attribute.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``rows`` is empty, the rows' keys differ, a value is not a number, ``classes`` has
        the wrong length or holds a value outside ``class_values``, or ``class_values`` is given
        without ``classes``.

    Notes
    -----
    Values are written as Python's ``repr`` of the float (shortest exact round-trip, as the
    seed's ``str(float)``); NaN and infinities become ``?``, Weka's missing value. Names
    that Weka could not read bare are single-quoted.

    Examples
    --------
    >>> print(arff_text("demo", [{"a": 1, "b": 0.5}], classes=[1]), end="")
    @RELATION demo
    <BLANKLINE>
    @ATTRIBUTE a numeric
    @ATTRIBUTE b numeric
    @ATTRIBUTE class {1}
    <BLANKLINE>
    @DATA
    1.0,0.5,1
    """
    if not rows:
        raise ValueError("rows must hold at least one row")
    names = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != names:
            raise ValueError(f"rows[{i}] has columns {list(row)}, expected {names} as in rows[0]")
    labels = _class_labels(len(rows), class_values, classes)
    lines = [f"@RELATION {_quoted(relation)}", ""]
    lines += [f"@ATTRIBUTE {_quoted(name)} numeric" for name in names]
    if labels is not None:
        lines.append("@ATTRIBUTE class {" + ",".join(_quoted(v) for v in labels[0]) + "}")
    lines += ["", "@DATA"]
    for i, row in enumerate(rows):
        fields = [_number(row[name], f"rows[{i}][{name!r}]") for name in names]
        if labels is not None:
            fields.append(_quoted(labels[1][i]))
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def write_arff(
    path_or_file: str | os.PathLike[str] | TextIO,
    relation: str,
    rows: Sequence[Mapping[str, float]],
    class_values: Sequence[str | int] | None = None,
    classes: Sequence[str | int] | None = None,
) -> None:
    """Write :func:`arff_text` of the arguments to a path (UTF-8) or an open text file."""
    text = arff_text(relation, rows, class_values, classes)
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
    else:
        path_or_file.write(text)


def _class_labels(
    count: int, class_values: Sequence[str | int] | None, classes: Sequence[str | int] | None
) -> tuple[list[str], list[str]] | None:
    """(declared values, per-row values) as strings, or None when there is no class attribute."""
    if classes is None:
        if class_values is not None:
            raise ValueError("class_values given without classes")
        return None
    if len(classes) != count:
        raise ValueError(f"classes has {len(classes)} entries for {count} rows")
    per_row = [str(c) for c in classes]
    declared = [str(v) for v in class_values] if class_values is not None else list(dict.fromkeys(per_row))
    unknown = sorted(set(per_row) - set(declared))
    if unknown:
        raise ValueError(f"classes holds {unknown}, not among class_values {declared}")
    return declared, per_row


def _number(value: float, where: str) -> str:
    """A value as Python's float repr, or '?' when not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    return repr(number) if math.isfinite(number) else "?"


def _quoted(name: str) -> str:
    """name bare when Weka reads it so, else single-quoted with backslash escapes."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
