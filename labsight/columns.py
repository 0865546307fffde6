"""What every output column of every pipeline means, in plain words.

The services name their columns from the prefixes here (see
``services/features/fractal_columns.py``), and ``labsight columns PIPELINE``
and the README explain them from the same table, so a name and its meaning
cannot drift apart.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

LACUNARITY = "MinkLAC"
"""Numbered columns of the lacunarity Λ(r), one per box side."""
BOX_COUNT = "MinkDF"
"""Numbered columns of the box count N(r), one per box side."""
CLUSTER_COUNT = "Minkp"
"""Numbered columns of the mean cluster count per box, one per box side."""
LARGEST_CLUSTER = "Minkg"
"""Numbered columns of the mean largest-cluster share per box, one per box side."""
PERCOLATING = "Minkh"
"""Numbered columns of the share of percolating boxes, one per box side."""

DEFAULT_BOX_SIDES = tuple(range(3, 42, 2))
"""The fractal pipeline's default box sides r = 3, 5, ..., 41 (``box_sizes=3-41``)."""

NUMBERED = {
    LACUNARITY: "lacunarity Λ(r) at box side r = {r}",
    BOX_COUNT: "box count N(r) at box side r = {r}",
    CLUSTER_COUNT: "mean number of clusters per box at box side r = {r}",
    LARGEST_CLUSTER: "mean share of a box (0-1) covered by its largest cluster at box side r = {r}",
    PERCOLATING: "share of boxes that percolate at box side r = {r}",
}
"""Meaning of each numbered column; column i belongs to the i-th box side given."""

FRACTAL_NOTES = (
    "Every pixel whose r×r box lies inside the image is a box centre. A box's mass is the number "
    "of its pixels whose colour is within r grey levels of the centre's (257·r for 16-bit "
    "images; the largest difference over R, G and B).",
    "Lacunarity Λ(r) = variance of the box masses / their squared mean: 0 for an even texture, "
    "larger for a gappy one.",
    "Box count N(r) = mean over boxes of 1 / mass; how fast it falls with r gives the fractal "
    "dimension.",
    "Percolation: in each box the pixels within the colour distance form clusters (4-connected); "
    "a box percolates when its mass is at least 59.275% of the box.",
    "Column i belongs to the i-th box side of params.box_sizes; the sides shown are the default "
    "3-41 (column i is r = 2i + 1).",
)
"""How the fractal columns are computed, told once for all of them."""

CURVES = {
    "LAC": "the lacunarity curve Λ(r)",
    "Cluster": "the cluster-count curve (Minkp)",
    "Perc": "the percolating-share curve (Minkh)",
    "MaxCluster": "the largest-cluster-share curve (Minkg)",
}
"""Curves over the box sides summarised by four descriptor columns each, by column suffix."""

DESCRIPTORS = {
    "Area": "area under {curve} over the box sides (trapezoids of width (r_max - r_min) / n, "
    "so 0.95 of the exact area for the 20 default sides)",
    "Skewness": "skewness of the values of {curve} (0 for a flat curve)",
    "AreaRatio": "area under {curve} over its smaller half of the box sides divided by the "
    "area over the larger half (empty when that is 0)",
    "Max": "largest value of {curve}",
}
"""What each curve descriptor is, by column prefix after "Mink"."""

FIXED = {
    "FractalDimension": "fractal dimension D: minus the slope of log N(r) against log r "
    "(least squares over all box sides); about 2 for a filled plane, lower for sparse texture",
    "FractalDimensionRMin": "smallest box side used in the dimension fit",
    "FractalDimensionRMax": "largest box side used in the dimension fit",
    "FractalDimensionR2": "R² of the dimension fit (1 = log N(r) is a straight line in log r)",
}
"""Columns with one fixed name."""

ID = "the image's path relative to the submitted files' common folder (e.g. a/n_0.png)"
SPOT_ID = ("the spot's id (params.spot_ids, e.g. a Visium barcode; default its index 0..N-1) or "
           "the cell's label in the mask; exported with other jobs, after the image's path "
           "relative to the submitted files' common folder and '/' (a/tissue.tif/AAAC-1)")
PATCH_ID = ("the image's path relative to the submitted files' common folder, or the patch's "
            "index 0..N-1 in a 'patches' stack; exported with other jobs, patch indices follow "
            "the image's path and '/'")
DEEP_FEATURE = ("deep feature i of the model's layer L (columns L1..Ln, e.g. avgpool1..avgpool2048;"
                " L_1.. when L ends in a digit): the layer's i-th channel averaged over the image "
                "(params.pooling: average, max, or none for every position)")
