"""What every pipeline is: named parameters, a validation at submit time and a run in a worker."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from labsight.config import answer_room
from labsight.errors import InvalidArgument, echo
from labsight.image_reader import parse_channels, parse_plane, parse_series, parse_z_project
from labsight.images import ImageInfo, image_info, max_image_bytes, read_image
from labsight.intensity import DEFAULT_INTENSITY, check_bit_depth, parse_intensity
from labsight.pixel_size import PixelSize
from labsight.tables import ROW_NAMES
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.gateway.services import ServiceClients


class ProgressReporter(Protocol):
    """Called with the fraction of the job done and the step's name, and where a step counts
    its work, ``done`` of ``total`` ``unit`` (e.g. rows, images) for its rate; raises
    JobCancelled if the job was cancelled."""

    def __call__(
        self, fraction: float, step: str, done: int = 0, total: int = 0, unit: str = ""
    ) -> None: ...


class JobCancelled(Exception):
    """Raised at a step boundary when the job was cancelled meanwhile."""


@dataclass(frozen=True)
class Parameter:
    """One pipeline parameter: text in the API, parsed and checked by ``parse``."""

    name: str
    description: str
    default: str
    parse: Callable[[str], object]


@dataclass
class RunContext:
    """Everything a pipeline run needs inside a worker.

    ``image_pixels`` is the main image as the worker read it (``Pipeline.read_input``; for the
    cells pipelines' one image per channel, the stack of the channels), kept
    for a job that runs in a group (``run_many``) or whose pipeline ``sends_read_pixels`` so
    that its pixels are not decoded twice; None otherwise (a job alone does not hold its
    decoded image while it runs). ``image_pixel_size`` is the physical pixel size its file
    states (``InputReading.pixel_size``).
    """

    job_id: str
    params: dict[str, str]
    job_input: pb.JobInput
    services: ServiceClients
    report_progress: ProgressReporter
    image_pixels: np.ndarray | None = None
    image_pixel_size: PixelSize | None = None


@dataclass(frozen=True)
class InputReading:
    """What reading a job's inputs in a worker found (``Pipeline.read_input``): the warnings
    and provenance its result carries, the main image's pixels as the services read them
    (None where the main image was not read whole) and the physical pixel size its file states
    (None where it states none, or for pixels sent as a tensor)."""

    warnings: list[str]
    provenance: dict[str, str]
    pixels: np.ndarray | None = None
    pixel_size: PixelSize | None = None


def sendable_pixels(context: RunContext) -> np.ndarray | None:
    """The worker's reading of the job's image files (the context's ``image_pixels``, see
    ``Pipeline.sends_read_pixels``, read options and intensity applied as every service reads
    them) where they fit a message; None otherwise (the service then reads the files itself)."""
    pixels = context.image_pixels
    return pixels if pixels is not None and pixels.nbytes <= answer_room() else None


def parse_micrometres(text: str) -> float | None:
    """A length in micrometres, > 0 and finite, or None for empty (not given); ValueError
    otherwise."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of micrometres, got {echo(text)}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number > 0, got {echo(text)}")
    return value


def parse_bool(text: str) -> bool:
    """'true'/'false' (also 1/0, yes/no) to bool; ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {echo(text)}")


IMAGE_PARAMETERS = (
    Parameter("channels", "Channels of the image to use, in order: indices (0,2) or channel names "
              "from OME metadata; empty: all (an opaque alpha channel is dropped).", "",
              parse_channels),
    Parameter("plane", "Plane of a stack (z, t or pages): an index (3) when it has one stack axis, "
              "else z=3,t=0; empty: none.", "", parse_plane),
    Parameter("z_project", "Project the z axis of a stack: max, mean or sum; empty: none.", "",
              parse_z_project),
    Parameter("intensity", "Intensity range read as black to white: full-range (the dtype's), "
              "bit-depth:12 (0-4095), bit-depth (from the file), percentile:0.1-99.9, minmax or "
              "range:100-3000 (fixed values; floating-point files: full-range is 0-1).",
              DEFAULT_INTENSITY, parse_intensity),
    Parameter("series", "Image of a file holding several (OME-TIFF positions or wells, TIFF "
              "series), counted from 0; empty: the first.", "", parse_series),
)
"""How every pipeline reads its main image (labsight.image_reader, labsight.intensity): they
travel as the image's ``read`` options, so every service reads the same pixels."""


MAX_ROW_NAME_CHARS = 1024
"""Longest name of a stacked image (JobInput.tensor_names), e.g. a file's relative path."""


