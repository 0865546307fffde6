"""TF Serving's gRPC Predict call: the batch as a float32 TensorProto, the outputs read back."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
from google.protobuf import wrappers_pb2

from labsight.remote import tf_model_pb2, tf_predict_pb2
from labsight.remote import tf_predict_pb2_grpc as pb_grpc
from labsight.remote.spec import RemoteSpec
from labsight.remote.tensors import from_tensor_proto, to_tensor_proto


def model_spec(spec: RemoteSpec) -> tf_model_pb2.ModelSpec:
    """The ModelSpec of the manifest's model: a numeric version as ``version``, another as a label."""
    model = tf_model_pb2.ModelSpec(name=spec.model, signature_name=spec.signature)
    if spec.version.isdigit():
        model.version.CopyFrom(wrappers_pb2.Int64Value(value=int(spec.version)))
    elif spec.version:
        model.version_label = spec.version
    return model


def predictor(spec: RemoteSpec, channel: grpc.Channel) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function sending one batch to TF Serving, returning its outputs by remote name.

    It raises ``grpc.RpcError`` for a failed call and ValueError for a missing or unreadable output.
    """
    predict_call = pb_grpc.PredictionServiceStub(channel).Predict
    model = model_spec(spec)

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        request = tf_predict_pb2.PredictRequest(
            model_spec=model, inputs={spec.input: to_tensor_proto(batch)}, output_filter=spec.outputs
        )
        answer = predict_call(request, timeout=spec.timeout_s)
        outputs: dict[str, np.ndarray] = {}
        for name in spec.outputs:
            if name not in answer.outputs:
                raise ValueError(f"no output {name!r} in the reply; it has {sorted(answer.outputs)}")
            try:
                outputs[name] = from_tensor_proto(answer.outputs[name]).astype(np.float32)
            except ValueError as error:
                raise ValueError(f"output {name!r}: {error}") from None
        return outputs

    return predict
