"""Figures of results, checked through their artists and their rendered pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection, PolyCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from PIL import Image

from labsight.plots import (
    PlotOptions,
    build_figure,
    keep_for_several,
    load_image,
    plot_results,
    principal_components,
    read_groups,
    tissue,
)
from labsight.plots.groups import group_colours
from labsight.plots.plate import well_of
from labsight.plots.tissue import cell_outlines, display_pixels
from labsight.tables import feature_table
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb

RNG = np.random.default_rng(3)


def _fractal(name: str, dimension: float) -> pb.JobResult:
    sides = np.arange(3, 42, 2)
    result = pb.JobResult(pipeline="fractal", job_id=f"job-{name}", input_name=name)
    result.tensors["box_sizes"].CopyFrom(to_tensor(sides.astype(np.int32)))
    result.tensors["lacunarity"].CopyFrom(to_tensor(1.0 / sides))
    result.tensors["box_count"].CopyFrom(to_tensor(1e6 * sides.astype(np.float64) ** -dimension))
    result.scalars["fractal_dimension"] = dimension
    result.tables["fractal"].CopyFrom(
        feature_table(["fractal_dimension", "lacunarity_r3"], np.array([[dimension, 1 / 3]]), [name])
    )
    return result


def _spots(name: str, centres: np.ndarray, values: np.ndarray | None = None) -> pb.JobResult:
    result = pb.JobResult(pipeline="spot-features", job_id=name, input_name=f"{name}.tif")
    values = RNG.normal(size=(len(centres), 8)) if values is None else values
    result.tables["features"].CopyFrom(feature_table(
        [f"f{i}" for i in range(values.shape[1])], values, [str(i) for i in range(len(centres))]
    ))
    result.tensors["coordinates"].CopyFrom(to_tensor(centres))
    return result


def _rendered(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float64) / 255


def _pixel(figure: Figure, pixels: np.ndarray, axes: object, x: float, y: float) -> np.ndarray:
    """The rendered colour at data point (x, y) of ``axes`` (display y counts from the bottom)."""
    column, row = axes.transData.transform((x, y))  # type: ignore[attr-defined]
    return pixels[pixels.shape[0] - 1 - int(round(row)), int(round(column))]


def _legend_texts(axes: object) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]  # type: ignore[attr-defined]


def test_spots_are_circles_of_their_real_diameter_over_the_tissue(tmp_path: Path) -> None:
    centres = np.array([[60.0, 50.0], [200.0, 120.0], [330.0, 230.0]])
    values = np.column_stack([[0.0, 5.0, 10.0], RNG.normal(size=3)])
    tissue_image = np.full((300, 400, 3), 128, np.uint8)
    options = PlotOptions(image=tissue_image, spot_diameter=40, colour_by="f0")
    figure, kind = build_figure([_spots("s", centres, values)], options)
    assert kind == "tissue"
    tissue = figure.axes[1]
    (spots,) = [c for c in tissue.collections if isinstance(c, EllipseCollection)]
    np.testing.assert_allclose(spots.get_widths() / 2, 20.0)
    np.testing.assert_allclose(spots.get_heights() / 2, 20.0)
    np.testing.assert_allclose(spots.get_offsets(), centres)
    np.testing.assert_allclose(spots.get_array(), [0.0, 5.0, 10.0])
    (image,) = tissue.images
    assert image.get_extent() == [-0.5, 399.5, 299.5, -0.5]
    # Shown: the spots' region with a diameter's margin, within the image.
    np.testing.assert_allclose([*tissue.get_xlim(), *tissue.get_ylim()], [20, 370, 270, 10])
    # Rendered: a spot's colour at its centre and just inside its rim, the grey tissue just outside.
    pixels = _rendered(figure)
    grey = np.full(3, 128 / 255)
    for (x, y), value in zip(centres, [0.0, 5.0, 10.0], strict=True):
        spot_colour = 0.85 * np.array(colormaps["viridis"](value / 10)[:3]) + 0.15 * grey
        for dx in (0.0, 16.0, -16.0):
            np.testing.assert_allclose(_pixel(figure, pixels, tissue, x + dx, y), spot_colour, atol=0.03)
        np.testing.assert_allclose(_pixel(figure, pixels, tissue, x + 24, y), grey, atol=0.03)
        np.testing.assert_allclose(_pixel(figure, pixels, tissue, x, y - 24), grey, atol=0.03)
    assert plot_results([_spots("s", centres, values)], tmp_path / "spots.png", options) == "tissue"
    with Image.open(tmp_path / "spots.png") as written:
        assert written.size[0] > 1500


def test_spots_without_an_image_still_have_their_diameter_and_say_so() -> None:
    centres = RNG.uniform(100, 900, (50, 2))
    figure, _ = build_figure([_spots("s", centres)], PlotOptions(spot_diameter=55.5))
    tissue = figure.axes[1]
    (spots,) = [c for c in tissue.collections if isinstance(c, EllipseCollection)]
    np.testing.assert_allclose(spots.get_widths(), 55.5)
    assert not tissue.images and "(no image given)" in tissue.get_title()
    assert tissue.get_ylim()[0] > tissue.get_ylim()[1]  # image rows grow downwards


def test_spots_padded_at_the_image_edge_are_ringed_and_counted() -> None:
    centres = np.array([[10.0, 50.0], [100.0, 100.0], [190.0, 150.0]])
    result = _spots("s", centres)
    result.tensors["edge"].CopyFrom(to_tensor(np.array([1, 0, 1], np.uint8)))
    figure, _ = build_figure([result], PlotOptions(image=np.zeros((160, 200), np.uint8),
                                                   spot_diameter=30))
    tissue = figure.axes[1]
    spots, rings = [c for c in tissue.collections if isinstance(c, EllipseCollection)]
    np.testing.assert_allclose(rings.get_offsets(), centres[[0, 2]])
    np.testing.assert_allclose(rings.get_widths(), 30.0)
    assert len(rings.get_facecolors()) == 0 and rings.get_linestyle()[0][1] is not None  # dashed
    assert _legend_texts(tissue) == ["2 spots padded at the image edge"]


def test_spots_coloured_by_groups_get_one_distinct_colour_and_legend_entry_each() -> None:
    centres = RNG.uniform(50, 250, (12, 2))
    clusters = {str(i): f"cluster {i % 3}" for i in range(12)}
    figure, _ = build_figure([_spots("s", centres)], PlotOptions(
        image=np.zeros((300, 300), np.uint16), spot_diameter=10, group_map=clusters))
    embedding, tissue = figure.axes[:2]
    (spots,) = [c for c in tissue.collections if isinstance(c, EllipseCollection)]
    colours = spots.get_facecolors()
    expected = group_colours(3)
    for i in range(12):
        np.testing.assert_allclose(colours[i][:3], expected[i % 3][:3])
    assert _legend_texts(embedding) == ["cluster 0 (n=4)", "cluster 1 (n=4)", "cluster 2 (n=4)"]
    with pytest.raises(ValueError, match="1 of 12 rows have no group"):
        build_figure([_spots("s", centres)], PlotOptions(
            spot_diameter=10, group_map={k: v for k, v in clusters.items() if k != "7"}))


def test_cells_are_outlined_in_their_value_colour_over_the_image() -> None:
    mask = np.zeros((120, 160), np.int32)
    mask[10:50, 10:60] = 3
    mask[60:110, 80:150] = 8
    mask[20:40, 100:130] = 11  # a cell without a row: drawn grey
    values = np.array([[1.0, 0.0], [4.0, 1.0]])
    result = _spots("c", np.array([[35.0, 30.0], [115.0, 85.0]]), values)
    result.tables["features"].row_ids[:] = ["3", "8"]
    image = RNG.integers(0, 4096, (120, 160), dtype=np.uint16)  # 12-bit data
    figure, kind = build_figure([result], PlotOptions(image=image, cell_labels=mask, colour_by="f0"))
    assert kind == "tissue"
    tissue = figure.axes[1]
    shown, overlay = tissue.images
    assert shown.get_extent() == overlay.get_extent() == [-0.5, 159.5, 119.5, -0.5]
    rgba = overlay.get_array()
    norm = Normalize(1.0, 4.0)
    np.testing.assert_allclose(rgba[10, 30], colormaps["viridis"](norm(1.0)))  # top edge of cell 3
    np.testing.assert_allclose(rgba[80, 149], colormaps["viridis"](norm(4.0)))  # right edge of 8
    np.testing.assert_allclose(rgba[20, 110], [0.75, 0.75, 0.75, 1.0])  # cell 11: no value
    assert rgba[30, 30, 3] == 0 and rgba[5, 5, 3] == 0  # inside a cell and background: see-through
    assert shown.get_array().max() == pytest.approx(1.0)  # 12-bit shown stretched, not black


def test_large_images_and_masks_are_shown_shrunk_over_their_full_extent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tissue, "MAX_DISPLAY_SIDE", 50)
    mask = np.zeros((120, 160), np.uint32)
    mask[20:100, 20:100] = 4_000_000_000  # label values far beyond any lookup table
    result = _spots("c", np.array([[60.0, 60.0], [0.0, 0.0]]), np.array([[1.0], [2.0]]))
    result.tables["features"].row_ids[:] = ["4000000000", "7"]
    image = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    figure, _ = build_figure([result], PlotOptions(image=image, cell_labels=mask, colour_by="f0"))
    shown, overlay = figure.axes[1].images
    assert shown.get_array().shape == (30, 40, 3) and overlay.get_array().shape == (30, 40, 4)
    assert shown.get_extent() == overlay.get_extent() == [-0.5, 159.5, 119.5, -0.5]
    np.testing.assert_allclose(overlay.get_array()[5, 10], colormaps["viridis"](0.0), atol=1e-6)


def test_cell_outlines_are_inner_boundaries_thickened_for_large_masks() -> None:
    mask = np.zeros((20, 20), np.int32)
    mask[5:15, 5:10], mask[5:15, 10:15] = 1, 2
    outlines = cell_outlines(mask)
    assert outlines[5, 7] and outlines[9, 9] and outlines[9, 10] and not outlines[9, 7]
    assert not outlines[4, 7]  # background is never an outline
    big = np.zeros((3000, 3000), np.int32)
    big[1000:2000, 1000:2000] = 1
    thick = cell_outlines(big)
    assert thick[1500, 1000:1003].all() and not thick[1500, 1004]  # 2 px more, inwards
    with pytest.raises(ValueError, match="2-D integer label image"):
        cell_outlines(mask.astype(np.float32))


def test_images_are_read_as_their_job_read_them(tmp_path: Path) -> None:
    stack = RNG.integers(0, 4096, (3, 40, 50), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    np.testing.assert_array_equal(load_image(path, "--image", read={"plane": "1"}), stack[1])
    np.testing.assert_array_equal(load_image(path, "--image", read={"z_project": "max",
                                                                    "model": "x"}), stack.max(0))
    with pytest.raises(ValueError, match="--image .*stack.tif"):
        load_image(path, "--image")  # a stack without a choice, as at submit
    mask = np.zeros((40, 50), np.int32)
    mask[5:9, 5:9] = 70000
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    np.testing.assert_array_equal(load_image(tmp_path / "mask.tif", "--cell-labels", labels=True), mask)


def test_display_stretches_high_bit_depth_and_keeps_8_bit() -> None:
    eight = RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(display_pixels(eight), eight)
    twelve = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 40)
    stretched = display_pixels(twelve)
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    assert display_pixels(np.zeros((4, 4, 5), np.uint16)).shape == (4, 4)  # first channel


def test_many_fractal_images_are_a_median_band_per_group_with_a_legend(tmp_path: Path) -> None:
    results = [_fractal(f"img{i}", 1.5 + 0.1 * (i % 3) + 0.01 * i) for i in range(48)]
    groups = [["control", "drug A", "drug B"][i % 3] for i in range(48)]
    figure, kind = build_figure(results, PlotOptions(groups=groups))
    lacunarity, counts = figure.axes
    assert kind == "curves"
    texts = _legend_texts(counts)
    assert [text.split(" (")[0] for text in texts] == ["control", "drug A", "drug B"]
    assert all("(n=16)" in text for text in texts)
    for axes in (lacunarity, counts):
        bands = [c for c in axes.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 3
        colours = {tuple(np.round(band.get_facecolor()[0][:3], 3)) for band in bands}
        assert len(colours) == 3
    # The median curve of a group is the median of its members' curves.
    control = [r for r, g in zip(results, groups, strict=True) if g == "control"]
    median = np.median([1e6 * np.arange(3, 42, 2.0) ** -r.scalars["fractal_dimension"]
                        for r in control], axis=0)
    np.testing.assert_allclose(counts.get_lines()[0].get_ydata(), median)
    ungrouped, _ = build_figure(results, PlotOptions())
    assert _legend_texts(ungrouped.axes[1])[0].startswith("all images (n=48): D = ")
    assert len([c for c in ungrouped.axes[1].collections if isinstance(c, PolyCollection)]) == 1
    plot_results(results, tmp_path / "curves.png", PlotOptions(groups=groups))


def test_the_fitted_line_follows_the_fitted_range_and_skips_empty_counts() -> None:
    result = _fractal("img.png", 1.8)
    result.scalars["fractal_dimension_r_min"], result.scalars["fractal_dimension_r_max"] = 5, 21
    figure, _ = build_figure([result], PlotOptions())
    curve, fit = figure.axes[1].get_lines()
    np.testing.assert_array_equal(fit.get_xdata(), np.arange(5, 22, 2))
    np.testing.assert_allclose(fit.get_ydata(), 1e6 * np.arange(5, 22, 2.0) ** -1.8)
    blank = _fractal("blank.png", 0.0)
    blank.tensors["box_count"].CopyFrom(to_tensor(np.zeros(20)))
    with np.errstate(all="raise"), pytest.warns(UserWarning, match="cannot be log-scaled"):
        lines = build_figure([blank], PlotOptions())[0].axes[1].get_lines()
    assert len(lines) == 1  # the counts, and no fitted line through nothing


def _tiles(name: str, dimensions: list[float]) -> pb.JobResult:
    """A fractal tile-stack result as the pipeline writes it: a row per tile, stacked curves."""
    sides = np.arange(3, 42, 2)
    result = pb.JobResult(pipeline="fractal", job_id=f"job-{name}", input_name=name)
    result.tensors["box_sizes"].CopyFrom(to_tensor(sides.astype(np.int32)))
    result.tensors["lacunarity"].CopyFrom(to_tensor(np.array([d / sides for d in dimensions])))
    result.tensors["box_count"].CopyFrom(to_tensor(np.array([1e6 * sides.astype(np.float64) ** -d
                                                             for d in dimensions])))
    result.scalars["tiles"] = len(dimensions)
    result.tables["fractal"].CopyFrom(feature_table(
        ["FractalDimension", "FractalDimensionRMin", "FractalDimensionRMax"],
        np.array([[d, 3, 41] for d in dimensions]), [str(i) for i in range(len(dimensions))]))
    return result


def test_each_tile_of_a_stack_is_drawn_as_an_image_of_its_own() -> None:
    dimensions = [1.5, 1.6, 1.7]
    figure, kind = build_figure([_tiles("plate", dimensions)], PlotOptions())
    assert kind == "curves"
    counts = figure.axes[1]
    assert _legend_texts(counts) == [f"plate[{i}]: D = {d:.3f}" for i, d in enumerate(dimensions)]
    drawn = [line for line in counts.get_lines() if line.get_marker() == "o"]
    np.testing.assert_allclose(drawn[2].get_ydata(), 1e6 * np.arange(3, 42, 2.0) ** -1.7)
    grouped, _ = build_figure([_fractal("alone.png", 1.4), _tiles("stack", [1.5, 1.9])],
                              PlotOptions(groups=["single", "stacked"]))
    assert [text.split(": ")[0] for text in _legend_texts(grouped.axes[1])] == [
        "single (n=1)", "stacked (n=2)"]


def test_a_few_fractal_images_get_a_line_and_a_legend_entry_each() -> None:
    results = [_fractal(f"img{i}.png", 1.5 + 0.05 * i) for i in range(5)]
    figure, _ = build_figure(results, PlotOptions())
    counts = figure.axes[1]
    assert _legend_texts(counts) == [f"img{i}.png: D = {1.5 + 0.05 * i:.3f}" for i in range(5)]
    colours = {to_rgba(line.get_color()) for line in counts.get_lines()}
    assert len(colours) == 5
    assert not [c for c in counts.collections if isinstance(c, PolyCollection)]


@pytest.mark.parametrize("count", [10, 20, 25, 48])
def test_groups_never_share_a_colour(count: int) -> None:
    colours = [tuple(np.round(colour, 4)) for colour in group_colours(count)]
    assert len(set(colours)) == count
    results = [_fractal(f"img{i}", 1.6) for i in range(count)]
    figure, _ = build_figure(results, PlotOptions(groups=[f"group {i}" for i in range(count)]))
    counts = figure.axes[1]
    assert len(_legend_texts(counts)) == count  # a legend for every group, even 48
    _rendered(figure)
    legend = counts.get_legend().get_window_extent()
    assert legend.x0 >= counts.get_window_extent().x1  # beside the curves, not over them
    assert legend.x1 <= figure.bbox.x1 and legend.y0 >= 0  # and all of it within the figure
    assert counts.get_window_extent().width >= 3.5 * figure.dpi  # the curves keep their room


def test_fractal_groups_from_a_csv_file(tmp_path: Path) -> None:
    results = [_fractal(f"plate/img{i}.png", 1.6) for i in range(4)]
    csv = tmp_path / "groups.csv"
    csv.write_text("image,treatment\nimg0.png,a\nplate/img1.png,b\njob-plate/img2.png,a\n"
                   "img3.png,b\n")
    assert read_groups(csv)["image"] == "treatment"
    figure, _ = build_figure(results, PlotOptions(group_map=read_groups(csv)))
    assert _legend_texts(figure.axes[1]) == ["a (n=2): D = 1.600 [1.600–1.600]",
                                             "b (n=2): D = 1.600 [1.600–1.600]"]
    (tmp_path / "bad.csv").write_text("img0.png\n")
    with pytest.raises(ValueError, match="line 1: expected id,group"):
        read_groups(tmp_path / "bad.csv")


def test_well_names_are_read_from_ids_as_tokens() -> None:
    assert well_of("A01.png") == (0, 0)
    assert well_of("plate1_C05_s2.tif") == (2, 4)
    assert well_of("run/B12-field3.tif") == (1, 11)
    assert well_of("P24") == (15, 23)
    assert well_of("plate1_C5_F1.tif") == (2, 4)  # the first token
    assert well_of("img_f1.png") is None and well_of("A00.png") is None
    assert well_of("XA01.png") is None and well_of("A013.png") is None and well_of("A25") is None


def test_plate_heatmap_puts_each_value_in_its_well(tmp_path: Path) -> None:
    names = ["plate1_C05_s1.png", "plate1_C05_s2.png", "plate1_C05_s3.png", "B12.png", "H01.tif",
             "control.png"]
    dimensions = [1.5, 1.7, 1.65, 1.8, 1.2, 1.9]
    results = [_fractal(name, d) for name, d in zip(names, dimensions, strict=True)]
    figure, kind = build_figure(results, PlotOptions(kind="plate"))
    assert kind == "plate"
    (axes,) = [a for a in figure.axes if a.images]
    (heatmap,) = axes.images
    grid = heatmap.get_array()
    assert grid.shape == (8, 12)
    assert grid[2, 4] == pytest.approx(1.65)  # C05: median of its three images
    assert grid[1, 11] == pytest.approx(1.8) and grid[7, 0] == pytest.approx(1.2)
    assert grid.mask.sum() == 96 - 3
    assert [t.get_text() for t in axes.get_yticklabels()] == list("ABCDEFGH")
    assert [t.get_text() for t in axes.get_xticklabels()] == [str(c) for c in range(1, 13)]
    assert "1 images without a well name left out, e.g. control.png" in axes.get_title()
    assert {t.get_text() for t in axes.texts} == {"1.65", "1.8", "1.2"}
    by_column, _ = build_figure(results, PlotOptions(kind="plate", colour_by="lacunarity_r3"))
    assert by_column.axes[0].images[0].get_array()[2, 4] == pytest.approx(1 / 3)
    big, _ = build_figure([_fractal("A01", 1.5), _fractal("P24", 1.6)], PlotOptions(kind="plate"))
    assert big.axes[0].images[0].get_array().shape == (16, 24)
    with pytest.raises(ValueError, match="no id carries a well name"):
        build_figure([_fractal("x", 1.5)], PlotOptions(kind="plate"))
    plot_results(results, tmp_path / "plate.png", PlotOptions(kind="plate"))


def test_embeddings_colour_by_result_or_group(tmp_path: Path) -> None:
    centres = RNG.uniform(0, 500, (30, 2))
    grouped = tmp_path / "two.svg"
    plot_results([_spots("s1", centres), _spots("s2", centres)], grouped,
                 PlotOptions(groups=["tumour", "normal"]))
    svg = grouped.read_text()
    assert "tumour (n=30)" in svg and "normal (n=30)" in svg
    figure, kind = build_figure([_spots("s1", centres)], PlotOptions())
    assert kind == "embedding"  # no diameter, no mask: nothing to place on an image
    values = RNG.normal(size=(30, 8))
    shaded, _ = build_figure([_spots("s1", centres, values)], PlotOptions(colour_by="f3"))
    (points,) = shaded.axes[0].collections
    np.testing.assert_allclose(points.get_array(), values[:, 3])
    assert shaded.axes[1].get_ylabel() == "f3"  # the colour bar says what the colours are
    many, _ = build_figure([_spots(f"image_{i:02d}", centres[:3]) for i in range(48)], PlotOptions())
    (axes,) = many.axes
    assert _legend_texts(axes)[:2] == ["image_00.tif (n=3)", "image_01.tif (n=3)"]
    _rendered(many)
    legend = axes.get_legend().get_window_extent()
    assert axes.get_window_extent().x1 <= legend.x0 and legend.x1 <= many.bbox.x1
    assert axes.get_window_extent().width >= 3.5 * many.dpi


def test_too_few_rows_or_no_results_or_a_wrong_kind_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="an embedding needs at least 2 rows, got 1"):
        plot_results([_spots("s", np.zeros((1, 2)))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no results to plot"):
        plot_results([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="curves are drawn for fractal results only"):
        plot_results([_spots("s", np.zeros((3, 2)))], tmp_path / "x.png", PlotOptions(kind="curves"))
    with pytest.raises(ValueError, match="curves are coloured by group"):
        build_figure([_fractal("a", 1.5)], PlotOptions(colour_by="PC1"))
    with pytest.raises(ValueError, match="not PC1, PC2, ... nor a column"):
        build_figure([_spots("s", np.zeros((3, 2)))], PlotOptions(spot_diameter=3, colour_by="nope"))


def test_principal_components_follow_the_largest_spread() -> None:
    along = np.linspace(-5, 5, 50)
    values = np.column_stack([along, 0.1 * RNG.normal(size=50), np.zeros(50)])
    scores, shares = principal_components(values, 2)
    assert abs(np.corrcoef(scores[:, 0], along)[0, 1]) > 0.999
    assert shares[0] > 0.99 and shares.sum() <= 1.0 + 1e-12
    line_scores, line_shares = principal_components(np.array([[0.0, 0.0], [1.0, 1.0]]), 3)
    np.testing.assert_allclose(line_shares, [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(line_scores[:, 1:], 0.0, atol=1e-12)


def test_results_cut_for_a_figure_of_several_draw_the_same_and_drop_their_masks(tmp_path: Path) -> None:
    whole = [_fractal(f"A{i}.png", 1.5 + i / 10) for i in range(1, 4)]
    cut = []
    for result in whole:
        copy = pb.JobResult()
        copy.CopyFrom(result)
        copy.tensors["cell_labels"].CopyFrom(to_tensor(np.ones((256, 256), np.uint16)))
        copy.tensors["probabilities"].CopyFrom(to_tensor(np.ones((20, 400))))
        assert keep_for_several(copy) is copy
        assert sorted(copy.tensors) == ["box_count", "box_sizes", "lacunarity"]
        assert copy.tables == result.tables and copy.scalars == result.scalars
        cut.append(copy)
    for kind in ("curves", "plate", "embedding"):
        plot_results(whole, tmp_path / f"whole-{kind}.png", PlotOptions(kind=kind))
        plot_results(cut, tmp_path / f"cut-{kind}.png", PlotOptions(kind=kind))
        assert (tmp_path / f"cut-{kind}.png").read_bytes() == (tmp_path / f"whole-{kind}.png").read_bytes()
