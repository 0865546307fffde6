"""The ``deep-features`` pipeline: CNN layer features of an image and of a stack of patches."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grpc
import numpy as np

from labsight.errors import InvalidArgument, echo
from labsight.images import ImageInfo, image_stack, image_stack_header
from labsight.intensity import (
    ScaledPixels,
    check_bit_depth,
    low_range_warning,
    parse_intensity,
    scale_intensity,
)
from labsight.tables import feature_table, table_values
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import (
    InputReading,
    Parameter,
    Pipeline,
    RunContext,
    main_image_info,
    mark_row_names,
    sendable_pixels,
    stack_row_ids,
)
from services.gateway.pipelines.costs import DEEP_FEATURES_COST
from services.gateway.pipelines.models import MODEL_CATALOG, input_pixels

CHUNK_IMAGES = 32
"""Images per ExtractDeepFeatures call; calls overlap so the service's batcher stays busy."""

CALLS_IN_FLIGHT = 2

PATCHES_INPUT = "patches"
"""Role of the optional (N, H, W, C) stack of images in JobInput.tensors."""

MODEL_CHANNELS = (1, 3)
"""Channels the features service takes: grey (repeated to RGB) or RGB."""

POOLINGS = {
    "average": features_pb2.POOLING_AVERAGE,
    "max": features_pb2.POOLING_MAX,
    "none": features_pb2.POOLING_NONE,
}


def parse_pooling(text: str) -> int:
    """'average', 'max' or 'none' to the Pooling enum; ValueError otherwise."""
    if text not in POOLINGS:
        raise ValueError(f"expected one of {sorted(POOLINGS)}, got {echo(text)}")
    return POOLINGS[text]


def model_parameters(default_model: str) -> tuple[Parameter, ...]:
    """The model, layer and pooling parameters shared by the deep-feature pipelines."""
    return (
        Parameter("model", "Model name from the features service's ListModels.", default_model, str),
        Parameter("layer", "Layer name or module path; empty: the model's default layer.", "", str),
        Parameter("pooling", "Reduction of the layer's maps: average, max or none.", "average",
                  parse_pooling),
    )


def check_model_channels(channels: int, field: str) -> None:
    """Refuse images the CNN cannot take (2, 4 or more channels), naming ``field``."""
    if channels not in MODEL_CHANNELS:
        raise InvalidArgument(
            f"{field}: {channels} channels; deep features take grey (1) or RGB (3) images "
            "(choose them with params.channels, e.g. channels=0 or channels=0,1,2)"
        )


def check_model_work(params: dict[str, str], images: int, what: str) -> None:
    """Refuse an unknown model or layer (when the features service answers) and ``images`` over
    the work limit."""
    info = MODEL_CATALOG.check(params["model"], params["layer"])
    DEEP_FEATURES_COST.check(
        float(images) * input_pixels(info),
        f"{what}: {images} images through model {params['model'] or 'default'!r}",
        "send fewer images per job (one job per slice of them)",
    )


