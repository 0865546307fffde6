"""Tile stacks of the ``fractal`` pipeline: many small same-size images in one job, the
features of each tile one row of the job's tables.

A job per 64² tile costs the queue, the gateway and a worker more CPU than the tile's gliding
box (bench/small_jobs.py); a stack of tiles pays those costs once and reaches the features
service in ComputeFractalStack calls of up to BATCH_MAX_IMAGES tiles, two calls open at once
(tiles too large for a stack call go one ComputeFractal call each).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
import numpy as np

from labsight.config import answer_room
from labsight.errors import InvalidArgument
from labsight.fractal_work import BATCH_MAX_IMAGES
from labsight.images import image_stack, image_stack_header
from labsight.tables import feature_table, table_values
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays
from labsight.tensors import from_tensor, to_tensor, write_tensor
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import RunContext

TILES_INPUT = "tiles"
"""Role of the (N, H, W[, C]) stack of tiles in JobInput.tensors."""

TILES_FIELD = f"input.tensors[{TILES_INPUT}]"

CALLS_IN_FLIGHT = 2
"""Features-service calls of one stack open at once: one is computed while the next travels."""

PROGRESS_REPORTS = 100
"""Most progress reports of one stack (each is a Redis round trip, and the check that stops a
cancelled job): tiles sent one per call report after every hundredth of the stack."""


def check_result_room(tiles: int, sides: Sequence[int], probabilities: bool) -> None:
    """Refuse a stack whose probability matrices (8 bytes per mass m = 1..r² of every side, per
    tile) would not fit a result message, less 1 MiB for its tables and other tensors: its job
    would end with a result no one could fetch."""
    if not probabilities:
        return
    size = tiles * sum(int(r) * int(r) for r in sides) * 8
    room = answer_room()
    if size > room:
        raise InvalidArgument(
            f"params.probabilities: the probability matrices of {tiles} tiles take {size} bytes, "
            f"over the {room} bytes a result may carry (LABSIGHT_MAX_MESSAGE_BYTES less 1 MiB); "
            "set probabilities=false (the features stay the same) or send fewer tiles per job"
        )


def tile_stack_header(job_input: pb.JobInput) -> tuple[tuple[int, ...], np.dtype]:
    """The (N, H, W[, C]) shape and dtype of the job's tiles, checked from the tensor's header."""
    return image_stack_header(job_input.tensors[TILES_INPUT], TILES_FIELD)


def tile_stack(job_input: pb.JobInput) -> np.ndarray:
    """The job's (N, H, W[, C]) uint8/uint16 tiles, checked."""
    return image_stack(job_input.tensors[TILES_INPUT], TILES_FIELD)


def tile_request(template: features_pb2.ComputeFractalRequest, tile: np.ndarray, name: str
                 ) -> features_pb2.ComputeFractalRequest:
    """``template`` (box sides and options, no image) for one tile, named ``name`` (its row id)."""
    request = features_pb2.ComputeFractalRequest(
        image=tensor_pb2.Image(tensor=to_tensor(tile), name=name))
    request.MergeFrom(template)
    return request


def fractal_stack_request(template: features_pb2.ComputeFractalRequest, tiles: np.ndarray
                          ) -> EncodedMessage:
    """``template``'s box sides and options for a ComputeFractalStack call on ``tiles``, as the
    request's bytes with the tiles copied into them once (``serialize_with_arrays``: a tensor
    built with ``to_tensor`` copied them three times, 8 ms of a 256-tile job's CPU)."""
    options = features_pb2.ComputeFractalStackRequest(
        box_sizes=template.box_sizes, percolation=template.percolation,
        omit_probabilities=template.omit_probabilities,
    )
    return EncodedMessage(serialize_with_arrays(options, {"tiles": tiles}))


def computed_stacks(
    context: RunContext, tiles: np.ndarray, template: features_pb2.ComputeFractalRequest
) -> list[features_pb2.ComputeFractalStackResponse]:
    """The features service's answers for the stack in ComputeFractalStack calls of up to
    BATCH_MAX_IMAGES tiles, in order (see :func:`_in_calls` for progress and cancelling)."""
    features = context.services.features
    timeout = context.services.call_timeout_s

    def send(start: int, stop: int) -> grpc.Future:
        request = fractal_stack_request(template, tiles[start:stop])
        return features.ComputeFractalStack.future(request, timeout=timeout)

    def tiles_of(answer: features_pb2.ComputeFractalStackResponse) -> int:
        return len(answer.features.row_ids)

    return _in_calls(context, len(tiles), BATCH_MAX_IMAGES, send, tiles_of)


def computed_tiles(
    context: RunContext, tiles: np.ndarray, template: features_pb2.ComputeFractalRequest
) -> list[features_pb2.ComputeFractalResponse]:
    """The features service's answer for every tile, each in its own ComputeFractal call (for
    tiles too large for a stack call), in order (see :func:`_in_calls`)."""
    features = context.services.features
    timeout = context.services.call_timeout_s

    def send(start: int, stop: int) -> grpc.Future:
        return features.ComputeFractal.future(tile_request(template, tiles[start], str(start)),
                                              timeout=timeout)

    return _in_calls(context, len(tiles), 1, send, lambda _: 1)


