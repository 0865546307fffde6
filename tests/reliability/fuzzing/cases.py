"""Fuzz cases for every RPC of LabSight's contract (and grpc.health.v1).

A case is one call: which process and method, the request (messages, or raw bytes that
bypass serialization), whose token, where to cut a stream, and which status codes a
correct service must answer when the outcome is known in advance (another tenant's
ids: NOT_FOUND; a bad token: UNAUTHENTICATED). Cases come from a seeded stream, so a
seed and an index reproduce one.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from labsight.v1 import classifier_pb2, features_pb2, gateway_pb2, segmentation_pb2

from . import media
from .mutate import Pools, mutate
from .values import IMAGE_PARAMETERS

Request = Message | bytes
Metadata = list[tuple[str, str | bytes]]
Verify = Callable[[object], str | None]


@dataclass(frozen=True)
class Rpc:
    """One method of the contract and the process that serves it."""

    process: str
    descriptor: MethodDescriptor

    @property
    def name(self) -> str:
        """Method name, e.g. SubmitJob."""
        return self.descriptor.name

    @property
    def path(self) -> str:
        """Wire path, e.g. /labsight.v1.GatewayService/SubmitJob."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    def message(self, kind: str) -> type[Message]:
        """The request ('input') or response ('output') class."""
        descriptor = self.descriptor.input_type if kind == "input" else self.descriptor.output_type
        return message_factory.GetMessageClass(descriptor)


def _rpcs(process: str, module: ModuleType, service: str) -> list[Rpc]:
    methods = module.DESCRIPTOR.services_by_name[service].methods
    return [Rpc(process, method) for method in methods]


SERVED: dict[str, str] = {
    "gateway": "labsight.v1.GatewayService",
    "features": "labsight.v1.FeatureService",
    "segmentation": "labsight.v1.SegmentationService",
    "classifier": "labsight.v1.ClassifierService",
}
"""The gRPC processes under test and their LabSight service."""

RPCS: list[Rpc] = [
    *_rpcs("gateway", gateway_pb2, "GatewayService"),
    *_rpcs("features", features_pb2, "FeatureService"),
    *_rpcs("segmentation", segmentation_pb2, "SegmentationService"),
    *_rpcs("classifier", classifier_pb2, "ClassifierService"),
    *[rpc for process in SERVED for rpc in _rpcs(process, health_pb2, "Health")],
]
_RPC_WEIGHTS = {"GatewayService": 3.0, "FeatureService": 2.0, "SegmentationService": 1.5,
                "ClassifierService": 1.0, "Health": 0.3}
"""How often each service's RPCs are drawn: the gateway, the public API, most."""
PIPELINE_PARAMETERS = {
    "fractal": ("box_sizes", "percolation", "probabilities", *IMAGE_PARAMETERS),
    "deep-features": ("model", "layer", "pooling", *IMAGE_PARAMETERS),
    "spot-features": ("spot_diameter", "spot_ids", "model", "layer", "blank_other_cells",
                      *IMAGE_PARAMETERS),
    "cells": ("nucleus_channel", "cytoplasm_channels", "expand_um", "method", "pixel_size_um",
              *IMAGE_PARAMETERS),
    "cell-tracks": ("nucleus_channel", "expand_um", "method", "objects", "min_iou",
                    "max_distance_um", *IMAGE_PARAMETERS),
}
PARAMETER_RPCS = ("SubmitJob", "SubmitBatch", "UploadJob", "ListJobs")
ID_RPCS = ("GetJob", "WatchJob", "CancelJob", "GetJobResult", "GetBatch", "WatchBatch", "GetBatchResults",
           "ListJobs")


@dataclass
class Case:
    """One fuzzed call."""

    index: int
    rpc: Rpc
    input_class: str
    detail: str
    requests: list[Request]
    """One request, or the messages of a client stream; bytes are sent as they are."""
    tenant: str
    metadata: Metadata | None = None
    """Call metadata instead of the tenant's token (bad-token cases)."""
    cut_after: int | None = None
    """Cancel the call after this many stream messages (sent or received)."""
    expect: frozenset[grpc.StatusCode] | None = None
    verify: Verify | None = None

    def wire(self) -> list[bytes]:
        """The requests as sent: messages serialized here, so a client-side serialization
        error can never pass for a service's answer."""
        return _serialized(self.requests)

    def reproducer(self) -> str:
        """How to call it again, in one line."""
        return f"{self.rpc.process} {self.rpc.name} as {self.tenant} [{self.input_class}] {self.detail}"


