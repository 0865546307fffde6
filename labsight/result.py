"""A job's result as the SDK returns it: the JobResult message with pandas, numpy and AnnData views."""

from __future__ import annotations

import csv
import io
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from labsight.arrays import require_numpy
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2

if TYPE_CHECKING:
    import anndata
    import numpy as np
    import pandas as pd


LABEL_MASKS = {"nucleus_labels": "nuclei", "cell_labels": "cells"}
"""Label-mask tensors of a result and the file suffix each is written with."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")


MAIN_TABLES = {"hpa-cells": "classes", "cell-tracks": "tracks"}
"""The table a pipeline's result is about, where it is not named after the pipeline."""


def main_table(result: pb.JobResult) -> str:
    """The table a result is about: the one named after its pipeline (``fractal``,
    ``cells``) or given in MAIN_TABLES (hpa-cells: ``classes``, cell-tracks: ``tracks``),
    else ``features``, else the first by name.

    Raises
    ------
    KeyError
        If the result has no tables.
    """
    for name in (result.pipeline, MAIN_TABLES.get(result.pipeline, ""), "features"):
        if name in result.tables:
            return name
    if not result.tables:
        raise KeyError(f"the result of job {result.job_id} has no tables")
    return sorted(result.tables)[0]


class Result:
    """A finished job's result.

    The message's fields read as attributes (``job_id``, ``pipeline``,
    ``tables``, ``tensors``, ``scalars``, ``input_name``, ``provenance``), and
    any other attribute of the message too (``ByteSize()``,
    ``SerializeToString()``), so a Result goes wherever a ``JobResult`` is read
    (``write_table``, plots); ``message`` is the protobuf message itself.

    Examples
    --------
    >>> result = lab.run("fractal", skimage.data.camera())   # doctest: +SKIP
    >>> result.to_pandas()            # the fractal table, one row per image
    >>> result.to_pandas("seed_fractal")
    >>> result.scalars["fractal_dimension"]
    """

    def __init__(self, message: pb.JobResult) -> None:
        self.message = message

    def __getattr__(self, name: str) -> Any:
        # Only called for names the class lacks: the message's other fields and methods.
        if name == "message":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.message, name)

    @property
    def job_id(self) -> str:
        """The job id."""
        return self.message.job_id

    @property
    def pipeline(self) -> str:
        """The pipeline that made the result."""
        return self.message.pipeline

    @property
    def tables(self) -> Mapping[str, tensor_pb2.FeatureTable]:
        """Feature tables by name, as messages (see ``to_pandas`` for frames)."""
        return self.message.tables

    @property
    def tensors(self) -> Mapping[str, tensor_pb2.Tensor]:
        """Arrays by name, as messages (see ``tensor`` for numpy arrays)."""
        return self.message.tensors

    @property
    def scalars(self) -> Mapping[str, float]:
        """Scalars by name (e.g. ``fractal_dimension``)."""
        return self.message.scalars

    @property
    def input_name(self) -> str:
        """Name of the main input image."""
        return self.message.input_name

    @property
    def provenance(self) -> Mapping[str, str]:
        """How the result was made: models, versions, layers, LabSight version."""
        return self.message.provenance

    @property
    def main_table(self) -> str:
        """Name of the table ``to_pandas()`` and ``to_numpy()`` return by default."""
        return main_table(self.message)

    @property
    def pixel_size_um(self) -> float | None:
        """Micrometres per pixel the result's sizes were computed with (a segmentation's
        provenance ``pixel_size_um``); None where it states none that is > 0."""
        try:
            size = float(self.provenance.get("pixel_size_um", ""))
        except ValueError:
            return None
        return size if math.isfinite(size) and size > 0 else None

    def to_numpy(self, table: str | None = None) -> np.ndarray:
        """A table's values as a (rows, columns) float64 array (default: the main table)."""
        require_numpy("Result.to_numpy")
        from labsight.tables import table_values

        return table_values(self._table(table), table or self.main_table)

    def to_csv(self, table: str | None = None) -> str:
        """A table as CSV text (default: the main table): a header ``id,<columns>``, then a
        row per row id, each value as the shortest text that reads back to the same float64
        (NaN as an empty cell). Needs no numpy for the float64 tables the services send."""
        name = table or self.main_table
        entry = self._table(name)
        rows, columns = len(entry.row_ids), len(entry.columns)
        plain = (entry.values.dtype == tensor_pb2.DATA_TYPE_FLOAT64
                 and list(entry.values.shape) == [rows, columns]
                 and len(entry.values.data) == 8 * rows * columns)
        if plain:
            values = array("d", entry.values.data)
            if sys.byteorder == "big":
                values.byteswap()
        else:  # another dtype, or a malformed table: numpy reads it, or says what is wrong
            values = array("d", (float(v) for v in self.to_numpy(name).ravel()))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["id", *entry.columns])
        for index, row_id in enumerate(entry.row_ids):
            row = values[index * columns:(index + 1) * columns]
            writer.writerow([row_id, *("" if math.isnan(v) else repr(v) for v in row)])
        return text.getvalue()

    def to_pandas(self, table: str | None = None) -> pd.DataFrame:
        """A table as a DataFrame: row ids as the index (``id``), one named column per feature.

        ``table`` defaults to the main table (see ``main_table``); the job id,
        table name and provenance are in the frame's ``attrs``.
        """
        import pandas as pd

        from labsight.tables import table_values

        name = table or self.main_table
        entry = self._table(name)
        frame = pd.DataFrame(
            table_values(entry, name),
            index=pd.Index(list(entry.row_ids), name="id"),
            columns=list(entry.columns),
        )
        frame.attrs.update(job_id=self.job_id, table=name, provenance=dict(self.provenance))
        return frame

    def tables_to_pandas(self) -> dict[str, pd.DataFrame]:
        """Every table as a DataFrame (see ``to_pandas``), by name."""
        return {name: self.to_pandas(name) for name in sorted(self.tables)}

    def tensor(self, name: str) -> np.ndarray:
        """A result tensor (e.g. ``coordinates``) as a numpy array."""
        if name not in self.tensors:
            raise KeyError(f"the result of job {self.job_id} has no tensor {name!r}; "
                           f"tensors: {sorted(self.tensors)}")
        require_numpy("Result.tensor")
        from labsight.tensors import from_tensor

        return from_tensor(self.tensors[name], name)

    def label_masks(self) -> dict[str, np.ndarray]:
        """The result's label masks by kind (``nuclei``, ``cells``), (H, W) int32, 0 = background
        (the service sends them as uint16 when they fit; :meth:`tensor` gives them as sent).

        Raises
        ------
        KeyError
            If the result has none (only segmentation pipelines such as ``cells`` make them).
        """
        np = require_numpy("Result.label_masks")
        masks = {kind: self.tensor(name).astype(np.int32, copy=False)
                 for name, kind in LABEL_MASKS.items() if name in self.tensors}
        if not masks:
            raise KeyError(f"the result of job {self.job_id} ({self.pipeline}) has no label masks")
        return masks

    def write_masks(self, folder: str | Path, stem: str = "") -> list[Path]:
        """Write each label mask as an int32 TIFF ``<stem>_nuclei.tif``, ``<stem>_cells.tif``
        into ``folder`` (made if missing); the paths written.

        ``stem`` defaults to the input's name without its suffix, sub-folders kept
        (``plate/ID``), else the job id. Pixels are the labels as they are, zlib-compressed,
        readable by ``tifffile.imread``, Fiji and CellProfiler.
        """
        return write_label_masks([self], folder, [stem] if stem else None)

    def to_anndata(self, table: str | None = None) -> anndata.AnnData:
        """A table as an AnnData, as ``labsight results --format h5ad`` writes it
        (see ``labsight.export.results_to_anndata``)."""
        require_numpy("Result.to_anndata")
        from labsight.export import results_to_anndata

        return results_to_anndata([self.message], table or self.main_table)

    def _table(self, name: str | None) -> tensor_pb2.FeatureTable:
        name = name or self.main_table
        if name not in self.tables:
            raise KeyError(f"the result of job {self.job_id} has no table {name!r}; "
                           f"tables: {sorted(self.tables)}")
        return self.tables[name]

    def __repr__(self) -> str:
        shapes = {name: (len(table.row_ids), len(table.columns))
                  for name, table in sorted(self.tables.items())}
        return (f"Result(job_id={self.job_id!r}, pipeline={self.pipeline!r}, tables={shapes}, "
                f"tensors={sorted(self.tensors)}, scalars={dict(sorted(self.scalars.items()))})")


