"""Tensor transport benchmark: a 32 MiB tensor through ExtractPatches against a raw gRPC bytes sink.

Run from the repository root:

    python bench/tensor_transport.py [--side 4096] [--calls 3] [--rounds 7]

The segmentation service and a raw bytes sink (``bench/bytes_sink.py``: generic
unary handlers, no protobuf, the same message limits and handler threads) each
run in their own process on loopback; this process is the only client and
keeps one call in flight. The image is ``side`` x ``side`` uint16 (4096: 32 MiB).

Five paired comparisons, each timed until the answer is in the client:

``array in``
    From a numpy array: ExtractPatches with the image as a Tensor and one
    64 x 64 spot patch back. The client writes the request the way LabSight's
    own clients send big tensors (``labsight.tensor_wire.serialize_with_arrays``:
    the array's bytes copied once, into the request); the service parses the
    request, decodes the tensor, reads it as an image (checks, intensity, the
    low-range scan: two passes over the pixels) and cuts the patch. Baseline:
    the array's bytes (``tobytes()``) to ``Put``, which answers two bytes.
``message in``
    The same, with the request built as a plain protobuf message
    (``write_tensor`` into the request, then the stub serializes it): what a
    client that knows nothing of ``tensor_wire`` pays. Same baseline.
``wire in``
    The request serialized once beforehand, sent as bytes to the service's
    ExtractPatches method and to ``Put``: the service's side alone (parse,
    decode, read, cut) against receiving the bytes.
``file in``
    The image as an uncompressed TIFF file (an ``EncodedImage``, as a lab
    system sends what its microscope wrote), the request serialized once
    beforehand: the service parses it, opens the file for its header and again
    to decode it (one copy of the pixels for an uncompressed TIFF), reads it as
    an image and cuts the patch. Baseline: the same request bytes to ``Put``.
    Since 2026-12-07 the model services leave a big file's bytes on the wire
    and read them there as a file (before: copied out once per opening, then
    once per call).
``array in+out``
    ExtractPatches with one spot the size of the image: the whole image comes
    back as the patches tensor and the client decodes it (``from_tensor`` on the
    answer parsed by ``labsight.tensor_wire.DetachingParser``, a view of the
    received bytes); the service's extra work is one crop (a 32 MiB copy) and
    the answer's serialization. Baseline: the array's bytes to ``Echo``, which
    answers them, read with ``np.frombuffer``.

Each of ``--rounds`` rounds times ``--calls`` calls of every case, the order
rotating from round to round (``bench/_paired.py``); printed: each round's
MiB/s with the range of the 1-minute load average over it, then min/median/max
of the round-by-round ratios (service over baseline), and the CPU ratio: the
CPU seconds per call of this client and the serving process, baseline's over
the service's (less sensitive to a busy machine than rates). glibc's MALLOC_* and
GLIBC_TUNABLES variables, when set, reach every process alike and are printed.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import psutil
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._paired import load_text, paired_rounds, process_cpu_s, round_ratios, spread  # noqa: E402
from bench.bytes_sink import ECHO, PUT  # noqa: E402
from bench.service_process import start_service  # noqa: E402
from labsight.catalog import SEGMENTATION  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.runtime.cpus import usable_cpus  # noqa: E402
from labsight.tensor_wire import DetachingParser, serialize_with_arrays  # noqa: E402
from labsight.tensors import from_tensor, write_tensor  # noqa: E402
from labsight.v1 import segmentation_pb2 as pb  # noqa: E402
from labsight.v1 import segmentation_pb2_grpc as pb_grpc  # noqa: E402

SMALL_PATCH = 64
"""Side of the one patch the ``array in`` and ``wire in`` cases ask for."""

Call = Callable[[np.ndarray], object]


def patches_request(image: np.ndarray, diameter: int) -> pb.ExtractPatchesRequest:
    """ExtractPatches of one spot of side ``diameter`` at the image's centre, the image as a Tensor
    written into the request in place (no nested message copied)."""
    request = spot_request(image, diameter)
    write_tensor(request.image.tensor, image)
    return request


def spot_request(image: np.ndarray, diameter: int) -> pb.ExtractPatchesRequest:
    """ExtractPatches of one spot of side ``diameter`` at the image's centre, without the image."""
    height, width = image.shape[:2]
    request = pb.ExtractPatchesRequest(spot_diameter=diameter)
    write_tensor(request.spot_centres, np.array([[width / 2, height / 2]]))
    return request


def file_request(image: np.ndarray, diameter: int) -> bytes:
    """:func:`spot_request` with the image as an uncompressed TIFF file, serialized."""
    file = io.BytesIO()
    tifffile.imwrite(file, image)
    request = spot_request(image, diameter)
    request.image.encoded.data = file.getvalue()
    return request.SerializeToString()


def array_request(image: np.ndarray, diameter: int) -> bytes:
    """:func:`spot_request` with the image, serialized by ``serialize_with_arrays``."""
    return serialize_with_arrays(spot_request(image, diameter), {"image.tensor": image})


