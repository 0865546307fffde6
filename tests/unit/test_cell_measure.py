"""The cells table of services/segmentation/measure.py against answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import ellipse
from skimage.measure import regionprops_table

from labsight.columns import cell_column_names, pipeline_tables
from services.segmentation.measure import measure_cells


def _two_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell 3: rows 0-3 x cols 0-4 (20 px) with a 2x2 nucleus; cell 9: rows 5-6 x cols 6-9
    (8 px) without a nucleus. Channel c holds c + 1 everywhere except red = 10 in cell 3's
    nucleus."""
    cells = np.zeros((8, 10), np.int32)
    cells[0:4, 0:5] = 3
    cells[5:7, 6:10] = 9
    nuclei = np.zeros_like(cells)
    nuclei[1:3, 1:3] = 3
    channels = np.ones((8, 10, 4), np.uint16) * np.array([1, 2, 3, 4], np.uint16)
    channels[1:3, 1:3, 0] = 10
    return nuclei, cells, channels


def _column(table, name: str) -> list[float]:
    return table.values[:, table.columns.index(name)].tolist()


def test_areas_centroids_and_boxes_are_the_hand_counted_ones() -> None:
    nuclei, cells, channels = _two_cells()
    table = measure_cells(nuclei, cells, channels, pixel_size_um=0.5)
    assert table.labels.tolist() == [3, 9]
    assert _column(table, "label") == [3, 9]
    assert _column(table, "area_px") == [20, 8]
    assert _column(table, "area_um2") == [5.0, 2.0]
    assert _column(table, "nucleus_area_px") == [4, 0]
    assert _column(table, "nucleus_area_um2") == [1.0, 0.0]
    assert _column(table, "nucleus_cell_area_ratio") == [0.2, 0.0]
    assert _column(table, "centroid_x") == [2.0, 7.5]
    assert _column(table, "centroid_y") == [1.5, 5.5]
    assert [_column(table, f"bbox_{e}") for e in ("min_x", "min_y", "max_x", "max_y")] == [
        [0, 6], [0, 5], [5, 10], [4, 7]]


def test_intensities_are_means_and_sums_over_each_cell_and_its_nucleus() -> None:
    nuclei, cells, channels = _two_cells()
    table = measure_cells(nuclei, cells, channels, pixel_size_um=1.0)
    # cell 3: 16 pixels of red 1 and 4 of red 10
    assert _column(table, "integrated_red") == [16 + 40, 8]
    assert _column(table, "mean_red") == [56 / 20, 1.0]
    assert _column(table, "mean_yellow") == [4.0, 4.0]
    assert _column(table, "integrated_green") == [40.0, 16.0]
    assert _column(table, "nucleus_mean_red")[0] == 10.0
    assert _column(table, "nucleus_mean_blue")[0] == 3.0
    assert np.isnan(_column(table, "nucleus_mean_red")[1])  # cell 9 has no nucleus
    # outside cell 3's nucleus: 16 pixels of red 1; cell 9 is all cytoplasm
    assert _column(table, "cytoplasm_mean_red") == [1.0, 1.0]
    assert _column(table, "cytoplasm_mean_green") == [2.0, 2.0]
    # cell 3's red: 16 ones and 4 tens; an even channel has no spread
    assert _column(table, "std_red") == pytest.approx([np.std([1] * 16 + [10] * 4), 0.0])
    assert _column(table, "std_green") == [0.0, 0.0]


def test_intensity_spreads_equal_numpys_over_each_cell() -> None:
    rng = np.random.default_rng(7)
    cells = rng.integers(0, 5, (40, 50)).astype(np.int32)
    channels = rng.integers(0, 65536, (40, 50, 4)).astype(np.uint16)
    table = measure_cells(cells, cells, channels, pixel_size_um=1.0)
    for c, channel in enumerate(("red", "green", "blue", "yellow")):
        expected = [np.std(channels[..., c][cells == label].astype(np.float64)) for label in range(1, 5)]
        np.testing.assert_allclose(_column(table, f"std_{channel}"), expected, rtol=1e-9)


