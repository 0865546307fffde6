"""``labsight inspect FILE ...``: what LabSight reads from image files, before submitting them.

For each file, from its header alone (no pixel is decoded): its format and every image it
holds (the series of a plate or tile scan), each with its axes and sizes, sample type,
significant bits, channel names, physical pixel size and where it came from, and EXIF
orientation; then the job parameters that file needs or offers (a plane or projection for a
stack, ``series`` or ``--each-series`` for several images, ``--each-plane`` for a time-lapse,
channels by name, its nuclear stain for the cells pipeline, ``intensity=bit-depth``).
``--json`` prints one JSON object per file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_inspect", "describe_file"]

_STACK_AXES_SKIPPED = "YXCS"
"""Axes of a plane and its channels; every other axis is a stack axis."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``inspect`` to the ``labsight`` subcommands."""
    inspect = sub.add_parser("inspect", help="what LabSight reads from image files (images, axes, "
                             "channels, bits, pixel size) and the parameters they need")
    inspect.add_argument("files", nargs="+", metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="one JSON object per file")
    inspect.set_defaults(func=cmd_inspect)


def describe_file(path: Path) -> dict[str, Any]:
    """What LabSight reads from the image file at ``path``, as :func:`cmd_inspect` prints it with
    ``--json``. Raises ValueError with the reason for a file it cannot read."""
    from labsight.errors import InvalidArgument
    from labsight.image_messages import detect_format
    from labsight.image_series import series_names
    from labsight.images import file_layouts, image_from_file

    with open(path, "rb") as stream:
        fmt = detect_format(stream.read(16))
    try:
        layouts = file_layouts(image_from_file(path), str(path))
        names = series_names(path) if fmt == "tiff" else [""]
    except InvalidArgument as error:  # named after the file's field; the path says which
        details = error.details()
        raise ValueError(details.split(": ", 1)[-1] if details.startswith(str(path)) else details
                         ) from None
    if len(names) != len(layouts):
        names = [str(index) for index in range(len(layouts))]
    images = []
    for index, layout in enumerate(layouts):
        bits = layout.significant_bits
        images.append({
            "index": index, "name": names[index],
            "axes": layout.axes, "shape": list(layout.shape), "dtype": str(layout.dtype),
            "significant_bits": bits if bits is not None and bits < layout.dtype.itemsize * 8 else None,
            "channel_names": list(layout.channel_names),
            "pixel_size_um": layout.pixel_size.um if layout.pixel_size else None,
            "pixel_size_source": layout.pixel_size.source if layout.pixel_size else "",
            "exif_orientation": layout.exif_orientation,
        })
    return {"path": str(path), "format": fmt, "images": images,
            "hints": _hints(layouts, len(layouts))}


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what each file holds (or a JSON object per file); 2 when a file cannot be read."""
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            found = describe_file(path)
        except (ValueError, OSError) as error:
            print(f"labsight: {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(found) if args.json else _text(found), flush=True)
    return 2 if failed else 0


NUCLEAR_STAINS = ("dapi", "hoechst", "h2b", "draq5", "draq7", "nucblue", "nucred", "sir-dna",
                  "sirdna", "spy-dna", "nls", "propidium", "topro", "to-pro", "sytox", "nuclei",
                  "nucleus")
"""Words in a channel name that mark a nuclear stain (or a nuclear marker), lower case."""


def _is_nuclear_stain(name: str) -> bool:
    folded = name.lower()
    return any(stain in folded for stain in NUCLEAR_STAINS)


def _hints(layouts: list[Any], count: int) -> list[str]:
    """The parameters the file needs (a stack's plane) or offers (series, channels, bits)."""
    first = layouts[0]
    hints = []
    if count > 1:
        hints.append(f"{count} images: a job reads the first; --param series=0..{count - 1} "
                     "chooses one, --each-series makes a job of each")
    stack = [(axis, size) for axis, size in zip(first.axes, first.shape, strict=True)
             if axis not in _STACK_AXES_SKIPPED]
    if stack:
        ranges = ",".join(f"{axis.lower()}=0..{size - 1}" for axis, size in stack)
        hints.append(f"a stack ({ranges}): give --param plane (e.g. "
                     f"{','.join(f'{axis.lower()}=0' for axis, _ in stack)}) or "
                     "--param z_project=max|mean|sum"
                     + ("; --each-plane t makes a job of each time point" if "T" in first.axes else ""))
    if "T" in first.axes:
        hints.append("a time-lapse: labsight submit cell-tracks FILE follows its cells over time "
                     "(or cells --each-plane t, then labsight track --batch)")
    if first.channel_names:
        hints.append(f"channels by name: --param channels={','.join(first.channel_names[:2])}")
    nuclear = next((name for name in first.channel_names if _is_nuclear_stain(name)), None)
    fluorescence = first.size("S") == 1 and first.size("C") != 4  # grey or C channels, not RGB
    if nuclear is not None or fluorescence:
        choice = nuclear or ("0" if first.size("C") == 1 else "INDEX")
        hints.append(f"cells: --param nucleus_channel={choice} (its nuclear stain), then "
                     "cytoplasm_channels=... or expand_um=... for the cells")
    bits = first.significant_bits
    if bits is not None and bits < first.dtype.itemsize * 8:
        hints.append(f"{bits} significant bits in {first.dtype}: --param intensity=bit-depth "
                     "reads them as the full range")
    if first.pixel_size is not None:
        hints.append(f"the cells pipelines use its pixel size, {first.pixel_size.describe()}, "
                     "unless --param pixel_size_um is given")
    return hints


def _text(found: dict[str, Any]) -> str:
    """Lines for a person: the file, each image, the hints."""
    images = found["images"]
    lines = [f"{found['path']}: {found['format'].upper()}, {len(images)} image(s)"]
    for image in images:
        sizes = ", ".join(f"{axis}={size}" for axis, size in zip(image["axes"], image["shape"],
                                                                  strict=True))
        parts = [f"{image['axes']} [{sizes}] {image['dtype']}"]
        if image["significant_bits"]:
            parts.append(f"{image['significant_bits']} significant bits")
        if image["channel_names"]:
            parts.append(f"channels {', '.join(image['channel_names'])}")
        if image["pixel_size_um"]:
            parts.append(f"pixels {image['pixel_size_um']:.4g} µm ({image['pixel_size_source']})")
        if image["exif_orientation"] != 1:
            parts.append(f"EXIF orientation {image['exif_orientation']} (read turned upright)")
        name = f" {image['name']}" if image["name"] else ""
        lines.append(f"  [{image['index']}]{name}: " + "; ".join(parts))
    lines += [f"  - {hint}" for hint in found["hints"]]
    return "\n".join(lines)
