"""Regenerates the Python stubs in labsight/v1 from protos/ (run: python -m labsight.protogen)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """All .proto files of the API, sorted so generation order is stable."""
    return sorted(proto_root.glob("labsight/v1/*.proto"))


def run_protoc(files: list[str], out_dir: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Run protoc on ``files`` (relative to ``proto_root``), writing *_pb2.py, .pyi, _pb2_grpc.py.

    Requires grpcio-tools (the ``test`` extra); its pinned version makes the
    output reproducible. The well-known types come from grpc_tools' bundled protos.

    Raises
    ------
    RuntimeError
        If protoc fails.
    """
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out_dir}",
        f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {files}")


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto under out_dir."""
    run_protoc([str(p.relative_to(proto_root)) for p in proto_files(proto_root)], out_dir, proto_root)


def command(generate_into: Callable[[Path], None], description: str | None,
            argv: list[str] | None = None) -> int:
    """Command-line entry of a stub generator: regenerate into the repository (default) or --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=REPO_ROOT)
    generate_into(parser.parse_args(argv).out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: regenerate into the repository (default) or --out."""
    return command(generate, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
