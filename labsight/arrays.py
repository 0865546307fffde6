"""numpy where the SDK needs arrays: the light client (``labsight-client``) installs it only
with its ``arrays`` extra, so its core (submitting files, batches, job states, results as
protobuf messages) imports and runs without it."""

from __future__ import annotations

import sys
from types import ModuleType

ARRAYS_EXTRA = "labsight-client[arrays]"
"""What installs numpy with the light client (its pandas, anndata and tiff extras do too)."""


def require_numpy(what: str) -> ModuleType:
    """numpy, for ``what`` (e.g. "Result.to_numpy"); ImportError naming the extra without it."""
    try:
        import numpy
    except ImportError as error:
        raise ImportError(f"{what} needs numpy, which the light client installs only with its "
                          f"arrays extra: pip install '{ARRAYS_EXTRA}'") from error
    return numpy


def is_array(value: object) -> bool:
    """Whether ``value`` is a numpy array, without importing numpy (before numpy is imported,
    nothing is one)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)