# Valid requests -------------------------------------------------------------------------


def _job(rng: np.random.Generator, pools: Pools) -> gateway_pb2.SubmitJobRequest:
    """A valid, cheap job of a random pipeline."""
    pipeline = str(rng.choice(["fractal", "deep-features", "spot-features", "hpa-cells",
                               "vessel-content", "cells", "cell-tracks"],
                              p=[0.34, 0.2, 0.2, 0.07, 0.07, 0.08, 0.04]))
    request = gateway_pb2.SubmitJobRequest(pipeline=pipeline)
    request.input.image.CopyFrom(media.valid_image(rng, 32 if pipeline == "spot-features" else 0))
    models = list(pools.world.models) or ["efficientnet-lite0"]
    if pipeline == "hpa-cells":  # red, green, blue and yellow, drawn apart from rng (the sequence stays)
        own = np.random.default_rng(zlib.crc32(request.input.image.SerializeToString()))
        request.input.image.CopyFrom(media.tensor_image(media.pixels(own, 0, 4), name="valid"))
    if pipeline == "cells":  # a lab's 2 channels named by role, drawn apart from rng as above
        own = np.random.default_rng(zlib.crc32(request.input.image.SerializeToString()))
        request.input.image.CopyFrom(media.tensor_image(media.pixels(own, 0, 2), name="valid"))
        request.params.update({"nucleus_channel": "0", "expand_um": "2", "method": "classical",
                               "pixel_size_um": "0.5"})
    if pipeline == "cell-tracks":  # a small movie, drawn apart from rng as above
        own = np.random.default_rng(zlib.crc32(request.input.image.SerializeToString()))
        request.input.image.CopyFrom(media.movie_tiff(own))
        request.params.update({"nucleus_channel": "0", "method": "classical", "pixel_size_um": "0.5"})
    if pipeline == "fractal":
        request.params["box_sizes"] = str(rng.choice(["3-9", "3,5,7", "3"]))
        request.params["percolation"] = str(rng.choice(["true", "false"]))
        if rng.random() < 0.25:  # a stack of tiles instead of the image
            request.input.ClearField("image")
            request.input.tensors["tiles"].CopyFrom(
                media.tensor(np.stack([media.pixels(rng, 16, 3) for _ in range(3)])))
            if rng.random() < 0.5:  # named, as `labsight submit --stack` names them
                request.input.tensor_names["tiles"].names.extend(["a.png", "b/c.png", "d.tif"])
    elif pipeline == "deep-features":
        request.params["model"] = str(rng.choice(models))
        if rng.random() < 0.3:
            request.input.tensors["patches"].CopyFrom(
                media.tensor(media.pixels(rng, 16, 3)[None].repeat(2, axis=0)))
    elif pipeline == "spot-features":
        request.params["model"] = str(rng.choice(models))
        request.params["spot_diameter"] = "8"
        request.input.tensors["spot_centres"].CopyFrom(
            media.tensor(rng.uniform(4, 28, (3, 2))))
    if rng.random() < 0.2:
        request.priority = gateway_pb2.PRIORITY_HIGH
    if rng.random() < 0.2:
        request.labels["plate"] = "p1"
    if rng.random() < 0.15:  # keys both tenants use: each must get its own job back
        request.idempotency_key = f"fuzz-key-{int(rng.integers(3))}"
    return request


def _own_id(pools: Pools, tenant: str, kind: str) -> str:
    own, _ = pools.world.own_and_foreign(tenant, kind)
    return own[0] if own else ""


