"""``labsight explain JOB_ID --image FILE -o DIR``: why the classifier gave an hpa-cells job's cells
their classes, as pictures.

For every cell of the job (or those of ``--cells``) and its most probable class (or ``--class``),
it writes into DIR:

- ``cell<label>_<class>_crop.png``: the cell's crop as the model saw it (HPA composite);
- ``..._gradcam_grey.png``, ``_gradcam_colour.png``, ``_gradcam_overlay.png``,
  ``_gradcam_multiply.png``: the Grad-CAM map rendered the image-feature seed's four ways;
- ``..._lime.png``: LIME's strongest superpixels for the class (unless ``--no-lime``);
- ``explanations.csv``: cell, class, probability and LIME's fit (R²) of each.

The job's cell mask comes from its result; its image from ``--image`` (the file submitted,
or one of HPA's channel files ``ID_red.png``, read as the job read it). The model is the one
the job used, taken from the classifier's models here (the shipped ones and
$LABSIGHT_MODEL_DIR), and runs in this process (torch; LIME's perturbations in batches).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "cmd_explain"]

SCALE = 4
"""Pictures are written this many times the crop's side (nearest neighbour), to be seen."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``explain`` to the ``labsight`` subcommands."""
    explain = sub.add_parser("explain", help="draw why the classifier gave an hpa-cells job's cells "
                             "their classes: Grad-CAM four ways and LIME, per cell")
    explain.add_argument("job_id")
    explain.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write into")
    explain.add_argument("--image", required=True, metavar="FILE",
                         help="the job's input: its 4-channel file, or one of its channel files "
                              "(ID_red.png; the other three are read with it)")
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
    from labsight.plots import load_cells_image
    from labsight.tensors import from_tensor

    with LabSightClient(args.gateway, token=args.token) as client:
        job = client.get(args.job_id)
        result = client.result(args.job_id)
    if job.pipeline != "hpa-cells":
        raise SystemExit(f"labsight: job {args.job_id} ran {job.pipeline}; explain takes hpa-cells jobs")
    labels = from_tensor(result.tensors["cell_labels"], "cell_labels")
    try:
        image = load_cells_image(Path(args.image), dict(job.params))
    except (ValueError, OSError) as error:
        raise SystemExit(f"labsight: {error}") from None
    if image.shape[:2] != labels.shape:
        raise SystemExit(f"labsight: --image is {image.shape[1]}x{image.shape[0]} pixels, the job's "
                         f"cell mask {labels.shape[1]}x{labels.shape[0]}: not the job's image")
    chosen = _cell_list(args.cells, labels)
    if chosen is not None:
        labels = np.where(np.isin(labels, chosen), labels, 0)
    written = write_explanations(
        image, labels, result.provenance.get("classifier_model", ""), Path(args.output),
        args.class_name, lime=not args.no_lime,
    )
    print(f"labsight: {written} cell explanations written to {args.output}", file=sys.stderr)
    return 0


def _cell_list(text: str, labels: np.ndarray) -> list[int] | None:
    if not text:
        return None
    try:
        chosen = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"labsight: --cells: expected labels such as 3,7, got {text!r}") from None
    missing = sorted(set(chosen) - set(np.unique(labels).tolist()))
    if missing:
        raise SystemExit(f"labsight: --cells: the job has no cells {missing}")
    return chosen


def write_explanations(image: np.ndarray, labels: np.ndarray, model: str, folder: Path,
                       class_name: str = "", *, lime: bool = True) -> int:
    """Explain every labelled cell of ``image`` with the classifier ``model`` ("name version",
    as a result's provenance names it) and write the pictures into ``folder``; returns the
    number of cells explained."""
    import torch
    from PIL import Image

    from labsight.cell_crops import cell_crops
    from labsight.columns import class_column_name
    from labsight.models import load_torch_model, model_dirs_from_env
    from services.classifier.explain import (
        cam_layer,
        crop_rgb,
        grad_cam,
        lime_explanation,
        render_cam,
        render_lime,
    )
    from services.classifier.repository import DEFAULT_MODEL, classifier_repository

    name, _, version = model.partition(" ")
    manifest = classifier_repository(model_dirs_from_env()).get(name or DEFAULT_MODEL)
    if version and version != manifest.version:
        print(f"labsight: the job used {name} version {version}; explaining version "
              f"{manifest.version}, the one here", file=sys.stderr)
    names = manifest.classes or tuple(map(str, range(manifest.num_classes)))
    target = _class_index(class_name, names)
    crops = cell_crops(image, labels, manifest.input_size[0], channels=manifest.input_channels,
                       mean=manifest.preprocessing.mean, std=manifest.preprocessing.std)
    torch.set_num_threads(1)
    network = load_torch_model(manifest)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch)).numpy()

    probabilities = predict(crops.pixels) if len(crops.cell_ids) else np.zeros((0, manifest.num_classes))
    classes = (np.full(len(crops.cell_ids), target) if target is not None
               else probabilities.argmax(axis=1))
    layer = cam_layer(network, manifest.module_path("features") if "features" in manifest.layers else "")
    maps = grad_cam(network, crops.pixels, classes, layer=layer)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (cell, chosen) in enumerate(zip(crops.cell_ids, classes, strict=True)):
        # the picture shows the crop in [0, 1], before the model's normalisation
        shown = crops.pixels[index] * np.asarray(manifest.preprocessing.std)[:, None, None] + \
            np.asarray(manifest.preprocessing.mean)[:, None, None]
        picture = crop_rgb(np.clip(shown, 0, 1))
        stem = f"cell{cell}_{class_column_name(names[chosen])}"
        pictures = [("crop", picture)] + [(f"gradcam_{kind}", drawn) for kind, drawn in
                                          render_cam(maps[index], picture).items()]
        score = ""
        if lime:
            found = lime_explanation(crops.pixels[index], predict, int(chosen))
            pictures.append(("lime", render_lime(picture, found)))
            score = f"{found.score:.4f}"
        for kind, drawn in pictures:
            Image.fromarray(np.repeat(np.repeat(drawn, SCALE, axis=0), SCALE, axis=1)).save(
                folder / f"{stem}_{kind}.png")
        rows.append([int(cell), int(chosen), names[chosen],
                     f"{probabilities[index, chosen]:.4f}", score])
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
