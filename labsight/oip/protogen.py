"""Regenerates the Open Inference Protocol stubs in labsight/oip (run: python -m labsight.oip.protogen).

The protocol's package is ``inference``, not ``labsight.v1``, so its proto is
kept apart from the LabSight API's (``labsight.protogen``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from labsight.protogen import PROTO_ROOT, command, run_protoc

PROTO = Path("labsight/oip/grpc_predict_v2.proto")
"""The protocol's proto, relative to the proto root."""


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Write grpc_predict_v2_pb2.py, .pyi and _pb2_grpc.py under ``out_dir``/labsight/oip."""
    run_protoc([str(PROTO)], out_dir, proto_root)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: regenerate into the repository (default) or --out."""
    return command(generate, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