def extract_features(
    context: RunContext,
    images: Sequence[tensor_pb2.Image] | np.ndarray,
    on_chunk: Callable[[int], None],
) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Column names, (N, D) features of ``images`` and their provenance, from the features service.

    ``images`` are Image messages or an (N, H, W[, C]) array of same-size images,
    sent as ``image_stack`` tensors. They go in chunks with calls overlapping;
    ``on_chunk`` is called with the number of images finished after every chunk
    (to report progress, which also stops a cancelled job).
    """
    params = context.params
    pooling = parse_pooling(params["pooling"])
    pending: list[grpc.Future] = []
    answers: list[features_pb2.ExtractDeepFeaturesResponse] = []
    done = 0

    def collect(future: grpc.Future) -> None:
        nonlocal done
        answers.append(future.result())
        done += len(answers[-1].features.row_ids)
        on_chunk(done)

    for start in range(0, len(images), CHUNK_IMAGES):
        request = features_pb2.ExtractDeepFeaturesRequest(
            model=params["model"], layer=params["layer"], pooling=pooling
        )
        chunk = images[start : start + CHUNK_IMAGES]
        sent: features_pb2.ExtractDeepFeaturesRequest | EncodedMessage
        if isinstance(chunk, np.ndarray):
            # The pixels copied once, into the request's bytes (no message copy, no serializing).
            sent = EncodedMessage(serialize_with_arrays(request, {"image_stack": chunk}))
        else:
            request.images.extend(chunk)
            sent = request
        pending.append(
            context.services.features.ExtractDeepFeatures.future(
                sent, timeout=context.services.call_timeout_s
            )
        )
        if len(pending) == CALLS_IN_FLIGHT:
            collect(pending.pop(0))
    for future in pending:
        collect(future)
    values = np.concatenate([table_values(answer.features, "features") for answer in answers])
    return list(answers[0].features.columns), values, model_provenance(answers[0])


def model_provenance(answer: features_pb2.ExtractDeepFeaturesResponse) -> dict[str, str]:
    """The model, version and layer the features service used, for JobResult.provenance."""
    return {"model": answer.model, "model_version": answer.model_version, "layer": answer.layer}


class DeepFeaturesPipeline(Pipeline):
    """Runs FeatureService.ExtractDeepFeatures on the job's image and patch stack."""

    name = "deep-features"
    named_stacks = (PATCHES_INPUT,)
    description = (
        "CNN features of any RGB or grey images from a chosen model and layer (average, max or "
        "no pooling): the main image and/or a stack of patches as tensor 'patches' (N, H, W, 3), "
        "its rows named by input.tensor_names[patches] (else 0..N-1). "
        "Default model: EfficientNet-Lite0, 1280-d average pool."
    )
    parameters = model_parameters("efficientnet-lite0")

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """An image and/or a patch stack of grey or RGB pixels, a known model, within the work limit."""
        images = 0
        if job_input.image.WhichOneof("source") is not None:
            check_model_channels(main_image_info(job_input, info).channels, "input.image")
            images += 1
        elif PATCHES_INPUT not in job_input.tensors:
            raise InvalidArgument(
                f"input: give an image and/or a stack of images as tensors[{PATCHES_INPUT!r}]"
            )
        if PATCHES_INPUT in job_input.tensors:
            shape, dtype = patch_stack_header(job_input)
            channels = shape[3] if len(shape) == 4 else 1
            check_model_channels(channels, f"input.tensors[{PATCHES_INPUT}]")
            try:
                check_bit_depth(parse_intensity(params["intensity"]).bits, dtype)
            except ValueError as error:
                raise InvalidArgument(
                    f"params.intensity: {error} (input.tensors[{PATCHES_INPUT}])"
                ) from None
            images += shape[0]
        check_model_work(params, images, "input")

    def sends_read_pixels(self, job_input: pb.JobInput) -> bool:
        """Yes for a main image that is a file: the features service gets the worker's reading
        of it instead of decoding it again."""
        return job_input.image.WhichOneof("source") == "encoded"

    def read_input(self, job_input: pb.JobInput, params: Mapping[str, str]) -> InputReading:
        """The main image's reading, and a warning when the patch stack spans little of its range."""
        reading = super().read_input(job_input, params)
        warnings, provenance = list(reading.warnings), dict(reading.provenance)
        if PATCHES_INPUT in job_input.tensors:
            scaled = scaled_patches(job_input, params)
            warning = low_range_warning(scaled.pixels, f"input.tensors[{PATCHES_INPUT}]")
            warnings += [warning] if warning else []
            provenance.setdefault("intensity", parse_intensity(params["intensity"]).text)
            provenance["patches_intensity_range"] = f"{scaled.black:g}-{scaled.white:g}"
        return InputReading(warnings, provenance, reading.pixels)

    def run(self, context: RunContext) -> pb.JobResult:
        """Features of every input image, one table row each (main image first).

        The patch stack is read (and scaled) again here, after ``read_input`` read it: at glibc's
        default malloc settings, reading it only here cost the worker more CPU, not less
        (bench/deep_features.py part 1, 2026-12-04: 0.60-0.76 against 0.42-0.62 ms per patch),
        the allocator then mapping fresh pages for the requests' buffers.
        """
        context.report_progress(0.0, "features")
        job_input = context.job_input
        has_image = job_input.image.WhichOneof("source") is not None
        stack = (
            scaled_patches(job_input, context.params).pixels
            if PATCHES_INPUT in job_input.tensors else None
        )
        total = int(has_image) + (len(stack) if stack is not None else 0)

        def report(done: int) -> None:
            context.report_progress(done / total, "features", done, total, "images")

        blocks: list[np.ndarray] = []
        row_ids: list[str] = []
        columns: list[str] = []
        provenance: dict[str, str] = {}
        if has_image:
            # The worker's reading of an image file (see sends_read_pixels) goes as a stack of
            # one, copied once into the request; any other image as it came.
            pixels = sendable_pixels(context)
            main = pixels[np.newaxis] if pixels is not None else [job_input.image]
            columns, values, provenance = extract_features(context, main, report)
            blocks.append(values)
            row_ids.append(job_input.image.name or "image")
        if stack is not None:
            offset = len(row_ids)
            columns, values, provenance = extract_features(
                context, stack, lambda done: report(offset + done)
            )
            blocks.append(values)
            row_ids.extend(stack_row_ids(job_input, PATCHES_INPUT, len(stack)))
        result = pb.JobResult(pipeline=self.name, provenance=provenance)
        mark_row_names(result, job_input, PATCHES_INPUT)
        result.tables["features"].CopyFrom(feature_table(columns, np.concatenate(blocks), row_ids))
        context.report_progress(1.0, "features")
        return result


def scaled_patches(job_input: pb.JobInput, params: Mapping[str, str]) -> ScaledPixels:
    """The patch stack with the job's intensity scaling, as the main image gets it in the
    services (one range for the whole stack, so patches stay comparable)."""
    return scale_intensity(patch_stack(job_input), parse_intensity(params["intensity"]))


def patch_stack_header(job_input: pb.JobInput) -> tuple[tuple[int, ...], np.dtype]:
    """The (N, H, W[, C]) shape and dtype of tensors['patches'], checked as :func:`patch_stack`
    checks them but from the tensor's header alone: the gateway reads no pixel data at submit
    (it checks the data's length when it serializes the job, see the gateway servicer)."""
    return image_stack_header(job_input.tensors[PATCHES_INPUT], f"input.tensors[{PATCHES_INPUT}]")


def patch_stack(job_input: pb.JobInput) -> np.ndarray:
    """The (N, H, W[, C]) uint8/uint16 stack in tensors['patches'], checked."""
    return image_stack(job_input.tensors[PATCHES_INPUT], f"input.tensors[{PATCHES_INPUT}]")