def cases(
    service: grpc.Channel, sink: grpc.Channel, image: np.ndarray
) -> dict[str, tuple[Call, Call]]:
    """Each comparison's two timed calls (service, baseline), from the image to the answer."""
    stub = pb_grpc.SegmentationServiceStub(service)
    put = sink.unary_unary(PUT)
    echo = sink.unary_unary(ECHO)
    patches_bytes = service.unary_unary(
        "/labsight.v1.SegmentationService/ExtractPatches",
        response_deserializer=DetachingParser(pb.ExtractPatchesResponse).parse,
    )
    wire = patches_request(image, SMALL_PATCH).SerializeToString()
    file_wire = file_request(image, SMALL_PATCH)
    side = image.shape[0]

    def service_in(pixels: np.ndarray) -> object:
        return list(patches_bytes(array_request(pixels, SMALL_PATCH)).message.patches.shape)

    def service_message_in(pixels: np.ndarray) -> object:
        return list(stub.ExtractPatches(patches_request(pixels, SMALL_PATCH)).patches.shape)

    def service_wire(pixels: np.ndarray) -> object:
        return list(patches_bytes(wire).message.patches.shape)

    def service_file(pixels: np.ndarray) -> object:
        return list(patches_bytes(file_wire).message.patches.shape)

    def service_in_out(pixels: np.ndarray) -> object:
        answer = patches_bytes(array_request(pixels, side))
        return from_tensor(answer.message.patches, "patches")

    def sink_echo(pixels: np.ndarray) -> object:
        return np.frombuffer(echo(pixels.tobytes()), pixels.dtype).reshape(pixels.shape)

    return {
        "array in": (service_in, lambda pixels: put(pixels.tobytes())),
        "message in": (service_message_in, lambda pixels: put(pixels.tobytes())),
        "wire in": (service_wire, lambda pixels: put(wire)),
        "file in": (service_file, lambda pixels: put(file_wire)),
        "array in+out": (service_in_out, sink_echo),
    }


def check_answers(pairs: dict[str, tuple[Call, Call]], image: np.ndarray) -> None:
    """Every call does its work: the whole-image patch and the echo are the image itself."""
    whole = np.asarray(pairs["array in+out"][0](image))
    assert np.array_equal(whole[0, ..., 0], image)
    assert np.array_equal(np.asarray(pairs["array in+out"][1](image)), image)
    for name in ("array in", "message in", "wire in", "file in"):
        assert pairs[name][0](image) == [1, SMALL_PATCH, SMALL_PATCH, 1]
        assert pairs[name][1](image) == b"ok"


def rate(call: Call, image: np.ndarray, count: int) -> float:
    """MiB of the image moved per second over ``count`` calls."""
    start = time.perf_counter()
    for _ in range(count):
        call(image)
    return count * image.nbytes / 2**20 / (time.perf_counter() - start)


def main() -> None:
    """Start the service and the sink, time the paired rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096, help="image side (uint16 pixels)")
    parser.add_argument("--calls", type=int, default=3, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 65536, (args.side, args.side), dtype=np.uint16)
    env = {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING"}
    options = Settings().grpc_options()
    processes = []
    try:
        service_process, service_address = start_service("services.segmentation", env)
        processes.append(service_process)
        sink_process, sink_address = start_service("bench.bytes_sink", env)
        processes.append(sink_process)
        pairs = cases(grpc.insecure_channel(service_address, options),
                      grpc.insecure_channel(sink_address, options), image)
        check_answers(pairs, image)
        malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                          if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")
        threads = Settings.from_env(SEGMENTATION).max_workers
        print(f"{image.nbytes / 2**20:.0f} MiB uint16 image, {args.calls} calls per case and round, "
              f"one in flight, loopback; {usable_cpus()} CPUs, {threads} handler threads in each "
              f"server; glibc malloc {malloc or 'defaults'}; at start {load_text()}")
        loads: list[float] = []
        cpu_per_call: dict[str, list[float]] = {}
        servers = {"service": psutil.Process(service_process.pid),
                   "baseline": psutil.Process(sink_process.pid)}

        def side(name: str, who: str, call: Call) -> Callable[[], float]:
            def run() -> float:
                before = time.process_time() + process_cpu_s(servers[who])
                figure = rate(call, image, args.calls)
                spent = time.process_time() + process_cpu_s(servers[who]) - before
                cpu_per_call.setdefault(f"{name}: {who}", []).append(spent / args.calls)
                loads.append(os.getloadavg()[0])
                return figure
            return run

        sides = {f"{name}: {who}": side(name, who, call) for name, pair in pairs.items()
                 for who, call in zip(("service", "baseline"), pair, strict=True)}
        rates = paired_rounds(sides, args.rounds)
        for index in range(args.rounds):
            figures = ", ".join(f"{name} {rates[name][index]:.0f}" for name in sides)
            round_loads = loads[index * len(sides):(index + 1) * len(sides)]
            print(f"round {index + 1} MiB/s: {figures}; load {min(round_loads):.2f}-{max(round_loads):.2f}")
        for name in pairs:
            ours, theirs = rates[f"{name}: service"], rates[f"{name}: baseline"]
            our_cpu, their_cpu = cpu_per_call[f"{name}: service"], cpu_per_call[f"{name}: baseline"]
            print(f"{name}: ExtractPatches / bytes {'echo' if 'out' in name else 'sink'} ratio "
                  f"min / median / max {spread(round_ratios(ours, theirs), '.2f')} (MiB/s median "
                  f"{statistics.median(ours):.0f} vs {statistics.median(theirs):.0f}); CPU ratio "
                  f"(baseline's CPU s per call over the service's, client + server process) "
                  f"{spread(round_ratios(their_cpu, our_cpu), '.2f')} (ms per call median "
                  f"{statistics.median(our_cpu) * 1000:.0f} vs {statistics.median(their_cpu) * 1000:.0f})")
        print(f"at end {load_text()}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