def _upload(rng: np.random.Generator, pools: Pools) -> list[Request]:
    header = _job(rng, pools)
    header.pipeline = "fractal"
    header.params.clear()
    header.params["box_sizes"] = "3-9"
    data = media.save(media.pixels(rng, 32, 3), "PNG")
    header.input.image.CopyFrom(media.encoded(b"", "png", "upload.png"))
    chunks = [data[start : start + 300] for start in range(0, len(data), 300)]
    return [gateway_pb2.UploadJobRequest(job=header),
            *(gateway_pb2.UploadJobRequest(image_chunk=chunk) for chunk in chunks)]


def _batch(rng: np.random.Generator, pools: Pools) -> list[Request]:
    stem = pools.world.batch_stem
    batch_id = str(rng.choice([stem, f"{stem}-{int(rng.integers(4))}", ""]))
    messages: list[Request] = [gateway_pb2.SubmitBatchRequest(
        header=gateway_pb2.BatchHeader(batch_id=batch_id))]
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.5:
            messages.append(gateway_pb2.SubmitBatchRequest(job=_job(rng, pools)))
        else:
            jobs = [_job(rng, pools) for _ in range(int(rng.integers(1, 4)))]
            messages.append(gateway_pb2.SubmitBatchRequest(jobs=gateway_pb2.BatchJobs(jobs=jobs)))
    return messages


def _deep(rng: np.random.Generator, pools: Pools) -> features_pb2.ExtractDeepFeaturesRequest:
    models = pools.world.models or {"efficientnet-lite0": ["avgpool"]}
    model = str(rng.choice(list(models)))
    request = features_pb2.ExtractDeepFeaturesRequest(
        model=model, layer=str(rng.choice(["", *models[model]])),
        pooling=int(rng.integers(0, 4)))
    if rng.random() < 0.3:
        request.image_stack.CopyFrom(media.tensor(media.pixels(rng, 16, 3)[None]))
    else:
        request.images.extend(media.valid_image(rng) for _ in range(int(rng.integers(1, 3))))
    return request


def _fractal(rng: np.random.Generator) -> features_pb2.ComputeFractalRequest:
    return features_pb2.ComputeFractalRequest(
        image=media.valid_image(rng), box_sizes=[3, 5, 7][: int(rng.integers(1, 4))],
        percolation=bool(rng.random() < 0.3))


def _fractal_stack(rng: np.random.Generator) -> features_pb2.ComputeFractalStackRequest:
    side = int(rng.integers(7, 25))
    channels = int(rng.choice([0, 1, 3]))
    tiles = np.stack([media.pixels(rng, side, channels) for _ in range(int(rng.integers(1, 5)))])
    return features_pb2.ComputeFractalStackRequest(
        tiles=media.tensor(tiles), box_sizes=[3, 5, 7][: int(rng.integers(1, 4))],
        percolation=bool(rng.random() < 0.3), omit_probabilities=bool(rng.random() < 0.5))


