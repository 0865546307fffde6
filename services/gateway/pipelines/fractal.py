"""The ``fractal`` pipeline: gliding-box lacunarity, N(r), dimension and percolation."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import grpc
import numpy as np

from labsight.errors import InvalidArgument, echo
from labsight.fractal_work import BATCH_MAX_COST, fractal_cost
from labsight.images import ImageInfo, decode_image, image_info
from labsight.tables import feature_table, table_values
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays
from labsight.tensors import from_tensor, write_tensor
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import (
    IMAGE_PARAMETERS,
    Parameter,
    Pipeline,
    RunContext,
    main_image_info,
    mark_row_names,
    parse_bool,
    sendable_pixels,
    stack_row_ids,
)
from services.gateway.pipelines.costs import FRACTAL_COST, FRACTAL_PIXELS
from services.gateway.pipelines.fractal_tiles import (
    TILES_FIELD,
    TILES_INPUT,
    check_result_room,
    computed_stacks,
    computed_tiles,
    fractal_stack_request,
    stack_result,
    stacked_result,
    tile_stack,
    tile_stack_header,
)

log = logging.getLogger(__name__)

DEFAULT_BOX_SIZES = "3-41"

MAX_BOX_SIZE = 255
"""Largest box side the fractal core takes (its MAX_BOX_SIZE: masses up to r² are counted in
16 bits); a test pins the two together."""

MAX_BOX_SIZES_TEXT = 1000
"""Longest box_sizes text read: every odd side from 3 to 255 written out is 600 characters."""

FRACTAL_CHANNELS = (1, 3)
"""Channels the fractal core takes: grey or RGB (an alpha channel would count as a colour)."""

STREAM_MIN_COST = 1e9
"""Jobs estimated below this many box-pixel comparisons (about 0.1 s of one core, e.g. 256² with
sides 3-41) run as one unary call without progress: a report per band would cost more than the
band (a 64² job's 31 bands took 62 Redis round trips and 31 stream messages for 5 ms of work)."""

_WEKA_FRACTAL_COLUMN = re.compile(r"Mink(LAC|DF)\d+|Mink(Area|Skewness|AreaRatio|Max)LAC")
_WEKA_PERCOLATION_COLUMN = re.compile(
    r"Mink[pgh]\d+|Mink(Area|Skewness|AreaRation|Max)(Cluster|Perc|MaxCluster)"
)


def weka_tables(features: tensor_pb2.FeatureTable) -> dict[str, tensor_pb2.FeatureTable]:
    """The seed's two Weka tables, exactly its columns in its order, cut from ``features``.

    ``weka_fractal`` (MinkLAC*, MinkDF*, Λ-curve descriptors) always;
    ``weka_percolation`` (Minkp/g/h*, cluster/percolation descriptors) when present.
    Their names say what they are for users, who do not know the seed project.
    """
    values = table_values(features, "features")
    return {
        name: feature_table(
            [features.columns[i] for i in picked], values[:, picked], list(features.row_ids)
        )
        for name, picked in _weka_columns(tuple(features.columns)).items()
    }


@lru_cache(maxsize=16)
def _weka_columns(columns: Sequence[str]) -> dict[str, list[int]]:
    """Indices of each Weka table's columns in ``columns`` (every job of a kind has the same)."""
    picked = {
        name: [i for i, column in enumerate(columns) if pattern.fullmatch(column)]
        for name, pattern in (("weka_fractal", _WEKA_FRACTAL_COLUMN),
                              ("weka_percolation", _WEKA_PERCOLATION_COLUMN))
    }
    return {name: indices for name, indices in picked.items() if indices}


def parse_box_sizes(text: str) -> list[int]:
    """'3-41' (every odd side in the range) or '3,5,9' to a list of odd sides, ascending.

    Sides must lie in 3..MAX_BOX_SIZE; a range is checked by its bounds before
    its sides are listed, so no text can make a long list.
    """
    text = text.strip()
    if len(text) > MAX_BOX_SIZES_TEXT:
        raise ValueError(f"{len(text)} characters; expected a range like 3-41 or a short list")
    if "-" in text:
        low, high = _integers(text, text.split("-", 1))
        if low < 3 or high > MAX_BOX_SIZE:
            raise ValueError(f"a range must lie within 3-{MAX_BOX_SIZE}, got {echo(text)}")
        sizes = list(range(low | 1, high + 1, 2))
    else:
        sizes = _integers(text, [part for part in text.split(",") if part.strip()])
    if not sizes:
        raise ValueError(f"no box sizes in {echo(text)}")
    bad = [r for r in sizes if r < 3 or r % 2 == 0 or r > MAX_BOX_SIZE]
    if bad:
        listed = ", ".join(str(r) for r in bad[:10])
        raise ValueError(f"box sizes must be odd and within 3-{MAX_BOX_SIZE}, got {echo(listed)}")
    if sizes != sorted(set(sizes)):
        raise ValueError(f"box sizes must be ascending without repeats, got {sizes}")
    return sizes


def _stack_of(requests: Sequence[features_pb2.ComputeFractalRequest], pixels: Mapping[int, np.ndarray],
             members: Sequence[int]) -> EncodedMessage:
    """One ComputeFractalStack request of the read images ``pixels[i]`` (one shape and dtype)
    for i in ``members``, with ``requests[members[0]]``'s options (the same for all)."""
    return fractal_stack_request(requests[members[0]], np.stack([pixels[i] for i in members]))


def _read_file_pixels(context: RunContext) -> np.ndarray | None:
    """The worker's reading of the job's image file where it is one and fits a message
    (:func:`sendable_pixels`); None for pixel tensors and blob-store images."""
    return sendable_pixels(context) if context.job_input.image.WhichOneof("source") == "encoded" else None


@lru_cache(maxsize=64)
def _parsed_box_sizes(text: str) -> tuple[int, ...]:
    """``parse_box_sizes`` of a job's validated text, parsed once per distinct text."""
    return tuple(parse_box_sizes(text))


def _is_small(
    image: tensor_pb2.Image, sizes: list[int], percolation: bool, limit: float = STREAM_MIN_COST
) -> bool:
    """True for a job under ``limit`` box-pixel comparisons, its pixels from the header
    (validated at submit); an image in the blob store is large and streams its progress."""
    if image.WhichOneof("source") == "blob":
        return False
    info = image_info(image, "input.image")
    return fractal_cost(info.height * info.width, sizes, percolation) < limit


def _integers(text: str, parts: list[str]) -> list[int]:
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"expected a range like 3-41 or a list like 3,5,7, got {echo(text)}") from None


