"""Generated protobuf and gRPC stubs of the labsight.v1 API (do not edit; see labsight.protogen)."""