def _labels(rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros((32, 32), np.int32)
    labels[4:12, 4:12], labels[16:28, 10:30] = 1, int(rng.integers(2, 1000))
    return labels


def _patches(rng: np.random.Generator) -> segmentation_pb2.ExtractPatchesRequest:
    request = segmentation_pb2.ExtractPatchesRequest(
        image=media.valid_image(rng, 32), output_size=int(rng.choice([0, 16])))
    if rng.random() < 0.5:
        request.spot_centres.CopyFrom(media.tensor(rng.uniform(0, 32, (3, 2))))
        request.spot_diameter = 8.0
    else:
        request.cell_labels.CopyFrom(media.tensor(_labels(rng)))
        request.blank_other_cells = bool(rng.random() < 0.5)
    return request


def valid_requests(rpc: Rpc, rng: np.random.Generator, pools: Pools, tenant: str) -> list[Request]:
    """A valid request (or client stream) for ``rpc``, cheap to serve."""
    name = rpc.name
    image = media.valid_image
    builders: dict[str, Callable[[], Request | list[Request]]] = {
        "SubmitJob": lambda: _job(rng, pools),
        "UploadJob": lambda: _upload(rng, pools),
        "SubmitBatch": lambda: _batch(rng, pools),
        "GetJob": lambda: gateway_pb2.GetJobRequest(job_id=_own_id(pools, tenant, "job")),
        "WatchJob": lambda: gateway_pb2.WatchJobRequest(job_id=_own_id(pools, tenant, "job")),
        "CancelJob": lambda: gateway_pb2.CancelJobRequest(job_id=_own_id(pools, tenant, "job")),
        "GetJobResult": lambda: gateway_pb2.GetJobResultRequest(
            job_id=_own_id(pools, tenant, "job")),
        "ListJobs": lambda: gateway_pb2.ListJobsRequest(
            batch_id=_own_id(pools, tenant, "batch") if rng.random() < 0.5 else "",
            page_size=int(rng.choice([0, 2, 50]))),
        "GetBatch": lambda: gateway_pb2.GetBatchRequest(batch_id=_own_id(pools, tenant, "batch")),
        "WatchBatch": lambda: gateway_pb2.WatchBatchRequest(
            batch_id=_own_id(pools, tenant, "batch")),
        "GetBatchResults": lambda: gateway_pb2.GetBatchResultsRequest(
            batch_id=_own_id(pools, tenant, "batch"), follow=bool(rng.random() < 0.3)),
        "ListPipelines": rpc.message("input"),
        "ComputeFractal": lambda: _fractal(rng),
        "ComputeFractalStream": lambda: _fractal(rng),
        "ComputeFractalBatch": lambda: features_pb2.ComputeFractalBatchRequest(
            requests=[_fractal(rng) for _ in range(int(rng.integers(1, 4)))]),
        "ComputeFractalStack": lambda: _fractal_stack(rng),
        "ExtractDeepFeatures": lambda: _deep(rng, pools),
        "ListModels": rpc.message("input"),
        "SegmentCells": lambda: segmentation_pb2.SegmentCellsRequest(
            image=image(rng), pixel_size_um=0.5),
        "SegmentVesselContent": lambda: segmentation_pb2.SegmentVesselContentRequest(
            image=image(rng, 32), vessel_mask=media.tensor_image(_labels(rng).astype(np.uint8))),
        "ExtractPatches": lambda: _patches(rng),
        "ClassifyCells": lambda: classifier_pb2.ClassifyCellsRequest(
            image=image(rng, 32), cell_labels=media.tensor(_labels(rng))),
        "ExplainCells": lambda: classifier_pb2.ExplainCellsRequest(
            image=image(rng, 32), cell_labels=media.tensor(_labels(rng)), class_indices=[0]),
        "Check": lambda: health_pb2.HealthCheckRequest(service=SERVED[rpc.process]),
        "Watch": lambda: health_pb2.HealthCheckRequest(service=SERVED[rpc.process]),
        "List": rpc.message("input"),
    }
    built = builders[name]()
    return built if isinstance(built, list) else [built]


# Cost bounds ----------------------------------------------------------------------------

MAX_CHEAP_PIXELS = 64 * 64
"""Images declaring more pixels than this never meet percolation or long box-size lists."""


def declared_pixels(image: Message) -> int:
    """Pixels an Image claims to have (from a PNG/JPEG header or the tensor shape)."""
    if image.WhichOneof("source") == "tensor":
        shape = list(image.tensor.shape)
        return abs(int(np.prod(shape[:2], dtype=object))) if len(shape) >= 2 else 0
    data = bytes(image.encoded.data)
    if data.startswith(b"\x89PNG") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width * height
    if data.startswith(b"\xff\xd8") and b"\xff\xc0" in data:
        at = data.index(b"\xff\xc0")
        height, width = struct.unpack(">HH", data[at + 5 : at + 9])
        return width * height
    return 0


def _images(message: Message) -> Iterator[Message]:
    for descriptor, value in message.ListFields():
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        is_map = descriptor.message_type.GetOptions().map_entry
        items = value.values() if is_map else value if descriptor.is_repeated else [value]
        for item in items:
            if not isinstance(item, Message):
                continue
            if item.DESCRIPTOR.full_name == "labsight.v1.Image":
                yield item
            else:
                yield from _images(item)


def bound_cost(message: Message) -> None:
    """Keep a request cheap to serve whatever it got: an image that claims to be large
    (a patched header decodes to gigapixels) gets one box size and no percolation,
    and no job asks for percolation on more than MAX_CHEAP_PIXELS."""
    targets = [message]
    if isinstance(message, gateway_pb2.SubmitBatchRequest):
        targets = [message.job, *message.jobs.jobs]
    elif isinstance(message, gateway_pb2.UploadJobRequest):
        targets = [message.job]
    elif isinstance(message, features_pb2.ComputeFractalBatchRequest):
        targets = list(message.requests)
    if isinstance(message, features_pb2.ComputeFractalStackRequest):
        shape = list(message.tiles.shape)
        if len(shape) < 3 or abs(int(np.prod(shape[1:3], dtype=object))) > MAX_CHEAP_PIXELS:
            message.percolation = False
            del message.box_sizes[:]
            message.box_sizes.append(3)
    for target in targets:
        if max((declared_pixels(i) for i in _images(target)), default=0) <= MAX_CHEAP_PIXELS:
            continue
        if isinstance(target, features_pb2.ComputeFractalRequest):
            target.percolation = False
            del target.box_sizes[:]
            target.box_sizes.append(3)
        elif isinstance(target, gateway_pb2.SubmitJobRequest):
            target.params["percolation"] = "false"
            target.params["box_sizes"] = "3"


# Hostile variants -----------------------------------------------------------------------

AUTH_RPCS = frozenset(rpc.path for rpc in RPCS if rpc.descriptor.containing_service.name != "Health")
"""Every LabSight RPC needs a token: a tenant's on the gateway, the shared service token
(LABSIGHT_SERVICE_TOKEN) on the model services; health stays open for probes."""
SWAPPED: Metadata = []
"""Stands for the other kind of valid token: the service token on the gateway, a tenant's
token on a model service (the runner fills it in)."""
BAD_TOKENS: list[tuple[str, Metadata]] = [
    ("token:swapped", SWAPPED),
    ("token:binary-header", [("authorization-bin", b"\xff\x00Bearer")]),
    ("token:missing", []),
    ("token:wrong", [("authorization", "Bearer not-a-token")]),
    ("token:empty-bearer", [("authorization", "Bearer ")]),
    ("token:basic", [("authorization", "Basic dXNlcjpwYXNz")]),
    ("token:huge", [("authorization", "Bearer " + "t" * 7000)]),
    ("token:no-scheme", [("authorization", "fuzz")]),
    ("token:twice", [("authorization", "Bearer a"), ("authorization", "Bearer b")]),
]


def _serialized(requests: list[Request]) -> list[bytes]:
    return [r if isinstance(r, bytes) else r.SerializeToString() for r in requests]


def _invalid_utf8(message: bytes) -> bytes:
    """``message`` with a field 1 string of bytes that are not UTF-8 (proto3 must refuse)."""
    return b"\x0a\x04\xff\xfe\xc0\xaf" + message


def _image_rpc(rpc: Rpc) -> bool:
    fields = rpc.descriptor.input_type.fields_by_name
    return any(f.type == FieldDescriptor.TYPE_MESSAGE
               and f.message_type.full_name in ("labsight.v1.Image", "labsight.v1.JobInput",
                                                "labsight.v1.SubmitJobRequest", "labsight.v1.BatchJobs")
               for f in fields.values())


def _replace_image(message: Message, rng: np.random.Generator, pools: Pools) -> str:
    """Put a hostile image in one of the message's images, or in its first image field."""
    label, value = pools.pick(rng, pools.images)
    images = list(_images(message))
    if images:
        images[int(rng.integers(len(images)))].CopyFrom(value)
        return label
    for descriptor in message.DESCRIPTOR.fields:
        if (descriptor.type == FieldDescriptor.TYPE_MESSAGE
                and descriptor.message_type.full_name == "labsight.v1.Image"):
            slot = getattr(message, descriptor.name)
            (slot.add() if descriptor.is_repeated else slot).CopyFrom(value)
            return label
    return "image:nowhere-to-put"


@dataclass
class CaseStream:
    """The seeded stream of cases; ``next_case()`` draws one."""

    rng: np.random.Generator
    pools: Pools
    tenants: tuple[str, str]
    index: int = 0
    weights: dict[str, float] = field(default_factory=lambda: {
        "valid": 0.08, "mutation": 0.34, "hostile-image": 0.12, "hostile-id": 0.07,
        "other-tenant": 0.05, "bad-token": 0.05, "raw-bytes": 0.08, "truncated": 0.06,
        "invalid-utf8": 0.04, "cut-stream": 0.06, "repeat-mutation": 0.04,
        "hostile-param": 0.08, "new-layer": 0.01})

    def next_case(self) -> Case:
        """The next case of the stream."""
        rng = self.rng
        names = list(self.weights)
        probabilities = np.array([self.weights[n] for n in names])
        kind = names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]
        rpc = self._rpc_for(kind)
        tenant = self.tenants[int(rng.integers(2))]
        requests = valid_requests(rpc, rng, self.pools, tenant)
        case = Case(self.index, rpc, kind, "", requests, tenant)
        if rpc.descriptor.containing_service.name == "Health" and rpc.name == "Watch":
            case.cut_after = 1  # a health watch never ends: its first answer is the one to judge
        getattr(self, "_" + kind.replace("-", "_"))(case)
        for message in case.requests:
            if isinstance(message, Message):
                bound_cost(message)
        self.index += 1
        return case

    def _rpc_for(self, kind: str) -> Rpc:
        candidates = RPCS
        if kind == "hostile-image":
            candidates = [r for r in RPCS if _image_rpc(r)]
        elif kind == "new-layer":
            candidates = [r for r in RPCS if r.name == "ExtractDeepFeatures"]
        elif kind == "hostile-param":
            candidates = [r for r in RPCS if r.name in PARAMETER_RPCS]
        elif kind in ("hostile-id", "other-tenant"):
            candidates = [r for r in RPCS if r.name in ID_RPCS]
        elif kind == "bad-token":
            candidates = [r for r in RPCS if r.path in AUTH_RPCS]
        elif kind == "cut-stream":
            candidates = [r for r in RPCS if r.descriptor.client_streaming
                          or r.descriptor.server_streaming]
        weights = np.array([_RPC_WEIGHTS[r.descriptor.containing_service.name] for r in candidates])
        return candidates[int(self.rng.choice(len(candidates), p=weights / weights.sum()))]

    def _valid(self, case: Case) -> None:
        case.detail = "valid request"

    def _mutation(self, case: Case, times: int = 0) -> None:
        rng = self.rng
        details = []
        for _ in range(times or int(rng.integers(1, 4))):
            target = case.requests[int(rng.integers(len(case.requests)))]
            details.append(mutate(target, rng, self.pools, case.tenant))
        case.detail = "; ".join(details)
        case.input_class = "mutation:" + ",".join(
            sorted({d.split("=", 1)[-1].split(":")[0] for d in details}))

    def _repeat_mutation(self, case: Case) -> None:
        self._mutation(case, times=int(self.rng.integers(4, 9)))

    def _hostile_image(self, case: Case) -> None:
        target = next((r for r in case.requests if isinstance(r, Message)
                       and any(True for _ in _images(r))), case.requests[0])
        label = _replace_image(target, self.rng, self.pools)
        case.input_class, case.detail = label, f"image replaced by {label}"

    def _hostile_id(self, case: Case) -> None:
        rng, message = self.rng, case.requests[0]
        name = "job_id" if "job_id" in message.DESCRIPTOR.fields_by_name else "batch_id"
        pool = self.pools.named(name, case.tenant, rng) or []
        label, value = self.pools.pick(rng, pool)
        setattr(message, name, value)
        if isinstance(message, gateway_pb2.ListJobsRequest) and rng.random() < 0.5:
            page_label, token = self.pools.pick(rng, self.pools.named("page_token", case.tenant, rng))
            message.page_token, label = token, page_label
        case.input_class, case.detail = label, f"{name}={value[:60]!r}"

    def _new_layer(self, case: Case) -> None:
        """A valid request for a module path of the model: each distinct one builds an engine,
        which the features service must keep within its cache budget."""
        request = case.requests[0]
        paths = self.pools.world.layer_paths.get(request.model, [])
        if paths:
            request.layer = paths[int(self.rng.integers(len(paths)))]
        case.detail = f"model {request.model!r} layer {request.layer!r}"

    def _hostile_param(self, case: Case) -> None:
        rng = self.rng
        if case.rpc.name == "ListJobs":
            label, token = self.pools.pick(rng, self.pools.named("page_token", case.tenant, rng))
            case.requests[0].page_token = token
            case.input_class, case.detail = label, f"page_token={token[:60]!r}"
            return
        jobs = [job for message in case.requests for job in _jobs_in(message)]
        if not jobs:
            case.detail = "no job to give parameters"
            return
        job = jobs[int(rng.integers(len(jobs)))]
        names = PIPELINE_PARAMETERS.get(job.pipeline, ("box_sizes",))
        name = names[int(rng.integers(len(names)))]
        label, value = self.pools.pick(rng, self.pools.named(name, case.tenant, rng) or [])
        job.params[name] = value
        case.input_class, case.detail = label, f"{job.pipeline} params[{name}]={value[:60]!r}"

    def _other_tenant(self, case: Case) -> None:
        message = case.requests[0]
        name = "job_id" if "job_id" in message.DESCRIPTOR.fields_by_name else "batch_id"
        _, foreign = self.pools.world.own_and_foreign(case.tenant, name.split("_")[0])
        if not foreign:
            case.detail = "no foreign id yet"
            return
        setattr(message, name, foreign[0])
        case.detail = f"{name}={foreign[0]!r} of the other tenant"
        if isinstance(message, gateway_pb2.ListJobsRequest):
            case.expect = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OK})
            case.verify = _lists_no_jobs
        else:
            case.expect = frozenset({grpc.StatusCode.NOT_FOUND})

    def _bad_token(self, case: Case) -> None:
        label, metadata = BAD_TOKENS[int(self.rng.integers(len(BAD_TOKENS)))]
        case.metadata, case.input_class, case.detail = metadata, label, f"metadata {label}"
        case.expect = frozenset({grpc.StatusCode.UNAUTHENTICATED})

    def _raw_bytes(self, case: Case) -> None:
        rng = self.rng
        size = int(rng.choice([0, 1, 7, 64, 1024, 65536]))
        case.requests = [rng.bytes(size) for _ in case.requests]
        case.detail = f"{len(case.requests)} message(s) of {size} random bytes"

    def _truncated(self, case: Case) -> None:
        data = _serialized(case.requests)
        at = int(self.rng.integers(len(data)))
        whole = data[at]
        cut = int(self.rng.integers(0, max(1, len(whole))))
        data[at] = whole[:cut]
        case.requests = list(data)
        case.detail = f"message {at} cut from {len(whole)} to {cut} bytes"

    def _invalid_utf8(self, case: Case) -> None:
        data = _serialized(case.requests)
        case.requests = [_invalid_utf8(d) for d in data]
        case.detail = "field 1 holds bytes that are not UTF-8"

    def _cut_stream(self, case: Case) -> None:
        streaming = case.rpc.descriptor
        if streaming.client_streaming:
            case.cut_after = int(self.rng.integers(0, len(case.requests)))
            case.detail = f"client stream cancelled after {case.cut_after} of {len(case.requests)}"
            # a name of its own, so the runner can ask afterwards whether the cut left a job
            first = case.requests[0]
            tag = f"cut-{self.index}-{self.rng.bytes(3).hex()}"
            if isinstance(first, gateway_pb2.UploadJobRequest):
                first.job.idempotency_key = tag
            elif isinstance(first, gateway_pb2.SubmitBatchRequest):
                first.header.batch_id = tag
            case.detail += f" (tag {tag})"
        else:
            case.cut_after = 1
            case.detail = "server stream cancelled after its first message"


def _jobs_in(message: Request) -> list[gateway_pb2.SubmitJobRequest]:
    if isinstance(message, gateway_pb2.SubmitJobRequest):
        return [message]
    if isinstance(message, gateway_pb2.UploadJobRequest) and message.HasField("job"):
        return [message.job]
    if isinstance(message, gateway_pb2.SubmitBatchRequest):
        return [message.job] if message.HasField("job") else list(message.jobs.jobs)
    return []


def _lists_no_jobs(response: object) -> str | None:
    jobs = getattr(response, "jobs", [])
    return f"listed {len(jobs)} jobs of another tenant's batch" if jobs else None

