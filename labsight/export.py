"""Feature tables of job results written as CSV, Parquet, .npy or AnnData .h5ad files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from labsight.arff import write_arff
from labsight.spatial import EDGE
from labsight.tables import ROW_NAMES, table_values, tables_of
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    import anndata

FORMATS = ("csv", "tsv", "arff", "parquet", "npy", "h5ad")
"""File formats ``write_table`` writes."""

TEXT_FORMATS = ("csv", "tsv", "arff")
"""Formats that can also be written to an open text stream."""

JSON_LINES = "json"
"""Whole results as one JSON object per line (the CLI's format when none is named)."""

SUFFIX_FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".arff": "arff", ".parquet": "parquet", ".npy": "npy",
    ".h5ad": "h5ad", ".json": JSON_LINES, ".jsonl": JSON_LINES,
}
"""The format an output file's suffix stands for."""


def output_format(output: str, given: str = "") -> str:
    """The format to write to ``output`` (a file name, or "" for stdout).

    The file's suffix decides (``x.csv`` is CSV); ``given`` (``--format``) is
    needed only for a suffix that names no format, or for stdout, where it
    defaults to JSON lines.

    Raises
    ------
    ValueError
        If ``given`` contradicts the suffix, or neither names a format.
    """
    suffix = Path(output).suffix.lower() if output else ""
    implied = SUFFIX_FORMATS.get(suffix)
    if given and implied and given != implied:
        raise ValueError(f"--format {given} contradicts the output file {output!r}, whose "
                         f"suffix {suffix} means {implied}; drop --format or rename the file")
    if given or implied:
        return given or implied or ""
    if not output:
        return JSON_LINES
    known = ", ".join(SUFFIX_FORMATS)
    raise ValueError(f"cannot tell the format of {output!r} from its suffix: name the file "
                     f"with one of {known}, or give --format")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary file next to ``path``, then rename it onto ``path``.

    An existing file is replaced whole (never appended to), and a write that
    fails half-way leaves the old file as it was instead of a truncated one.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

COORDINATES = "coordinates"
"""Result tensor with the (N, 2) x, y position of each table row (spot-features)."""

ROW_TENSORS = (COORDINATES, EDGE)
"""Result tensors with one entry per table row, which exports of a table carry along."""


def keep_table(result: pb.JobResult, table: str) -> pb.JobResult:
    """``result`` cut down in place to what exporting ``table`` reads, and returned.

    Other tables and every tensor but the per-row ones (ROW_TENSORS) are
    dropped; ids, input name, labels and provenance stay. A batch's export
    keeps each result so, not its masks, crops and probability tensors, which
    can be a thousand times bigger. A result without ``table`` is left whole,
    so that the export's error about it can list the tables it has.
    """
    if table not in result.tables:
        return result
    for name in [name for name in result.tables if name != table]:
        del result.tables[name]
    for name in [name for name in result.tensors if name not in ROW_TENSORS]:
        del result.tensors[name]
    return result


def combined_table(
    results: Sequence[pb.JobResult], table: str
) -> tuple[list[str], list[str], np.ndarray, np.ndarray | None]:
    """One table stacked over several results: columns, row ids, values and coordinates.

    When several results are stacked, row ids are prefixed with their result's
    input name (unless the row id already is that name, as for per-image
    tables, or the rows carry the names of a named stack's images, provenance
    ``row_names``), so rows stay distinguishable.
    Coordinates are returned only when every result carries them.

    Raises
    ------
    ValueError
        If a result lacks the table or the results' columns differ.
    """
    if not results:
        raise ValueError("no results to export")
    entries = tables_of(results, table)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    coordinates: list[np.ndarray] = []
    for result, entry in zip(results, entries, strict=True):
        source = result.input_name or result.job_id
        named = ROW_NAMES in result.provenance
        ids.extend(
            f"{source}/{row_id}" if len(results) > 1 and row_id != source and not named else row_id
            for row_id in entry.row_ids
        )
        blocks.append(table_values(entry, table))
        if COORDINATES in result.tensors:
            coordinates.append(from_tensor(result.tensors[COORDINATES], COORDINATES))
    values = np.concatenate(blocks)
    stacked = np.concatenate(coordinates) if len(coordinates) == len(results) else None
    return list(entries[0].columns), ids, values, stacked


def combined_provenance(results: Sequence[pb.JobResult]) -> dict[str, str]:
    """Every provenance key of ``results`` with its value; values that differ are joined by ", "."""
    values: dict[str, list[str]] = {}
    for result in results:
        for key, value in sorted(result.provenance.items()):
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return {key: ", ".join(found) for key, found in values.items()}