def tiff_resolution(pixel_size_um: float | None) -> dict[str, Any]:
    """tifffile ``imwrite`` options that state ``pixel_size_um`` as TIFF resolution in pixels per
    centimetre (what Bio-Formats, QuPath and LabSight read as a calibration); none for None."""
    if pixel_size_um is None:
        return {}
    per_cm = 1e4 / pixel_size_um
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def write_label_masks(results: Sequence[Result | pb.JobResult], folder: str | Path,
                      stems: Sequence[str] | None = None) -> list[Path]:
    """Write the label masks of each result into ``folder`` (see :meth:`Result.write_masks`);
    results whose stems coincide get their job id appended, so no file overwrites another."""
    if stems is not None and len(stems) != len(results):
        raise ValueError(f"stems: {len(stems)} stems for {len(results)} results")
    writer = MaskWriter(folder)
    for index, result in enumerate(results):
        writer.add(result, stems[index] if stems is not None else "")
    return writer.written


class MaskWriter:
    """Writes the label masks of results into ``folder`` one result at a time.

    Files are named as :func:`write_label_masks` names them: ``<stem>_<kind>.tif``,
    and when a later result has a stem an earlier one took, both get their job id
    appended (the earlier one's files are renamed then). So a batch's masks can be
    written as its results stream in, holding one result's masks at a time.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.written: list[Path] = []
        """Every file written, in the order of the results, under its final name."""
        self._first: dict[str, tuple[str, list[tuple[str, int]]]] = {}
        self._repeated: set[str] = set()

    def add(self, result: Result | pb.JobResult, stem: str = "") -> list[Path]:
        """Write ``result``'s masks (stem: :func:`mask_stem` unless given); the paths written.

        Raises
        ------
        KeyError
            If the result has no label masks (nothing is written for it).
        """
        np = require_numpy("write_masks")
        import tifffile  # only here: the light client installs it with the extra [tiff]

        wrapped = result if isinstance(result, Result) else Result(result)
        masks = wrapped.label_masks()
        stem = stem or mask_stem(wrapped.message)
        if stem in self._first and stem not in self._repeated:
            self._repeated.add(stem)
            self._rename_first(stem)
        name = f"{stem}_{wrapped.job_id}" if stem in self._repeated else stem
        paths: list[Path] = []
        kinds: list[tuple[str, int]] = []
        for kind, mask in masks.items():
            path = self.folder / f"{name}_{kind}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, mask.astype(np.int32, copy=False), compression="zlib",
                             **tiff_resolution(wrapped.pixel_size_um))
            kinds.append((kind, len(self.written)))
            self.written.append(path)
            paths.append(path)
        if stem not in self._first:
            self._first[stem] = (wrapped.job_id, kinds)
        return paths

    def _rename_first(self, stem: str) -> None:
        """Give the files of the first result with ``stem`` its job id, now that it repeats."""
        job_id, kinds = self._first[stem]
        for kind, index in kinds:
            renamed = self.folder / f"{stem}_{job_id}_{kind}.tif"
            self.written[index].replace(renamed)
            self.written[index] = renamed


def mask_stem(result: pb.JobResult) -> str:
    """A safe relative file stem for a result's masks: its input name without an image suffix
    (folders kept, no '..' or absolute parts), else its job id."""
    parts = [part for part in PurePosixPath(result.input_name.replace("\\", "/")).parts
             if part not in ("", ".", "..", "/")]
    if parts and parts[-1].lower().endswith(_IMAGE_SUFFIXES):
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    parts = [part for part in parts if part]
    return "/".join(parts) if parts else result.job_id
