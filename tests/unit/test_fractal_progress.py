"""The fractal core reports progress per band of box-centre rows, can be stopped between bands,
and gives exactly the numbers of one pass over every row."""

from __future__ import annotations

import numpy as np
import pytest

from services.features import fractal
from services.features.fractal import gliding_box, percolation

SIZES = (3, 5, 9, 15)


class Stop(Exception):
    """Raised by a progress callback to stop the computation."""


def _image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (97, 83, 3), dtype=np.uint8)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_banded_results_equal_one_pass(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _image()
    # The numba gliding box runs in bands only when there is progress to report.
    banded_boxes = gliding_box(image, SIZES, backend=backend, progress=lambda done, rows: None)  # type: ignore[arg-type]
    banded_perc = percolation(image, SIZES, backend=backend)  # type: ignore[arg-type]
    monkeypatch.setattr(fractal, "PROGRESS_BANDS", 1)
    whole_boxes = gliding_box(image, SIZES, backend=backend)  # type: ignore[arg-type]
    whole_perc = percolation(image, SIZES, backend=backend)  # type: ignore[arg-type]
    for r in SIZES:
        assert np.array_equal(banded_boxes.probability[r], whole_boxes.probability[r])
    assert np.array_equal(banded_boxes.lacunarity, whole_boxes.lacunarity)
    assert banded_boxes.fractal_dimension == whole_boxes.fractal_dimension
    for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
        assert np.array_equal(getattr(banded_perc, name), getattr(whole_perc, name))


def test_progress_rises_band_by_band_to_every_row() -> None:
    seen: list[tuple[int, int]] = []
    gliding_box(_image(), SIZES, backend="numba", progress=lambda done, rows: seen.append((done, rows)))
    rows = 97 - 2  # centres of the smallest box (3) lie one row in from each edge
    assert len(seen) == 32  # 95 rows in bands of 3 (PROGRESS_BANDS = 32 at most)
    assert all(total == rows for _, total in seen)
    done = [d for d, _ in seen]
    assert done == sorted(set(done)) and done[-1] == rows


def test_an_exception_from_progress_stops_the_computation() -> None:
    calls = []

    def stop_after_two(done: int, rows: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        percolation(_image(), SIZES, backend="numba", progress=stop_after_two)
    assert len(calls) == 2
