"""The web page's JSON/HTTP API: each request becomes calls to the gateway's gRPC API, made on
loopback with the caller's bearer token, so the page has exactly the rights of its token.

Pictures are drawn by ``labsight.web.render`` (matplotlib), imported at the first request
that needs it so the gateway starts as fast without it.

Handlers take the request (method, path, headers, body) and return a :class:`Reply`; a
refused call is answered with the gRPC status's message as text (``{"error", "code"}``)
and the HTTP status of its kind, never a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from labsight.client import LabSightClient, build_request
from labsight.errors import ServiceError
from labsight.image_messages import detect_format
from labsight.result import Result
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2

log = logging.getLogger(__name__)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.CANCELLED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""The HTTP status answering each gRPC status (others: 502)."""
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/style.css": ("style.css", "text/css; charset=utf-8")}
"""The page's files by path: one HTML, one script, one style sheet, no build step."""
KEPT_INPUT_BYTES = 128 * 1024 * 1024
"""Encoded bytes of the inputs of jobs submitted through the page (single and batch) kept, newest
first, to draw their channels on demand; encoded files are a fraction of their pixels."""
DECODED_INPUTS = 4
"""Decoded inputs kept beside them (each at most ``render.DISPLAY_PIXELS`` bytes): a result's
pictures (composite, masks, classes) decode its input once."""
BATCH_JOBS_SHOWN = 500
"""Jobs of a batch the batch view lists (its counts cover them all)."""
JOB_PARTS = ("result", "composite.png", "masks.png", "classes.png", "table.csv", "masks.tiff")
"""What of a job ``/api/jobs/<id>/<part>`` answers (no part: its state)."""
JOB_PATH = re.compile(r"^/api/jobs/([^/]+)(?:/(" + "|".join(map(re.escape, JOB_PARTS)) + "))?$")
BATCH_PATH = re.compile(r"^/api/batches/([^/]+)$")


class BadRequest(ValueError):
    """A request the page's API cannot read (HTTP 400, the message says what to fix)."""


@dataclass
class Reply:
    """An HTTP answer."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(value: object, status: int = 200) -> Reply:
    """``value`` as a JSON answer."""
    return Reply(status, "application/json", json.dumps(value).encode())


def error_reply(status: int, message: str, code: str) -> Reply:
    """An error as JSON text a person can act on: ``{"error": message, "code": code}``."""
    return json_reply({"error": message, "code": code}, status)


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" without one)."""
    value = headers.get("Authorization", "") or headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@dataclass(frozen=True)
class KeptInput:
    """A job's input as it was uploaded: the main image and the channel images, still encoded."""

    main: tensor_pb2.Image | None
    channels: Mapping[str, tensor_pb2.Image]

    @property
    def size(self) -> int:
        """Bytes it holds."""
        images = [*self.channels.values(), *([self.main] if self.main is not None else [])]
        return sum(image.ByteSize() for image in images)


class InputCache:
    """The inputs of jobs submitted through the page, by job id (thread-safe): encoded, newest
    first up to ``max_bytes``, and decoded on demand, the last ``decoded`` of them kept.

    The gateway deletes a job's input once the job ends, so this is where the page finds the
    pixels to draw; a job submitted elsewhere (the CLI, the SDK) has none here."""

    def __init__(self, max_bytes: int = KEPT_INPUT_BYTES, decoded: int = DECODED_INPUTS) -> None:
        self.max_bytes = max_bytes
        self.decoded = decoded
        self._encoded: OrderedDict[str, KeptInput] = OrderedDict()
        self._bytes = 0
        self._pixels: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, main: tensor_pb2.Image | None,
            channels: Mapping[str, tensor_pb2.Image] | None = None) -> None:
        """Keep a job's encoded input (the oldest go while over the bound; an input over the
        whole bound is not kept)."""
        kept = KeptInput(main, dict(channels or {}))
        if kept.size > self.max_bytes or (main is None and not kept.channels):
            return
        with self._lock:
            self._drop(job_id)
            self._encoded[job_id] = kept
            self._bytes += kept.size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._encoded)))

    def has(self, job_id: str) -> bool:
        """Whether the input of ``job_id`` is kept."""
        with self._lock:
            return job_id in self._encoded

    def pixels(self, job_id: str) -> np.ndarray | None:
        """The decoded pixels of the input of ``job_id``: None when it is not kept, or does not
        decode for display (``render.input_pixels``: unreadable or too large)."""
        from labsight.web import render

        with self._lock:
            if job_id in self._pixels:
                self._pixels.move_to_end(job_id)
                return self._pixels[job_id]
            kept = self._encoded.get(job_id)
        if kept is None:
            return None
        pixels = render.input_pixels(kept.main, kept.channels)  # outside the lock: may take a while
        with self._lock:
            if job_id in self._encoded:
                self._pixels[job_id] = pixels
                while len(self._pixels) > self.decoded:
                    self._pixels.popitem(last=False)
        return pixels

    def _drop(self, job_id: str) -> None:
        kept = self._encoded.pop(job_id, None)
        if kept is not None:
            self._bytes -= kept.size
        self._pixels.pop(job_id, None)


