"""The Open Inference Protocol (KServe v2 gRPC, Triton's ``inference.GRPCInferenceService``) on every
model service: its stubs (generated, see :mod:`labsight.oip.protogen`), tensor contents, model
signatures and servicer (:func:`labsight.oip.servicer.add_open_inference`)."""
