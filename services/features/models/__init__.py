"""The features service's models: its architectures, its built-in manifests and its repository.

The model stack itself (manifests, engines, serving) is shared, in :mod:`labsight.models`.
"""

from services.features.models.builtin import DEFAULT_MODEL, FEATURES_TASK, SPOT_MODEL, builtin_manifests
from services.features.models.repository import feature_repository

__all__ = ["DEFAULT_MODEL", "FEATURES_TASK", "SPOT_MODEL", "builtin_manifests", "feature_repository"]