class WebApi:
    """The page's API over the gateway at ``gateway_address`` (``tls_ca``: its certificate,
    when it serves TLS)."""

    def __init__(self, gateway_address: str, tls_ca: str | None = None,
                 max_body_bytes: int = 128 * 1024 * 1024, timeout_s: float = 60.0) -> None:
        self.gateway_address = gateway_address
        self.tls_ca = tls_ca
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.inputs = InputCache()

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request; every failure becomes an error reply, never an exception."""
        path = path.split("?", 1)[0]
        try:
            if method == "GET" and path in STATIC_FILES:
                return static_file(path)
            if not path.startswith("/api/"):
                return error_reply(404, f"no page {path}; the page is at /", "NOT_FOUND")
            with LabSightClient(self.gateway_address, token=bearer_token(headers),
                                timeout_s=self.timeout_s, tls_ca=self.tls_ca) as client:
                return self._route(client, method, path, body)
        except ServiceError as error:
            return error_reply(HTTP_STATUS.get(error.code(), 502), error.details(), error.code().name)
        except BadRequest as error:
            return error_reply(400, str(error), "INVALID_ARGUMENT")
        except Exception:
            log.exception("web page request %s %s failed", method, path)
            return error_reply(500, "the web page's server failed on this request; the gateway's "
                               "log has the details", "INTERNAL")

    def _route(self, client: LabSightClient, method: str, path: str, body: bytes) -> Reply:
        routes: dict[tuple[str, str], Callable[[LabSightClient, bytes], Reply]] = {
            ("GET", "/api/pipelines"): self.pipelines,
            ("POST", "/api/jobs"): self.submit_job,
            ("POST", "/api/batches"): self.submit_batch,
        }
        if (method, path) in routes:
            return routes[(method, path)](client, body)
        job = JOB_PATH.match(path)
        if job and method == "GET":
            return self.job_view(client, job.group(1), job.group(2) or "")
        batch = BATCH_PATH.match(path)
        if batch and method == "GET":
            return self.batch_view(client, batch.group(1))
        return error_reply(404, f"no API {method} {path}", "NOT_FOUND")

    def pipelines(self, client: LabSightClient, body: bytes) -> Reply:
        """The pipelines, their parameters (with defaults) and the inputs they need."""
        return json_reply([
            {"name": info.name, "description": info.description, "available": info.available,
             "required_inputs": list(info.required_inputs),
             "parameters": [{"name": p.name, "description": p.description, "default": p.default_value}
                            for p in info.parameters]}
            for info in client.pipelines()
        ])

    def submit_job(self, client: LabSightClient, body: bytes) -> Reply:
        """Queue one job: ``{"pipeline", "params", "image": {"name", "data"}}`` or, for the four
        channel images of one HPA image, ``"channels": {"red": {...}, "green", "blue", "yellow"}``
        (``data`` is base64)."""

        request = self._request_json(body)
        pipeline, params = _pipeline_and_params(request)
        channels = {role: decode_file(f"channels.{role}", value)
                    for role, value in _object(request, "channels").items()}
        main = decode_file("image", request["image"]) if request.get("image") else None
        if main is None and not channels:
            raise BadRequest("image: choose an image file (or the four channel images)")
        job_input = pb.JobInput()
        if main is not None:
            job_input.image.CopyFrom(main)
        for role, image in channels.items():
            job_input.images[role].CopyFrom(image)
        job = client.submit_request(pb.SubmitJobRequest(pipeline=pipeline, params=params, input=job_input))
        self.inputs.put(job.job_id, main, channels)
        return json_reply(job_json(job))

    def submit_batch(self, client: LabSightClient, body: bytes) -> Reply:
        """Queue one job per file of ``{"pipeline", "params", "files": [{"name", "data"}, ...]}``
        under one batch id."""
        request = self._request_json(body)
        pipeline, params = _pipeline_and_params(request)
        files = request.get("files")
        if not isinstance(files, list) or not files:
            raise BadRequest("files: choose one or more image files")
        images = [decode_file(f"files[{index}]", value) for index, value in enumerate(files)]
        answer = client.submit_batch(build_request(pipeline, image, params) for image in images)
        for job_id, image in zip(answer.job_ids, images, strict=True):
            self.inputs.put(job_id, image)
        return json_reply({"batch_id": answer.batch_id, "job_ids": list(answer.job_ids)})

    def job_view(self, client: LabSightClient, job_id: str, part: str) -> Reply:
        """A job's state, or a view of its result: ``result`` (JSON), ``composite.png``,
        ``masks.png``, ``classes.png``, ``table.csv`` or ``masks.tiff``."""
        from labsight.web import render

        if part == "":
            return json_reply(job_json(client.get(job_id)))
        if part == "composite.png":
            client.get(job_id)  # the caller's token must see the job
            pixels = self.inputs.pixels(job_id)
            if pixels is None:
                why = ("does not decode for display" if self.inputs.has(job_id) else
                       "was not submitted through this page (or was long ago), and the gateway "
                       "keeps no input once a job ends")
                return error_reply(404, f"job {job_id}: its input {why}, so its channels cannot "
                                   "be drawn", "NOT_FOUND")
            return Reply(200, "image/png", render.composite_png(pixels))
        result = client.result(job_id)
        if part == "result":
            return json_reply(result_json(result, has_input=self.inputs.pixels(job_id) is not None))
        if part == "masks.png":
            if not render.has_mask_picture(result):
                return error_reply(404, f"pipeline {result.pipeline} makes no label masks", "NOT_FOUND")
            return Reply(200, "image/png", render.masks_png(result, self.inputs.pixels(job_id)))
        if part == "classes.png":
            if not render.has_classes_picture(result):
                return error_reply(404, f"pipeline {result.pipeline} classifies no cells", "NOT_FOUND")
            return Reply(200, "image/png", render.classes_png(result, self.inputs.pixels(job_id)))
        if part == "table.csv":
            if not result.tables:
                return error_reply(404, f"the result of job {job_id} has no table", "NOT_FOUND")
            return Reply(200, "text/csv; charset=utf-8", render.table_csv(result),
                         {"Content-Disposition": f'attachment; filename="{job_id}.csv"'})
        if not render.mask_kinds(result):
            return error_reply(404, f"pipeline {result.pipeline} makes no label masks", "NOT_FOUND")
        return Reply(200, "image/tiff", render.masks_tiff(result),
                     {"Content-Disposition": f'attachment; filename="{job_id}_masks.tif"'})

    def batch_view(self, client: LabSightClient, batch_id: str) -> Reply:
        """A batch's counts per status and its jobs (the first BATCH_JOBS_SHOWN)."""
        batch = client.batch(batch_id)
        jobs = client.list_jobs(batch_id=batch_id, page_size=BATCH_JOBS_SHOWN)
        return json_reply({"batch_id": batch.batch_id, "total": batch.total, "finished": batch.finished,
                           "counts": dict(batch.counts), "jobs": [job_json(job) for job in jobs]})

    def _request_json(self, body: bytes) -> dict[str, Any]:
        if len(body) > self.max_body_bytes:
            raise BadRequest(f"request: {len(body)} bytes, over the page's limit of "
                             f"{self.max_body_bytes}; submit large files with `labsight submit`")
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadRequest(f"request: not JSON ({error})") from None
        if not isinstance(value, dict):
            raise BadRequest("request: expected a JSON object")
        return value


