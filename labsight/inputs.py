"""The files a submission names: folders expanded, each file checked, named by its path
relative to the inputs' common folder, and keyed by content so a re-run queues nothing twice."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labsight.arrays import require_numpy
from labsight.columns import CELL_CHANNELS
from labsight.image_messages import detect_format
from labsight.v1 import gateway_pb2 as pb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".btf", ".tf8", ".tf2", ".svs", ".ndpi",
                  ".scn", ".qptiff", ".lsm")
"""Files a folder contributes (by suffix, any case): PNG, JPEG and TIFF, with the suffixes of
BigTIFF and of the TIFF-based slide-scanner and microscope formats tifffile reads (Aperio SVS,
Hamamatsu NDPI, Leica SCN, Akoya QPTIFF, Zeiss LSM); named files may also be .npy arrays."""

SHOWN_PROBLEMS = 20
"""Most bad files listed by name in one refusal (the count says how many there were)."""


class InputError(ValueError):
    """Inputs that cannot be submitted; the message names every bad path (up to SHOWN_PROBLEMS)."""


@dataclass(frozen=True)
class InputFile:
    """One image to submit and the name its job and result rows carry; ``series`` the image of a
    file holding several that the job reads (its ``series`` parameter; '' for the file's only or
    first image), ``plane`` a stack plane it reads (``t=3``, added to its ``plane`` parameter)."""

    path: Path
    name: str
    series: str = ""
    plane: str = ""


def expand_inputs(paths: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """The image files ``paths`` stand for: files as given, folders as their images.

    A folder gives its files with an image suffix (IMAGE_SUFFIXES), sorted by
    path; with ``recursive`` also those of its subfolders. A file named twice
    is submitted once.

    Raises
    ------
    InputError
        Naming every path that does not exist and every folder without images.
    """
    found: list[Path] = []
    problems: list[str] = []
    for given in map(Path, paths):
        if given.is_dir():
            images = _folder_images(given, recursive)
            if not images:
                problems.append(_empty_folder(given, recursive))
            found += images
        elif given.exists():
            found.append(given)
        else:
            problems.append(f"{given}: no such file or folder")
    if problems:
        raise InputError(_listed(problems))
    return list(dict.fromkeys(found))


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files of ``folder`` (and of its subfolders if ``recursive``), sorted."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates
                  if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def _empty_folder(folder: Path, recursive: bool) -> str:
    """Why ``folder`` gave no images, and what would."""
    suffixes = " ".join(IMAGE_SUFFIXES)
    if not recursive and any(child.is_dir() for child in folder.iterdir()):
        return f"{folder}: no images ({suffixes}) in this folder; --recursive also reads its subfolders"
    return f"{folder}: no images ({suffixes}) in this folder"


def input_names(paths: Sequence[Path]) -> list[InputFile]:
    """Each file with its name: its path relative to the files' common folder, with '/'.

    ``plate/a/n_0.png`` and ``plate/b/n_0.png`` are ``a/n_0.png`` and
    ``b/n_0.png``; a single file is named by its file name.
    """
    # abspath, not resolve: a linked file is named where the user put the link
    absolute = [Path(os.path.abspath(path)) for path in paths]
    if not absolute:
        return []
    common = Path(os.path.commonpath([path.parent for path in absolute]))
    return [InputFile(path, absolute_path.relative_to(common).as_posix())
            for path, absolute_path in zip(paths, absolute, strict=True)]


def each_series(files: Sequence[InputFile]) -> list[InputFile]:
    """Each image of every TIFF that holds several (the positions or wells of an OME-TIFF) as an
    input of its own, named ``name[image]`` after its OME name (or its index), reading that
    series; other files as they are.

    Raises
    ------
    InputError
        Naming every TIFF whose header cannot be read.
    """
    from labsight.image_series import series_names

    def images(file: InputFile) -> list[InputFile]:
        try:
            names = series_names(file.path)
        except (ValueError, OSError) as error:
            raise ValueError(f"cannot read its images ({error})") from None
        if names == [""]:
            return [file]
        return [InputFile(file.path, f"{file.name}[{name}]", str(index))
                for index, name in enumerate(names)]

    return _expanded_tiffs(files, images, "")


def each_plane(files: Sequence[InputFile], axis: str) -> list[InputFile]:
    """Each plane along stack axis ``axis`` (``t`` for a time-lapse, ``z``) of every TIFF as an
    input of its own, named ``name[t=3]``, reading that plane (of the file's series where one
    was chosen).

    Raises
    ------
    InputError
        Naming every file that is not a TIFF with that axis, and what it has.
    """
    from labsight.image_series import axis_length

    letter = axis.strip().lower()

    def planes(file: InputFile) -> list[InputFile]:
        length = axis_length(file.path, letter, int(file.series or 0))
        return [InputFile(file.path, f"{file.name}[{letter}={index}]", file.series,
                          f"{letter}={index}") for index in range(length)]

    return _expanded_tiffs(files, planes, f"not a TIFF, so no stack axis {letter.upper()}")


def _expanded_tiffs(files: Sequence[InputFile], expand: Callable[[InputFile], list[InputFile]],
                    not_tiff: str) -> list[InputFile]:
    """Every TIFF of ``files`` as ``expand`` makes it several inputs; another file as it is, or
    a problem ``not_tiff`` when that is given. InputError naming every file ``expand`` refused
    (ValueError, OSError) and why."""
    expanded: list[InputFile] = []
    problems: list[str] = []
    for file in files:
        with open(file.path, "rb") as stream:
            is_tiff = detect_format(stream.read(16)) == "tiff"
        if not is_tiff:
            if not_tiff:
                problems.append(f"{file.path}: {not_tiff}")
            else:
                expanded.append(file)
            continue
        try:
            expanded += expand(file)
        except (ValueError, OSError) as error:
            problems.append(f"{file.path}: {error}")
    if problems:
        raise InputError(_listed(problems))
    return expanded


def check_inputs(paths: Sequence[Path]) -> None:
    """Every file readable and an image by its first bytes (PNG, JPEG, TIFF) or a .npy array.

    The gateway checks each image whole; this finds the files that cannot be
    sent at all, all of them at once, before anything is sent.

    Raises
    ------
    InputError
        Naming every bad file and what is wrong with it.
    """
    problems = [f"{path}: {problem}" for path in paths if (problem := _file_problem(path))]
    if problems:
        raise InputError(_listed(problems))


def _file_problem(path: Path) -> str:
    """What keeps ``path`` from being sent as an image, or ""."""
    if not path.is_file():
        return "not a file"
    try:
        if path.suffix.lower() == ".npy":
            require_numpy(f"{path}: a .npy file").load(path, mmap_mode="r", allow_pickle=False)
            return ""
        with path.open("rb") as file:
            head = file.read(16)
    except (OSError, ValueError) as error:
        return f"cannot be read ({error})"
    if not head:
        return "is empty"
    if detect_format(head) is None:
        return "is not a PNG, JPEG or TIFF image (by its first bytes)"
    return ""


def _listed(problems: list[str]) -> str:
    """Problems one per line, at most SHOWN_PROBLEMS of them and how many more."""
    shown = problems[:SHOWN_PROBLEMS]
    more = len(problems) - len(shown)
    return "\n".join(shown + ([f"... and {more} more"] if more else []))


def content_key(request: pb.SubmitJobRequest) -> str:
    """An idempotency key for ``request``: the same pipeline, parameters, labels, priority and
    input (file name and bytes, extra images and tensors) give the same key.

    "cli-" and 64 hex digits of SHA-256, within the gateway's id syntax
    (1 to 128 of A-Z a-z 0-9 . _ ~ -).
    """
    # Hashes the request's own serialization with the key cleared for the moment (a copy of
    # the request first would copy the image twice more); SHA-256 is hashlib's fastest here.
    key = request.idempotency_key
    request.idempotency_key = ""
    try:
        serialized = request.SerializeToString(deterministic=True)
    finally:
        request.idempotency_key = key
    return f"cli-{hashlib.sha256(serialized).hexdigest()}"


FOUR_CHANNEL_PIPELINES = ("cells", "hpa-cells")
"""Pipelines whose image has the four HPA channels, which may come as one file per channel."""

_CHANNEL_FILE = re.compile(r"(?P<id>.+)_(?P<channel>red|green|blue|yellow)", re.IGNORECASE)
"""An HPA channel file's name without its suffix: ID_red, ID_green, ID_blue, ID_yellow."""


