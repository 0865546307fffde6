"""The ``fractal`` pipeline: gliding-box lacunarity, N(r), dimension and percolation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from labsight.errors import InvalidArgument, echo
from labsight.fractal_work import BATCH_MAX_COST, fractal_cost
from labsight.images import ImageInfo, image_info
from labsight.tables import feature_table, table_values
from labsight.tensors import write_tensor
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import (
    Parameter,
    Pipeline,
    RunContext,
    main_image_info,
    parse_bool,
)
from services.gateway.pipelines.costs import FRACTAL_COST, FRACTAL_PIXELS

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


class FractalPipeline(Pipeline):
    """Runs FeatureService.ComputeFractal on the job's image."""

    name = "fractal"
    runs_in_groups = True
    description = (
        "Gliding-box fractal features of any grey or RGB image: probability matrix P(m, r), "
        "lacunarity, box counts N(r), fitted fractal dimension and optional percolation, "
        "with the column names of Image-Feature-Extraction-Tools' Weka files (MinkLAC*, MinkDF*, "
        "Minkp/g/h*; `labsight columns fractal` explains each)."
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
        """Grey or RGB, at least as large as the largest box, and within the work limit."""
        info = main_image_info(job_input, info)
        if info.channels not in FRACTAL_CHANNELS:
            raise InvalidArgument(
                f"input.image: {info.channels} channels; fractal features take grey (1) or RGB (3) "
                "images: choose them with params.channels (e.g. channels=0 or channels=0,1,2)"
            )
        sizes = parse_box_sizes(params["box_sizes"])
        if min(info.height, info.width) < sizes[-1]:
            raise InvalidArgument(
                f"input.image: {info.height}x{info.width} pixels is smaller than the "
                f"largest box side {sizes[-1]} (params.box_sizes)"
            )
        percolation = parse_bool(params["percolation"])
        FRACTAL_PIXELS.check(
            float(info.height * info.width),
            f"input.image: a fractal job on {info.height}x{info.width} pixels",
            "send a smaller image or a crop",
        )
        FRACTAL_COST.check(
            fractal_cost(info.height * info.width, sizes, percolation),
            f"input.image, params: a fractal job on {info.height}x{info.width} pixels with box "
            f"sizes {sizes[0]}-{sizes[-1]} ({len(sizes)} sides)"
            + (" and percolation" if percolation else ""),
            "send a smaller image, fewer or smaller boxes" + (", or no percolation" if percolation else ""),
        )

    def service_reads_blob(self, job_input: pb.JobInput, params: Mapping[str, str]) -> bool:
        """Always: the gliding box needs every pixel, so the features service reads a blob-store
        image itself rather than receive it in a message (an 8000² RGB image is 192 MB)."""
        return True

    def group_key(self, params: Mapping[str, str], job_input: pb.JobInput) -> str:
        """Jobs under BATCH_MAX_COST run in groups, one ComputeFractalBatch call each."""
        sizes = list(_parsed_box_sizes(params.get("box_sizes", DEFAULT_BOX_SIZES)))
        percolation = parse_bool(params.get("percolation", "false"))
        return self.name if _is_small(job_input.image, sizes, percolation, BATCH_MAX_COST) else ""

    def run(self, context: RunContext) -> pb.JobResult:
        """Call the features service, reporting its progress, and package its answer as tables
        and tensors."""
        return self._result(self._compute(context, self._request(context)))

    def run_many(self, contexts: Sequence[RunContext]) -> list[pb.JobResult]:
        """Small jobs (see ``group_key``) in one ComputeFractalBatch call: one message each
        way and one wait for the group, instead of a call per job."""
        services = contexts[0].services
        answer = services.features.ComputeFractalBatch(
            features_pb2.ComputeFractalBatchRequest(
                requests=[self._request(context) for context in contexts]),
            timeout=services.call_timeout_s,
        )
        if len(answer.responses) != len(contexts):
            raise ValueError(f"the features service answered {len(answer.responses)} of "
                             f"{len(contexts)} images")
        return [self._result(response) for response in answer.responses]

    @staticmethod
    def _request(context: RunContext) -> features_pb2.ComputeFractalRequest:
        """The ComputeFractal request of a job."""
        sizes = _parsed_box_sizes(context.params.get("box_sizes", DEFAULT_BOX_SIZES))
        percolation = parse_bool(context.params.get("percolation", "false"))
        return features_pb2.ComputeFractalRequest(
            image=context.job_input.image, box_sizes=sizes, percolation=percolation,
            omit_probabilities=not parse_bool(context.params.get("probabilities", "true")),
        )

    def _result(self, response: features_pb2.ComputeFractalResponse) -> pb.JobResult:
        """The service's answer as the job's tables, tensors and scalars."""
        result = pb.JobResult(pipeline=self.name)
        result.tables["fractal"].CopyFrom(response.features)
        for name, table in weka_tables(response.features).items():
            result.tables[name].CopyFrom(table)
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
        context: RunContext, request: features_pb2.ComputeFractalRequest
    ) -> features_pb2.ComputeFractalResponse:
        """The features service's answer, reporting the progress it streams: each step's
        share of the job is its share of the work (see fractal_cost). A job under
        STREAM_MIN_COST is one blocking unary call: a future or a stream would start a
        thread to follow it (a millisecond of CPU per job), and a cancelled job's call
        ends within a fraction of a second anyway."""
        sizes = list(request.box_sizes)
        if _is_small(request.image, sizes, request.percolation):
            return context.services.features.ComputeFractal(
                request, timeout=context.services.call_timeout_s
            )
        gliding = fractal_cost(1, sizes, False)
        whole = fractal_cost(1, sizes, request.percolation)
        start = {"gliding box": 0.0, "percolation": gliding}
        share = {"gliding box": gliding, "percolation": whole - gliding}
        context.report_progress(0.0, "gliding box")
        updates = context.services.features.ComputeFractalStream(
            request, timeout=context.services.call_timeout_s
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
