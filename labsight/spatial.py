"""Spot results in the scanpy/squidpy AnnData layout: per-spot obs, Visium images, filling an AnnData."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.visium import VisiumSpots, spatial_uns

if TYPE_CHECKING:
    import anndata
    import pandas as pd

EDGE = "edge"
"""Result tensor (spot-features): (N,) 1 where a spot's patch reached past the image and was padded."""

SPOT_EDGE_MODES = ("pad-constant", "pad-reflect", "pad-edge", "drop")
"""What becomes of a spot whose patch reaches past the image border (spot-features' ``spot_edge``)."""

FEATURES = "features"
"""The ``obsm`` key of LabSight's features."""


def add_result_obs(obs: pd.DataFrame, results: Sequence[pb.JobResult], table: str) -> None:
    """Add the per-row facts of ``results`` to ``obs`` (one row per table row, results stacked).

    ``obs["edge"]`` (bool) when every result flags its patches at the image
    border; one categorical column per job label (``JobResult.labels``), named
    ``label_<key>`` where the key is already a column; jobs without a label get "".
    """
    import pandas as pd

    counts = [len(result.tables[table].row_ids) for result in results]
    if all(EDGE in result.tensors for result in results):
        flags = [from_tensor(result.tensors[EDGE], EDGE).astype(bool) for result in results]
        if [len(flag) for flag in flags] == counts:
            obs[EDGE] = np.concatenate(flags)
    for key in sorted({key for result in results for key in result.labels}):
        values = np.repeat([result.labels.get(key, "") for result in results], counts)
        obs[f"label_{key}" if key in obs.columns else key] = pd.Categorical(values)


def add_visium(adata: anndata.AnnData, spots: VisiumSpots) -> None:
    """Give ``adata`` (rows keyed by barcode) what scanpy's ``read_visium`` gives.

    ``uns["spatial"][library_id]`` with the tissue images, scale factors and
    metadata, and ``in_tissue``, ``array_row``, ``array_col`` in ``obs``.

    Raises
    ------
    ValueError
        If no row of ``adata`` is a barcode of ``spots``.
    """
    index = {barcode: i for i, barcode in enumerate(spots.barcodes)}
    rows = np.array([index.get(name, -1) for name in adata.obs_names])
    if not np.any(rows >= 0):
        raise ValueError(f"--visium: none of the {adata.n_obs} spot ids is a barcode of "
                         f"library {spots.library_id!r} (e.g. {list(adata.obs_names[:3])})")
    found = rows >= 0
    for name, values in (("in_tissue", spots.in_tissue.astype(np.int64)),
                         ("array_row", spots.array_rows), ("array_col", spots.array_cols)):
        column = np.full(adata.n_obs, -1, np.int64)
        column[found] = values[rows[found]]
        adata.obs[name] = column
    adata.uns["spatial"] = spatial_uns(spots)


def fill_anndata(target: anndata.AnnData, features: anndata.AnnData) -> int:
    """Put the features of ``features`` into ``target`` by barcode, as squidpy's
    ``calculate_image_features`` does; ``target.X`` (e.g. gene counts) is kept.

    ``target.obsm["features"]`` gets one row per target row (NaN where the
    results have no such spot), ``uns["feature_columns"]`` and ``uns["provenance"]``
    the results', and the results' ``obs`` columns are added where ``target``
    lacks them. Returns the number of target rows that got features.

    Raises
    ------
    ValueError
        If no row of ``target`` is a spot of the results.
    """
    rows = features.obs_names.get_indexer(target.obs_names)
    found = rows >= 0
    if not found.any():
        raise ValueError(f"--into: none of its {target.n_obs} obs_names is a spot id of the "
                         f"results (e.g. {list(target.obs_names[:3])} vs "
                         f"{list(features.obs_names[:3])})")
    values = np.asarray(features.obsm[FEATURES], dtype=np.float64)
    filled = np.full((target.n_obs, values.shape[1]), np.nan)
    filled[found] = values[rows[found]]
    target.obsm[FEATURES] = filled
    target.uns["feature_columns"] = features.uns["feature_columns"]
    target.uns["provenance"] = features.uns["provenance"]
    for name in features.obs.columns:
        if name not in target.obs.columns:
            column = features.obs[name].reindex(target.obs_names)
            # A bool column with missing spots would turn into objects, which h5ad cannot hold.
            nullable = features.obs[name].dtype == bool
            target.obs[name] = (column.astype("boolean") if nullable else column).array
    return int(found.sum())
