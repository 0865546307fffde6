"""The layers one model can serve, listed once per model so that a request's layer is checked by lookup."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass

from labsight.errors import InvalidArgument
from labsight.models.manifest import ModelManifest

_ECHO = reprlib.Repr()
_ECHO.maxstring = 80  # a layer name echoed in an error is cut, so a huge name cannot make a huge answer


@dataclass(frozen=True)
class LayerIndex:
    """Every layer name an engine of one model accepts, and what the engine is cut at for each.

    Parameters
    ----------
    manifest : ModelManifest
        The model; its public layer names map to module paths.
    targets : mapping of str to str
        Accepted module path or value name → the engine's cut point (an ONNX
        value name, or a torch module path).
    modules : tuple of str
        The model's module paths, named in the error for an unknown layer.
    """

    manifest: ModelManifest
    targets: Mapping[str, str]
    modules: tuple[str, ...]

    def target(self, layer: str) -> str:
        """The engine's cut point for a public layer name, module path or value name.

        Raises
        ------
        InvalidArgument
            Naming the layer, the model's public layers and the closest valid names.
        """
        target = self.targets.get(self.manifest.module_path(layer))
        if target is None:
            raise InvalidArgument(self._unknown(layer))
        return target

    def paths(self) -> list[str]:
        """Every accepted name besides the public layer names (module paths, value names), sorted."""
        return sorted(name for name in self.targets if name and name not in self.manifest.layers)

    def _unknown(self, layer: str) -> str:
        message = (
            f"layer: {_ECHO.repr(layer)} is not a layer of model {self.manifest.name!r}; "
            f"layers: {sorted(self.manifest.layers)}"
        )
        if self.modules:
            example = self.modules[len(self.modules) // 2]
            message += f" or one of its {len(self.modules)} module paths such as {example!r}"
        close = difflib.get_close_matches(layer[:200], [*self.manifest.layers, *self.modules], n=3)
        if close:
            message += f"; did you mean {', '.join(map(repr, close))}?"
        return message
