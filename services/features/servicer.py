"""Thin gRPC servicer of the FeatureService: protobuf in, fractal or deep-feature core, protobuf out."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import grpc
import numba
import numpy as np

from labsight.config import Settings
from labsight.errors import InvalidArgument, LabSightError
from labsight.fractal_work import BATCH_MAX_COST, BATCH_MAX_IMAGES, fractal_cost
from labsight.images import decode_image, image_info, image_stack, image_stack_header
from labsight.oip.servicer import add_open_inference
from labsight.runtime.progress_stream import Progress, Report, raise_if_gone, stream_progress
from labsight.tables import feature_row, feature_table
from labsight.tensors import write_tensor
from labsight.v1 import features_pb2 as pb
from labsight.v1 import features_pb2_grpc as pb_grpc
from labsight.wire import length_delimited, packed_doubles, varint_field
from services.features.deep import PoolingMode
from services.features.extractor import DeepFeatureExtractor, ExtractorConfig
from services.features.fractal import (
    DEFAULT_BOX_SIZES,
    GlidingBoxResult,
    ProgressCallback,
    gliding_box,
    percolation,
    warm_up,
)
from services.features.fractal_columns import fractal_columns, percolation_columns, stack_fractal_columns
from services.features.fractal_stack import gliding_box_stack
from services.features.fractal_stack import warm_up as warm_up_stack
from services.features.models import feature_repository

UNARY_BANDS_MIN_COST = 2e8
"""Box-pixel comparisons (about 10 ms of one core; see fractal_cost) under which a unary
ComputeFractal computes in one pass on one numba thread: the bands that let a long call stop
when its caller cancels cost a parallel launch each, more than their work on small images (a 64²
RGB image with sides 3-41, 5e7 comparisons in 31 bands: 4.5 CPU ms, in one pass 2.5 ms), and
small calls come several at once (a worker has 4 jobs in flight), so threads of their own would
only wake and sleep (features CPU per 64² job in bench/small_jobs.py 3.7 -> 3.4 ms)."""

POOLING_MODES: dict[int, PoolingMode] = {
    pb.POOLING_UNSPECIFIED: "average",
    pb.POOLING_AVERAGE: "average",
    pb.POOLING_MAX: "max",
    pb.POOLING_NONE: "none",
}


class FeatureServicer(pb_grpc.FeatureServiceServicer):
    """Serves fractal features and deep CNN features of the model repository."""

    def __init__(self, extractor: DeepFeatureExtractor) -> None:
        self.extractor = extractor

    def ComputeFractal(
        self, request: pb.ComputeFractalRequest, context: grpc.ServicerContext
    ) -> pb.ComputeFractalResponse:
        """Gliding-box features (and percolation when asked) of one image; stops when the
        caller cancels (a call under UNARY_BANDS_MIN_COST only checks before its work)."""
        return fractal_response(request, lambda _: raise_if_gone(context, "fractal"),
                                UNARY_BANDS_MIN_COST)

    def ComputeFractalBatch(
        self, request: pb.ComputeFractalBatchRequest, context: grpc.ServicerContext
    ) -> pb.ComputeFractalBatchResponse:
        """ComputeFractal of each small image in turn, each in one pass on one numba thread;
        every request is checked (from its image header) before any is computed, and the
        call stops between images when the caller cancels."""
        if len(request.requests) > BATCH_MAX_IMAGES:
            raise InvalidArgument(
                f"requests: {len(request.requests)} images; at most {BATCH_MAX_IMAGES} per call"
            )
        for index, item in enumerate(request.requests):
            _check_batch_item(item, f"requests[{index}]")
        report = partial(_raise_if_gone_at, context)
        return pb.ComputeFractalBatchResponse(responses=[
            _batch_answer(item, f"requests[{index}]", report)
            for index, item in enumerate(request.requests)
        ])

    def ComputeFractalStack(
        self, request: pb.ComputeFractalStackRequest, context: grpc.ServicerContext
    ) -> pb.ComputeFractalStackResponse:
        """ComputeFractal of every tile of a stack, on one numba thread, as stacked tensors and
        one table; the stack is checked from its header before it is read, and the call stops
        before its work when the caller has gone (and between tiles' percolation)."""
        return fractal_stack_response(request, lambda: raise_if_gone(context, "fractal"))

    def ComputeFractalStream(
        self, request: pb.ComputeFractalRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ComputeFractalUpdate]:
        """ComputeFractal's answer after its progress; stops when the caller cancels."""
        for event in stream_progress(partial(fractal_response, request), context, "fractal"):
            if isinstance(event, Progress):
                yield pb.ComputeFractalUpdate(progress=pb.WorkProgress(
                    step=event.step, done=event.done, total=event.total, unit=event.unit
                ))
            else:
                yield pb.ComputeFractalUpdate(result=event)

    def ExtractDeepFeatures(
        self, request: pb.ExtractDeepFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.ExtractDeepFeaturesResponse:
        """Features of a batch of images from one layer of one model."""
        if request.pooling not in POOLING_MODES:
            raise InvalidArgument(f"pooling: unknown value {request.pooling}")
        if bool(request.images) == request.HasField("image_stack"):
            raise InvalidArgument("images, image_stack: give exactly one of them")
        images: Sequence[np.ndarray]
        if request.HasField("image_stack"):
            field = "image_stack"
            images = image_stack(request.image_stack, field)
            row_ids = [str(i) for i in range(len(images))]
        else:
            field = "images"
            images = [decode_image(image, f"images[{i}]") for i, image in enumerate(request.images)]
            row_ids = [image.name or str(i) for i, image in enumerate(request.images)]
        features = self.extractor.extract(
            images, request.model, request.layer, POOLING_MODES[request.pooling], field,
            before_batch=partial(raise_if_gone, context, "deep features"),
        )
        return pb.ExtractDeepFeaturesResponse(
            features=feature_table(features.columns, features.values, row_ids),
            model=features.model.name,
            model_version=features.model.version,
            layer=features.layer,
        )

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        """Every model of the repository with its public layers, and all its layer names if asked."""
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    name=m.name,
                    version=m.version,
                    format=m.format,
                    input_size=list(m.input_size),
                    layers=list(m.layers),
                    default_layer=m.default_layer,
                    weights_source=m.weights_description(),
                    layer_paths=self.extractor.listed_layer_paths(m) if request.with_layer_paths else [],
                )
                for m in self.extractor.repository.list()
            ],
            default_model=self.extractor.config.default_model,
        )