def test_labels_of_any_size_and_foreign_nuclei() -> None:
    nuclei, cells, channels = _two_cells()
    big = np.where(cells > 0, cells.astype(np.int64) * 10**9, 0)
    nuclei_big = np.where(nuclei > 0, nuclei.astype(np.int64) * 10**9, 0)
    nuclei_big[7, 0] = 123  # a nucleus pixel of no cell is ignored
    table = measure_cells(nuclei_big, big, channels, pixel_size_um=1.0)
    assert table.labels.tolist() == [3 * 10**9, 9 * 10**9]
    assert _column(table, "nucleus_area_px") == [4, 0]
    assert _column(table, "area_px") == [20, 8]


def test_no_cell_gives_an_empty_table_with_every_column() -> None:
    empty = np.zeros((5, 6), np.int32)
    table = measure_cells(empty, empty, np.zeros((5, 6, 4), np.uint8), pixel_size_um=0.08)
    assert table.values.shape == (0, len(cell_column_names()))
    assert table.columns == cell_column_names()


def test_the_columns_are_the_documented_ones() -> None:
    documented = [name for name, _ in pipeline_tables("cells")[0].columns if name != "id"]
    nuclei, cells, channels = _two_cells()
    assert measure_cells(nuclei, cells, channels, pixel_size_um=1.0).columns == documented


