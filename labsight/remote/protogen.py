"""Regenerates the TorchServe and TF Serving stubs in labsight/remote (python -m labsight.remote.protogen).

Their packages (``org.pytorch.serve.grpc.inference``, ``tensorflow``,
``tensorflow.serving``) are the servers', not ``labsight.v1``, so their protos
are kept apart from the LabSight API's (``labsight.protogen``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from labsight.protogen import PROTO_ROOT, command, run_protoc

PROTO_DIR = Path("labsight/remote")
"""The servers' protos, relative to the proto root."""


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Write the *_pb2.py, .pyi and _pb2_grpc.py of every proto under ``out_dir``/labsight/remote."""
    files = sorted(str(path.relative_to(proto_root)) for path in (proto_root / PROTO_DIR).glob("*.proto"))
    run_protoc(files, out_dir, proto_root)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: regenerate into the repository (default) or --out."""
    return command(generate, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
