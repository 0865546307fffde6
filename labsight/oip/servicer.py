"""Thin servicer of the Open Inference Protocol (``inference.GRPCInferenceService``) over a model server.

Every model service adds it beside its LabSight API, on the same port
(:func:`add_open_inference`), so lab systems that speak KServe v2 / Triton's
protocol (tritonclient, KServe's clients) reach every model of the service's
repository by name and version. ModelInfer runs the model as its engines do:
the FP32 input of the model's metadata, already preprocessed (resized,
scaled, normalised as the manifest says), and answers the model's outputs,
or the outputs and public layers the request names.

With the shared service token set (LABSIGHT_SERVICE_TOKEN), every RPC but
ServerLive and ServerReady (probes) needs ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import grpc
import numpy as np

from labsight import __version__
from labsight.config import Settings
from labsight.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    echo,
)
from labsight.models import ModelManifest, ModelServer, check_weights
from labsight.oip import grpc_predict_v2_pb2 as pb
from labsight.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from labsight.oip.contents import input_array, output_tensor
from labsight.oip.signatures import ModelSignature, Signatures, TensorSpec
from labsight.runtime.service_token import METADATA_KEY

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
"""Model states of the repository index, as Triton names them."""

UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset",
                          "classification")
"""Triton's tensor parameters for shared memory and classification outputs, which are not served."""


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Serves the models of one :class:`ModelServer` over the Open Inference Protocol.

    Parameters
    ----------
    models : ModelServer
        The service's model server (its repository, engines and dynamic batchers).
    settings : Settings
        The service's settings: the shared token and the message size limit.
    """

    def __init__(self, models: ModelServer, settings: Settings) -> None:
        self.models = models
        self.signatures = Signatures(models)
        self.token = settings.service_token
        self.max_answer_bytes = settings.max_message_bytes - 64 * 1024

    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        """Live while the server answers."""
        return pb.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        """Ready when every model of the repository is (strict readiness, as Triton's default)."""
        models = self.models.repository.list()
        return pb.ServerReadyResponse(ready=all(_unready_reason(manifest) == "" for manifest in models))

    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        """Whether the model (at the version, if one is named) is served and its weights are present;
        false for an unknown model or version."""
        self._authorize(context)
        try:
            manifest = self._model(request.name, request.version)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=_unready_reason(manifest) == "")

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        """The service (``labsight-<task>``) and LabSight's version."""
        self._authorize(context)
        return pb.ServerMetadataResponse(name=f"labsight-{self.models.repository.task}", version=__version__)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        """The model's version, platform, input, outputs and public layers (see :mod:`signatures`)."""
        self._authorize(context)
        manifest = self._model(request.name, request.version)
        signature = self.signatures.of(manifest)
        return pb.ModelMetadataResponse(
            name=manifest.name,
            versions=[manifest.version],
            platform=self.signatures.platform(manifest),
            inputs=[_metadata(signature.input)],
            outputs=[_metadata(spec) for spec in (*signature.outputs, *signature.layers)],
        )

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        """The model's outputs (or those the request names) for the request's input batch."""
        self._authorize(context)
        manifest = self._model(request.model_name, request.model_version, "model_version")
        signature = self.signatures.of(manifest)
        batch = _input_batch(request, manifest, signature.input)
        names = _requested_outputs(request, manifest, signature)
        results = self._run(manifest, batch, names)
        response = pb.ModelInferResponse(
            model_name=manifest.name, model_version=manifest.version, id=request.id
        )
        for name in names:
            tensor, data = output_tensor(name, results[name])
            response.outputs.append(tensor)
            response.raw_output_contents.append(data)
        size = sum(len(data) for data in response.raw_output_contents)
        if size > self.max_answer_bytes:
            raise ResourceExhausted(
                f"outputs: {size} bytes for {len(batch)} inputs exceed the message limit of "
                f"{self.max_answer_bytes}; send fewer inputs per request"
            )
        return response

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        """Every model of the service's repository with its version and state (only the ready ones
        when asked)."""
        self._authorize(context)
        if request.repository_name not in ("", self.models.repository.task):
            raise NotFound(f"repository_name: unknown repository {echo(request.repository_name)}; this "
                           f"service serves {self.models.repository.task!r}")
        index = []
        for manifest in self.models.repository.list():
            reason = _unready_reason(manifest)
            if reason and request.ready:
                continue
            index.append(pb.RepositoryIndexResponse.ModelIndex(
                name=manifest.name, version=manifest.version, state=UNAVAILABLE if reason else READY,
                reason=reason,
            ))
        return pb.RepositoryIndexResponse(models=index)

    def _authorize(self, context: grpc.ServicerContext) -> None:
        """Unauthenticated unless the shared token is unset or the call sends it."""
        if not self.token:
            return
        sent = dict(context.invocation_metadata() or ()).get(METADATA_KEY, "")
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        if not hmac.compare_digest(sent_bytes, f"Bearer {self.token}".encode()):
            raise Unauthenticated(
                "missing or wrong service token: send call metadata 'authorization: Bearer "
                "<LABSIGHT_SERVICE_TOKEN>' (tritonclient: headers={'authorization': 'Bearer ...'})"
            )

    def _model(self, name: str, version: str, version_field: str = "version") -> ModelManifest:
        """The model called ``name`` at ``version`` ("" for the one served).

        Raises
        ------
        NotFound
            For an unknown model, or a version other than the one served.
        """
        manifest = self.models.repository.get(name)
        if version and version != manifest.version:
            raise NotFound(f"{version_field}: model {manifest.name!r} has no version {echo(version)}; "
                           f"versions: [{manifest.version!r}]")
        return manifest

    def _run(
        self, manifest: ModelManifest, batch: np.ndarray, names: list[str]
    ) -> Mapping[str, np.ndarray]:
        """The named outputs and layers of one batch: the model's outputs in one run, each layer in
        a run of its own."""
        results: dict[str, np.ndarray] = {}
        if any(name in manifest.outputs for name in names):
            results.update(self.models.run(manifest.name, batch))
        for name in names:
            if name not in results:
                (results[name],) = self.models.run(manifest.name, batch, name).values()
        return results


