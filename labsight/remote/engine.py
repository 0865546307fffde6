"""An engine whose model runs on an external TorchServe or TF Serving server.

It behaves as any other :class:`~labsight.models.engines.Engine`: a
:class:`~labsight.models.serving.ModelServer` puts its instances behind a
dynamic batcher, and each batch becomes one call to the server. A remote model
serves its outputs (layer ``""``) and each output by its manifest name; it has
no inner layers. Failures become the status a caller can act on, naming the
model and the endpoint:

- the server cannot be reached or does not answer in time: UNAVAILABLE;
- it answers RESOURCE_EXHAUSTED: the same;
- it refuses the request (unknown model or version, wrong input name, ...):
  FAILED_PRECONDITION with its message;
- it fails otherwise: INTERNAL with its message;
- its reply is unreadable, lacks an output or has other than one row per
  input: FAILED_PRECONDITION (the manifest does not match the server).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np

from labsight.errors import FailedPrecondition, LabSightError, ResourceExhausted, Unavailable
from labsight.models.layers import LayerIndex
from labsight.models.manifest import ModelManifest
from labsight.remote import tfserving, torchserve
from labsight.remote.channel import remote_channel
from labsight.remote.spec import RemoteSpec

SERVER_NAMES = {"torchserve": "TorchServe", "tfserving": "TF Serving"}

_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_REFUSED = {
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
}

_PREDICTORS = {"torchserve": torchserve.predictor, "tfserving": tfserving.predictor}


def remote_layer_index(manifest: ModelManifest) -> LayerIndex:
    """The layers of a remote model: ``""`` (every output) and each output by its manifest name."""
    return LayerIndex(manifest, {"": "", **{name: name for name in manifest.outputs}}, ())


class RemoteEngine:
    """Sends each batch to the manifest's server and returns its outputs by the manifest's names.

    Parameters
    ----------
    manifest : ModelManifest
        A ``torchserve`` or ``tfserving`` manifest.
    target : str
        ``""`` for every output, or one output's manifest name.
    """

    nbytes = 64 << 10
    """A channel and its buffers; the weights are held by the server."""

    def __init__(self, manifest: ModelManifest, target: str = "") -> None:
        if manifest.remote is None:
            raise ValueError(f"model {manifest.name!r}: format {manifest.format!r} is not a remote format")
        self.manifest = manifest
        self.spec: RemoteSpec = manifest.remote
        self.output_names = (target,) if target else manifest.outputs
        self._channel: grpc.Channel | None = remote_channel(self.spec, self._where())
        self._predict: Callable[[np.ndarray], dict[str, np.ndarray]] = _PREDICTORS[self.spec.protocol](
            self.spec, self._channel
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first (for an output's target: the only) output of the batch."""
        return self.outputs(batch)[self.output_names[0]]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One call to the server; its outputs by the manifest's names, each (N, ...) float32.

        ``channels_last`` batches are sent as (N, H, W, C) and 4-d outputs are read as
        (N, H, W, C) and returned as (N, C, H, W).

        Raises
        ------
        Unavailable, ResourceExhausted, FailedPrecondition, LabSightError
            See the module notes.
        """
        if self._channel is None:
            raise RuntimeError("the engine is closed")
        sent = np.ascontiguousarray(batch, np.float32)
        if self.spec.channels_last:
            sent = np.ascontiguousarray(sent.transpose(0, 2, 3, 1))
        try:
            answered = self._predict(sent)
        except grpc.RpcError as error:
            raise self._call_error(error) from None
        except ValueError as error:
            raise FailedPrecondition(f"{self._where()} answered an unreadable reply: {error}") from None
        results: dict[str, np.ndarray] = {}
        for ours, theirs in zip(self.manifest.outputs, self.spec.outputs, strict=True):
            if ours not in self.output_names:
                continue
            value = answered[theirs]
            if value.ndim == 0 or value.shape[0] != len(batch):
                raise FailedPrecondition(
                    f"{self._where()} answered output {theirs!r} with shape {list(value.shape)} for a "
                    f"batch of {len(batch)}; expected {len(batch)} rows, one per input"
                )
            if self.spec.channels_last and value.ndim == 4:
                value = value.transpose(0, 3, 1, 2)
            results[ours] = np.ascontiguousarray(value, np.float32)
        return results

    def close(self) -> None:
        """Close the channel to the server."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` closed the channel."""
        return self._channel is None

    def _where(self) -> str:
        version = f" version {self.spec.version!r}" if self.spec.version else ""
        return (
            f"model {self.manifest.name!r}: {SERVER_NAMES[self.spec.protocol]} at {self.spec.endpoint} "
            f"(remote model {self.spec.model!r}{version})"
        )

    def _call_error(self, error: grpc.RpcError) -> LabSightError:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
        if code in _UNAVAILABLE:
            return Unavailable(f"{self._where()} cannot be reached ({code.name}: {details})")
        message = f"{self._where()} answered {code.name}: {details}"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ResourceExhausted(message)
        if code in _REFUSED:
            return FailedPrecondition(message)
        return LabSightError(message)


def remote_engines(manifest: ModelManifest, target: str, count: int) -> list[RemoteEngine]:
    """``count`` engines (each its own channel) for one target of a remote model."""
    return [RemoteEngine(manifest, target) for _ in range(count)]