CLASS = "the value of the job label named by --class-label (only with that option)"
COORDINATES = ("the spot's or cell's centre in pixels of the image (AnnData: obs x, y and "
               "obsm['spatial']; absent from CSV)")

CELL_CHANNELS = ("red", "green", "blue", "yellow")
"""The four channels of a cells image, in order (HPA): microtubules, protein, nuclei, ER."""

CELL_CHANNEL_MEANINGS = {
    "red": "red (microtubules)",
    "green": "green (the protein of interest)",
    "blue": "blue (nuclei)",
    "yellow": "yellow (endoplasmic reticulum)",
}
"""What each channel shows, for the column meanings."""

CELL_FIXED_COLUMNS = {
    "label": "the cell's label: its value in tensor cell_labels, and its nucleus's in nucleus_labels",
    "area_px": "the cell's area in pixels (nucleus included)",
    "area_um2": "the cell's area in µm² (area_px × pixel_size_um²)",
    "nucleus_area_px": "its nucleus's area in pixels (0 for a cell without a nucleus)",
    "nucleus_area_um2": "its nucleus's area in µm²",
    "nucleus_cell_area_ratio": "nucleus_area_px / area_px (0-1)",
    "centroid_x": "x of the cell's centroid in pixels (column; pixel centres at integers)",
    "centroid_y": "y of the cell's centroid in pixels (row)",
    "bbox_min_x": "first column of the cell's bounding box",
    "bbox_min_y": "first row of the cell's bounding box",
    "bbox_max_x": "column after the box's last one (width = bbox_max_x - bbox_min_x)",
    "bbox_max_y": "row after the box's last one (height = bbox_max_y - bbox_min_y)",
}
"""Columns of the cells table before the shapes, in order."""

CELL_SHAPE_COLUMNS = {
    "perimeter_um": "the cell's perimeter in µm (scikit-image's perimeter: its 4-connected border "
    "pixels, weighted by how the border runs through them)",
    "form_factor": "4π × area / perimeter² (about 1 for a disc, smaller for elongated or ragged "
    "cells, above 1 for objects of a few pixels; CellProfiler's FormFactor)",
    "major_axis_um": "length in µm of the major axis of the ellipse with the cell's second moments",
    "minor_axis_um": "length in µm of that ellipse's minor axis",
    "eccentricity": "that ellipse's eccentricity: 0 a circle, towards 1 a line",
    "orientation_deg": "angle from the image's x axis to that ellipse's major axis, counter-clockwise "
    "as the image is shown, -90 to 90 degrees",
    "nucleus_perimeter_um": "its nucleus's perimeter in µm (empty without a nucleus)",
    "nucleus_form_factor": "its nucleus's form factor (empty without a nucleus)",
    "nucleus_major_axis_um": "major axis in µm of its nucleus's second-moment ellipse (empty "
    "without a nucleus)",
    "nucleus_minor_axis_um": "minor axis in µm of that ellipse (empty without a nucleus)",
    "nucleus_eccentricity": "that ellipse's eccentricity (empty without a nucleus)",
}
"""Shape columns of the cells table (services.segmentation.shape), before the intensities, in order."""

CELL_INTENSITY_COLUMNS = {
    "mean_{c}": "mean intensity of the {m} channel over the cell's pixels, in the image's units",
    "integrated_{c}": "summed intensity of the {m} channel over the cell's pixels",
    "std_{c}": "standard deviation of the {m} channel over the cell's pixels (population, as "
    "CellProfiler's StdIntensity): how unevenly the cell holds it",
    "nucleus_mean_{c}": "mean intensity of the {m} channel over its nucleus's pixels (empty "
    "without a nucleus)",
    "cytoplasm_mean_{c}": "mean intensity of the {m} channel over the cell's pixels outside its "
    "nucleus (CellProfiler's cytoplasm object; empty where the nucleus fills the cell): "
    "nucleus_mean_{c} / cytoplasm_mean_{c} is the nuclear/cytoplasmic ratio",
}
"""Intensity columns, one of each per channel, channel-major within each kind."""

CELLS_ID = ("the cell's label; exported with other jobs, after the image's name and '/' "
            "(ID/17)")