def _unready_reason(manifest: ModelManifest) -> str:
    """Why the model cannot serve ("" when it can): its weights are missing."""
    try:
        check_weights(manifest)
    except FailedPrecondition as error:
        return str(error)
    return ""


def _metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def _input_batch(request: pb.ModelInferRequest, manifest: ModelManifest, expected: TensorSpec) -> np.ndarray:
    """The request's one input as a float32 batch of the model's input shape.

    Raises
    ------
    InvalidArgument
        Naming the input for an unknown or missing name, another datatype, a shape the
        model does not take, contents of the wrong length, or unsupported parameters.
    """
    takes = f"model {manifest.name!r} takes one input {expected.name!r} ({expected.datatype}, shape " \
            f"{list(expected.shape)})"
    names = [tensor.name for tensor in request.inputs]
    unknown = [name for name in names if name != expected.name]
    if unknown:
        raise InvalidArgument(f"inputs: unknown input {echo(unknown[0])}; {takes}")
    if len(names) != 1:
        raise InvalidArgument(f"inputs: {len(names)} inputs {[echo(n) for n in names[:3]]}; {takes}")
    tensor = request.inputs[0]
    field = f"inputs[0] ({expected.name!r})"
    _refuse_parameters(tensor.parameters, field)
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidArgument(f"raw_input_contents: {len(request.raw_input_contents)} entries for "
                              f"{len(request.inputs)} input; send one entry per input")
    if tensor.datatype != expected.datatype:
        raise InvalidArgument(f"{field}: datatype {echo(tensor.datatype)}; {takes}")
    shape = list(tensor.shape)
    fits = len(shape) == len(expected.shape) and all(
        want in (-1, got) for want, got in zip(expected.shape, shape, strict=True)
    )
    if not fits:
        raise InvalidArgument(f"{field}: shape {shape} does not fit; {takes}")
    if shape[0] < 1:
        raise InvalidArgument(f"{field}: shape {shape} holds no input; send a batch of one or more")
    raw = request.raw_input_contents[0] if request.raw_input_contents else None
    return input_array(tensor, raw, field).astype(np.float32)


def _requested_outputs(
    request: pb.ModelInferRequest, manifest: ModelManifest, signature: ModelSignature
) -> list[str]:
    """The names of the outputs to answer: those requested, or the model's outputs when none is.

    Raises
    ------
    InvalidArgument
        Naming an output that is neither an output nor a public layer of the model, a
        repeated one, or unsupported parameters.
    """
    if not request.outputs:
        return [spec.name for spec in signature.outputs]
    names = []
    for index, wanted in enumerate(request.outputs):
        field = f"outputs[{index}]"
        if signature.output(wanted.name) is None:
            known = [spec.name for spec in (*signature.outputs, *signature.layers)]
            raise InvalidArgument(f"{field}: unknown output {echo(wanted.name)}; model {manifest.name!r} "
                                  f"answers {known}")
        if wanted.name in names:
            raise InvalidArgument(f"{field}: output {wanted.name!r} is asked for twice")
        _refuse_parameters(wanted.parameters, f"{field} ({wanted.name!r})")
        names.append(wanted.name)
    return names


def _refuse_parameters(parameters: Mapping[str, pb.InferParameter], field: str) -> None:
    """InvalidArgument for a shared-memory or classification parameter, which are not served."""
    for name in UNSUPPORTED_PARAMETERS:
        if name in parameters:
            raise InvalidArgument(f"{field}: parameter {name!r} is not supported: this server has no "
                                  f"shared memory and no classification outputs")


def add_open_inference(server: grpc.Server, models: ModelServer, settings: Settings) -> None:
    """Add ``inference.GRPCInferenceService`` over ``models`` to a service's ``server`` (same port)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(models, settings), server)