Answer = TypeVar("Answer")


def _in_calls(
    context: RunContext, total: int, per_call: int, send: Callable[[int, int], grpc.Future],
    tiles_of: Callable[[Answer], int],
) -> list[Answer]:
    """The answers of ``send(start, stop)`` for consecutive parts of ``per_call`` of the
    ``total`` tiles, CALLS_IN_FLIGHT calls open at once, reporting the tiles done after each
    call that ends a hundredth of the stack (PROGRESS_REPORTS; a report also stops a cancelled
    job, its open calls cancelled)."""
    answers: list[Answer] = []
    pending: deque[tuple[int, grpc.Future]] = deque()
    report_every = -(-total // PROGRESS_REPORTS)  # rounded up: at most PROGRESS_REPORTS reports
    done = reported = 0

    def collect() -> None:
        nonlocal done, reported
        sent, future = pending.popleft()
        answer = future.result()
        if tiles_of(answer) != sent:
            raise ValueError(f"the features service answered {tiles_of(answer)} of {sent} tiles")
        answers.append(answer)
        done += sent
        if done - reported >= report_every or done == total:
            reported = done
            context.report_progress(done / total, "gliding box", done, total, "tiles")

    context.report_progress(0.0, "gliding box", 0, total, "tiles")
    try:
        for start in range(0, total, per_call):
            stop = min(start + per_call, total)
            pending.append((stop - start, send(start, stop)))
            if len(pending) == CALLS_IN_FLIGHT:
                collect()
        while pending:
            collect()
    finally:
        for _, future in pending:
            future.cancel()
    return answers


def stack_result(pipeline: str, answers: Sequence[features_pb2.ComputeFractalStackResponse],
                 row_ids: Sequence[str]) -> tuple[pb.JobResult, tensor_pb2.FeatureTable]:
    """The stack calls' answers as one result, as :func:`stacked_result` makes it from
    answers tile by tile, the table's rows named ``row_ids``."""
    first = answers[0]
    result = pb.JobResult(pipeline=pipeline)
    tensors = result.tensors

    def joined(tensor_of: Callable[[features_pb2.ComputeFractalStackResponse], tensor_pb2.Tensor],
               field: str) -> np.ndarray:
        return np.concatenate([from_tensor(tensor_of(a), field) for a in answers])

    write_tensor(tensors["box_sizes"], np.array(first.box_sizes, np.int32))
    write_tensor(tensors["lacunarity"], joined(lambda a: a.lacunarity, "lacunarity"))
    write_tensor(tensors["box_count"], joined(lambda a: a.box_count, "box_count"))
    for index, side in enumerate(first.box_sizes if first.probabilities else []):
        write_tensor(tensors[f"probability_r{side}"],
                     joined(lambda a, i=index: a.probabilities[i], f"probabilities[{index}]"))
    if first.HasField("percolation_cluster_count"):
        for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
            write_tensor(tensors[f"percolation_{name}"],
                         joined(lambda a, n=name: getattr(a, f"percolation_{n}"), f"percolation_{name}"))
    values = np.concatenate([table_values(a.features, "features") for a in answers])
    result.scalars["tiles"] = float(len(values))
    return result, feature_table(list(first.features.columns), values, row_ids)


def stacked_result(pipeline: str, answers: Sequence[features_pb2.ComputeFractalResponse],
                   row_ids: Sequence[str]) -> tuple[pb.JobResult, tensor_pb2.FeatureTable]:
    """The tiles' answers as one result: tensors stacked tile by tile (lacunarity and box_count
    (N, sides), probability_r<side> (N, masses), percolation_* (N, sides)), ``box_sizes`` once,
    scalar ``tiles``; and the features of every tile as one table, a row per tile named by
    ``row_ids`` (the caller adds it and the tables cut from it)."""
    first = answers[0]
    result = pb.JobResult(pipeline=pipeline)
    tensors = result.tensors
    write_tensor(tensors["box_sizes"], np.array(first.box_sizes, np.int32))
    write_tensor(tensors["lacunarity"], np.array([list(a.lacunarity) for a in answers]))
    write_tensor(tensors["box_count"], np.array([list(a.box_count) for a in answers]))
    for index, entry in enumerate(first.probabilities):
        write_tensor(tensors[f"probability_r{entry.box_size}"],
                     np.array([list(a.probabilities[index].probability) for a in answers]))
    if first.HasField("percolation"):
        for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
            write_tensor(tensors[f"percolation_{name}"],
                         np.array([list(getattr(a.percolation, name)) for a in answers]))
    result.scalars["tiles"] = float(len(answers))
    values = np.concatenate([table_values(a.features, "features") for a in answers])
    return result, feature_table(list(first.features.columns), values, row_ids)
