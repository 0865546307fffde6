"""``labsight evaluate-segmentation PRED GT``: score predicted label images against true ones.

PRED and GT are two label image files, or two folders whose files are paired
by relative path without the suffix (``a/b.tif`` with ``a/b.png``), else by
file name stem when that is unique. A label image is a TIFF or PNG of integer
labels (0 = background), or a colour-coded mask (RGB, or RGBA with alpha 0 =
background, as mnfinder's ``nucleus_masks/*.png``) where each 8-connected part
of a colour is one object. Printed: a table (each image and all images
pooled) and one JSON line; ``--json`` prints the JSON line only. Bad input
(a non-integer or negative mask, shapes that differ, unpaired files) exits 2
with a message naming the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LABEL_SUFFIXES", "add_parser", "colour_labels", "pair_files", "read_labels", "run"]

LABEL_SUFFIXES = (".tif", ".tiff", ".png")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate-segmentation`` command to the ``labsight`` subcommands."""
    command = sub.add_parser(
        "evaluate-segmentation",
        help="score predicted label masks against ground truth: AP at IoU 0.5-0.95, F1, "
             "mean matched IoU, splits, merges",
        description=__doc__.splitlines()[0],
    )
    command.add_argument("pred", help="predicted label image, or a folder of them")
    command.add_argument("gt", help="ground-truth label image, or a folder of them")
    command.add_argument("--json", action="store_true", help="print only the JSON line")
    command.set_defaults(func=run)
    return command


def run(args: argparse.Namespace) -> int:
    """Score every pair, print the table and the JSON line; 2 on bad input."""
    from labsight.segmentation_metrics import pool_scores, score_segmentation

    try:
        pairs = pair_files(Path(args.pred), Path(args.gt))
        rows, scores = [], []
        for name, pred_path, gt_path in pairs:
            pred = read_labels(pred_path, "PRED")
            truth = read_labels(gt_path, "GT")
            if pred.shape != truth.shape:
                raise ValueError(f"PRED {pred_path}: shape {pred.shape} differs from GT "
                                 f"{gt_path}: {truth.shape}")
            score = score_segmentation(pred, truth)
            scores.append(score)
            rows.append({"image": name, **score.as_dict()})
    except (OSError, ValueError) as error:
        print(f"labsight: {error}", file=sys.stderr)
        return 2
    overall = {"image": "overall", "images": len(rows), **pool_scores(scores).as_dict()}
    if not args.json:
        _print_table([*rows, overall])
    print(json.dumps(_no_nan({"images": rows, "overall": overall}), allow_nan=False))
    return 0


def pair_files(pred: Path, truth: Path) -> list[tuple[str, Path, Path]]:
    """(name, predicted file, true file) of two files, or of two folders' label images.

    Raises
    ------
    ValueError
        A path that is missing, a file beside a folder, folders without label images, or a
        file in either folder without a partner in the other.
    """
    for role, path in (("PRED", pred), ("GT", truth)):
        if not path.exists():
            raise ValueError(f"{role} {path}: no such file or folder")
    if pred.is_file() and truth.is_file():
        return [(truth.stem, pred, truth)]
    if pred.is_file() or truth.is_file():
        raise ValueError(f"PRED {pred} and GT {truth} must both be files or both be folders")
    pred_files, true_files = _label_files(pred, "PRED"), _label_files(truth, "GT")
    pred_stems = _unique_stems(pred_files)
    true_stems = _unique_stems(true_files)
    pairs, unpaired = [], []
    for key, true_path in sorted(true_files.items()):
        pred_path = pred_files.get(key) or pred_stems.get(true_path.stem)
        if pred_path is None:
            unpaired.append(f"GT {true_path}")
        else:
            pairs.append((key, pred_path, true_path))
    used = {p for _, p, _ in pairs}
    unpaired += [f"PRED {p}" for k, p in sorted(pred_files.items())
                 if p not in used and true_files.get(k) is None
                 and true_stems.get(p.stem) is None]
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else "")
        raise ValueError(f"files without a partner in the other folder: {shown}")
    return pairs


def read_labels(path: Path, role: str) -> np.ndarray:
    """A label image file as 2-D int64 labels; ``role`` (PRED, GT) leads error messages.

    Raises
    ------
    ValueError
        Naming the file: unreadable, not an image of labels, non-integer or negative values.
    """
    from labsight.segmentation_metrics import as_labels

    name = f"{role} {path}"
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            pixels = np.squeeze(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGBA") if image.mode == "P" and
                                    "transparency" in image.info else image)
    except (OSError, ValueError) as error:
        raise ValueError(f"{name}: cannot read it as an image ({error})") from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = colour_labels(pixels)
    elif pixels.ndim == 3 and pixels.shape[-1] == 2:  # grey + alpha
        pixels = np.where(pixels[..., 1] > 0, pixels[..., 0], 0)
    return as_labels(pixels, name)


def colour_labels(colours: np.ndarray) -> np.ndarray:
    """int32 labels 1..N of a colour-coded mask, one per 8-connected part of each colour.

    Parameters
    ----------
    colours : ndarray, shape (H, W, 3) or (H, W, 4)
        RGB (black = background) or RGBA (alpha 0 = background).
    """
    from scipy import ndimage as ndi

    rgb = colours[..., :3].astype(np.uint64)
    code = (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]
    present = colours[..., 3] > 0 if colours.shape[-1] == 4 else code > 0
    _, colour_of = np.unique(np.where(present, code + 1, 0), return_inverse=True)
    colour_of = colour_of.reshape(code.shape)
    labels = np.zeros(code.shape, np.int32)
    count = 0
    for colour, box in enumerate(ndi.find_objects(colour_of), start=1):
        if box is None:
            continue
        parts, n = ndi.label(colour_of[box] == colour, structure=np.ones((3, 3)))
        labels[box][parts > 0] = parts[parts > 0] + count
        count += n
    return labels


def _label_files(folder: Path, role: str) -> dict[str, Path]:
    files = {p.relative_to(folder).with_suffix("").as_posix(): p
             for p in sorted(folder.rglob("*"))
             if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES}
    if not files:
        raise ValueError(f"{role} {folder}: no label images ({' '.join(LABEL_SUFFIXES)})")
    return files


def _unique_stems(files: dict[str, Path]) -> dict[str, Path]:
    by_stem: dict[str, list[Path]] = {}
    for path in files.values():
        by_stem.setdefault(path.stem, []).append(path)
    return {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}


_COLUMNS = (("n_true", "true", "d"), ("n_predicted", "pred", "d"), ("ap50", "AP50", ".3f"),
            ("ap75", "AP75", ".3f"), ("ap90", "AP90", ".3f"), ("mean_ap", "mAP", ".3f"),
            ("f1", "F1", ".3f"), ("mean_iou", "mIoU", ".3f"), ("splits", "split", "d"),
            ("merges", "merge", "d"))


def _print_table(rows: list[dict[str, Any]]) -> None:
    width = max(5, *(len(str(row["image"])) for row in rows))
    print(f"{'image':<{width}}  " + "  ".join(f"{title:>6}" for _, title, _ in _COLUMNS))
    for row in rows:
        cells = [f"{row[key]:>6{fmt}}" for key, _, fmt in _COLUMNS]
        print(f"{row['image']:<{width}}  " + "  ".join(cells))


def _no_nan(value: Any) -> Any:
    """NaN (the mean IoU when nothing matched) as null, which JSON can carry."""
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value