def _raise_if_gone_at(context: grpc.ServicerContext, _: Progress) -> None:
    raise_if_gone(context, "fractal")


def _check_batch_item(item: pb.ComputeFractalRequest, field: str) -> None:
    """InvalidArgument naming ``field`` if ``item`` may not travel in a ComputeFractalBatch:
    a blob-store image, or more work than BATCH_MAX_COST (read from the image's header)."""
    if item.image.WhichOneof("source") == "blob":
        raise InvalidArgument(f"{field}.image: a blob-store image is not small; "
                              "send it alone with ComputeFractal")
    info = image_info(item.image, f"{field}.image")
    _check_small_work(field, f"{info.height}x{info.width} pixels", info.height * info.width,
                      tuple(item.box_sizes) or DEFAULT_BOX_SIZES, item.percolation,
                      "a batch image's", "send it alone with ComputeFractal")


def _check_small_work(field: str, what: str, pixels: int, box_sizes: Sequence[int], percolation: bool,
                      limit_of: str, advice: str) -> None:
    """InvalidArgument naming ``field`` if an image of ``pixels`` (``what``) with these box sides
    costs more than BATCH_MAX_COST box-pixel comparisons (``limit_of`` whom, ``advice``)."""
    cost = fractal_cost(pixels, sorted(box_sizes), percolation)
    if cost > BATCH_MAX_COST:
        raise InvalidArgument(
            f"{field}: {what} with {len(box_sizes)} box sizes"
            + (" and percolation" if percolation else "")
            + f" is {cost:.2g} box-pixel comparisons, over {limit_of} {BATCH_MAX_COST:.0e}; {advice}"
        )


def _batch_answer(item: pb.ComputeFractalRequest, field: str, report: Report) -> pb.ComputeFractalResponse:
    """One answer of ComputeFractalBatch, in one pass on one numba thread; a bad request's
    error names ``field``."""
    try:
        return fractal_response(item, report, math.inf, f"{field}.image")
    except LabSightError:
        raise
    except ValueError as error:  # the core's checks (box sizes) name no request
        raise InvalidArgument(f"{field}: {error}") from None


def fractal_stack_response(
    request: pb.ComputeFractalStackRequest, check_caller: Callable[[], None] | None = None
) -> pb.ComputeFractalStackResponse:
    """ComputeFractal's numbers for each tile of the request's stack, on one numba thread;
    ``check_caller`` runs before the gliding box and before each tile's percolation (what it
    raises stops the work)."""
    box_sizes = tuple(request.box_sizes) or DEFAULT_BOX_SIZES
    _check_stack(request, box_sizes)
    tiles = image_stack(request.tiles, "tiles")
    if check_caller is not None:
        check_caller()
    try:
        with _numba_threads(1):
            boxes = gliding_box_stack(tiles, box_sizes)
    except ValueError as error:  # the core's checks: channels, box sides
        raise InvalidArgument(f"tiles: {error}") from None
    names, values = stack_fractal_columns(boxes)
    response = pb.ComputeFractalStackResponse(box_sizes=[int(r) for r in boxes.box_sizes])
    write_tensor(response.lacunarity, boxes.lacunarity)
    write_tensor(response.box_count, boxes.box_count)
    write_tensor(response.fractal_dimension, boxes.fractal_dimension)
    write_tensor(response.fractal_dimension_r_squared, boxes.r_squared)
    if not request.omit_probabilities:
        for side in boxes.box_sizes.tolist():
            write_tensor(response.probabilities.add(), boxes.probability[side])
    if request.percolation:
        found = []
        with _numba_threads(1):
            for tile in tiles:
                if check_caller is not None:
                    check_caller()
                found.append(percolation(tile, box_sizes=box_sizes))
        for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
            write_tensor(getattr(response, f"percolation_{name}"),
                         np.stack([getattr(result, name) for result in found]))
        extra = [percolation_columns(result) for result in found]
        names += list(extra[0])
        values = np.hstack([values, np.array([list(columns.values()) for columns in extra])])
    response.features.CopyFrom(feature_table(names, values, [str(i) for i in range(len(tiles))]))
    return response


