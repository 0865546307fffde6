"""Scale bars: a round length about a fifth of the image's width, labelled in fitting units."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from labsight.plots.scale_bar import add_scale_bar, bar_label, bar_length_um
from labsight.result import Result
from labsight.v1 import gateway_pb2 as pb


@pytest.mark.parametrize(("width_px", "pixel_size_um", "length_um", "label"), [
    (512, 0.08, 5.0, "5 µm"),        # an HPA field: 41 µm wide
    (2048, 0.08, 20.0, "20 µm"),
    (512, 0.5, 50.0, "50 µm"),
    (1000, 0.65, 100.0, "100 µm"),   # 130 µm fit: 100 is the longest round length
    (100, 0.001, 0.02, "20 nm"),
    (20000, 0.5, 2000.0, "2 mm"),
])
def test_the_longest_round_length_within_a_fifth_of_the_width(
    width_px: int, pixel_size_um: float, length_um: float, label: str
) -> None:
    assert bar_length_um(width_px, pixel_size_um) == pytest.approx(length_um)
    assert bar_label(bar_length_um(width_px, pixel_size_um)) == label
    assert bar_length_um(width_px, pixel_size_um) <= 0.2 * width_px * pixel_size_um * (1 + 1e-12)


def test_the_bar_is_drawn_in_image_pixels_and_only_for_a_stated_size() -> None:
    axes = Figure().subplots()
    axes.imshow([[0.0] * 400] * 300)
    assert add_scale_bar(axes, 400, 0.25) == "20 µm"
    bar = axes.artists[-1]
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(80)  # 20 µm / 0.25 µm
    assert Result(pb.JobResult(provenance={"pixel_size_um": "0.08"})).pixel_size_um == 0.08
    for stated in ("", "0", "-1", "nan", "x"):
        assert Result(pb.JobResult(provenance={"pixel_size_um": stated})).pixel_size_um is None
