"""The web page's API handlers on their own (no gateway answering, no browser): every
failure is JSON text with an HTTP status, never a stack trace; tokens and files are read."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from labsight.columns import CELL_CHANNELS
from labsight.images import encode_png
from labsight.v1 import tensor_pb2
from labsight.web.api import BadRequest, InputCache, WebApi, bearer_token, decode_file
from labsight.web.server import start_web_server

GONE = "127.0.0.1:1"
"""A gateway address where nothing listens."""


def answer(api: WebApi, method: str, path: str, body: object = None) -> tuple[int, dict[str, str]]:
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = api.handle(method, path, {"Authorization": "Bearer t"}, data)
    return reply.status, json.loads(reply.body)


def test_a_gateway_that_does_not_answer_is_503_naming_it() -> None:
    status, error = answer(WebApi(GONE, timeout_s=5), "GET", "/api/pipelines")
    assert status == 503 and error["code"] == "UNAVAILABLE" and error["error"]
    assert "Traceback" not in error["error"]


@pytest.mark.parametrize(("body", "says"), [
    (b"{not json", "request: not JSON"),
    ([1, 2], "request: expected a JSON object"),
    ({"image": {"data": "aGk="}}, "pipeline: choose a pipeline"),
    ({"pipeline": "fractal"}, "image: choose an image file"),
    ({"pipeline": "fractal", "image": {"data": "***"}}, "image: data is not base64"),
    ({"pipeline": "fractal", "image": "x.png"}, "image: expected"),
    ({"pipeline": "fractal", "params": "a=1", "image": {"data": "aGk="}}, "params: expected a JSON object"),
])
def test_unreadable_submissions_are_400_saying_what_to_fix(body: object, says: str) -> None:
    status, error = answer(WebApi(GONE), "POST", "/api/jobs", body)
    assert status == 400 and error["code"] == "INVALID_ARGUMENT" and error["error"].startswith(says)


def test_an_empty_batch_is_400() -> None:
    status, error = answer(WebApi(GONE), "POST", "/api/batches", {"pipeline": "fractal", "files": []})
    assert status == 400 and error["error"].startswith("files:")


def test_a_body_over_the_limit_is_refused_with_the_limit() -> None:
    status, error = answer(WebApi(GONE, max_body_bytes=10), "POST", "/api/jobs", {"pipeline": "fractal"})
    assert status == 400 and "over the page's limit of 10" in error["error"]


def test_unknown_paths_are_404_and_the_page_is_served() -> None:
    api = WebApi(GONE)
    assert answer(api, "GET", "/etc/passwd")[0] == 404
    assert answer(api, "GET", "/static/../api.py")[0] == 404
    assert answer(api, "DELETE", "/api/jobs/abc")[0] == 404
    page = api.handle("GET", "/?x=1", {}, b"")
    assert page.status == 200 and page.content_type.startswith("text/html") and b"app.js" in page.body


def test_bearer_token_is_read_from_the_authorization_header() -> None:
    assert bearer_token({"Authorization": "Bearer abc "}) == "abc"
    assert bearer_token({"authorization": "bearer abc"}) == "abc"
    assert bearer_token({"Authorization": "Basic abc"}) == ""
    assert bearer_token({}) == ""


def test_decode_file_detects_the_format_and_keeps_only_the_file_name() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 8
    image = decode_file("image", {"name": "../../x/cells.png", "data": base64.b64encode(png).decode()})
    assert image.name == "cells.png" and image.encoded.data == png and image.encoded.format
    with pytest.raises(BadRequest, match="channels.red: data is not base64"):
        decode_file("channels.red", {"data": "@@"})


def _png(value: int, size: int = 16) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(np.full((size, size), value,
                                                                                 np.uint8))))


def test_input_cache_keeps_encoded_inputs_up_to_its_bytes_and_decodes_on_demand() -> None:
    images = [_png(index) for index in range(3)]
    cache = InputCache(max_bytes=images[1].ByteSize() + images[2].ByteSize(), decoded=1)
    for index, image in enumerate(images):
        cache.put(f"job{index}", image)
    cache.put("none", None)
    assert not cache.has("job0") and cache.pixels("job0") is None  # the oldest went for the bytes
    assert not cache.has("none") and cache.pixels("none") is None
    assert int(cache.pixels("job2")[0, 0]) == 2 and int(cache.pixels("job1")[0, 0]) == 1
    assert cache.pixels("job1") is cache.pixels("job1")  # decoded once, then kept
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    cache.put("huge", tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(noise))))
    # over the whole bound: not kept, and nothing evicted for it
    assert not cache.has("huge") and cache.has("job1") and cache.has("job2")


def test_input_cache_stacks_four_channel_images_and_keeps_no_undecodable_picture() -> None:
    cache = InputCache()
    cache.put("cells", None, {channel: _png(value) for value, channel in enumerate(CELL_CHANNELS)})
    assert cache.pixels("cells").shape == (16, 16, 4)
    cache.put("broken", tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=b"\x89PNG\r\n\x1a\nnot")))
    assert cache.has("broken") and cache.pixels("broken") is None


def test_the_http_server_refuses_a_large_body_by_its_length_and_serves_the_page() -> None:
    server = start_web_server(WebApi(GONE, max_body_bytes=10))
    try:
        request = urllib.request.Request(server.url + "api/jobs", data=b"x" * 100, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 413
        assert "limit of 10 bytes" in json.loads(refused.value.read())["error"]
        with urllib.request.urlopen(server.url, timeout=10) as page:
            assert page.status == 200 and b"login-form" in page.read()
    finally:
        server.stop()