def write_table(
    results: Sequence[pb.JobResult],
    table: str,
    path: Path | TextIO,
    fmt: str,
    class_labels: Sequence[str] | None = None,
) -> None:
    """Write one table of ``results`` (rows stacked) to ``path`` in format ``fmt``.

    Parameters
    ----------
    results : sequence of JobResult
        Results holding the table; rows are stacked in order (see ``combined_table``).
    table : str
        Name of the table, e.g. ``"features"``.
    path : Path or text stream
        File to write, replaced whole and atomically (see ``write_atomically``);
        csv, tsv and arff may also go to an open text stream.
    fmt : {"csv", "tsv", "arff", "parquet", "npy", "h5ad"}
        File format.
    class_labels : sequence of str, optional
        One class per result, repeated over its rows: the last ARFF attribute
        ``class {...}`` (as the seed's Weka files have), a ``class`` column in
        CSV and Parquet, or a categorical ``obs["class"]`` in AnnData.

    Notes
    -----
    csv, tsv
        ``id`` then the feature columns, comma- or tab-separated.
    arff
        Weka ARFF, one numeric attribute per column (relation = table name), no class.
    parquet
        The same columns, float64 features (pyarrow); the results' provenance
        (model, version, layer) as JSON in the schema metadata key ``labsight``.
    npy
        The (N, D) float64 values only, in row order.
    h5ad
        AnnData made by ``results_to_anndata`` (features in ``X`` and
        ``obsm["features"]``, spot coordinates in ``obsm["spatial"]``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {fmt!r}")
    if isinstance(path, Path):
        write_atomically(path, lambda temporary: _write_table(results, table, temporary, fmt,
                                                              class_labels))
    else:
        _write_table(results, table, path, fmt, class_labels)


def _write_table(
    results: Sequence[pb.JobResult],
    table: str,
    path: Path | TextIO,
    fmt: str,
    class_labels: Sequence[str] | None,
) -> None:
    """``write_table`` straight into ``path``."""
    columns, ids, values, coordinates = combined_table(results, table)
    row_classes = None if class_labels is None else _row_classes(results, table, class_labels)
    if fmt == "arff":
        rows = [dict(zip(columns, map(float, row), strict=True)) for row in values]
        write_arff(path, table, rows, classes=row_classes)
        return
    if fmt == "npy":
        if isinstance(path, Path):
            with path.open("wb") as file:  # np.save would add ".npy" to a name without it
                np.save(file, values)
        else:
            np.save(path, values)
        return
    import pandas as pd

    if fmt in ("csv", "tsv", "parquet"):
        frame = pd.DataFrame(values, columns=columns)
        frame.insert(0, "id", ids)
        if row_classes is not None:
            frame["class"] = row_classes
        if fmt in ("csv", "tsv"):
            frame.to_csv(path, index=False, float_format="%.17g", sep="," if fmt == "csv" else "\t")
        else:
            _write_parquet(frame, path, combined_provenance(results))
        return
    results_to_anndata(results, table, class_labels).write_h5ad(path)


def results_to_anndata(
    results: Sequence[pb.JobResult], table: str, class_labels: Sequence[str] | None = None
) -> anndata.AnnData:
    """One table of ``results`` (rows stacked, see ``combined_table``) as an AnnData.

    The features are in ``X`` and ``obsm["features"]``, the column names are
    ``var_names`` (and ``uns["feature_columns"]``), row ids are ``obs_names``;
    ``x``/``y`` in ``obs`` and ``obsm["spatial"]`` (squidpy's key) when every
    result has coordinates; the provenance (model, version, layer) in
    ``uns["provenance"]``; ``class_labels`` (one per result) as a categorical
    ``obs["class"]``; the job labels and edge flags as ``obs`` columns (see
    ``labsight.spatial.add_result_obs``). ``X`` is float32, as scanpy expects.
    """
    import anndata
    import pandas as pd

    from labsight.spatial import add_result_obs

    columns, ids, values, coordinates = combined_table(results, table)
    obs = pd.DataFrame(index=pd.Index(ids, name="id"))
    obsm = {"features": values}
    if coordinates is not None:
        obs["x"], obs["y"] = coordinates[:, 0], coordinates[:, 1]
        obsm["spatial"] = coordinates
    if class_labels is not None:
        obs["class"] = pd.Categorical(_row_classes(results, table, class_labels))
    add_result_obs(obs, results, table)
    uns = {"feature_columns": np.array(columns), "provenance": combined_provenance(results)}
    var = pd.DataFrame(index=pd.Index(columns, name="column"))
    return anndata.AnnData(X=values.astype(np.float32), obs=obs, var=var, obsm=obsm, uns=uns)


def _row_classes(
    results: Sequence[pb.JobResult], table: str, class_labels: Sequence[str]
) -> list[str]:
    """Each result's class label repeated over its rows of ``table``."""
    if len(class_labels) != len(results):
        raise ValueError(f"class_labels: {len(class_labels)} labels for {len(results)} results")
    return [
        label
        for result, label in zip(results, class_labels, strict=True)
        for _ in result.tables[table].row_ids
    ]


def _write_parquet(frame: object, path: Path | TextIO, provenance: dict[str, str]) -> None:
    """A pandas frame as Parquet, ``provenance`` as JSON under the schema metadata key ``labsight``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), b"labsight": json.dumps(provenance).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
