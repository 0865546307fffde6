"""ClassifyCells calls cut their crops one at a time in a process (calls cropping at once only
contended for the GIL), while other calls' crops are in the model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from labsight.catalog import CLASSIFIER
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.runtime.server import RunningServer
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import classifier_pb2 as pb
from labsight.v1 import classifier_pb2_grpc as pb_grpc
from services.classifier import servicer as classifier_servicer
from services.classifier.generated_cells import generate_cell_field
from services.classifier.servicer import ClassifierServicer, register

HOLD_S = 0.3
"""How long each crop and each model run is held, so that calls at once overlap."""


def test_calls_crop_one_at_a_time_while_others_run_the_model(
    serve: Callable[..., RunningServer], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    field = generate_cell_field(5, size=160, cells=2)
    spans: dict[str, list[tuple[float, float]]] = {"crops": [], "model": []}
    record = threading.Lock()
    crop = classifier_servicer.cell_crops
    predict_of = ClassifierServicer._predict

    def held(kind: str, work: Callable[[], object]) -> object:
        start = time.monotonic()
        time.sleep(HOLD_S)
        done = work()
        with record:
            spans[kind].append((start, time.monotonic()))
        return done

    def slow_crops(*args: object, **options: object) -> object:
        return held("crops", lambda: crop(*args, **options))

    def slow_predict(self: ClassifierServicer, manifest: object) -> Callable[[np.ndarray], np.ndarray]:
        served = predict_of(self, manifest)
        return lambda batch: held("model", lambda: served(batch))  # type: ignore[return-value]

    monkeypatch.setattr(classifier_servicer, "cell_crops", slow_crops)
    monkeypatch.setattr(ClassifierServicer, "_predict", slow_predict)
    server = serve(register, CLASSIFIER.grpc_services, settings)
    request = pb.ClassifyCellsRequest(image=image_from_array(field.image),
                                      cell_labels=to_tensor(field.cell_labels))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ClassifierServiceStub(channel)
        alone = stub.ClassifyCells(request, timeout=60)
        spans["crops"].clear()
        spans["model"].clear()
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: stub.ClassifyCells(request, timeout=60), range(3)))

    def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    crops, model = sorted(spans["crops"]), spans["model"]
    assert len(crops) == 3 and len(model) == 3
    assert not any(overlap(a, b) for a, b in zip(crops, crops[1:], strict=False)), crops
    assert any(overlap(c, m) for c in crops for m in model), (crops, model)
    expected = from_tensor(alone.probabilities)
    assert len(alone.cell_ids) >= 1
    for answer in answers:
        assert list(answer.cell_ids) == list(alone.cell_ids)
        assert np.allclose(from_tensor(answer.probabilities), expected, atol=1e-5)
