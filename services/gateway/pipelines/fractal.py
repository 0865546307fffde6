"""The ``fractal`` pipeline: gliding-box lacunarity, N(r), dimension and percolation."""

from __future__ import annotations

import re

import numpy as np

from labsight.errors import InvalidArgument
from labsight.images import decode_image
from labsight.tables import feature_table, table_values
from labsight.tensors import to_tensor
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import Parameter, Pipeline, RunContext, parse_bool

DEFAULT_BOX_SIZES = "3-41"

_SEED_FRACTAL_COLUMN = re.compile(r"Mink(LAC|DF)\d+|Mink(Area|Skewness|AreaRatio|Max)LAC")
_SEED_PERCOLATION_COLUMN = re.compile(
    r"Mink[pgh]\d+|Mink(Area|Skewness|AreaRation|Max)(Cluster|Perc|MaxCluster)"
)


def seed_tables(features: tensor_pb2.FeatureTable) -> dict[str, tensor_pb2.FeatureTable]:
    """The seed's two Weka tables, exactly its columns in its order, cut from ``features``.

    ``seed_fractal`` (MinkLAC*, MinkDF*, Λ-curve descriptors) always;
    ``seed_percolation`` (Minkp/g/h*, cluster/percolation descriptors) when present.
    """
    values = table_values(features, "features")
    tables = {}
    for name, pattern in (("seed_fractal", _SEED_FRACTAL_COLUMN),
                          ("seed_percolation", _SEED_PERCOLATION_COLUMN)):
        picked = [i for i, column in enumerate(features.columns) if pattern.fullmatch(column)]
        if picked:
            tables[name] = feature_table(
                [features.columns[i] for i in picked], values[:, picked], list(features.row_ids)
            )
    return tables


def parse_box_sizes(text: str) -> list[int]:
    """'3-41' (every odd side in the range) or '3,5,9' to a list of odd sides >= 3, ascending."""
    text = text.strip()
    try:
        if "-" in text:
            low, high = (int(part) for part in text.split("-", 1))
            sizes = list(range(low if low % 2 else low + 1, high + 1, 2))
        else:
            sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected a range like 3-41 or a list like 3,5,7, got {text!r}") from None
    if not sizes:
        raise ValueError(f"no box sizes in {text!r}")
    bad = [r for r in sizes if r < 3 or r % 2 == 0]
    if bad:
        raise ValueError(f"box sizes must be odd and >= 3, got {bad}")
    if sizes != sorted(set(sizes)):
        raise ValueError(f"box sizes must be ascending without repeats, got {sizes}")
    return sizes


class FractalPipeline(Pipeline):
    """Runs FeatureService.ComputeFractal on the job's image."""

    name = "fractal"
    description = (
        "Gliding-box fractal features of any grey or RGB image: probability matrix P(m, r), "
        "lacunarity, box counts N(r), fitted fractal dimension and optional percolation, "
        "with the seed's column names (MinkLAC*, MinkDF*, Minkp/g/h*)."
    )
    parameters = (
        Parameter(
            "box_sizes",
            "Odd box sides: a range '3-41' (all odd sides in it) or a list '3,5,7'.",
            DEFAULT_BOX_SIZES,
            parse_box_sizes,
        ),
        Parameter("percolation", "Also compute percolation features (true/false).", "false",
                  parse_bool),
    )

    def check_input(self, params: dict[str, str], job_input: pb.JobInput) -> None:
        """The image decodes and is at least as large as the largest box."""
        pixels = decode_image(job_input.image, "input.image")
        largest = parse_box_sizes(params["box_sizes"])[-1]
        if min(pixels.shape[:2]) < largest:
            raise InvalidArgument(
                f"input.image: {pixels.shape[0]}x{pixels.shape[1]} pixels is smaller than the "
                f"largest box side {largest} (params.box_sizes)"
            )

    def run(self, context: RunContext) -> pb.JobResult:
        """Call the features service and package its answer as tables and tensors."""
        params = self.parsed(context.params)
        context.report_progress(0.0, "fractal")
        response: features_pb2.ComputeFractalResponse = context.services.features.ComputeFractal(
            features_pb2.ComputeFractalRequest(
                image=context.job_input.image,
                box_sizes=params["box_sizes"],
                percolation=params["percolation"],
            ),
            timeout=context.services.call_timeout_s,
        )
        result = pb.JobResult(pipeline=self.name)
        result.tables["fractal"].CopyFrom(response.features)
        for name, table in seed_tables(response.features).items():
            result.tables[name].CopyFrom(table)
        result.tensors["box_sizes"].CopyFrom(to_tensor(np.array(response.box_sizes, np.int32)))
        result.tensors["lacunarity"].CopyFrom(to_tensor(np.array(response.lacunarity)))
        result.tensors["box_count"].CopyFrom(to_tensor(np.array(response.box_count)))
        for entry in response.probabilities:
            result.tensors[f"probability_r{entry.box_size}"].CopyFrom(
                to_tensor(np.array(entry.probability))
            )
        if response.HasField("percolation"):
            for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
                values = np.array(getattr(response.percolation, name))
                result.tensors[f"percolation_{name}"].CopyFrom(to_tensor(values))
        fit = response.fractal_dimension
        result.scalars["fractal_dimension"] = fit.dimension
        result.scalars["fractal_dimension_r_min"] = fit.r_min
        result.scalars["fractal_dimension_r_max"] = fit.r_max
        result.scalars["fractal_dimension_r_squared"] = fit.r_squared
        context.report_progress(1.0, "fractal")
        return result