@dataclass(frozen=True)
class ChannelFiles:
    """The four one-channel files of one image (red, green, blue, yellow) and its job's name."""

    name: str
    channels: dict[str, Path]

    @property
    def path(self) -> Path:
        """The red channel's file, standing for the set in messages."""
        return self.channels["red"]


def channel_files(red: Path, green: Path, blue: Path, yellow: Path) -> ChannelFiles:
    """Four files given one per channel, named after their HPA id if they share one
    (``ID_red.png`` ...: ``ID``), else after the red file."""
    paths = dict(zip(CELL_CHANNELS, (red, green, blue, yellow), strict=True))
    found = [_channel_id(path.name) for path in paths.values()]
    ids = {stem for stem, _ in found}
    named = len(ids) == 1 and all(channel for _, channel in found)
    return ChannelFiles(ids.pop() if named else red.name, paths)


def group_channel_files(files: Sequence[InputFile]) -> tuple[list[ChannelFiles], list[InputFile]]:
    """HPA-named files (``ID_red.png``, ``ID_green.png``, ``ID_blue.png``, ``ID_yellow.png``)
    grouped into one set per ID, named by the ID's path (``plate/ID``); the other files as given.

    Raises
    ------
    InputError
        Naming every ID that lacks a channel or has one twice (e.g. ID_red.png and ID_red.tif).
    """
    groups: dict[str, dict[str, list[Path]]] = {}
    others: list[InputFile] = []
    for file in files:
        stem, channel = _channel_id(file.name)
        if not channel:
            others.append(file)
            continue
        groups.setdefault(stem, {}).setdefault(channel, []).append(file.path)
    problems = []
    for stem, found in groups.items():
        missing = [channel for channel in CELL_CHANNELS if channel not in found]
        doubled = [path.name for paths in found.values() if len(paths) > 1 for path in paths]
        if missing:
            problems.append(f"{stem}: no {', '.join(f'{stem}_{c}' for c in missing)} file "
                            "(an image needs red, green, blue and yellow)")
        if doubled:
            problems.append(f"{stem}: several files for one channel ({', '.join(doubled)})")
    if problems:
        raise InputError(_listed(problems))
    sets = [ChannelFiles(stem, {channel: found[channel][0] for channel in CELL_CHANNELS})
            for stem, found in groups.items()]
    return sets, others


def _channel_id(name: str) -> tuple[str, str]:
    """(ID, channel) of an HPA channel file name (path kept in the ID), or (name, "")."""
    stem = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
    match = _CHANNEL_FILE.fullmatch(stem)
    if match is None:
        return name, ""
    return match.group("id"), match.group("channel").lower()


def channel_siblings(path: Path) -> dict[str, Path] | None:
    """For one of HPA's channel files (``ID_red.png``), the four files of its image by channel,
    found beside it; None for a file not named so.

    Raises
    ------
    InputError
        Naming the channels that have no file, or more than one.
    """
    stem, channel = _channel_id(path.name)
    if not channel:
        return None
    found: dict[str, list[Path]] = {c: [] for c in CELL_CHANNELS}
    for candidate in sorted(path.parent.iterdir()):
        other_stem, other = _channel_id(candidate.name)
        if other and other_stem == stem and candidate.suffix.lower() in IMAGE_SUFFIXES:
            found[other].append(candidate)
    bad = [c for c, paths in found.items() if len(paths) != 1]
    if bad:
        raise InputError(f"{path}: the image {stem} needs one file per channel beside it; "
                         + ", ".join(f"{c}: {len(found[c])} files" for c in bad))
    return {c: paths[0] for c, paths in found.items()}