def _check_work(params: Mapping[str, str], field: str, height: int, width: int, channels: int,
                tiles: int = 0) -> None:
    """Refuse an image of height x width pixels, or a stack of ``tiles`` of that size
    (``field``), that is not grey or RGB, smaller than the largest box, or over the work
    limits (an image's pixels, the job's cost)."""
    if channels not in FRACTAL_CHANNELS:
        choose = ("stack the tiles' grey or RGB channels" if tiles else
                  "choose them with params.channels (e.g. channels=0 or channels=0,1,2)")
        raise InvalidArgument(
            f"{field}: {channels} channels; fractal features take grey (1) or RGB (3) images: {choose}"
        )
    sizes = parse_box_sizes(params["box_sizes"])
    if min(height, width) < sizes[-1]:
        raise InvalidArgument(
            f"{field}: {height}x{width} pixels is smaller than the "
            f"largest box side {sizes[-1]} (params.box_sizes)"
        )
    percolation = parse_bool(params["percolation"])
    what = f"{tiles} tiles of" if tiles else "a fractal job on"
    FRACTAL_PIXELS.check(
        float(height * width), f"{field}: {what} {height}x{width} pixels",
        "send smaller tiles" if tiles else "send a smaller image or a crop",
    )
    FRACTAL_COST.check(
        max(tiles, 1) * fractal_cost(height * width, sizes, percolation),
        f"{field}, params: {what} {height}x{width} pixels with box "
        f"sizes {sizes[0]}-{sizes[-1]} ({len(sizes)} sides)"
        + (" and percolation" if percolation else ""),
        ("send fewer tiles per job, " if tiles else "send a smaller image, ")
        + "fewer or smaller boxes" + (", or no percolation" if percolation else ""),
    )


