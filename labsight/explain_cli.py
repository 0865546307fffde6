"""``labsight explain JOB_ID -o DIR``: why the classifier gave an hpa-cells job's cells
their classes, as pictures.

For every cell of the job (or those of ``--cells``) and its most probable class (or ``--class``),
it writes into DIR:

- ``cell<label>_<class>_crop.png``: the cell's crop as the model saw it (HPA composite);
- ``..._gradcam_grey.png``, ``_gradcam_colour.png``, ``_gradcam_overlay.png``,
  ``_gradcam_multiply.png``: the Grad-CAM map rendered the image-feature seed's four ways;
- ``..._lime.png``: LIME's strongest superpixels for the class (unless ``--no-lime``);
- ``explanations.csv``: cell, class, probability and LIME's fit (R²) of each.

The crops come from the job's result (tensor ``crops``: each cell as the classifier saw it,
8-bit), or with ``--image`` are cut again from the file submitted (or one of HPA's channel
files ``ID_red.png``, read as the job read it) with the result's cell mask. The model is the
one the job used, taken from the classifier's models here (the shipped ones and
$LABSIGHT_MODEL_DIR), and runs in this process (torch; LIME's perturbations in batches).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from labsight.models import ModelManifest

__all__ = ["add_parser", "cmd_explain"]

SCALE = 4
"""Pictures are written this many times the crop's side (nearest neighbour), to be seen."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``explain`` to the ``labsight`` subcommands."""
    explain = sub.add_parser("explain", help="draw why the classifier gave an hpa-cells job's cells "
                             "their classes: Grad-CAM four ways and LIME, per cell")
    explain.add_argument("job_id")
    explain.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write into")
    explain.add_argument("--image", default="", metavar="FILE",
                         help="cut the crops from the job's input file (its 4-channel file, or one "
                              "of its channel files ID_red.png) instead of the 8-bit crops the "
                              "result carries: exact for 16-bit images")
    explain.add_argument("--class", dest="class_name", default="", metavar="NAME",
                         help="class to explain (a name such as Mitochondria, or 0-18); default: "
                              "each cell's most probable class")
    explain.add_argument("--cells", default="", metavar="LABELS",
                         help="only these cells, e.g. 3,7 (default: all)")
    explain.add_argument("--no-lime", action="store_true", help="Grad-CAM only (LIME takes ~2 s a cell)")
    explain.add_argument("--gateway", default=None, help="gateway address (default: from up)")
    explain.add_argument("--token", default=None, help="bearer token (default: from up)")
    explain.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """Fetch the job's result, explain its cells and write the pictures; SystemExit when unusable."""
    from labsight.client import LabSightClient

    with LabSightClient(args.gateway, token=args.token) as client:
        job = client.get(args.job_id)
        result = client.result(args.job_id)
    if job.pipeline != "hpa-cells":
        raise SystemExit(f"labsight: job {args.job_id} ran {job.pipeline}; explain takes hpa-cells jobs")
    manifest = _model(result.provenance.get("classifier_model", ""))
    cell_ids, crops = (_image_crops(result, Path(args.image), dict(job.params), manifest.input_size[0])
                       if args.image else _result_crops(result))
    if args.cells:
        try:
            chosen = [int(part) for part in args.cells.split(",") if part.strip()]
        except ValueError:
            raise SystemExit(f"labsight: --cells: expected labels such as 3,7, got {args.cells!r}") from None
        missing = sorted(set(chosen) - set(cell_ids.tolist()))
        if missing:
            raise SystemExit(f"labsight: --cells: the job has no cells {missing}")
        keep = np.isin(cell_ids, chosen)
        cell_ids, crops = cell_ids[keep], crops[keep]
    written = write_explanations(crops, cell_ids, manifest, Path(args.output), args.class_name,
                                 lime=not args.no_lime)
    print(f"labsight: {written} cell explanations written to {args.output}", file=sys.stderr)
    return 0


def _result_crops(result: object) -> tuple[np.ndarray, np.ndarray]:
    """Cell ids and [0, 1] crops (N, 4, S, S) the job's result carries (tensor ``crops``)."""
    from labsight.tensors import from_tensor

    if "crops" not in result.tensors:  # type: ignore[attr-defined]
        raise SystemExit("labsight: the job's result carries no crops; give --image FILE")
    crops = from_tensor(result.tensors["crops"], "crops")  # type: ignore[attr-defined]
    ids = np.array([int(row) for row in result.tables["classes"].row_ids], np.int64)  # type: ignore[attr-defined]
    return ids, np.ascontiguousarray(crops.transpose(0, 3, 1, 2), np.float32) / 255


