"""Figures of job results to look at: fractal curves of images, deep-feature embeddings of rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from labsight.export import combined_table
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb

MAX_LEGEND_ENTRIES = 12
"""Curves or groups beyond this many are drawn without a legend."""

LOG_TICKS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500)
"""Box sides labelled on the log-scaled axis, where they fall within the sides drawn."""


def plot_results(
    results: Sequence[pb.JobResult],
    path: Path,
    table: str = "features",
    class_labels: Sequence[str] | None = None,
) -> str:
    """Draw ``results`` into an image file (PNG, PDF or SVG by its suffix); returns what was drawn.

    Fractal results give their lacunarity and box-count curves with the fitted
    dimension; any other results give a PCA of the rows of ``table``, coloured
    by ``class_labels`` (one per result) or by result, plus a spatial map of the
    first component when one result's rows carry coordinates (spot-features).

    Raises
    ------
    ValueError
        No results, a missing table, or fewer than two rows for an embedding.
    """
    if not results:
        raise ValueError("no results to plot")
    if all(result.pipeline == "fractal" for result in results):
        figure, kind = fractal_figure(results), "fractal"
    else:
        figure, kind = features_figure(results, table, class_labels), "features"
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return kind


def fractal_figure(results: Sequence[pb.JobResult]) -> Figure:
    """Lacunarity Λ(r) and box counts N(r) on log-log axes with each fitted dimension's line."""
    figure = Figure(figsize=(11, 4.5))
    lacunarity_axes, count_axes = figure.subplots(1, 2)
    for result in results:
        name = result.input_name or result.job_id
        sides = from_tensor(result.tensors["box_sizes"], "box_sizes").astype(np.float64)
        lacunarity_axes.plot(sides, from_tensor(result.tensors["lacunarity"], "lacunarity"),
                             marker="o", markersize=3, label=name)
        counts = from_tensor(result.tensors["box_count"], "box_count").astype(np.float64)
        dimension = result.scalars["fractal_dimension"]
        (points,) = count_axes.loglog(sides, counts, "o", markersize=3,
                                      label=f"{name}: D = {dimension:.3f}")
        # The least-squares line of log N against log r has slope -D and passes the means.
        log_sides, log_counts = np.log(sides), np.log(counts)
        fitted = np.exp(log_counts.mean() - dimension * (log_sides - log_sides.mean()))
        count_axes.loglog(sides, fitted, "-", color=points.get_color(), linewidth=1)
    lacunarity_axes.set(xlabel="box side r (pixels)", ylabel="lacunarity Λ(r)", title="Lacunarity")
    count_axes.set(xlabel="box side r (pixels)", ylabel="box count N(r)",
                   title="Box counts and fitted fractal dimension")
    all_sides = np.concatenate([from_tensor(r.tensors["box_sizes"], "box_sizes") for r in results])
    count_axes.set_xticks([tick for tick in LOG_TICKS if all_sides.min() <= tick <= all_sides.max()])
    count_axes.xaxis.set_major_formatter(ScalarFormatter())  # r = 3, 10, 20, not 3×10⁰
    count_axes.xaxis.set_minor_formatter(NullFormatter())
    if len(results) <= MAX_LEGEND_ENTRIES:
        lacunarity_axes.legend(fontsize="small")
        count_axes.legend(fontsize="small")
    return figure


def features_figure(
    results: Sequence[pb.JobResult], table: str, class_labels: Sequence[str] | None = None
) -> Figure:
    """PCA of the table's rows; for one result with coordinates, also PC1 over its image."""
    _, _, values, coordinates = combined_table(results, table)
    if len(results) > 1:
        coordinates = None  # spots of several images do not share one map
    if len(values) < 2:
        raise ValueError(f"table {table!r}: an embedding needs at least 2 rows, got {len(values)}")
    scores, explained = principal_components(values, 2)
    groups = _row_groups(results, table, class_labels)
    panels = 2 if coordinates is not None else 1
    figure = Figure(figsize=(5.5 * panels, 4.8))
    axes = np.atleast_1d(figure.subplots(1, panels))
    embedding = axes[0]
    if groups is None:
        embedding.scatter(scores[:, 0], scores[:, 1], s=8)
    else:
        for group in dict.fromkeys(groups):
            rows = [i for i, name in enumerate(groups) if name == group]
            embedding.scatter(scores[rows, 0], scores[rows, 1], s=8, label=group)
        if len(set(groups)) <= MAX_LEGEND_ENTRIES:
            embedding.legend(fontsize="small", markerscale=2)
    embedding.set(xlabel=f"PC1 ({explained[0]:.0%} of variance)",
                  ylabel=f"PC2 ({explained[1]:.0%} of variance)",
                  title=f"PCA of {values.shape[1]} {table} columns, {len(values)} rows")
    if coordinates is not None:
        spatial = axes[1]
        points = spatial.scatter(coordinates[:, 0], coordinates[:, 1], c=scores[:, 0], s=12,
                                 cmap="viridis")
        spatial.set(xlabel="x (pixels)", ylabel="y (pixels)", title="PC1 over the image",
                    aspect="equal")
        spatial.invert_yaxis()  # image rows grow downwards
        figure.colorbar(points, ax=spatial, label="PC1")
    return figure


def principal_components(values: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the first ``count`` principal components of the rows, and each one's share of variance.

    Components beyond min(rows, columns) come out as zeros, with a share of 0.
    """
    centred = values - values.mean(axis=0)
    left, singular, _ = np.linalg.svd(centred, full_matrices=False)
    scores = np.zeros((len(values), count))
    shares = np.zeros(count)
    kept = min(count, len(singular))
    scores[:, :kept] = left[:, :kept] * singular[:kept]
    total = float(np.sum(singular**2))
    if total > 0:
        shares[:kept] = singular[:kept] ** 2 / total
    return scores, shares


def _row_groups(
    results: Sequence[pb.JobResult], table: str, class_labels: Sequence[str] | None
) -> list[str] | None:
    """A group name per row: its result's class label, else its result's input (several results)."""
    if class_labels is None and len(results) == 1:
        return None
    names = class_labels if class_labels is not None else [
        result.input_name or result.job_id for result in results
    ]
    return [name for result, name in zip(results, names, strict=True)
            for _ in result.tables[table].row_ids]
