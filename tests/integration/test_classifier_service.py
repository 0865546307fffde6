"""ClassifyCells and ExplainCells through a real gRPC server: the shipped model on generated cells,
refusals naming the field, an image without cells."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from labsight.catalog import CLASSIFIER
from labsight.cell_crops import cell_crops
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.runtime.server import RunningServer
from labsight.tensors import from_tensor, to_tensor, write_labels
from labsight.v1 import classifier_pb2 as pb
from labsight.v1 import classifier_pb2_grpc as pb_grpc
from labsight.v1 import tensor_pb2
from services.classifier.classes import CLASS_NAMES
from services.classifier.generated_cells import CellField, generate_cell_field
from services.classifier.servicer import register


@pytest.fixture(scope="module")
def field() -> CellField:
    return generate_cell_field(11, size=192, cells=3)


@pytest.fixture
def stub(serve: Callable[..., RunningServer], settings: Settings) -> Iterator[pb_grpc.ClassifierServiceStub]:
    server = serve(register, CLASSIFIER.grpc_services, settings)
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ClassifierServiceStub(channel)


def _request(kind: type, image: np.ndarray, labels: np.ndarray, **fields: object) -> object:
    return kind(image=image_from_array(image), cell_labels=to_tensor(labels), **fields)


def _code(call: Callable[[object], object], request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=60)
    return error.value.code(), error.value.details()


def test_classify_cells_gives_every_cell_19_probabilities_and_finds_its_classes(
    stub: pb_grpc.ClassifierServiceStub, field: CellField
) -> None:
    answer = stub.ClassifyCells(_request(pb.ClassifyCellsRequest, field.image, field.cell_labels),
                                timeout=60)
    cells = int(field.cell_labels.max())
    assert list(answer.class_names) == list(CLASS_NAMES)
    assert list(answer.cell_ids) == list(range(1, cells + 1))
    probabilities = from_tensor(answer.probabilities)
    assert probabilities.shape == (cells, 19)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert np.allclose(answer.image_probabilities, probabilities.max(axis=0))
    assert len(answer.thresholds) == 19 and answer.model.startswith("hpa-generated ")
    # the shipped model's most probable class of each cell is one of its true classes
    top = probabilities.argmax(axis=1)
    assert all(field.classes[i, top[i]] for i in range(cells)), (top, np.argwhere(field.classes))


def test_classify_cells_answers_the_crops_it_classified(
    stub: pb_grpc.ClassifierServiceStub, field: CellField
) -> None:
    answer = stub.ClassifyCells(_request(pb.ClassifyCellsRequest, field.image, field.cell_labels,
                                         return_crops=True), timeout=60)
    expected = cell_crops(field.image, field.cell_labels, 64)
    crops = from_tensor(answer.crops)
    assert crops.dtype == np.uint8 and crops.shape == (len(expected.cell_ids), 64, 64, 4)
    assert np.abs(crops.astype(int) - np.rint(expected.pixels.transpose(0, 2, 3, 1) * 255)).max() <= 1
    plain = stub.ClassifyCells(_request(pb.ClassifyCellsRequest, field.image, field.cell_labels),
                               timeout=60)
    assert not plain.HasField("crops")
    assert np.allclose(from_tensor(plain.probabilities), from_tensor(answer.probabilities), atol=1e-5)


def test_every_integer_label_dtype_gives_the_same_answer(
    stub: pb_grpc.ClassifierServiceStub, field: CellField
) -> None:
    """uint16 labels (what SegmentCells answers and write_labels sends) classify as int32 do."""
    answers = {}
    for dtype in ("uint8", "uint16", "int32", "uint32"):
        request = pb.ClassifyCellsRequest(image=image_from_array(field.image))
        request.cell_labels.CopyFrom(to_tensor(field.cell_labels.astype(dtype)))
        answers[dtype] = stub.ClassifyCells(request, timeout=60)
    narrow = pb.ClassifyCellsRequest(image=image_from_array(field.image))
    write_labels(narrow.cell_labels, field.cell_labels)
    assert narrow.cell_labels.dtype == tensor_pb2.DATA_TYPE_UINT16
    answers["narrow"] = stub.ClassifyCells(narrow, timeout=60)
    expected = answers["int32"]
    assert list(expected.cell_ids) == list(range(1, int(field.cell_labels.max()) + 1))
    for dtype, answer in answers.items():
        assert list(answer.cell_ids) == list(expected.cell_ids), dtype
        assert np.allclose(from_tensor(answer.probabilities), from_tensor(expected.probabilities),
                           atol=1e-5), dtype
    explained = stub.ExplainCells(pb.ExplainCellsRequest(image=narrow.image, cell_labels=narrow.cell_labels),
                                  timeout=60)
    assert list(explained.cell_ids) == list(expected.cell_ids)


def test_no_cells_is_an_empty_valid_answer(stub: pb_grpc.ClassifierServiceStub, field: CellField) -> None:
    empty = np.zeros_like(field.cell_labels)
    answer = stub.ClassifyCells(_request(pb.ClassifyCellsRequest, field.image, empty), timeout=60)
    assert list(answer.cell_ids) == [] and from_tensor(answer.probabilities).shape == (0, 19)
    assert list(answer.image_probabilities) == [0.0] * 19
    explained = stub.ExplainCells(_request(pb.ExplainCellsRequest, field.image, empty), timeout=60)
    assert list(explained.cell_ids) == [] and from_tensor(explained.saliency).shape == (0, 64, 64)


def test_bad_inputs_are_invalid_argument_naming_the_field(
    stub: pb_grpc.ClassifierServiceStub, field: CellField
) -> None:
    three = field.image[..., :3]
    code, details = _code(stub.ClassifyCells, _request(pb.ClassifyCellsRequest, three, field.cell_labels))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("image:")
    code, details = _code(stub.ClassifyCells,
                          _request(pb.ClassifyCellsRequest, field.image, field.cell_labels[:-1]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("cell_labels:")
    code, details = _code(stub.ExplainCells, _request(pb.ExplainCellsRequest, field.image,
                                                      field.cell_labels, class_indices=[3, 19]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("class_indices:")
    code, details = _code(stub.ExplainCells, _request(pb.ExplainCellsRequest, field.image,
                                                      field.cell_labels, method="shap"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("method:")
    code, _ = _code(stub.ClassifyCells, _request(pb.ClassifyCellsRequest, field.image,
                                                 field.cell_labels, model="no-such-model"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_explain_cells_grad_cam_for_the_top_class_and_for_chosen_classes(
    stub: pb_grpc.ClassifierServiceStub, field: CellField
) -> None:
    cells = int(field.cell_labels.max())
    top = stub.ExplainCells(_request(pb.ExplainCellsRequest, field.image, field.cell_labels), timeout=60)
    probabilities = from_tensor(stub.ClassifyCells(
        _request(pb.ClassifyCellsRequest, field.image, field.cell_labels), timeout=60).probabilities)
    assert top.method == "grad-cam" and list(top.cell_ids) == list(range(1, cells + 1))
    assert list(top.class_indices) == probabilities.argmax(axis=1).tolist()
    maps = from_tensor(top.saliency)
    assert maps.shape == (cells, 64, 64) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    chosen = stub.ExplainCells(_request(pb.ExplainCellsRequest, field.image, field.cell_labels,
                                        class_indices=[0, 13]), timeout=60)
    assert list(chosen.cell_ids) == [c for c in range(1, cells + 1) for _ in (0, 13)]
    assert list(chosen.class_indices) == [0, 13] * cells
    assert from_tensor(chosen.saliency).shape == (2 * cells, 64, 64)


def test_explain_cells_lime_repeats(stub: pb_grpc.ClassifierServiceStub, field: CellField) -> None:
    labels = np.where(field.cell_labels == 1, 1, 0).astype(np.int32)
    request = _request(pb.ExplainCellsRequest, field.image, labels, method="lime", class_indices=[16])
    first = stub.ExplainCells(request, timeout=60)
    second = stub.ExplainCells(request, timeout=60)
    assert first.method == "lime" and list(first.cell_ids) == [1]
    maps = from_tensor(first.saliency)
    assert maps.shape == (1, 64, 64) and 0 <= maps.min() and maps.max() <= 1
    assert np.array_equal(maps, from_tensor(second.saliency))
