"""The fuzzer's own parts: hostile images say what they claim, and a seed replays its cases."""

from __future__ import annotations

import io

import grpc
import numpy as np
import tifffile
from PIL import Image

from labsight.v1 import gateway_pb2
from tests.reliability.fuzzing import media
from tests.reliability.fuzzing.cases import RPCS, CaseStream, bound_cost
from tests.reliability.fuzzing.mutate import Pools
from tests.reliability.fuzzing.values import World


def test_patched_headers_declare_huge_images_in_a_few_hundred_bytes() -> None:
    png = media.png_declaring(13000, 13000)
    jpeg = media.jpeg_declaring(12000, 12000)
    tiff = media.tiff_declaring(200000, 1000, 3, planar=2)
    assert Image.open(io.BytesIO(png)).size == (13000, 13000)
    assert Image.open(io.BytesIO(jpeg)).size == (12000, 12000)
    with tifffile.TiffFile(io.BytesIO(tiff)) as tif:
        assert tif.pages[0].shape == (3, 1000, 200000)
    assert max(len(png), len(jpeg), len(tiff)) < 1024


def _stream(seed: int) -> CaseStream:
    world = World(tenants=("a", "b"), job_ids={"a": ["ja"], "b": ["jb"]},
                  batch_ids={"a": ["plate", "plate-a"], "b": ["plate", "plate-b"]},
                  models={"efficientnet-lite0": ["avgpool"]})
    return CaseStream(np.random.default_rng(seed), Pools.build(world, np.random.default_rng(seed)),
                      world.tenants)


def test_a_seed_draws_the_same_cases_and_covers_every_rpc() -> None:
    first, again = _stream(7), _stream(7)
    cases = [first.next_case() for _ in range(600)]
    replayed = [again.next_case() for _ in range(600)]
    assert [(c.rpc.path, c.input_class, c.detail, c.wire()) for c in cases] == [
        (c.rpc.path, c.input_class, c.detail, c.wire()) for c in replayed]
    assert {c.rpc.path for c in cases} == {rpc.path for rpc in RPCS}


def test_other_tenants_ids_must_be_not_found_and_bad_tokens_unauthenticated() -> None:
    stream = _stream(3)
    cases = [stream.next_case() for _ in range(400)]
    foreign = [c for c in cases if c.input_class == "other-tenant"]
    tokens = [c for c in cases if c.input_class.startswith("token:")]
    other = {"a": ("'jb'", "'plate-b'"), "b": ("'ja'", "'plate-a'")}
    assert foreign and all(any(i in c.detail for i in other[c.tenant]) for c in foreign)
    assert all(grpc.StatusCode.NOT_FOUND in (c.expect or ()) for c in foreign)
    assert tokens and all(c.expect == {grpc.StatusCode.UNAUTHENTICATED} for c in tokens)


def test_an_image_claiming_gigapixels_never_meets_percolation() -> None:
    job = gateway_pb2.SubmitJobRequest(pipeline="fractal", params={"box_sizes": "3-41",
                                                                    "percolation": "true"})
    job.input.image.CopyFrom(media.encoded(media.jpeg_declaring(4000, 4000), "jpeg"))
    bound_cost(job)
    assert dict(job.params) == {"box_sizes": "3", "percolation": "false"}
