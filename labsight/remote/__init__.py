"""External model servers behind LabSight's model engines: TorchServe (gRPC inference API) and
TensorFlow Serving (PredictionService). A manifest of format ``torchserve`` or ``tfserving``
names the endpoint (see :mod:`labsight.remote.spec`); :mod:`labsight.remote.engine` sends each
batch there. The stubs are generated from minimal, wire-compatible subsets of the servers'
published protos (see :mod:`labsight.remote.protogen`)."""
