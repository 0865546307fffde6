"""The flow networks on the shared model stack: architectures, built-in manifests, a predictor.

Importing this module registers the architectures ``cellpose-flow`` and ``scellseg-flow``
(:class:`~services.segmentation.models.flow_net.FlowNet`) with :mod:`labsight.models`; the
built-in manifests point at the weight files of the ``scellseg`` package (installed with
``pip install --no-deps``, never imported). See ``MODEL_CARD.md`` beside this file.
"""

from __future__ import annotations

import threading

import numpy as np

from labsight.models import (
    ArchitectureBuilder,
    ModelManifest,
    ModelRepository,
    ModelServer,
    Preprocessing,
    ServingConfig,
    package_file,
    register_architecture,
)
from services.segmentation.models.flow_net import FlowNet

SEGMENTATION_TASK = "segmentation"
"""The task of the segmentation service's models in the shared repository format."""

FLOW_OUTPUT = "flows"
"""The single output of a flow model: (N, 3, H, W) dY, dX (×5 unit flows), cell-probability logit."""

NUCLEI_MODEL = "scellseg-flow"
"""Built-in flow model for nuclei (the better of the two on mnfinder's real DAPI training images)."""

CELLS_MODEL = "cellpose-flow"
"""Built-in flow model for whole cells from [cytoplasm, nucleus]."""

SEGMENTATION_RUN_ROWS = 1
"""Rows per ONNX Runtime run and intra-op thread of the segmentation service's models
[LABSIGHT_ORT_RUN_ROWS]: a batch of tiles the batcher gathered runs one tile at a time.
ONNX Runtime's arena keeps what its largest runs needed, and a flow network's activations
are about 80 MiB per 224² tile: measured (cellpose-flow, one batch of 32 tiles, 2 single-
threaded sessions), run whole it grew the process by 2.6 GiB and took 302 CPU ms per tile;
one tile per run, +19 MiB and 295 ms. Four concurrent SegmentCells calls had grown the
service by 4.7 GiB."""

TILE_SIZE = (224, 224)
"""Tile the flow models are exported and batched at (any size runs, as ``dynamic_size`` models)."""

_LICENCE = ("BSD-3-Clause (scellseg: Copyright (c) 2021 Zhejiang University, authors Dejin Xun and "
            "Deheng Chen; network and weights derived from Cellpose, BSD-3-Clause, Copyright (c) 2020 "
            "Howard Hughes Medical Institute)")

_ARCHITECTURES = {"cellpose-flow": "cellpose", "scellseg-flow": "scellseg"}
_WEIGHT_FILES = {"cellpose-flow": "assets/pretrained_models/cellpose",
                 "scellseg-flow": "assets/pretrained_models/scellseg"}
_SOURCES = {
    "cellpose-flow": "Cellpose-style network (Stringer et al. 2021) as shipped by the PyPI package "
                     "scellseg==0.1.8 (assets/pretrained_models/cellpose), trained on the Cellpose data set",
    "scellseg-flow": "Scellseg network (Xun et al. 2022; Cellpose with attention gates, dense fusion and "
                     "hierarchical styles) from the PyPI package scellseg==0.1.8 "
                     "(assets/pretrained_models/scellseg), pre-trained on the Cellpose data set",
}


def _builder(variant: str) -> ArchitectureBuilder:
    def build(_manifest: ModelManifest) -> FlowNet:
        return FlowNet(variant)

    return build


_BUILDERS = {name: _builder(variant) for name, variant in _ARCHITECTURES.items()}


def register() -> None:
    """Register the flow architectures with the shared model stack (idempotent)."""
    for name, builder in _BUILDERS.items():
        register_architecture(name, builder)


register()


def builtin_flow_manifests() -> list[ModelManifest]:
    """Manifests of the flow models whose weight files are installed (the ``scellseg`` package)."""
    manifests = []
    for name, relative in _WEIGHT_FILES.items():
        weights = package_file("scellseg", relative)
        if weights is None:
            continue
        manifests.append(ModelManifest(
            name=name,
            version="scellseg-0.1.8",
            format="state_dict",
            weights=weights,
            architecture=name,
            task=SEGMENTATION_TASK,
            input_channels=2,
            input_size=TILE_SIZE,
            dynamic_size=True,
            outputs=(FLOW_OUTPUT,),
            preprocessing=Preprocessing.identity(2),
            licence=_LICENCE,
            source=_SOURCES[name],
            origin="built-in",
        ))
    return manifests


class FlowPredictor:
    """A flow model of a :class:`ModelServer` as the ``predict`` of :mod:`services.segmentation.flows`.

    Parameters
    ----------
    server : ModelServer
        Serves the segmentation repository (ONNX Runtime on the CPU unless LABSIGHT_DEVICE
        picks CUDA).
    model : str
        Name of a flow model in it.
    """

    def __init__(self, server: ModelServer, model: str) -> None:
        self.server = server
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 2, H, W) normalised images → (N, 3, H, W) flows and logits."""
        return self.server.run(self.model, batch)[FLOW_OUTPUT]


_default_lock = threading.Lock()
_default_server: ModelServer | None = None


def serving_config() -> ServingConfig:
    """How the segmentation service runs its models: the LABSIGHT_* environment, preloads from
    LABSIGHT_SEGMENTATION_PRELOAD, runs of ``SEGMENTATION_RUN_ROWS`` unless LABSIGHT_ORT_RUN_ROWS says."""
    return ServingConfig.from_env(preload_env="LABSIGHT_SEGMENTATION_PRELOAD",
                                  default_run_rows=SEGMENTATION_RUN_ROWS)


def default_server() -> ModelServer:
    """The process's server of the built-in flow models (and any operator ones), made on first use.

    Its configuration comes from the LABSIGHT_* environment (device, threads, model cache).
    """
    global _default_server
    with _default_lock:
        if _default_server is None:
            config = serving_config()
            repository = ModelRepository(config.model_dirs, task=SEGMENTATION_TASK,
                                         builtins=builtin_flow_manifests)
            _default_server = ModelServer(repository, config)
        return _default_server


def default_predictor(model: str) -> FlowPredictor:
    """The flow model ``model`` of :func:`default_server`."""
    return FlowPredictor(default_server(), model)
