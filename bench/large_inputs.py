"""Large-input benchmark: spot-features on a whole-slide tiled TIFF within one worker's memory.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL; a
private redis-server is started when none answers):

    python bench/large_inputs.py [--side 20000] [--spots 5000] [--diameter 90]
                                 [--model efficientnet-lite0] [--uncompressed]

Writes a ``--side``² RGB tiled TIFF (512² tiles, zlib; a smooth synthetic
tissue written tile by tile, so this process never holds the slide; with
``--uncompressed`` one uncompressed block, as tifffile writes by default), then
runs a ``spot-features`` job on ``--spots`` spots through the gateway (in
this process), the blob store (a temporary directory), a worker and the
features and segmentation services (their own processes). Printed: the
file's size, the submit and job times, the worker process's peak resident
memory (VmHWM), whose target is under 2 GB, and what a ``fractal`` job on the
same file gets. Then a ``fractal`` job (default box sides 3-41) on a
``--fractal-side``² RGB tiled TIFF (default 8000²: 192 MB of pixels, more
than a message may carry): the features service reads it from the blob store
by its reference; printed: job time and the features service's peak memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import redis
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service_process import start_service  # noqa: E402
from labsight.catalog import GATEWAY  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.redis_server import free_port, start_redis, stop_redis  # noqa: E402
from labsight.runtime.server import start_server  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from labsight.v1 import tensor_pb2  # noqa: E402
from services.gateway.servicer import register as register_gateway  # noqa: E402

TILE = 512


def tissue_tiles(side: int) -> Iterator[np.ndarray]:
    """The tiles of a smooth synthetic RGB tissue, row by row (what tifffile writes from)."""
    for top in range(0, side, TILE):
        for left in range(0, side, TILE):
            y, x = np.mgrid[top : top + TILE, left : left + TILE].astype(np.float32)
            wave = np.sin(x / 97.0) * np.cos(y / 131.0) + 0.5 * np.sin((x + y) / 53.0)
            tile = np.empty((TILE, TILE, 3), np.uint8)
            for channel, (base, gain) in enumerate(((200, 40), (140, 60), (190, 30))):
                tile[:, :, channel] = np.clip(base + gain * wave, 0, 255)
            yield tile


def write_slide(path: Path, side: int, uncompressed: bool) -> None:
    """A ``side``² RGB TIFF at ``path``: tiled and zlib-compressed, or one uncompressed block."""
    if not uncompressed:
        tifffile.imwrite(path, tissue_tiles(side), shape=(side, side, 3), dtype=np.uint8,
                         tile=(TILE, TILE), compression="zlib", photometric="rgb")
        return
    pixels = np.memmap(path.with_suffix(".raw"), np.uint8, "w+", shape=(side, side, 3))
    tiles = tissue_tiles(side)
    for top in range(0, side, TILE):
        for left in range(0, side, TILE):
            tile = next(tiles)
            pixels[top : top + TILE, left : left + TILE] = tile[: side - top, : side - left]
    tifffile.imwrite(path, pixels, photometric="rgb")
    del pixels
    path.with_suffix(".raw").unlink()


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def run_fractal(lab: LabSightClient, path: Path, side: int, features_pid: int) -> str:
    """A default fractal job on a ``side``² RGB tiled TIFF through the stack; a line saying how
    long it took and the features service's peak memory."""
    write_slide(path, side, uncompressed=False)
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=path.read_bytes()),
                             name=path.name)
    path.unlink()
    started = time.perf_counter()
    job = lab.submit_request(build_request("fractal", image, {}))
    del image
    final = lab.wait(job.job_id, timeout_s=3600)
    elapsed = time.perf_counter() - started
    if final.status != pb.JOB_STATUS_DONE:
        return f"fractal on {side}x{side} RGB: ended {pb.JobStatus.Name(final.status)}: {final.error}"
    dimension = lab.result(job.job_id).scalars["fractal_dimension"]
    return (f"fractal on {side}x{side} RGB (box sides 3-41): done after {elapsed:.1f} s, "
            f"D = {dimension:.3f}; features service peak RSS (VmHWM) "
            f"{peak_rss_bytes(features_pid) / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--side", type=int, default=20_000)
    parser.add_argument("--spots", type=int, default=5_000)
    parser.add_argument("--diameter", type=float, default=90.0)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--uncompressed", action="store_true")
    parser.add_argument("--fractal-side", type=int, default=8_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labsight-bench-large-"))
    slide = work / "slide.tif"
    started = time.perf_counter()
    write_slide(slide, args.side, args.uncompressed)
    print(f"slide: {args.side}x{args.side} RGB, {slide.stat().st_size / 2**20:.1f} MiB on disk "
          f"(written in {time.perf_counter() - started:.1f} s)")
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, args.side - 1, (args.spots, 2))

    local = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    private: tuple[subprocess.Popen[bytes], str] | None = None
    try:
        local.ping()
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    except redis.ConnectionError:
        private = start_redis(work / "redis")
        redis_url = private[1]
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    os.environ["LABSIGHT_BLOB_URL"] = f"file://{work / 'blobs'}"
    env = {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING", "REDIS_URL": redis_url,
           "LABSIGHT_KEY_PREFIX": prefix}
    processes: list[subprocess.Popen[bytes]] = []
    gateway = None
    try:
        features, features_address = start_service("services.features", env)
        processes.append(features)
        segmentation, segmentation_address = start_service("services.segmentation", env)
        processes.append(segmentation)
        addresses = {"features": features_address, "segmentation": segmentation_address,
                     "classifier": "127.0.0.1:1"}
        settings = Settings(redis_url=redis_url, key_prefix=prefix, allow_anonymous=True,
                            service_addresses=addresses)
        gateway = start_server(register_gateway, GATEWAY.grpc_services, settings)
        worker = subprocess.Popen(
            [sys.executable, "-m", "services.gateway.worker"],
            env={**env, "LABSIGHT_FEATURES_ADDR": features_address,
                 "LABSIGHT_SEGMENTATION_ADDR": segmentation_address,
                 "LABSIGHT_METRICS_PORT": str(free_port())},
        )
        processes.append(worker)
        image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=slide.read_bytes()),
                                 name=slide.name)
        request = build_request(
            "spot-features", image,
            {"model": args.model, "spot_diameter": args.diameter},
            tensors={"spot_centres": centres},
        )
        with LabSightClient(gateway.address, token="", timeout_s=3600) as lab:
            started = time.perf_counter()
            job = lab.submit_request(request)
            submitted = time.perf_counter() - started
            del request
            final = lab.wait(job.job_id, timeout_s=3600)
            elapsed = time.perf_counter() - started
            if final.status != pb.JOB_STATUS_DONE:
                raise SystemExit(f"job ended {pb.JobStatus.Name(final.status)}: {final.error}")
            result = lab.result(job.job_id)
            rows = len(result.tables["features"].row_ids)
            read = result.provenance.get("image_read", "whole, by the segmentation service")
            image.name = "fractal"
            try:
                fractal = lab.submit_request(build_request("fractal", image, {}))
                fractal_answer = f"queued as {fractal.job_id} (cancelled)"
                lab.cancel(fractal.job_id)
            except grpc.RpcError as error:
                fractal_answer = f"refused at submit: {error.code().name}: {error.details()}"
            del image
            peak = peak_rss_bytes(worker.pid)
            fractal_line = run_fractal(lab, work / "fractal.tif", args.fractal_side, features.pid)
        print(f"spot-features: {rows} spots of {args.diameter:g} px, model {args.model}: "
              f"submit {submitted:.1f} s, job done after {elapsed:.1f} s; image read {read}")
        print(f"worker peak RSS (VmHWM): {peak / 2**30:.2f} GiB (target < 2 GB: "
              f"{'met' if peak < 2e9 else 'MISSED'})")
        print(f"fractal on the same file: {fractal_answer}")
        print(fractal_line)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        if gateway is not None:
            gateway.stop(0)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
        if private is not None:
            stop_redis(*private)
        slide.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
