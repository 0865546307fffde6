"""The worked notebook under examples/ runs green against a real stack, as a user would run it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration.conftest import InProcessStack

NOTEBOOK_TIMEOUT_S = 300
"""Per-cell limit: generous, since the machine may be shared; the notebook takes seconds."""


def test_quickstart_notebook_runs_against_a_real_gateway(
    stack: InProcessStack, repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.start_worker()
    # The kernel finds the gateway as a user's notebook finds `labsight up`'s: through the
    # environment, here this test's stack (and an empty home, so no other `up` is found).
    monkeypatch.setenv("LABSIGHT_GATEWAY_ADDR", stack.gateway.address)
    monkeypatch.setenv("LABSIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LABSIGHT_TOKEN", raising=False)
    notebook = nbformat.read(repo_root / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=NOTEBOOK_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {
        index: "".join(output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
                       for output in cell.get("outputs", []))
        for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
    }
    text = "\n".join(outputs.values())
    assert "'fractal'" in text  # the pipelines the gateway listed
    assert "box_sizes" in text and "NotFoundError NOT_FOUND" in text
    assert "AnnData object with n_obs × n_vars = 9 ×" in text
    assert not any(output.get("output_type") == "error"
                   for cell in notebook.cells for output in cell.get("outputs", []))
