"""Figures of results: fractal curves and feature embeddings, written as real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labsight.plots import plot_results, principal_components
from labsight.tables import feature_table
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb

RNG = np.random.default_rng(3)


def _fractal(name: str, dimension: float) -> pb.JobResult:
    sides = np.arange(3, 42, 2)
    result = pb.JobResult(pipeline="fractal", job_id=name, input_name=f"{name}.png")
    result.tensors["box_sizes"].CopyFrom(to_tensor(sides.astype(np.int32)))
    result.tensors["lacunarity"].CopyFrom(to_tensor(1.0 / sides))
    result.tensors["box_count"].CopyFrom(to_tensor(1e6 * sides.astype(np.float64) ** -dimension))
    result.scalars["fractal_dimension"] = dimension
    return result


def _spots(name: str, rows: int = 30) -> pb.JobResult:
    result = pb.JobResult(pipeline="spot-features", job_id=name, input_name=name)
    values = RNG.normal(size=(rows, 8))
    result.tables["features"].CopyFrom(
        feature_table([f"f{i}" for i in range(8)], values, [str(i) for i in range(rows)])
    )
    result.tensors["coordinates"].CopyFrom(to_tensor(RNG.uniform(0, 500, (rows, 2))))
    return result


def _drawn(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert pixels.std() > 5  # not a blank canvas
    return pixels


def test_fractal_results_give_curves(tmp_path: Path) -> None:
    path = tmp_path / "fractal.png"
    assert plot_results([_fractal("a", 1.7), _fractal("b", 1.9)], path) == "fractal"
    _drawn(path)


def test_spot_features_give_an_embedding_and_a_spatial_map(tmp_path: Path) -> None:
    single, grouped = tmp_path / "one.png", tmp_path / "two.svg"
    assert plot_results([_spots("s1")], single) == "features"
    wide = _drawn(single)
    assert wide.shape[1] > 1.5 * wide.shape[0]  # two panels side by side
    plot_results([_spots("s1"), _spots("s2")], grouped, class_labels=["tumour", "normal"])
    svg = grouped.read_text()
    assert "tumour" in svg and "normal" in svg
    assert "PC1 over the image" not in svg  # spots of two images share no map


def test_too_few_rows_or_no_results_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="an embedding needs at least 2 rows, got 1"):
        plot_results([_spots("s", rows=1)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no results to plot"):
        plot_results([], tmp_path / "x.png")


def test_principal_components_follow_the_largest_spread() -> None:
    along = np.linspace(-5, 5, 50)
    values = np.column_stack([along, 0.1 * RNG.normal(size=50), np.zeros(50)])
    scores, shares = principal_components(values, 2)
    assert abs(np.corrcoef(scores[:, 0], along)[0, 1]) > 0.999
    assert shares[0] > 0.99 and shares.sum() <= 1.0 + 1e-12
    line_scores, line_shares = principal_components(np.array([[0.0, 0.0], [1.0, 1.0]]), 3)
    np.testing.assert_allclose(line_shares, [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(line_scores[:, 1:], 0.0, atol=1e-12)