@pytest.mark.parametrize(("nuclei_shape", "channels_shape", "size", "field"), [
    ((8, 10), (8, 10, 3), 1.0, "channels"),
    ((8, 9), (8, 10, 4), 1.0, "nucleus_labels"),
    ((8, 10), (8, 10, 4), 0.0, "pixel_size_um"),
])
def test_bad_inputs_name_the_argument(nuclei_shape: tuple[int, ...], channels_shape: tuple[int, ...],
                                      size: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        measure_cells(np.zeros(nuclei_shape, np.int32), np.zeros((8, 10), np.int32),
                      np.zeros(channels_shape, np.uint8), pixel_size_um=size)


def test_a_generated_field_measures_as_scikit_image_does() -> None:
    """Many cells of irregular shapes and 12-bit intensities: areas, centroids, boxes and
    intensities equal scikit-image's regionprops (the nuclei measured on their own labels)."""
    from skimage.measure import regionprops_table
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(5)
    seeds = np.zeros((200, 240), np.int32)
    seeds[rng.integers(0, 200, 30), rng.integers(0, 240, 30)] = np.arange(1, 31)
    nuclei = expand_labels(seeds, 3)
    cells = expand_labels(nuclei, 9)
    channels = rng.integers(0, 4096, (200, 240, 4), dtype=np.uint16)
    table = measure_cells(nuclei, cells, channels, pixel_size_um=0.25)
    expected = regionprops_table(cells, channels, properties=(
        "label", "area", "centroid", "bbox", "intensity_mean"))
    assert _column(table, "label") == expected["label"].tolist()
    assert _column(table, "area_px") == expected["area"].tolist()
    assert np.allclose(_column(table, "centroid_x"), expected["centroid-1"])
    assert np.allclose(_column(table, "centroid_y"), expected["centroid-0"])
    assert _column(table, "bbox_min_x") == expected["bbox-1"].tolist()
    assert _column(table, "bbox_max_y") == expected["bbox-2"].tolist()
    for c, name in enumerate(("red", "green", "blue", "yellow")):
        assert np.allclose(_column(table, f"mean_{name}"), expected[f"intensity_mean-{c}"])
        assert np.allclose(_column(table, f"integrated_{name}"),
                           expected[f"intensity_mean-{c}"] * expected["area"])
    in_nuclei = regionprops_table(nuclei, channels, properties=("label", "area", "intensity_mean"))
    by_label = dict(zip(in_nuclei["label"].tolist(), range(len(in_nuclei["label"])), strict=True))
    rows = [by_label[int(label)] for label in table.labels]
    assert _column(table, "nucleus_area_px") == in_nuclei["area"][rows].tolist()
    assert np.allclose(_column(table, "nucleus_mean_yellow"), in_nuclei["intensity_mean-3"][rows])


def test_shapes_equal_scikit_images_regionprops_in_micrometres() -> None:
    cells = np.zeros((120, 160), np.int32)
    nuclei = np.zeros_like(cells)
    for label, (r, c, a, b, turn) in enumerate([(30, 40, 12, 30, 0.3), (80, 50, 25, 9, -1.0),
                                                (60, 120, 20, 20, 0.0)], start=1):
        rr, cc = ellipse(r, c, a, b, rotation=turn, shape=cells.shape)
        cells[rr, cc] = label
        if label != 3:  # cell 3 has no nucleus
            rr, cc = ellipse(r, c, a / 3, b / 2, rotation=turn, shape=cells.shape)
            nuclei[rr, cc] = label
    table = measure_cells(nuclei, cells, np.zeros((*cells.shape, 4), np.uint8), pixel_size_um=0.5)
    for mask, prefix, rows in ((cells, "", [0, 1, 2]), (nuclei, "nucleus_", [0, 1])):
        truth = regionprops_table(mask, properties=("perimeter", "major_axis_length",
                                                    "minor_axis_length", "eccentricity", "area"))
        got = np.array([_column(table, f"{prefix}{name}") for name in (
            "perimeter_um", "major_axis_um", "minor_axis_um", "eccentricity", "form_factor")])[:, rows]
        np.testing.assert_allclose(got[0], truth["perimeter"] * 0.5)
        np.testing.assert_allclose(got[1], truth["major_axis_length"] * 0.5)
        np.testing.assert_allclose(got[2], truth["minor_axis_length"] * 0.5)
        np.testing.assert_allclose(got[3], truth["eccentricity"], atol=1e-6)
        np.testing.assert_allclose(got[4], 4 * np.pi * truth["area"] / truth["perimeter"] ** 2)
    for name in ("nucleus_perimeter_um", "nucleus_form_factor", "nucleus_major_axis_um",
                 "nucleus_eccentricity"):
        assert np.isnan(_column(table, name)[2])  # no nucleus: empty
    # drawn turned 0.3 rad and, the long axis vertical, -1 rad, counter-clockwise as shown
    orientation = _column(table, "orientation_deg")
    assert orientation[0] == pytest.approx(np.degrees(0.3), abs=1.0)
    assert orientation[1] == pytest.approx(90 - np.degrees(1.0), abs=1.0)
    assert _column(table, "eccentricity")[2] < 0.1 and 0.85 < _column(table, "form_factor")[2] < 1.0


@pytest.mark.parametrize(("rows", "cols", "degrees"), [
    (slice(10, 12), slice(4, 20), 0.0),      # a horizontal bar
    (slice(2, 22), slice(10, 12), 90.0),     # a vertical one
])
def test_orientation_of_bars_along_the_axes(rows: slice, cols: slice, degrees: float) -> None:
    cells = np.zeros((24, 24), np.int32)
    cells[rows, cols] = 1
    table = measure_cells(cells, cells, np.zeros((24, 24, 4), np.uint8), pixel_size_um=1.0)
    assert _column(table, "orientation_deg")[0] == pytest.approx(degrees)
    diagonal = np.eye(24, dtype=np.int32)[::-1]  # from bottom left to top right as shown
    table = measure_cells(diagonal, diagonal, np.zeros((24, 24, 4), np.uint8), pixel_size_um=1.0)
    assert _column(table, "orientation_deg")[0] == pytest.approx(45.0)
    assert _column(table, "minor_axis_um")[0] == pytest.approx(0.0, abs=1e-6)


def test_channels_named_otherwise_are_measured_under_their_names() -> None:
    nuclei, cells, channels = _two_cells()
    hpa = measure_cells(nuclei, cells, channels, pixel_size_um=0.5)
    # one channel, and two of the four in another order: the same numbers under other names
    grey = measure_cells(nuclei, cells, channels[..., :1], pixel_size_um=0.5, channel_names=("dapi",))
    assert grey.columns == cell_column_names(("dapi",))
    for kind in ("mean", "integrated", "std", "nucleus_mean", "cytoplasm_mean"):
        assert np.array_equal(_column(grey, f"{kind}_dapi"), _column(hpa, f"{kind}_red"),
                              equal_nan=True)
    pair = measure_cells(nuclei, cells, channels[..., [3, 1]], pixel_size_um=0.5,
                         channel_names=("er", "gfp"))
    assert _column(pair, "mean_er") == _column(hpa, "mean_yellow")
    assert _column(pair, "integrated_gfp") == _column(hpa, "integrated_green")
    shared = hpa.columns.index("mean_red")
    assert np.array_equal(pair.values[:, :shared], hpa.values[:, :shared], equal_nan=True)
    with pytest.raises(ValueError, match=r"channels: expected \(H, W, 3\) for 3 channel names"):
        measure_cells(nuclei, cells, channels[..., :2], pixel_size_um=0.5,
                      channel_names=("a", "b", "c"))
