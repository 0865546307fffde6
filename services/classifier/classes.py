"""The 19 subcellular localisation classes of the HPA single-cell challenge, in HPA order 0..18."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)
"""Class names; a class index is its position here."""

NUM_CLASSES = len(CLASS_NAMES)

NEGATIVE = CLASS_NAMES.index("Negative")
"""The class of a cell with no specific staining; never combined with another class."""