CELLS_NOTES = (
    "Intensities are the pixels as read (params.intensity), uint8 0-255 or uint16 0-65535.",
    "Cells and nuclei share their label: cell k contains nucleus k. Areas in µm² use "
    "params.pixel_size_um, else the pixel size the image file states, else 0.08 (the HPA "
    "images'); provenance pixel_size_um and pixel_size_source say which.",
    "With params.nucleus_channel (an image that is not HPA's four channels) the intensity "
    "columns are named after the image's channels as read, not red, green, blue, yellow: the "
    "file's channel names in lower case, characters other than letters, digits and _ as _ "
    "(mean_dapi, integrated_gfp, ...), else ch0, ch1, ... by the channel's index in the file.",
)


def cell_column_names(channels: Sequence[str] = CELL_CHANNELS) -> list[str]:
    """Every column of the cells table, in order, for an image whose channels have these
    column names (:func:`channel_column_names`; HPA's red, green, blue, yellow by default)."""
    return [*CELL_FIXED_COLUMNS, *CELL_SHAPE_COLUMNS,
            *(pattern.format(c=channel) for pattern in CELL_INTENSITY_COLUMNS for channel in channels)]


def channel_column_names(names: Sequence[str], count: int) -> tuple[str, ...]:
    """The names ``count`` channels go by in column names: each given name in lower case, runs of
    characters other than letters, digits and ``_`` as one ``_``; ``ch<i>`` where ``names`` is
    empty, a name is left with nothing, or it repeats an earlier one.

    Raises
    ------
    ValueError
        For names given but not one per channel.

    >>> channel_column_names(["DAPI", "Alexa Fluor 488", "dapi"], 3)
    ('dapi', 'alexa_fluor_488', 'ch2')
    """
    if names and len(names) != count:
        raise ValueError(f"{len(names)} channel names for {count} channels; give one per channel "
                         "or none")
    chosen: list[str] = []
    for index in range(count):
        slug = re.sub(r"[^a-z0-9_]+", "_", names[index].lower()).strip("_") if names else ""
        chosen.append(slug if slug and slug not in chosen else f"ch{index}")
    return tuple(chosen)


def _cells_table() -> Table:
    intensities = tuple((pattern.format(c=channel),
                         meaning.format(c=channel, m=CELL_CHANNEL_MEANINGS[channel]))
                        for pattern, meaning in CELL_INTENSITY_COLUMNS.items()
                        for channel in CELL_CHANNELS)
    return Table("cells", "one row per cell, by increasing label",
                 (("id", CELLS_ID), *CELL_FIXED_COLUMNS.items(), *CELL_SHAPE_COLUMNS.items(),
                  *intensities), CELLS_NOTES)


CELL_CLASS_BOX = ("label", "bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y")
"""Columns of the hpa-cells ``classes`` table taken from the cells table, in order."""

CELL_CLASS_FIXED = {
    "top_class": "index (0-18, HPA order) of the cell's most probable class",
    "top_probability": "the probability of that class (0-1)",
    "label_count": "how many classes the cell is predicted to carry (its label set's size)",
}
"""Columns of the ``classes`` table after the box, before the per-class ones."""

CELL_CLASS_PATTERNS = {
    "p_{c}": "probability (0-1, sigmoid, independent of the other classes) that the cell shows "
             "the class; {c} is the class name in lower case, words joined by _ "
             "(p_nucleoplasm, p_nuclear_membrane, ..., p_negative)",
    "is_{c}": "1 if the class is in the cell's predicted label set (p_{c} at least the model's "
              "threshold for it), else 0",
}
"""Per-class columns of the ``classes`` table, 19 of each, pattern-major, classes in HPA order."""

IMAGE_CLASS_PATTERNS = {
    "p_{c}": "the image's probability of the class: the highest p_{c} of any of its cells "
             "(0 without cells)",
    "cells_{c}": "how many of its cells carry the class in their predicted label set",
}
"""Columns of the hpa-cells ``image_classes`` table (one row), 19 of each."""

HPA_CELLS_NOTES = (
    "Classes (HPA order 0-18): Nucleoplasm, Nuclear membrane, Nucleoli, Nucleoli fibrillar "
    "center, Nuclear speckles, Nuclear bodies, Endoplasmic reticulum, Golgi apparatus, "
    "Intermediate filaments, Actin filaments, Microtubules, Mitotic spindle, Centrosome, "
    "Plasma membrane, Mitochondria, Aggresome, Cytosol, Vesicles and punctate cytosolic "
    "patterns, Negative; the result's provenance 'classifier_classes' lists the model's own.",
    "Per-class thresholds are the model's (provenance 'classifier_thresholds'), chosen on its "
    "validation data; the shipped model was trained on generated cells only.",
)


