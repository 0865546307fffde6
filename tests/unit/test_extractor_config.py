"""The features service's engine settings from the environment and their automatic values."""

from __future__ import annotations

import pytest

from labsight.models import ServingConfig
from labsight.runtime.cpus import usable_cpus
from services.features.extractor import FEATURES_RUN_ROWS, ExtractorConfig


def test_defaults_give_two_single_core_instances_on_cpu_and_one_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("LABSIGHT_MODEL_INSTANCES", "LABSIGHT_ORT_THREADS", "LABSIGHT_ORT_SPIN"):
        monkeypatch.delenv(name, raising=False)
    config = ExtractorConfig.from_env()
    assert config.spin is False
    cpus = usable_cpus()
    instances = min(2, cpus)
    assert config.engine_layout(on_cuda=False) == (instances, max(1, cpus // instances))
    assert config.engine_layout(on_cuda=True) == (1, cpus)


def test_explicit_instances_threads_and_spin_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABSIGHT_MODEL_INSTANCES", "3")
    monkeypatch.setenv("LABSIGHT_ORT_THREADS", "5")
    monkeypatch.setenv("LABSIGHT_ORT_SPIN", "1")
    config = ExtractorConfig.from_env()
    assert config.spin is True
    assert config.engine_layout(on_cuda=False) == (3, 5)
    assert config.engine_layout(on_cuda=True) == (3, 5)


def test_a_non_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABSIGHT_MODEL_INSTANCES", "two")
    with pytest.raises(ValueError, match="LABSIGHT_MODEL_INSTANCES must be an integer, got 'two'"):
        ExtractorConfig.from_env()


def test_features_run_in_slices_of_few_rows_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABSIGHT_ORT_RUN_ROWS", raising=False)
    assert ExtractorConfig.from_env().run_rows == FEATURES_RUN_ROWS
    assert ServingConfig.from_env().run_rows == 0  # the shared default; each service sets its own
    monkeypatch.setenv("LABSIGHT_ORT_RUN_ROWS", "0")
    assert ExtractorConfig.from_env().run_rows == 0
    monkeypatch.setenv("LABSIGHT_ORT_RUN_ROWS", "8")
    assert ExtractorConfig.from_env().run_rows == 8
