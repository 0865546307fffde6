"""HPA-format labelled images: the label CSV and the four channel files of each image id.

Two CSV layouts are read, told apart by their header (names in any case):
HPA's ``ID,Label`` with class indices joined by ``|`` (``a1b2,0|14``), and the
Kaggle protein atlas competitions' ``Id,Target`` with indices joined by spaces
(``a1b2,0 14``). Either separator is accepted in either layout. Each id has one
grey file per channel beside the others, ``ID_red``, ``ID_green``, ``ID_blue``
and ``ID_yellow``, as PNG, TIFF or JPEG.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.classifier.classes import NUM_CLASSES

__all__ = ["CHANNELS", "CHANNEL_SUFFIXES", "LabelledImages", "channel_paths", "read_label_csv", "split_ids"]

CHANNELS = ("red", "green", "blue", "yellow")
"""HPA's channel file suffixes in the order of a 4-channel cells image."""

CHANNEL_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""File types looked for, in this order, for each channel of an id."""

_ID_COLUMNS = ("id",)
_LABEL_COLUMNS = ("label", "target")
_SEPARATORS = re.compile(r"[|\s]+")


@dataclass(frozen=True)
class LabelledImages:
    """Image ids and their label sets, in the order of the CSV.

    Attributes
    ----------
    ids : tuple of str
    classes : ndarray of bool, shape (N, 19)
        Row i is the label set of ``ids[i]`` (HPA class order).
    """

    ids: tuple[str, ...]
    classes: np.ndarray


def read_label_csv(path: Path) -> LabelledImages:
    """The ids and label sets of an HPA (``ID,Label``) or Kaggle (``Id,Target``) CSV.

    Parameters
    ----------
    path : Path
        The CSV file; further columns are ignored.

    Returns
    -------
    LabelledImages

    Raises
    ------
    ValueError
        Naming the file (and line): unreadable, no id or label column, an empty
        id, an id given twice, an empty label set, or a class that is not an
        integer in 0..18.

    Examples
    --------
    >>> import tempfile
    >>> file = Path(tempfile.mkdtemp()) / "train.csv"
    >>> _ = file.write_text("ID,Label\\na,0|14\\nb,18\\n")
    >>> found = read_label_csv(file)
    >>> found.ids, [np.flatnonzero(row).tolist() for row in found.classes]
    (('a', 'b'), [[0, 14], [18]])
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read it as a CSV file ({error})") from None
    if not rows:
        raise ValueError(f"{path}: empty; expected a header ID,Label (or Id,Target) and one row per image")
    header = [name.strip().lower() for name in rows[0]]
    id_column = next((header.index(n) for n in _ID_COLUMNS if n in header), None)
    label_column = next((header.index(n) for n in _LABEL_COLUMNS if n in header), None)
    if id_column is None or label_column is None:
        raise ValueError(f"{path}: header {rows[0]}: expected columns ID and Label (HPA) or Id and "
                         "Target (Kaggle)")
    ids: list[str] = []
    classes = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(id_column, label_column):
            raise ValueError(f"{path}: line {line}: {len(row)} column(s); the header has {len(header)}")
        image_id, text = row[id_column].strip(), row[label_column].strip()
        if not image_id:
            raise ValueError(f"{path}: line {line}: empty image id")
        if image_id in seen:
            raise ValueError(f"{path}: line {line}: image id {image_id!r} given twice (also line "
                             f"{seen[image_id]})")
        seen[image_id] = line
        classes.append(_label_set(text, f"{path}: line {line} (image {image_id})"))
        ids.append(image_id)
    if not ids:
        raise ValueError(f"{path}: no images listed under the header")
    return LabelledImages(tuple(ids), np.array(classes, dtype=bool))


def _label_set(text: str, where: str) -> np.ndarray:
    """One row's class indices as a boolean (19,) label set."""
    tokens = [token for token in _SEPARATORS.split(text) if token]
    if not tokens:
        raise ValueError(f"{where}: no class; expected indices 0..{NUM_CLASSES - 1} joined by | or spaces")
    row = np.zeros(NUM_CLASSES, bool)
    for token in tokens:
        if not token.isdigit() or int(token) >= NUM_CLASSES:
            raise ValueError(f"{where}: class {token!r} is not a class index 0..{NUM_CLASSES - 1}")
        row[int(token)] = True
    return row


def channel_paths(folder: Path, image_id: str) -> list[Path]:
    """The red, green, blue and yellow files of ``image_id`` in ``folder``.

    Raises
    ------
    ValueError
        Naming the missing files (``folder/ID_yellow.png``), or a channel with
        files of two types.
    """
    found, missing = [], []
    for channel in CHANNELS:
        stem = f"{image_id}_{channel}"
        files = [path for path in (folder / f"{stem}{suffix}" for suffix in CHANNEL_SUFFIXES)
                 if path.is_file()]
        if not files:
            missing.append(str(folder / f"{stem}.png"))
        elif len(files) > 1:
            names = ", ".join(path.name for path in files)
            raise ValueError(f"image {image_id}: several {channel} files ({names}); keep one")
        else:
            found.append(files[0])
    if missing:
        raise ValueError(f"image {image_id}: no channel file {', '.join(missing)} (nor .tif/.tiff/.jpg)")
    return found


def split_ids(count: int, held_out: float, validation: float, seed: int) -> tuple[np.ndarray, ...]:
    """Indices of the training, validation and test images of ``count`` images.

    Whole images go to one split (their cells share the image's labels, so
    cells of one image in two splits would flatter the held-out scores). The
    test split takes ``held_out`` of the images and the validation split
    ``validation``, each at least one image.

    Raises
    ------
    ValueError
        If the fractions leave no training image or there are fewer than 3 images.
    """
    if not (0 < held_out < 1 and 0 < validation < 1 and held_out + validation < 1):
        raise ValueError(f"held_out, validation: expected fractions in (0, 1) summing under 1, got "
                         f"{held_out} and {validation}")
    test_count = max(1, round(count * held_out))
    validation_count = max(1, round(count * validation))
    if count - test_count - validation_count < 1:
        raise ValueError(f"images: {count} image(s) cannot give training, validation and test images; "
                         "label at least 3")
    order = np.random.default_rng((seed, 7)).permutation(count)
    test = np.sort(order[:test_count])
    held = np.sort(order[test_count : test_count + validation_count])
    return np.sort(order[test_count + validation_count :]), held, test
