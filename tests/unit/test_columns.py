"""Every output column has a plain meaning, named from the same table the services use."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from labsight.columns import (
    DEFAULT_BOX_SIDES,
    DESCRIPTORS,
    NUMBERED,
    describe_fractal_column,
    fractal_column_names,
    pipeline_tables,
)
from services.features.fractal import DEFAULT_BOX_SIZES, gliding_box, percolation
from services.features.fractal_columns import fractal_columns, percolation_columns

INTERNAL_WORDS = r"(?i)\b(?:seed|muse|issues?)\b"
"""Words of the project's history that mean nothing to users ("tissue" is fine)."""


def test_documented_columns_are_the_columns_the_service_writes() -> None:
    image = np.random.default_rng(1).integers(0, 255, (45, 45), dtype=np.uint8)
    written = [*fractal_columns(gliding_box(image)), *percolation_columns(percolation(image))]
    assert fractal_column_names() == written
    assert tuple(DEFAULT_BOX_SIDES) == tuple(DEFAULT_BOX_SIZES)


def test_every_fractal_column_is_explained_by_its_box_side() -> None:
    assert describe_fractal_column("MinkDF7") == "box count N(r) at box side r = 15"
    assert describe_fractal_column("MinkLAC1", [5, 9]) == "lacunarity Λ(r) at box side r = 5"
    assert "skewness" in describe_fractal_column("MinkSkewnessPerc")
    assert "area" in describe_fractal_column("MinkAreaRationCluster")
    with pytest.raises(KeyError):
        describe_fractal_column("MinkDF21")


@pytest.mark.parametrize("pipeline", ["fractal", "deep-features", "spot-features"])
def test_tables_use_no_internal_words(pipeline: str) -> None:
    for table in pipeline_tables(pipeline):
        text = " ".join([table.name, table.rows, *table.notes,
                         *(part for column in table.columns for part in column)]).lower()
        assert re.findall(INTERNAL_WORDS, text) == []


def test_the_readme_table_names_every_column_family(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Columns", 1)[1].split("\n## ", 1)[0]
    families = [f"`{prefix}<i>`" for prefix in NUMBERED]
    families += [f"`Mink{kind}<c>`" for kind in DESCRIPTORS] + ["`FractalDimension`", "`id`",
                                                                "`class`", "`<layer><i>`"]
    assert [family for family in families if family not in section] == []