class FractalPipeline(Pipeline):
    """Runs FeatureService.ComputeFractal on the job's image, or ComputeFractalStack on its tiles."""

    name = "fractal"
    runs_in_groups = True
    named_stacks = (TILES_INPUT,)
    description = (
        "Gliding-box fractal features of any grey or RGB image: probability matrix P(m, r), "
        "lacunarity, box counts N(r), fitted fractal dimension and optional percolation, "
        "with the column names of Image-Feature-Extraction-Tools' Weka files (MinkLAC*, MinkDF*, "
        "Minkp/g/h*; `labsight columns fractal` explains each). Many small images of one size "
        "go as one job: a stack as tensor 'tiles' (N, H, W) or (N, H, W, C), no main image; "
        "each tile is one row of the tables (row ids: input.tensor_names[tiles], else 0..N-1; "
        "`labsight submit --stack N` packs a folder so, rows named by file) and the tensors gain "
        "a first axis of N."
    )
    parameters = (
        Parameter(
            "box_sizes",
            "Odd box sides within 3-255: a range '3-41' (all odd sides in it) or a list '3,5,7'.",
            DEFAULT_BOX_SIZES,
            parse_box_sizes,
        ),
        Parameter("percolation", "Also compute percolation features (true/false).", "false",
                  parse_bool),
        Parameter("probabilities", "Keep the probability matrix P(m, r) in the result as tensors "
                  "probability_r<side> (true/false); false leaves out most of a small image's result "
                  "(about 100 KB of a 64x64 image's 103 KB at sides 3-41), the features unchanged.",
                  "true", parse_bool),
    )

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """A grey or RGB image, or a stack of tiles (tensors['tiles']), each at least as large as
        the largest box, within the work limit."""
        if TILES_INPUT in job_input.tensors:
            self._check_tiles(params, job_input)
            return
        info = main_image_info(job_input, info)
        _check_work(params, "input.image", info.height, info.width, info.channels)

    @staticmethod
    def _check_tiles(params: dict[str, str], job_input: pb.JobInput) -> None:
        """A tile stack alone (no main image), read as it is, each tile grey or RGB."""
        if job_input.image.WhichOneof("source") is not None:
            raise InvalidArgument(f"input: give input.image or {TILES_FIELD}, not both "
                                  "(send the image as another job)")
        reading = [p.name for p in IMAGE_PARAMETERS if params[p.name] != p.default]
        if reading:
            raise InvalidArgument(
                f"params.{reading[0]}: applies to input.image; the tiles of {TILES_FIELD} are "
                "taken as they are (cut the channels or scale the pixels before stacking them)"
            )
        shape, _ = tile_stack_header(job_input)
        _check_work(params, TILES_FIELD, shape[1], shape[2], shape[3] if len(shape) == 4 else 1,
                    tiles=shape[0])
        check_result_room(shape[0], parse_box_sizes(params["box_sizes"]),
                          parse_bool(params["probabilities"]))

    def service_reads_blob(self, job_input: pb.JobInput, params: Mapping[str, str]) -> bool:
        """Always: the gliding box needs every pixel, so the features service reads a blob-store
        image itself rather than receive it in a message (an 8000² RGB image is 192 MB)."""
        return True

    def sends_read_pixels(self, job_input: pb.JobInput) -> bool:
        """Yes for an image file in the message: the features service gets the worker's
        reading of it instead of decoding it again (a blob-store image it reads itself)."""
        return job_input.image.WhichOneof("source") == "encoded"

    def group_key(self, params: Mapping[str, str], job_input: pb.JobInput) -> str:
        """Jobs under BATCH_MAX_COST run in groups, one ComputeFractalBatch call each."""
        if TILES_INPUT in job_input.tensors:
            return ""  # a stack is its own batch
        sizes = list(_parsed_box_sizes(params.get("box_sizes", DEFAULT_BOX_SIZES)))
        percolation = parse_bool(params.get("percolation", "false"))
        return self.name if _is_small(job_input.image, sizes, percolation, BATCH_MAX_COST) else ""

    def run(self, context: RunContext) -> pb.JobResult:
        """Call the features service, reporting its progress, and package its answer as tables
        and tensors; a stack of tiles in ComputeFractalStack calls, its tables a row per tile."""
        if TILES_INPUT in context.job_input.tensors:
            return self._run_tiles(context)
        image = context.job_input.image
        pixels = _read_file_pixels(context)
        if pixels is None:
            request = self._request(context, read_pixels=False)
            return self._result(self._compute(context, request, request, _is_small(
                request.image, list(request.box_sizes), request.percolation)))
        # The worker's reading of the file, copied once into the request's bytes.
        request = self._options(context.params)
        request.image.name = image.name
        small = fractal_cost(pixels.shape[0] * pixels.shape[1], list(request.box_sizes),
                             request.percolation) < STREAM_MIN_COST
        sent = EncodedMessage(serialize_with_arrays(request, {"image.tensor": pixels}))
        return self._result(self._compute(context, sent, request, small))

    def _run_tiles(self, context: RunContext) -> pb.JobResult:
        """The job's tiles through the features service, BATCH_MAX_IMAGES per ComputeFractalStack
        call where each is under BATCH_MAX_COST (else one ComputeFractal call per tile), as one
        result."""
        tiles = tile_stack(context.job_input)
        template = self._options(context.params)
        cost = fractal_cost(tiles.shape[1] * tiles.shape[2], list(template.box_sizes),
                            template.percolation)
        row_ids = stack_row_ids(context.job_input, TILES_INPUT, len(tiles))
        stacks = None
        if cost <= BATCH_MAX_COST:
            try:
                stacks = computed_stacks(context, tiles, template)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # A features service older than ComputeFractalStack (a rolling upgrade that has
                # not reached it yet): the tiles go one ComputeFractal call each instead.
                log.info("features service without ComputeFractalStack; tiles sent one by one",
                         extra={"job_id": context.job_id})
        if stacks is not None:
            result, features = stack_result(self.name, stacks, row_ids)
        else:
            result, features = stacked_result(self.name, computed_tiles(context, tiles, template),
                                              row_ids)
        mark_row_names(result, context.job_input, TILES_INPUT)
        self._add_tables(result, features)
        return result

    def run_many(self, contexts: Sequence[RunContext]) -> list[pb.JobResult]:
        """Small jobs (see ``group_key``) in few calls: images read (as the features service
        reads them, with their ``read`` options; by the worker already where the context holds
        them) that share a shape, a dtype and the options go as one ComputeFractalStack call
        (their gliding boxes in one pass), the rest as one ComputeFractalBatch call; one message
        each way per call and one wait for the group, instead of a call per job."""
        services = contexts[0].services
        timeout = services.call_timeout_s
        requests = [self._request(context, read_pixels=False) for context in contexts]
        pixels = {index: (decode_image(request.image, "input.image")
                          if context.image_pixels is None else context.image_pixels)
                  for index, (request, context) in enumerate(zip(requests, contexts, strict=True))
                  if request.image.WhichOneof("source") in ("tensor", "encoded")}
        stacks: dict[tuple[object, ...], list[int]] = {}
        for index, image in pixels.items():
            request = requests[index]
            key = (image.shape, image.dtype.str, tuple(request.box_sizes), request.percolation,
                   request.omit_probabilities)
            stacks.setdefault(key, []).append(index)
        alone = [index for index in range(len(requests)) if index not in pixels]
        for key in [key for key, members in stacks.items() if len(members) == 1]:
            alone += stacks.pop(key)
        alone.sort()
        for index in alone:  # these go whole: as the worker read their files where it did
            requests[index] = self._request(contexts[index])
        calls = [(members, services.features.ComputeFractalStack.future(
            _stack_of(requests, pixels, members), timeout=timeout)) for members in stacks.values()]
        if alone:
            calls.append((alone, services.features.ComputeFractalBatch.future(
                features_pb2.ComputeFractalBatchRequest(requests=[requests[i] for i in alone]),
                timeout=timeout)))
        results: dict[int, pb.JobResult] = {}
        for members, future in calls:
            answer = future.result()
            stacked = isinstance(answer, features_pb2.ComputeFractalStackResponse)
            answered = len(answer.features.row_ids) if stacked else len(answer.responses)
            if answered != len(members):
                raise ValueError(f"the features service answered {answered} of {len(members)} images")
            got = (self._row_results(answer, [requests[i].image.name or "image" for i in members])
                   if stacked else [self._result(response) for response in answer.responses])
            results.update(zip(members, got, strict=True))
        return [results[index] for index in range(len(contexts))]

    @classmethod
    def _request(cls, context: RunContext, read_pixels: bool = True) -> features_pb2.ComputeFractalRequest:
        """The ComputeFractal request of a job: its image, or (``read_pixels``) the worker's
        reading of its file where the context holds one."""
        image = context.job_input.image
        pixels = _read_file_pixels(context) if read_pixels else None
        request = features_pb2.ComputeFractalRequest(image=image if pixels is None else None)
        if pixels is not None:
            request.image.name = image.name
            write_tensor(request.image.tensor, pixels)
        request.MergeFrom(cls._options(context.params))
        return request

    @staticmethod
    def _options(params: Mapping[str, str]) -> features_pb2.ComputeFractalRequest:
        """The job's box sides and options as a ComputeFractal request without an image."""
        return features_pb2.ComputeFractalRequest(
            box_sizes=_parsed_box_sizes(params.get("box_sizes", DEFAULT_BOX_SIZES)),
            percolation=parse_bool(params.get("percolation", "false")),
            omit_probabilities=not parse_bool(params.get("probabilities", "true")),
        )

    @staticmethod
    def _add_tables(result: pb.JobResult, features: tensor_pb2.FeatureTable) -> None:
        """The ``fractal`` table and the Weka tables cut from it."""
        result.tables["fractal"].CopyFrom(features)
        for name, table in weka_tables(features).items():
            result.tables[name].CopyFrom(table)

    def _row_results(self, answer: features_pb2.ComputeFractalStackResponse, row_ids: Sequence[str]
                     ) -> list[pb.JobResult]:
        """Each row of a ComputeFractalStack answer as the result :meth:`_result` makes of
        ComputeFractal's answer for that image alone, its table row named by ``row_ids``; the
        answer's tensors are read once for all rows."""
        columns = list(answer.features.columns)
        values = table_values(answer.features, "features")
        rows = {name: from_tensor(getattr(answer, name), name)
                for name in ("lacunarity", "box_count", "fractal_dimension", "fractal_dimension_r_squared")}
        for side, probabilities in zip(answer.box_sizes, answer.probabilities, strict=False):
            rows[f"probability_r{side}"] = from_tensor(probabilities, f"probabilities[r={side}]")
        if answer.HasField("percolation_cluster_count"):
            for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
                rows[f"percolation_{name}"] = from_tensor(getattr(answer, f"percolation_{name}"), name)
        sides = np.array(answer.box_sizes, np.int32)
        results = []
        for row, row_id in enumerate(row_ids):
            result = pb.JobResult(pipeline=self.name)
            self._add_tables(result, feature_table(columns, values[row : row + 1], [row_id]))
            tensors = result.tensors
            write_tensor(tensors["box_sizes"], sides)
            for name, array in rows.items():
                if not name.startswith("fractal_dimension"):
                    write_tensor(tensors[name], array[row])
            result.scalars["fractal_dimension"] = float(rows["fractal_dimension"][row])
            result.scalars["fractal_dimension_r_min"] = int(sides[0])
            result.scalars["fractal_dimension_r_max"] = int(sides[-1])
            result.scalars["fractal_dimension_r_squared"] = float(rows["fractal_dimension_r_squared"][row])
            results.append(result)
        return results

    def _result(self, response: features_pb2.ComputeFractalResponse) -> pb.JobResult:
        """The service's answer as the job's tables, tensors and scalars."""
        result = pb.JobResult(pipeline=self.name)
        self._add_tables(result, response.features)
        tensors = result.tensors  # written in place: a tensor built apart would be copied in
        write_tensor(tensors["box_sizes"], np.array(response.box_sizes, np.int32))
        write_tensor(tensors["lacunarity"], np.array(response.lacunarity))
        write_tensor(tensors["box_count"], np.array(response.box_count))
        for entry in response.probabilities:
            write_tensor(tensors[f"probability_r{entry.box_size}"], np.array(entry.probability))
        if response.HasField("percolation"):
            for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
                write_tensor(tensors[f"percolation_{name}"], np.array(getattr(response.percolation, name)))
        fit = response.fractal_dimension
        result.scalars["fractal_dimension"] = fit.dimension
        result.scalars["fractal_dimension_r_min"] = fit.r_min
        result.scalars["fractal_dimension_r_max"] = fit.r_max
        result.scalars["fractal_dimension_r_squared"] = fit.r_squared
        return result

    @staticmethod
    def _compute(
        context: RunContext, sent: features_pb2.ComputeFractalRequest | EncodedMessage,
        request: features_pb2.ComputeFractalRequest, small: bool,
    ) -> features_pb2.ComputeFractalResponse:
        """The features service's answer to ``request``, ``sent`` as it is or already serialized
        (its image then in ``sent`` only), reporting the progress it streams: each step's share
        of the job is its share of the work (see fractal_cost). A ``small`` job, under
        STREAM_MIN_COST, is one blocking unary call: a future or a stream would start a thread
        to follow it (a millisecond of CPU per job), and a cancelled job's call ends within a
        fraction of a second anyway."""
        if small:
            return context.services.features.ComputeFractal(
                sent, timeout=context.services.call_timeout_s
            )
        sizes = list(request.box_sizes)
        gliding = fractal_cost(1, sizes, False)
        whole = fractal_cost(1, sizes, request.percolation)
        start = {"gliding box": 0.0, "percolation": gliding}
        share = {"gliding box": gliding, "percolation": whole - gliding}
        context.report_progress(0.0, "gliding box")
        updates = context.services.features.ComputeFractalStream(
            sent, timeout=context.services.call_timeout_s
        )
        try:
            for update in updates:
                if update.HasField("result"):
                    return update.result
                step = update.progress
                fraction = (start[step.step] + share[step.step] * step.done / step.total) / whole
                context.report_progress(fraction, step.step, step.done, step.total, step.unit)
        finally:
            updates.cancel()  # stops the service's work when the job was cancelled meanwhile
        raise ValueError("the features service ended its stream without a result")
