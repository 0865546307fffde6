"""The built-in kustomize renderer: what it supports, and that it refuses the rest by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import render

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings", "labels": {"tier": "a"}},
    "data": {"keep": "1"},
}
POD = {
    "containers": [{"name": "app", "image": "app"}],
    "initContainers": [{"name": "init", "image": "reg:5000/app:1@sha256:ab"}],
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "app", "labels": {"tier": "a"}},
    "spec": {"template": {"spec": POD}},
}


def kustomization(folder: Path, fields: dict, resources: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if resources is not None:
        (folder / "resources.yaml").write_text(yaml.safe_dump_all(resources))
        fields = {"resources": ["resources.yaml"], **fields}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(fields))
    return folder


def test_namespace_images_and_json6902_patches_apply(tmp_path: Path) -> None:
    kustomization(tmp_path / "base", {"namespace": "lab"}, [CONFIG_MAP, DEPLOYMENT])
    patch = [
        {"op": "add", "path": "/data/added", "value": "2"},
        {"op": "replace", "path": "/data/keep", "value": "3"},
        {"op": "add", "path": "/data/a~1b", "value": "4"},
    ]
    overlay = kustomization(tmp_path / "overlay", {
        "resources": ["../base"],
        "images": [{"name": "app", "newName": "registry/app", "newTag": "2"}],
        "patches": [
            {"target": {"kind": "ConfigMap", "labelSelector": "tier=a"}, "patch": yaml.safe_dump(patch)}
        ],
    })
    config_map, deployment = render.render_builtin(overlay)
    assert config_map["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "lab"
    assert config_map["data"] == {"keep": "3", "added": "2", "a/b": "4"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry/app:2"
    assert pod["initContainers"][0]["image"] == "reg:5000/app:1@sha256:ab"


def test_list_operations_insert_append_and_remove() -> None:
    document = {"items": [1, 2]}
    render.apply_operation(document, {"op": "add", "path": "/items/0", "value": 0})
    render.apply_operation(document, {"op": "add", "path": "/items/-", "value": 3})
    render.apply_operation(document, {"op": "remove", "path": "/items/1"})
    assert document == {"items": [0, 2, 3]}
    with pytest.raises(ValueError, match="does not exist"):
        render.apply_operation(document, {"op": "replace", "path": "/missing", "value": 1})
    with pytest.raises(ValueError, match="needs kustomize"):
        render.apply_operation(document, {"op": "move", "from": "/items", "path": "/moved"})


def test_image_references_split_at_the_tag_not_the_registry_port() -> None:
    assert render.split_image("reg:5000/app") == ("reg:5000/app", None, None)
    assert render.split_image("reg:5000/app:1.2") == ("reg:5000/app", "1.2", None)
    assert render.split_image("app@sha256:ab") == ("app", None, "sha256:ab")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"namePrefix": "x-"}, r"\['namePrefix'\] need kustomize"),
        ({"patches": [{"target": {"kind": "ConfigMap"}, "patch": "data: {a: b}"}]}, "strategic-merge"),
        ({"patches": [{"target": {"kind": "Secret"}, "patch": "[]"}]}, "selects nothing"),
        ({"patches": [{"target": {"labelSelector": "tier!=a"}, "patch": "[]"}]}, "only key=value"),
    ],
)
def test_unsupported_kustomize_features_are_refused(tmp_path: Path, fields: dict, message: str) -> None:
    folder = kustomization(tmp_path, fields, [CONFIG_MAP])
    with pytest.raises(ValueError, match=message):
        render.render_builtin(folder)