@functools.lru_cache(maxsize=256)
def class_column_name(class_name: str) -> str:
    """A class name as it appears in column names: lower case, words joined by ``_``; kept per
    name (an hpa-cells job names its 19 classes' columns twice).

    >>> class_column_name("Vesicles and punctate cytosolic patterns")
    'vesicles_and_punctate_cytosolic_patterns'
    """
    return "_".join(re.findall(r"[a-z0-9]+", class_name.lower()))


def cell_class_column_names(class_names: Sequence[str]) -> list[str]:
    """Every column of the hpa-cells ``classes`` table for these classes, in order."""
    slugs = [class_column_name(name) for name in class_names]
    return [*CELL_CLASS_BOX, *CELL_CLASS_FIXED,
            *(pattern.format(c=slug) for pattern in CELL_CLASS_PATTERNS for slug in slugs)]


def image_class_column_names(class_names: Sequence[str]) -> list[str]:
    """Every column of the hpa-cells ``image_classes`` table for these classes, in order."""
    slugs = [class_column_name(name) for name in class_names]
    return [pattern.format(c=slug) for pattern in IMAGE_CLASS_PATTERNS for slug in slugs]


def _hpa_cells_tables() -> tuple[Table, ...]:
    box = tuple((name, CELL_FIXED_COLUMNS[name]) for name in CELL_CLASS_BOX)
    return (
        _cells_table(),
        Table("classes", "one row per cell, by increasing label (the cells table's rows)",
              (("id", CELLS_ID), *box, *CELL_CLASS_FIXED.items(), *CELL_CLASS_PATTERNS.items()),
              HPA_CELLS_NOTES),
        Table("image_classes", "one row for the image",
              (("id", "'image'; exported with other jobs, after the image's name and '/'"),
               *IMAGE_CLASS_PATTERNS.items()), HPA_CELLS_NOTES),
    )


TRACK_COLUMNS = {
    "t": "the time point (index along the movie's T axis, from 0)",
    "track_id": "the cell's track: the same id at every time point the cell is followed through "
    "(1, 2, ...; 0 for a cell left out of the linking, one without a nucleus when nuclei were "
    "linked)",
    "parent_track_id": "the track of the cell it divided from (0: none, it was there from the "
    "start or appeared)",
}
"""Columns of the cell-tracks ``tracks`` table (and of ``labsight track``'s rows) before the
cells table's."""

LINEAGE_COLUMNS = {
    "first_t": "the first time point of the track",
    "last_t": "its last time point",
    "parent_track_id": "the track it began from at a division (0: none)",
}
"""Columns of the cell-tracks ``lineage`` table, the Cell Tracking Challenge's res_track.txt."""

TRACKS_NOTES = (
    "Linking: cells of consecutive time points pair one to one by intersection over union "
    "(params.min_iou); a cell left alone with a quarter of its area or more over a cell before, "
    "whose partner is its sibling, is a daughter (the mother's track ends, two begin); cells "
    "still alone pair by centroid distance up to params.max_distance_um; the rest begin tracks. "
    "No gap closing: a cell missed at one time point ends its track and begins another.",
)


def _cell_tracks_tables() -> tuple[Table, ...]:
    cells = _cells_table()
    return (
        Table("tracks", "one row per cell per time point, by time point then label",
              (("id", "t/label, e.g. 3/17"), *TRACK_COLUMNS.items(),
               ("label", "the cell's label at that time point as the segmentation gave it (its "
                         "nucleus shares it); track_labels holds track ids instead"),
               *cells.columns[2:]),
              (*TRACKS_NOTES, *cells.notes)),
        Table("lineage", "one row per track, by id",
              (("id", "the track id"), *LINEAGE_COLUMNS.items()), TRACKS_NOTES),
    )


@dataclass(frozen=True)
class Table:
    """One result table of a pipeline: what its rows are and what its columns mean."""

    name: str
    rows: str
    columns: tuple[tuple[str, str], ...]
    """(column or pattern, meaning) pairs, in the table's order."""
    notes: tuple[str, ...] = ()
    """How the values are computed, for every column at once."""


def fractal_column_names(sides: Sequence[int] = DEFAULT_BOX_SIDES, *, percolation: bool = True,
                         extras: bool = True) -> list[str]:
    """Every column of a fractal result with ``sides`` box sides, in the table's order."""
    count = len(sides)
    names = [f"{prefix}{i}" for prefix in (LACUNARITY, BOX_COUNT) for i in range(1, count + 1)]
    names += _descriptor_names("LAC", "Ratio")
    if extras:
        names += list(FIXED)
    if percolation:
        names += [f"{prefix}{i}" for prefix in (CLUSTER_COUNT, LARGEST_CLUSTER, PERCOLATING)
                  for i in range(1, count + 1)]
        for suffix in ("Cluster", "Perc", "MaxCluster"):
            names += _descriptor_names(suffix, "Ration")
    return names