def stack_row_ids(job_input: pb.JobInput, role: str, count: int) -> list[str]:
    """Row ids of the ``count`` images of stack ``role``: their names in
    ``job_input.tensor_names`` (checked at submit, and their count again here: a job may
    reach a worker by another way than the gateway), else "0" .. "count - 1"."""
    if role not in job_input.tensor_names:
        return [str(i) for i in range(count)]
    names = list(job_input.tensor_names[role].names)
    if len(names) != count:
        raise InvalidArgument(f"input.tensor_names[{role}]: {len(names)} names for the {count} "
                              f"images of input.tensors[{role}]")
    return names


def mark_row_names(result: pb.JobResult, job_input: pb.JobInput, role: str) -> None:
    """Record in the result's provenance (ROW_NAMES) that its rows carry the names of stack
    ``role``, where the job named them."""
    if role in job_input.tensor_names:
        result.provenance[ROW_NAMES] = role


class Pipeline(ABC):
    """A named sequence of model-service calls that turns a JobInput into a JobResult."""

    name: str
    description: str
    parameters: tuple[Parameter, ...] = ()
    required_inputs: tuple[str, ...] = ()
    runs_in_groups: bool = False
    """Whether ``group_key`` can put jobs in groups. False: the worker runs every job alone
    without parsing its input to ask for a key (a deep-features job's input is megabytes)."""
    named_stacks: tuple[str, ...] = ()
    """Roles of ``JobInput.tensors`` whose images may be named in ``JobInput.tensor_names``
    (stacks whose images become rows of the result)."""

    def validate(self, params: Mapping[str, str], job_input: pb.JobInput) -> dict[str, str]:
        """Check a submission; returns the parameters with defaults filled in.

        Raises InvalidArgument naming the parameter or input that is wrong.
        """
        known = {p.name: p for p in self.all_parameters()}
        unknown = sorted(set(params) - set(known))
        if unknown:
            listed = ", ".join(echo(name) for name in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InvalidArgument(
                f"params: unknown parameter(s) {listed}{more} for pipeline {self.name!r}; "
                f"known: {sorted(known)}"
            )
        resolved = {name: params.get(name, p.default) for name, p in known.items()}
        for name, text in resolved.items():
            try:
                known[name].parse(text)
            except ValueError as error:
                raise InvalidArgument(f"params.{name}: {error}") from None
        missing = [role for role in self.required_inputs if role not in job_input.images
                   and role not in job_input.tensors]
        if missing:
            raise InvalidArgument(f"input: pipeline {self.name!r} needs inputs {missing}")
        info: ImageInfo | None = None
        if job_input.image.WhichOneof("source") is not None:
            # The choices travel with the image, and are checked against its axes here.
            job_input.image.read.CopyFrom(read_options(resolved))
            # A blob image is allowed the larger blob limit only where no message carries it whole.
            limit = None if self.keeps_blob_reference(job_input, resolved) else max_image_bytes()
            info = image_info(job_input.image, "input.image", limit, choices_field="params")
            try:
                check_bit_depth(parse_intensity(resolved["intensity"]).bits, info.dtype)
            except ValueError as error:
                raise InvalidArgument(f"params.intensity: {error}") from None
        self.check_input(resolved, job_input, info)  # the header is read once per submission
        self._check_tensor_names(job_input)
        return resolved

    def _check_tensor_names(self, job_input: pb.JobInput) -> None:
        """Refuse names of a stack the pipeline does not name rows of, of a tensor not sent,
        more or fewer than its images, or names empty or over MAX_ROW_NAME_CHARS."""
        for role, names in job_input.tensor_names.items():
            field = f"input.tensor_names[{role}]"
            if role not in self.named_stacks:
                raise InvalidArgument(f"{field}: pipeline {self.name!r} names the images of "
                                      f"{list(self.named_stacks) or 'no tensor'}, not of {role!r}")
            if role not in job_input.tensors:
                raise InvalidArgument(f"{field}: no tensor {role!r} in input.tensors to name")
            count = job_input.tensors[role].shape[0] if job_input.tensors[role].shape else 0
            if len(names.names) != count:
                raise InvalidArgument(f"{field}: {len(names.names)} names for the {count} images of "
                                      f"input.tensors[{role}]; give one per image, in order")
            bad = next((i for i, name in enumerate(names.names)
                        if not 1 <= len(name) <= MAX_ROW_NAME_CHARS), None)
            if bad is not None:
                raise InvalidArgument(f"{field}.names[{bad}]: a name must have 1 to "
                                      f"{MAX_ROW_NAME_CHARS} characters, got {len(names.names[bad])}")

    def reads_regions(self, job_input: pb.JobInput, params: Mapping[str, str]) -> bool:
        """True where the job reads its blob-store image by regions in the worker (default: never)."""
        return False

    def service_reads_blob(self, job_input: pb.JobInput, params: Mapping[str, str]) -> bool:
        """True where the job's service reads the blob-store image itself from the reference it
        is sent (it shares the blob store; default: never)."""
        return False

    def sends_read_pixels(self, job_input: pb.JobInput) -> bool:
        """Whether ``run`` sends the services the pixels the worker read (the context's
        ``image_pixels``, see :func:`sendable_pixels`) in place of this job's image files,
        which they would otherwise decode again; the worker then keeps them. Default: no."""
        return False

    def keeps_blob_reference(self, job_input: pb.JobInput, params: Mapping[str, str]) -> bool:
        """True where the job's blob-store image never travels whole in a message: the worker
        reads it by regions or the service reads the blob.

        Other jobs send the image whole to a service, so it must fit the
        decoded-size limit (LABSIGHT_MAX_IMAGE_BYTES) and a message.
        """
        return job_input.image.WhichOneof("source") == "blob" and (
            self.reads_regions(job_input, params) or self.service_reads_blob(job_input, params)
        )

    def all_parameters(self) -> tuple[Parameter, ...]:
        """The pipeline's own parameters, then the image-reading ones every pipeline shares."""
        return self.parameters + IMAGE_PARAMETERS

    def read_input(self, job_input: pb.JobInput, params: Mapping[str, str]) -> InputReading:
        """The main image read as the services will read it (in a worker): its pixels, and the
        warnings and provenance of the reading.

        Raises InvalidArgument for an image the services would refuse (e.g. a
        transparent alpha channel), so such a job fails before any service call.
        Pipelines with other image inputs add theirs.
        """
        if job_input.image.WhichOneof("source") is None:
            return InputReading([], {})
        reading = read_image(job_input.image, "input.image", choices_field="params")
        return InputReading(reading.warnings, reading.provenance, reading.pixels, reading.pixel_size)

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """Pipeline-specific input checks at submit time; default: the job has a main image.

        ``info`` is the main image's header as ``validate`` read and checked it
        (None without a main image), so no check reads that header again.
        Checks read headers, never pixels, so a submission costs the gateway what
        its message does (the services that need the pixels decode them).
        """
        main_image_info(job_input, info)

    def parsed(self, params: Mapping[str, str]) -> dict[str, object]:
        """Parameters parsed to Python values (after ``validate``)."""
        return {p.name: p.parse(params.get(p.name, p.default)) for p in self.all_parameters()}

    def info(self) -> pb.PipelineInfo:
        """The public description of this pipeline."""
        return pb.PipelineInfo(
            name=self.name,
            description=self.description,
            parameters=[
                pb.PipelineParameter(name=p.name, description=p.description, default_value=p.default)
                for p in self.all_parameters()
            ],
            required_inputs=list(self.required_inputs),
            available=True,
        )

    @abstractmethod
    def run(self, context: RunContext) -> pb.JobResult:
        """Run the job in a worker; raise on failure (the worker classifies the error)."""

    def group_key(self, params: Mapping[str, str], job_input: pb.JobInput) -> str:
        """Jobs whose keys are equal and not empty may run as one group (``run_many``) in one
        slot of a worker, started, called and finished together; "" (the default): the job
        runs alone. Only for small jobs, whose per-job costs outweigh their work."""
        return ""

    def run_many(self, contexts: Sequence[RunContext]) -> list[pb.JobResult]:
        """Run a group of jobs of one ``group_key``, their results in order; raise on any
        failure (the worker then runs each job alone, to its own outcome). Default: one
        after another."""
        return [self.run(context) for context in contexts]


def main_image_info(job_input: pb.JobInput, info: ImageInfo | None) -> ImageInfo:
    """The main image's header ``info`` as ``validate`` read it; without a main image,
    InvalidArgument saying that ``input.image`` is missing."""
    return info if info is not None else image_info(job_input.image, "input.image")


def read_options(params: Mapping[str, str]) -> tensor_pb2.ImageReadOptions:
    """The image-reading parameters of a job as an Image's ``read`` options."""
    return tensor_pb2.ImageReadOptions(
        **{p.name: params.get(p.name, p.default) for p in IMAGE_PARAMETERS}
    )
