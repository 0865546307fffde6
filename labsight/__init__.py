"""LabSight: gRPC microservices for microscopy and lab image analysis (shared library)."""

__version__ = "0.1.0"
