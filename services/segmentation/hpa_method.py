"""The HPA networks as the ``hpa`` method of :mod:`services.segmentation.cells`.

The method runs only where an operator has put both HPA-Cell-Segmentation
networks into the segmentation model repository under their converter
names (``labsight convert-hpa-weights`` writes ``hpa-nuclei`` and
``hpa-cell``; a TorchScript export under those names serves too). Without
them it fails with FAILED_PRECONDITION saying how to supply them: their
weights are not redistributable here, so no built-in stands in.
"""

from __future__ import annotations

import numpy as np

from labsight.errors import FailedPrecondition, NotFound
from labsight.models import ModelServer
from services.segmentation.hpa import ServedNetwork, segment_cells_hpa, segment_nuclei_hpa
from services.segmentation.models import hpa_unet
from services.segmentation.models.flow_models import default_server

__all__ = ["hpa_available", "hpa_cells", "hpa_networks", "hpa_nuclei"]

NUCLEI_MODEL = hpa_unet.MODEL_NAMES["nuclei"]
"""Repository name of the HPA nuclei network (input [blue, blue, blue])."""

CELL_MODEL = hpa_unet.MODEL_NAMES["cell"]
"""Repository name of the HPA cell network (input [red, yellow, blue])."""


def hpa_networks(server: ModelServer | None = None) -> tuple[ServedNetwork, ServedNetwork]:
    """The nuclei and cell networks of ``server`` (the segmentation service's by default).

    Raises
    ------
    FailedPrecondition
        If the repository lacks either network; the message names the missing ones and the
        converter command.
    """
    server = server or default_server()
    hpa_unet.register()  # the architectures of converted weights
    missing = []
    for name in (NUCLEI_MODEL, CELL_MODEL):
        try:
            server.repository.get(name)
        except NotFound:
            missing.append(name)
    if missing:
        raise FailedPrecondition(
            f"method: 'hpa' needs the HPA-Cell-Segmentation networks {', '.join(missing)} in the "
            "segmentation model repository (LABSIGHT_MODEL_DIR); convert the released weight files "
            "with `labsight convert-hpa-weights dpn_unet_nuclei_v1.pth $LABSIGHT_MODEL_DIR/hpa-nuclei` "
            "(and dpn_unet_cell_3ch_v1.pth to hpa-cell), or use method 'flows' or 'classical'"
        )
    return ServedNetwork(server, NUCLEI_MODEL), ServedNetwork(server, CELL_MODEL)


def hpa_available(server: ModelServer | None = None) -> bool:
    """Whether both HPA networks are in the repository of ``server`` (the service's by default)."""
    try:
        hpa_networks(server)
    except FailedPrecondition:
        return False
    return True


def hpa_nuclei(nuclei: np.ndarray, *, pixel_size_um: float) -> np.ndarray:
    """Nucleus labels of a checked float32 nuclear stain by the HPA nuclei network."""
    nuclei_network, _ = hpa_networks()
    return segment_nuclei_hpa(nuclei, pixel_size_um=pixel_size_um, engine=nuclei_network)


def hpa_cells(microtubules: np.ndarray, er: np.ndarray, nuclei: np.ndarray, *,
              pixel_size_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell labels of checked float32 channels by the two HPA networks."""
    nuclei_network, cell_network = hpa_networks()
    return segment_cells_hpa(microtubules, er, nuclei, pixel_size_um=pixel_size_um,
                             nuclei_engine=nuclei_network, cell_engine=cell_network)
