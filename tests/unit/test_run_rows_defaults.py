"""Each model service's rows per ONNX Runtime run: its own default, LABSIGHT_ORT_RUN_ROWS when set."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labsight.models import ServingConfig
from services.classifier.servicer import CLASSIFIER_RUN_ROWS
from services.classifier.servicer import serving_config as classifier_config
from services.segmentation.models.flow_models import SEGMENTATION_RUN_ROWS
from services.segmentation.models.flow_models import serving_config as segmentation_config

SERVICES: dict[str, tuple[Callable[[], ServingConfig], int]] = {
    "segmentation": (segmentation_config, SEGMENTATION_RUN_ROWS),
    "classifier": (classifier_config, CLASSIFIER_RUN_ROWS),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_runs_few_rows_unless_told_otherwise(service: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config, default = SERVICES[service]
    monkeypatch.delenv("LABSIGHT_ORT_RUN_ROWS", raising=False)
    assert config().run_rows == default > 0
    monkeypatch.setenv("LABSIGHT_ORT_RUN_ROWS", "0")
    assert config().run_rows == 0
    monkeypatch.setenv("LABSIGHT_ORT_RUN_ROWS", "8")
    assert config().run_rows == 8


def test_the_shared_default_runs_batches_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABSIGHT_ORT_RUN_ROWS", raising=False)
    assert ServingConfig.from_env().run_rows == 0
    assert ServingConfig.from_env(default_run_rows=3).run_rows == 3