def static_file(path: str) -> Reply:
    """One of the page's files, packaged in ``labsight/web/static``."""
    name, content_type = STATIC_FILES[path]
    data = resources.files("labsight.web").joinpath("static", name).read_bytes()
    return Reply(200, content_type, data, {"Cache-Control": "no-cache"})


def decode_file(field_name: str, value: object) -> tensor_pb2.Image:
    """An encoded Image from ``{"name": ..., "data": base64}``; BadRequest naming ``field_name``."""
    if not isinstance(value, dict) or not isinstance(value.get("data"), str):
        raise BadRequest(f"{field_name}: expected {{\"name\": ..., \"data\": base64}}")
    try:
        data = base64.b64decode(value["data"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field_name}: data is not base64") from None
    name = str(value.get("name", ""))
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data), name=Path(name).name)
    fmt = detect_format(data)
    if fmt:
        image.encoded.format = fmt
    return image


def job_json(job: pb.Job) -> dict[str, object]:
    """What the page shows of a job's state."""
    return {"job_id": job.job_id, "batch_id": job.batch_id, "pipeline": job.pipeline,
            "status": pb.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower(),
            "progress": round(float(job.progress), 4), "progress_message": job.progress_message,
            "error": job.error, "input_name": job.input_name, "warnings": list(job.warnings)}


def result_json(result: Result, has_input: bool) -> dict[str, object]:
    """What the page shows of a result: the first rows of its main table, each cell's top
    classes (hpa-cells), its scalars and which pictures and downloads it has."""
    from labsight.web import render

    return {"job_id": result.job_id, "pipeline": result.pipeline, "input_name": result.input_name,
            "table": render.table_preview(result), "classes": render.cell_classes(result),
            "scalars": {k: v for k, v in result.scalars.items() if np.isfinite(v)},
            "warnings": list(result.warnings), "composite": has_input,
            "masks": render.has_mask_picture(result), "classes_picture": render.has_classes_picture(result),
            "mask_kinds": list(render.mask_kinds(result)),
            "tables": sorted(result.tables)}


def _pipeline_and_params(request: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    pipeline = request.get("pipeline")
    if not isinstance(pipeline, str) or not pipeline:
        raise BadRequest("pipeline: choose a pipeline")
    params = {str(k): str(v) for k, v in _object(request, "params").items() if str(v).strip()}
    return pipeline, params


def _object(request: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = request.get(name) or {}
    if not isinstance(value, dict):
        raise BadRequest(f"{name}: expected a JSON object")
    return value
