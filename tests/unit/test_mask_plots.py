"""Masks figures of cells results (labsight/plots/masks.py): colours, outlines, ids, channel files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from labsight.plots import PlotOptions, build_figure, choose_kind, load_cells_image, plot_hints
from labsight.plots.masks import composite, label_colours
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb


def _cells_result() -> pb.JobResult:
    cells = np.zeros((40, 60), np.int32)
    cells[5:20, 5:25] = 1
    cells[5:20, 25:50] = 2
    nuclei = np.where(np.pad(np.ones((5, 5), bool), ((8, 27), (10, 45))), cells, 0).astype(np.int32)
    result = pb.JobResult(job_id="j1", pipeline="cells", input_name="7")
    result.tensors["cell_labels"].CopyFrom(to_tensor(cells))
    result.tensors["nucleus_labels"].CopyFrom(to_tensor(nuclei))
    return result


def test_each_cell_has_its_colour_and_its_nucleus_is_darker() -> None:
    result = _cells_result()
    cells = np.frombuffer(result.tensors["cell_labels"].data, np.int32).reshape(40, 60)
    nuclei = np.frombuffer(result.tensors["nucleus_labels"].data, np.int32).reshape(40, 60)
    rgb = label_colours(cells, nuclei)
    assert not rgb[0, 0].any()  # background black
    assert not np.allclose(rgb[6, 6], rgb[6, 30])  # touching cells differ
    assert np.allclose(rgb[10, 12], rgb[6, 6] * 0.55)  # the nucleus of cell 1


def test_hpa_composite_makes_yellow_of_red_and_green() -> None:
    image = np.zeros((4, 4, 4), np.uint16)
    image[0, 0, 3] = 1000  # yellow only
    image[1, 1, 2] = 1000  # blue only
    shown = composite(image)
    assert np.allclose(shown[0, 0], [1, 1, 0]) and np.allclose(shown[1, 1], [0, 0, 1])


def test_auto_draws_one_cells_result_as_masks_with_ids_and_outlines() -> None:
    result = _cells_result()
    image = np.zeros((40, 60, 4), np.uint8)
    figure, kind = build_figure([result], PlotOptions(image=image, ids=True))
    assert kind == "masks"
    FigureCanvasAgg(figure).draw()
    masks, overlay = figure.axes
    assert sorted(t.get_text() for t in masks.texts) == ["1", "2"]
    assert overlay.get_title() == "outlines over the channels"
    assert masks.get_title() == "2 cells (nuclei darker)"
    shown = overlay.images[0].get_array()
    assert np.allclose(shown[5, 5], [1, 1, 1])  # a cell's outline is white
    assert np.allclose(shown[8, 10], [0, 1, 1])  # a nucleus's outline is cyan


def test_without_image_a_hint_says_how_to_draw_the_channels() -> None:
    result = _cells_result()
    options = PlotOptions()
    figure, kind = build_figure([result], options)
    assert len(figure.axes) == 1
    assert any("ID_red.png" in hint for hint in plot_hints([result], options, kind))


def test_mismatched_image_is_refused() -> None:
    with pytest.raises(ValueError, match="not the masks'"):
        build_figure([_cells_result()], PlotOptions(image=np.zeros((10, 10, 4), np.uint8)))


def test_a_channel_file_brings_its_three_siblings(tmp_path: Path) -> None:
    for value, channel in enumerate(("red", "green", "blue", "yellow"), start=1):
        Image.fromarray(np.full((6, 8), value * 10, np.uint8)).save(tmp_path / f"A1_{channel}.png")
    pixels = load_cells_image(tmp_path / "A1_blue.png", {"channels": "", "intensity": "full-range"})
    assert pixels.shape == (6, 8, 4)
    assert pixels[0, 0].tolist() == [10, 20, 30, 40]
    (tmp_path / "A1_yellow.png").unlink()
    with pytest.raises(ValueError, match="yellow: 0 files"):
        load_cells_image(tmp_path / "A1_red.png")


def test_auto_picks_the_figure_of_each_segmentation_result() -> None:
    cells = _cells_result()
    hpa = pb.JobResult()
    hpa.CopyFrom(cells)
    hpa.pipeline = "hpa-cells"
    hpa.tables["classes"].columns.append("label")
    vessel = pb.JobResult(pipeline="vessel-content")
    vessel.tensors["instance_masks"].CopyFrom(to_tensor(np.zeros((1, 4, 4), np.uint8)))
    kinds = [choose_kind([result], PlotOptions()) for result in (cells, hpa, vessel)]
    assert kinds == ["masks", "classes", "vessel"]
    assert choose_kind([cells, cells], PlotOptions()) == "embedding"
