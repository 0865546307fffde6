"""TorchServe's gRPC Predictions call and LabSight's byte convention for its handler.

One call carries one whole batch: ``input[<input>]`` holds the (N, C, H, W)
(or, ``channels_last``, (N, H, W, C)) float32 batch and the handler returns
``prediction`` bytes with N rows per output. ``encoding`` says how both are written:

``npy`` (default)
    The batch as a ``.npy`` file (``numpy.save``); the prediction a ``.npy``
    file of one output, or a ``.npz`` archive (``numpy.savez``) keyed by the
    remote output names when the manifest names several. No pickles.
``json``
    The batch as nested lists (``batch.tolist()``); the prediction a nested list
    for one output, or an object keyed by the remote output names.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import grpc
import numpy as np

from labsight.remote import torchserve_inference_pb2 as pb
from labsight.remote import torchserve_inference_pb2_grpc as pb_grpc
from labsight.remote.spec import RemoteSpec


def encode_batch(batch: np.ndarray, encoding: str) -> bytes:
    """The batch as the handler's input bytes (see the module notes)."""
    values = np.ascontiguousarray(batch, np.float32)
    if encoding == "json":
        return json.dumps(values.tolist()).encode()
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def decode_prediction(data: bytes, encoding: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The handler's prediction bytes as float32 arrays by remote output name.

    Raises
    ------
    ValueError
        If the bytes are not what ``encoding`` says, an output is missing or not numeric.
    """
    if encoding == "json":
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"the prediction is not JSON ({error})") from None
        if isinstance(value, dict):
            return {name: _numbers(value[name], name) for name in _present(names, list(value))}
        if len(names) != 1:
            raise ValueError(
                f"expected a JSON object with the outputs {list(names)}, got a {type(value).__name__}"
            )
        return {names[0]: _numbers(value, names[0])}
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"the prediction is not a .npy or .npz file ({error})") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise ValueError(f"expected a .npz archive with the outputs {list(names)}, got a .npy array")
        return {names[0]: _numbers(loaded, names[0])}
    with loaded:
        try:
            return {name: _numbers(loaded[name], name) for name in _present(names, loaded.files)}
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"the prediction's .npz archive is damaged ({error})") from None


def _present(names: tuple[str, ...], answered: list[str]) -> tuple[str, ...]:
    missing = [name for name in names if name not in answered]
    if missing:
        raise ValueError(f"no output {missing[0]!r} in the prediction; it has {sorted(answered)}")
    return names


def _numbers(value: object, name: str) -> np.ndarray:
    try:
        return np.asarray(value, np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"output {name!r} is not an array of numbers") from None


def predictor(spec: RemoteSpec, channel: grpc.Channel) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function sending one batch to TorchServe, returning its outputs by remote name.

    It raises ``grpc.RpcError`` for a failed call and ValueError for an unreadable prediction.
    """
    predictions = pb_grpc.InferenceAPIsServiceStub(channel).Predictions

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        request = pb.PredictionsRequest(
            model_name=spec.model, model_version=spec.version,
            input={spec.input: encode_batch(batch, spec.encoding)},
        )
        answer = predictions(request, timeout=spec.timeout_s)
        return decode_prediction(answer.prediction, spec.encoding, spec.outputs)

    return predict
