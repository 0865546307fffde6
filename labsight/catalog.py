"""The one table of LabSight's processes: names, modules, gRPC services and ports.

Compose files, Kubernetes manifests, ``labsight up`` and the tests all read
ports and service names from here, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSpec:
    """One kind of LabSight process."""

    name: str
    """Short name used on the command line (``labsight serve <name>``)."""
    module: str
    """Python module that builds it (``python -m <module>`` starts it)."""
    grpc_services: tuple[str, ...]
    """Fully qualified gRPC services it serves (empty for workers)."""
    grpc_port: int | None
    """Default gRPC port (None: serves no gRPC)."""
    metrics_port: int
    """Default Prometheus /metrics HTTP port."""
    grpc_threads: int = 16
    """Default size of the gRPC handler thread pool (each open Watch stream holds one)."""


GATEWAY = ProcessSpec(
    "gateway", "services.gateway", ("labsight.v1.GatewayService",), 50051, 9451, grpc_threads=128
)
SEGMENTATION = ProcessSpec(
    "segmentation", "services.segmentation", ("labsight.v1.SegmentationService",), 50052, 9452
)
FEATURES = ProcessSpec(
    "features", "services.features", ("labsight.v1.FeatureService",), 50053, 9453
)
CLASSIFIER = ProcessSpec(
    "classifier", "services.classifier", ("labsight.v1.ClassifierService",), 50054, 9454
)
WORKER = ProcessSpec("worker", "services.gateway.worker", (), None, 9455)

UP_METRICS_PORT = 9450
"""Prometheus /metrics of ``labsight up`` itself (its children's restarts and health)."""

MODEL_SERVICES: tuple[ProcessSpec, ...] = (SEGMENTATION, FEATURES, CLASSIFIER)
"""Stateless model services the workers call."""

SERVERS: dict[str, ProcessSpec] = {
    spec.name: spec for spec in (GATEWAY, SEGMENTATION, FEATURES, CLASSIFIER)
}
"""Every process that serves gRPC, by name."""

ALL_PROCESSES: dict[str, ProcessSpec] = {**SERVERS, WORKER.name: WORKER}
"""Every process kind, by name."""