def _image_crops(result: object, path: Path, params: dict[str, str],
                 side: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell ids and [0, 1] crops cut from the job's image file, read as the job read it."""
    from labsight.cell_crops import cell_crops
    from labsight.plots import load_cells_image
    from labsight.tensors import from_tensor

    labels = from_tensor(result.tensors["cell_labels"], "cell_labels")  # type: ignore[attr-defined]
    try:
        image = load_cells_image(path, params)
    except (ValueError, OSError) as error:
        raise SystemExit(f"labsight: {error}") from None
    if image.shape[:2] != labels.shape:
        raise SystemExit(f"labsight: --image is {image.shape[1]}x{image.shape[0]} pixels, the job's "
                         f"cell mask {labels.shape[1]}x{labels.shape[0]}: not the job's image")
    crops = cell_crops(image, labels, side)
    return crops.cell_ids, crops.pixels


def _model(model: str) -> ModelManifest:
    """The classifier ``model`` ("name version", as a result's provenance names it) among the
    models here; a note when its version is not the job's."""
    from labsight.models import model_dirs_from_env
    from services.classifier.repository import DEFAULT_MODEL, classifier_repository

    name, _, version = model.partition(" ")
    manifest = classifier_repository(model_dirs_from_env()).get(name or DEFAULT_MODEL)
    if version and version != manifest.version:
        print(f"labsight: the job used {name} version {version}; explaining version "
              f"{manifest.version}, the one here", file=sys.stderr)
    return manifest


def write_explanations(crops: np.ndarray, cell_ids: np.ndarray, manifest: ModelManifest,
                       folder: Path, class_name: str = "", *, lime: bool = True) -> int:
    """Explain each cell's crop with the classifier of ``manifest`` and write the pictures into
    ``folder``; returns the cells explained.

    ``crops`` are (N, 4, S, S) in [0, 1] (before the model's normalisation), S the model's
    input side; ``cell_ids`` name them.
    """
    import torch
    from PIL import Image

    from labsight.columns import class_column_name
    from labsight.models import load_torch_model
    from services.classifier.explain import (
        cam_layer,
        crop_rgb,
        grad_cam,
        lime_explanation,
        render_cam,
        render_lime,
    )

    if crops.shape[1:] != manifest.input_shape:
        raise SystemExit(f"labsight: crops of shape {list(crops.shape[1:])}, but {manifest.name} "
                         f"takes {list(manifest.input_shape)}")
    names = manifest.classes or tuple(map(str, range(manifest.num_classes)))
    target = _class_index(class_name, names)
    mean = np.asarray(manifest.preprocessing.mean, np.float32)[None, :, None, None]
    std = np.asarray(manifest.preprocessing.std, np.float32)[None, :, None, None]
    inputs = ((crops - mean) / std).astype(np.float32)
    torch.set_num_threads(1)
    network = load_torch_model(manifest)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch)).numpy()

    probabilities = predict(inputs) if len(inputs) else np.zeros((0, manifest.num_classes))
    classes = np.full(len(inputs), target) if target is not None else probabilities.argmax(axis=1)
    layer = cam_layer(network, manifest.module_path("features") if "features" in manifest.layers else "")
    maps = grad_cam(network, inputs, classes, layer=layer)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (cell, chosen) in enumerate(zip(cell_ids, classes, strict=True)):
        picture = crop_rgb(np.clip(crops[index], 0, 1))
        stem = f"cell{cell}_{class_column_name(names[chosen])}"
        pictures = [("crop", picture)] + [(f"gradcam_{kind}", drawn) for kind, drawn in
                                          render_cam(maps[index], picture).items()]
        score = ""
        if lime:
            found = lime_explanation(inputs[index], predict, int(chosen))
            pictures.append(("lime", render_lime(picture, found)))
            score = f"{found.score:.4f}"
        for kind, drawn in pictures:
            Image.fromarray(np.repeat(np.repeat(drawn, SCALE, axis=0), SCALE, axis=1)).save(
                folder / f"{stem}_{kind}.png")
        rows.append([int(cell), int(chosen), names[chosen], f"{probabilities[index, chosen]:.4f}", score])
    with open(folder / "explanations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "class_index", "class", "probability", "lime_r2"])
        writer.writerows(rows)
    return len(rows)


def _class_index(name: str, classes: tuple[str, ...]) -> int | None:
    """The index of ``name`` (a class name, any case, or its index); None for empty."""
    if not name:
        return None
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    lowered = [c.lower() for c in classes]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    raise SystemExit(f"labsight: --class: unknown class {name!r}; classes: {', '.join(classes)}")
