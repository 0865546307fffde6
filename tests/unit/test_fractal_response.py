"""The features service's fractal answer: a small unary request computes in one pass (checking
its caller once), a large one band by band, and both give the same answer."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from labsight.fractal_work import fractal_cost
from labsight.images import decode_image, image_from_array
from labsight.runtime.progress_stream import Progress
from labsight.v1 import features_pb2 as pb
from services.features import fractal
from services.features.servicer import UNARY_BANDS_MIN_COST, fractal_response

SIZES = list(range(3, 42, 2))


class Gone(Exception):
    """Raised by a report as a cancelled caller's check does."""


def _request(side: int, percolation: bool = False) -> pb.ComputeFractalRequest:
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return pb.ComputeFractalRequest(image=image_from_array(pixels), box_sizes=SIZES,
                                    percolation=percolation)


def test_a_small_request_is_one_pass_with_the_answer_of_the_banded_one() -> None:
    request = _request(64)
    assert fractal_cost(64 * 64, SIZES, False) < UNARY_BANDS_MIN_COST
    one_pass: list[Progress] = []
    banded: list[Progress] = []
    threads = numba.get_num_threads()
    small = fractal_response(request, one_pass.append, UNARY_BANDS_MIN_COST)
    assert numba.get_num_threads() == threads  # its one thread was for its own pass only
    whole = fractal_response(request, banded.append)
    assert len(one_pass) == 1 and len(banded) > 20  # 64 - 2 centre rows in up to 32 bands
    assert small == whole


def test_a_small_request_whose_caller_is_gone_stops_before_its_work() -> None:
    def gone(_: Progress) -> None:
        raise Gone

    with pytest.raises(Gone):
        fractal_response(_request(64), gone, UNARY_BANDS_MIN_COST)


def test_a_large_request_still_reports_band_by_band() -> None:
    assert fractal_cost(64 * 64, SIZES, True) >= UNARY_BANDS_MIN_COST  # percolation is costly
    reports: list[Progress] = []
    fractal_response(_request(64, percolation=True), reports.append, UNARY_BANDS_MIN_COST)
    assert {report.step for report in reports} == {"gliding box", "percolation"}
    assert len(reports) > 40


@pytest.mark.parametrize("percolation", [False, True])
def test_the_answer_holds_the_cores_numbers(percolation: bool) -> None:
    request = _request(48, percolation)
    request.box_sizes[:] = [3, 5, 9, 15]
    answer = fractal_response(request)
    boxes = fractal.gliding_box(decode_image(request.image), box_sizes=(3, 5, 9, 15))
    assert list(answer.box_sizes) == [3, 5, 9, 15]
    assert [entry.box_size for entry in answer.probabilities] == [3, 5, 9, 15]
    for entry in answer.probabilities:
        assert list(entry.probability) == boxes.probability[entry.box_size].tolist()
    assert list(answer.lacunarity) == boxes.lacunarity.tolist()
    assert answer.HasField("percolation") == percolation
    if percolation:
        perc = fractal.percolation(decode_image(request.image), box_sizes=(3, 5, 9, 15))
        assert list(answer.percolation.cluster_count) == perc.cluster_count.tolist()
        assert list(answer.percolation.percolating_ratio) == perc.percolating_ratio.tolist()
