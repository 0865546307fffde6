"""Fixtures of the deployment tests: the repository's compose file and rendered overlays."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import K8S, OVERLAYS, REPO, Manifest, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """Each overlay's manifests, rendered the way operators render them (kubectl if present)."""
    return {overlay: render.render(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, anchors and merge keys resolved."""
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())
