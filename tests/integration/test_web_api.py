"""The web page's HTTP API against a real stack, without a browser: refusals are text with
the gRPC status's message, and a fractal job goes from upload to table, CSV and picture."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import tifffile
from PIL import Image

from labsight.client import LabSightClient
from labsight.images import encode_png
from labsight.pixel_size import tiff_pixel_size
from services.classifier.classes import CLASS_NAMES
from services.classifier.generated_cells import generate_cell_field
from tests.integration.test_cells_pipeline import PIXEL_SIZE, cells_image
from tests.integration.web_support import WebStack, png_bytes, web_stack

__all__ = ["web_stack"]


def call(stack: WebStack, path: str, token: str | None = None, body: object = None) -> tuple[int, bytes]:
    """One HTTP request to the page's server: (status, body)."""
    request = urllib.request.Request(
        stack.web.url.rstrip("/") + path, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {stack.token if token is None else token}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def image_json(data: bytes, name: str = "blobs.png") -> dict[str, str]:
    return {"name": name, "data": base64.b64encode(data).decode()}


def test_bad_token_is_401_with_the_gateways_message(web_stack: WebStack) -> None:
    status, body = call(web_stack, "/api/pipelines", token="not-a-token")
    answer = json.loads(body)
    assert status == 401
    assert answer["code"] == "UNAUTHENTICATED"
    assert "token" in answer["error"].lower() and "Traceback" not in answer["error"]


def test_unknown_pipeline_is_400_naming_it(web_stack: WebStack) -> None:
    status, body = call(web_stack, "/api/jobs", body={"pipeline": "no-such-pipeline",
                                                      "image": image_json(png_bytes())})
    answer = json.loads(body)
    assert status == 400 and answer["code"] == "INVALID_ARGUMENT"
    assert "no-such-pipeline" in answer["error"] and "fractal" in answer["error"]


def test_corrupt_image_is_400_naming_the_input(web_stack: WebStack) -> None:
    status, body = call(web_stack, "/api/jobs", body={"pipeline": "fractal",
                                                      "image": image_json(b"\x89PNG\r\n\x1a\nbroken")})
    answer = json.loads(body)
    assert status == 400 and answer["code"] == "INVALID_ARGUMENT"
    assert "input.image" in answer["error"]


def test_unreadable_requests_are_400_with_what_to_fix(web_stack: WebStack) -> None:
    status, body = call(web_stack, "/api/jobs", body={"pipeline": "fractal", "image": {"data": "%%%"}})
    assert status == 400 and "image: data is not base64" in json.loads(body)["error"]
    status, body = call(web_stack, "/api/jobs", body={"pipeline": "fractal"})
    assert status == 400 and "image:" in json.loads(body)["error"]
    status, body = call(web_stack, "/api/jobs/nope%20id")
    assert status in (400, 404) and json.loads(body)["error"]


def test_fractal_job_from_upload_to_table_csv_and_picture(web_stack: WebStack) -> None:
    status, body = call(web_stack, "/api/jobs", body={"pipeline": "fractal", "params": {"box_sizes": "3,5,7"},
                                                      "image": image_json(png_bytes())})
    assert status == 200, body
    job_id = json.loads(body)["job_id"]
    while json.loads(call(web_stack, f"/api/jobs/{job_id}")[1])["status"] not in ("done", "failed", "dead"):
        time.sleep(0.2)
    status, body = call(web_stack, f"/api/jobs/{job_id}/result")
    result = json.loads(body)
    assert status == 200 and result["table"]["rows"] and result["composite"]
    assert not result["masks"]
    status, csv = call(web_stack, f"/api/jobs/{job_id}/table.csv")
    assert status == 200 and csv.decode().splitlines()[0].startswith("id,")
    status, png = call(web_stack, f"/api/jobs/{job_id}/composite.png")
    assert status == 200 and png.startswith(b"\x89PNG")
    status, body = call(web_stack, f"/api/jobs/{job_id}/masks.tiff")
    assert status == 404 and "no label masks" in json.loads(body)["error"]
    status, body = call(web_stack, f"/api/jobs/{job_id}/result", token="wrong")
    assert status == 401


def _finished_batch(web_stack: WebStack, batch_id: str) -> dict:
    """The page's view of batch ``batch_id`` once every job of it has ended."""
    view = json.loads(call(web_stack, f"/api/batches/{batch_id}")[1])
    while not view["finished"]:
        time.sleep(0.2)
        view = json.loads(call(web_stack, f"/api/batches/{batch_id}")[1])
    return view


def test_batch_view_counts_its_jobs(web_stack: WebStack) -> None:
    files = [image_json(png_bytes(seed), f"b{seed}.png") for seed in range(3)]
    status, body = call(web_stack, "/api/batches", body={"pipeline": "fractal", "files": files})
    assert status == 200, body
    batch_id = json.loads(body)["batch_id"]
    view = _finished_batch(web_stack, batch_id)
    assert view["total"] == 3 and view["counts"] == {"done": 3}
    assert sorted(job["input_name"] for job in view["jobs"]) == ["b0.png", "b1.png", "b2.png"]


def test_every_job_of_a_batch_from_the_page_has_its_composite(web_stack: WebStack) -> None:
    # More jobs than the page used to keep (8), and batch jobs, which it kept none of.
    pictures = {f"b{seed}.png": png_bytes(seed, size=32) for seed in range(12)}
    status, body = call(web_stack, "/api/batches", body={
        "pipeline": "fractal", "params": {"box_sizes": "3,5"},
        "files": [image_json(data, name) for name, data in pictures.items()]})
    assert status == 200, body
    batch_id = json.loads(body)["batch_id"]
    view = _finished_batch(web_stack, batch_id)
    assert len(view["jobs"]) == len(pictures)
    for job in view["jobs"]:
        status, body = call(web_stack, f"/api/jobs/{job['job_id']}/result")
        assert status == 200 and json.loads(body)["composite"], body
        status, png = call(web_stack, f"/api/jobs/{job['job_id']}/composite.png")
        assert status == 200, png
        drawn = np.asarray(Image.open(io.BytesIO(png)))[..., 0]
        submitted = np.asarray(Image.open(io.BytesIO(pictures[job["input_name"]])))
        assert np.array_equal(drawn > 127, submitted > 127)  # this job's own pixels


def test_a_job_submitted_elsewhere_or_another_tenants_has_no_composite(web_stack: WebStack) -> None:
    with LabSightClient(web_stack.gateway, token=web_stack.token) as client:
        job = client.wait(client.submit("fractal", np.asarray(Image.open(io.BytesIO(png_bytes(3)))),
                                        {"box_sizes": "3,5"}).job_id,
                          timeout_s=60)
    status, body = call(web_stack, f"/api/jobs/{job.job_id}/result")
    assert status == 200 and not json.loads(body)["composite"]
    status, body = call(web_stack, f"/api/jobs/{job.job_id}/composite.png")
    assert status == 404 and "was not submitted through this page" in json.loads(body)["error"]
    status, body = call(web_stack, "/api/jobs",
                        body={"pipeline": "fractal", "image": image_json(png_bytes())})
    job_id = json.loads(body)["job_id"]
    assert call(web_stack, f"/api/jobs/{job_id}/composite.png")[0] == 200
    assert call(web_stack, f"/api/jobs/{job_id}/composite.png", token=web_stack.other_token)[0] == 404


def test_the_page_and_its_files_are_served(web_stack: WebStack) -> None:
    for path, marker in (("/", b"login-form"), ("/static/app.js", b"signIn"), ("/static/style.css", b"body")):
        status, body = call(web_stack, path)
        assert status == 200 and marker in body


def test_cells_from_four_channel_files_give_masks_pictures_and_tiff(web_stack: WebStack) -> None:
    image, _ = cells_image(np.uint8)
    channels = {channel: image_json(encode_png(np.ascontiguousarray(image[..., index])), f"c_{channel}.png")
                for index, channel in enumerate(("red", "green", "blue", "yellow"))}
    status, body = call(web_stack, "/api/jobs", body={"pipeline": "cells", "channels": channels,
                                                      "params": {"pixel_size_um": PIXEL_SIZE}})
    assert status == 200, body
    job_id = json.loads(body)["job_id"]
    while json.loads(call(web_stack, f"/api/jobs/{job_id}")[1])["status"] not in ("done", "failed", "dead"):
        time.sleep(0.2)
    result = json.loads(call(web_stack, f"/api/jobs/{job_id}/result")[1])
    assert result["masks"] and result["composite"] and result["mask_kinds"] == ["nuclei", "cells"]
    for picture in ("composite.png", "masks.png"):
        status, png = call(web_stack, f"/api/jobs/{job_id}/{picture}")
        assert status == 200 and png.startswith(b"\x89PNG")
    composite = np.asarray(Image.open(io.BytesIO(call(web_stack, f"/api/jobs/{job_id}/composite.png")[1])))
    assert composite.shape == (*image.shape[:2], 3)
    status, tiff = call(web_stack, f"/api/jobs/{job_id}/masks.tiff")
    masks = tifffile.imread(io.BytesIO(tiff))
    assert status == 200 and masks.shape == (2, *image.shape[:2]) and masks.dtype == np.int32
    assert len(np.unique(masks[1][masks[1] > 0])) == 9  # the nine generated cells
    with tifffile.TiffFile(io.BytesIO(tiff)) as tif:  # calibrated at the job's pixel size
        stated = tiff_pixel_size(tif)
    assert stated is not None and abs(stated.um - float(PIXEL_SIZE)) < 1e-9


def test_cells_of_an_image_named_by_role_are_drawn_over_its_channels(web_stack: WebStack) -> None:
    image, _ = cells_image(np.uint8)
    buffer = io.BytesIO()  # a lab's DAPI + GFP file
    tifffile.imwrite(buffer, np.stack([image[..., 2], image[..., 1]]), ome=True, metadata={
        "axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]},
        "PhysicalSizeX": float(PIXEL_SIZE), "PhysicalSizeY": float(PIXEL_SIZE)})
    status, body = call(web_stack, "/api/jobs", body={
        "pipeline": "cells", "params": {"nucleus_channel": "DAPI", "expand_um": "3"},
        "image": image_json(buffer.getvalue(), "well.ome.tif")})
    assert status == 200, body
    job_id = json.loads(body)["job_id"]
    while json.loads(call(web_stack, f"/api/jobs/{job_id}")[1])["status"] not in ("done", "failed", "dead"):
        time.sleep(0.2)
    result = json.loads(call(web_stack, f"/api/jobs/{job_id}/result")[1])
    assert "mean_gfp" in result["table"]["columns"]
    masks = Image.open(io.BytesIO(call(web_stack, f"/api/jobs/{job_id}/masks.png")[1]))
    assert masks.width > 1.8 * masks.height  # two panels: the masks, and outlines over the channels
    composite = np.asarray(Image.open(io.BytesIO(call(web_stack, f"/api/jobs/{job_id}/composite.png")[1])))
    nuclei = image[..., 2] > 128
    assert composite[nuclei][:, [0, 2]].mean() > 2 * composite[~nuclei][:, [0, 2]].mean()  # DAPI magenta


def test_hpa_cells_list_each_cells_top_classes(web_stack: WebStack) -> None:
    field = generate_cell_field(5, size=256, cells=4)
    status, body = call(web_stack, "/api/jobs", body={
        "pipeline": "hpa-cells", "params": {"pixel_size_um": "0.3", "method": "classical"},
        "image": image_json(tiff_bytes(field.image), "field.tif")})
    assert status == 200, body
    job_id = json.loads(body)["job_id"]
    while json.loads(call(web_stack, f"/api/jobs/{job_id}")[1])["status"] not in ("done", "failed", "dead"):
        time.sleep(0.2)
    status, body = call(web_stack, f"/api/jobs/{job_id}/result")
    result = json.loads(body)
    assert status == 200 and result["masks"] and result["table"]["rows"]
    assert len(result["classes"]) == result["table"]["total_rows"] > 0
    for cell in result["classes"]:
        probabilities = [entry["p"] for entry in cell["classes"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(entry["name"] in CLASS_NAMES for entry in cell["classes"])
    for picture in ("masks.png", "classes.png"):
        status, png = call(web_stack, f"/api/jobs/{job_id}/{picture}")
        assert status == 200 and png.startswith(b"\x89PNG")


def tiff_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(image, -1, 0), imagej=True, metadata={"axes": "CYX"})
    return buffer.getvalue()