def _descriptor_names(suffix: str, ratio_word: str) -> list[str]:
    """The four descriptor columns of a curve, in the table's order ("Ration": the Weka files'
    spelling of the percolation curves' area ratio, kept so they match)."""
    return [f"Mink{kind}{suffix}" for kind in ("Area", "Skewness", f"Area{ratio_word}", "Max")]


def describe_fractal_column(name: str, sides: Sequence[int] = DEFAULT_BOX_SIDES) -> str:
    """The plain meaning of fractal column ``name`` (``MinkDF7``: N(r) at r = 15 by default).

    Raises
    ------
    KeyError
        If ``name`` is no fractal column, or its number is beyond ``sides``.
    """
    if name in FIXED:
        return FIXED[name]
    numbered = re.fullmatch(r"(Mink(?:LAC|DF|p|g|h))(\d+)", name)
    if numbered:
        prefix, index = numbered.group(1), int(numbered.group(2))
        if not 1 <= index <= len(sides):
            raise KeyError(f"{name}: there are {len(sides)} box sides")
        return NUMBERED[prefix].format(r=sides[index - 1])
    described = re.fullmatch(r"Mink(Area|Skewness|AreaRation|AreaRatio|Max)(LAC|Cluster|Perc|MaxCluster)",
                             name)
    if described:
        kind = "AreaRatio" if described.group(1) == "AreaRation" else described.group(1)
        return DESCRIPTORS[kind].format(curve=CURVES[described.group(2)])
    raise KeyError(f"{name}: not a fractal column")


def _fractal_tables(sides: Sequence[int]) -> tuple[Table, ...]:
    columns = fractal_column_names(sides)
    described = tuple((name, describe_fractal_column(name, sides)) for name in columns)
    percolation = {name for name in fractal_column_names(sides)
                   if name not in fractal_column_names(sides, percolation=False)}
    weka_fractal = set(fractal_column_names(sides, percolation=False, extras=False))
    rows = "one row per image"
    return (
        Table("fractal", rows + "; percolation columns only with params.percolation=true",
              (("id", ID), *described), FRACTAL_NOTES),
        Table("weka_fractal", rows + "; exactly the columns and order of the Weka ARFF files of "
              "Image-Feature-Extraction-Tools' fractal features (for models trained on them)",
              (("id", ID), *((n, m) for n, m in described if n in weka_fractal)), FRACTAL_NOTES),
        Table("weka_percolation", rows + "; only with params.percolation=true; exactly the "
              "columns and order of that project's Weka percolation files",
              (("id", ID), *((n, m) for n, m in described if n in percolation)), FRACTAL_NOTES),
    )


def _deep_table(rows: str, row_id: str) -> Table:
    return Table("features", rows, (("id", row_id), ("L1 .. Ln", DEEP_FEATURE), ("class", CLASS)))


def pipeline_tables(pipeline: str, sides: Sequence[int] = DEFAULT_BOX_SIDES) -> tuple[Table, ...]:
    """The result tables of ``pipeline`` with every column explained (fractal for ``sides``).

    Raises
    ------
    KeyError
        For a pipeline without documented tables, naming those that have them.
    """
    if pipeline == "fractal":
        return _fractal_tables(sides)
    if pipeline == "deep-features":
        return (_deep_table("one row per image, or per image of a 'patches' stack", PATCH_ID),)
    if pipeline == "spot-features":
        table = _deep_table("one row per spot (tensor spot_centres) or per labelled cell "
                            "(cell_labels mask)", SPOT_ID)
        return (Table(table.name, table.rows, (*table.columns, ("x, y", COORDINATES))),)
    if pipeline == "cells":
        return (_cells_table(),)
    if pipeline == "hpa-cells":
        return _hpa_cells_tables()
    if pipeline == "cell-tracks":
        return _cell_tracks_tables()
    raise KeyError(f"no columns documented for pipeline {pipeline!r}; pipelines: "
                   f"{', '.join(PIPELINES_WITH_TABLES)}")


PIPELINES_WITH_TABLES = ("fractal", "deep-features", "spot-features", "cells", "hpa-cells",
                         "cell-tracks")
"""Pipelines whose tables ``pipeline_tables`` explains."""