def _check_stack(request: pb.ComputeFractalStackRequest, box_sizes: Sequence[int]) -> None:
    """InvalidArgument naming ``tiles`` for a stack ComputeFractalStack does not take: no
    tensor, not (N, H, W[, C]), over BATCH_MAX_IMAGES tiles or a tile over BATCH_MAX_COST
    (read from the tensor's header)."""
    if not request.HasField("tiles"):
        raise InvalidArgument("tiles: missing; send the (N, H, W) or (N, H, W, C) stack of tiles")
    shape, _ = image_stack_header(request.tiles, "tiles")
    if shape[0] > BATCH_MAX_IMAGES:
        raise InvalidArgument(f"tiles: {shape[0]} tiles; at most {BATCH_MAX_IMAGES} per call")
    _check_small_work("tiles", f"a {shape[1]}x{shape[2]} tile", shape[1] * shape[2], box_sizes,
                      request.percolation, "a stack tile's", "send each tile alone with ComputeFractal")


def fractal_response(
    request: pb.ComputeFractalRequest, report: Report | None = None, bands_min_cost: float = 0.0,
    field: str = "image",
) -> pb.ComputeFractalResponse:
    """Gliding-box features (and percolation when asked) of the request's image (``field``
    in error messages), telling ``report`` of the progress of each step; work under
    ``bands_min_cost`` box-pixel comparisons runs in one pass on one numba thread,
    ``report`` told only before it."""
    image = decode_image(request.image, field)
    box_sizes = tuple(request.box_sizes) or DEFAULT_BOX_SIZES
    pixels = image.shape[0] * image.shape[1]
    one_pass = report is not None and fractal_cost(pixels, box_sizes, request.percolation) < bands_min_cost
    if one_pass:
        report(Progress("gliding box", 0, 1, "passes"))  # what it raises stops the call here
        report = None
    with _numba_threads(1) if one_pass else contextlib.nullcontext():
        boxes = gliding_box(image, box_sizes=box_sizes, progress=_in_step(report, "gliding box"))
    columns = fractal_columns(boxes)
    response = pb.ComputeFractalResponse(
        box_sizes=[int(r) for r in boxes.box_sizes],
        lacunarity=boxes.lacunarity.tolist(),
        box_count=boxes.box_count.tolist(),
        fractal_dimension=pb.FractalDimensionFit(
            dimension=boxes.fractal_dimension.value,
            r_min=boxes.fractal_dimension.r_min,
            r_max=boxes.fractal_dimension.r_max,
            r_squared=boxes.fractal_dimension.r_squared,
        ),
    )
    if not request.omit_probabilities:
        response.MergeFromString(_probabilities_wire(boxes))
    if request.percolation:
        perc = percolation(image, box_sizes=box_sizes, progress=_in_step(report, "percolation"))
        for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
            getattr(response.percolation, name).extend(getattr(perc, name).tolist())
        columns.update(percolation_columns(perc))
    response.features.CopyFrom(feature_row(columns, request.image.name or "image"))
    return response


_PROBABILITIES = pb.ComputeFractalResponse.DESCRIPTOR.fields_by_name["probabilities"].number
_BOX_SIZE = pb.MassProbability.DESCRIPTOR.fields_by_name["box_size"].number
_PROBABILITY = pb.MassProbability.DESCRIPTOR.fields_by_name["probability"].number


@contextlib.contextmanager
def _numba_threads(count: int) -> Iterator[None]:
    """Run the block's numba kernels on ``count`` threads (numba's setting is per calling thread)."""
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _probabilities_wire(boxes: GlidingBoxResult) -> bytes:
    """The answer's ``probabilities`` (one MassProbability per box side) in wire format, for
    MergeFromString: 20 sides' 12,000 values take 0.1 ms this way, 0.5 ms as Python floats."""
    return b"".join(
        length_delimited(_PROBABILITIES, varint_field(_BOX_SIZE, int(r)) + packed_doubles(
            _PROBABILITY, boxes.probability[int(r)]))
        for r in boxes.box_sizes
    )


def _in_step(report: Report | None, step: str) -> ProgressCallback | None:
    """The fractal core's progress callback that reports rows done in ``step``."""
    if report is None:
        return None
    return lambda done, total: report(Progress(step, done, total, "rows"))


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the FeatureService to ``server``, its models from the built-ins and $LABSIGHT_MODEL_DIR.

    Models named in $LABSIGHT_PRELOAD_MODELS are loaded here, before the server starts, and the
    fractal kernels compiled (or loaded from numba's cache).
    """
    warm_up()
    warm_up_stack()
    config = ExtractorConfig.from_env()
    extractor = DeepFeatureExtractor(feature_repository(config.model_dirs), config)
    extractor.preload()
    pb_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(extractor), server)
    add_open_inference(server, extractor, settings)
