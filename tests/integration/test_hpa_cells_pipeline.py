"""The ``hpa-cells`` pipeline through real gRPC servers (segmentation, classifier, gateway), a worker
and Redis: generated HPA-style fields → per-cell classes, one image or four channel images, no cells."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
import tifffile
from PIL import Image

import labsight.images
from labsight.catalog import CLASSIFIER, GATEWAY, SEGMENTATION
from labsight.cli import main
from labsight.client import LabSightClient, build_request
from labsight.columns import cell_class_column_names, image_class_column_names
from labsight.config import Settings
from labsight.images import encode_png, image_from_array
from labsight.result import Result
from labsight.runtime.server import RunningServer
from labsight.stored_results import PACKED_MAGIC, unpack_result
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from services.classifier.classes import CLASS_NAMES
from services.classifier.generated_cells import CellField, generate_cell_field
from services.classifier.servicer import register as register_classifier
from services.gateway.keys import RedisKeys
from services.gateway.servicer import register as register_gateway
from services.segmentation.servicer import register as register_segmentation
from tests.conftest import RunningWorker

PIXEL_SIZE = "0.3"
"""µm per pixel that makes the generated cells (radius 24-36 px) HPA-sized for the segmentation."""

FIELD_PARAMS = {"pixel_size_um": PIXEL_SIZE, "method": "classical"}
"""The generated fields' nuclei are 5-9 µm and dim, where the flow networks (the default, better
on real nuclei) miss some; the classical method finds every one, so the classes can be checked."""


@pytest.fixture(scope="module")
def field() -> CellField:
    return generate_cell_field(5, size=256, cells=4)


@dataclass
class Stack:
    """The gateway's address and a client of it."""

    address: str
    client: LabSightClient


@pytest.fixture
def stack(
    serve: Callable[..., RunningServer], settings: Settings, worker_thread: Callable[..., RunningWorker]
) -> Iterator[Stack]:
    segmentation = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    settings.service_addresses = {"features": "127.0.0.1:1", "segmentation": segmentation.address,
                                  "classifier": classifier.address}
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    worker_thread()
    with LabSightClient(gateway.address, token="") as connected:
        yield Stack(gateway.address, connected)


def _run(client: LabSightClient, request: pb.SubmitJobRequest) -> Result:
    job = client.submit_request(request)
    finished = client.wait(job.job_id, timeout_s=120)
    assert finished.status == pb.JOB_STATUS_DONE, finished.error
    return client.result(job.job_id)


def test_each_cell_gets_19_probabilities_and_a_label_set(stack: Stack, field: CellField) -> None:
    request = build_request("hpa-cells", image_from_array(field.image), FIELD_PARAMS)
    result = _run(stack.client, request)
    assert result.pipeline == "hpa-cells"
    labels = from_tensor(result.tensors["cell_labels"])
    # the masks travel as uint16 (segmentation -> gateway -> classifier -> result), values intact
    assert labels.dtype == from_tensor(result.tensors["nucleus_labels"]).dtype == np.uint16
    assert list(result.tables["cells"].row_ids) == [str(i) for i in np.unique(labels[labels > 0])]
    classes = result.tables["classes"]
    assert list(classes.columns) == cell_class_column_names(CLASS_NAMES)
    assert list(classes.row_ids) == list(result.tables["cells"].row_ids) and len(classes.row_ids) >= 3
    values = table_values(classes)
    columns = list(classes.columns)
    probabilities = values[:, columns.index("p_nucleoplasm"):columns.index("p_negative") + 1]
    assert np.allclose(probabilities, from_tensor(result.tensors["probabilities"]), atol=1e-6)
    crops = from_tensor(result.tensors["crops"])
    assert crops.shape == (len(classes.row_ids), 64, 64, 4) and crops.dtype == np.uint8
    thresholds = np.array([float(t) for t in result.provenance["classifier_thresholds"].split(",")])
    predicted = values[:, columns.index("is_nucleoplasm"):columns.index("is_negative") + 1]
    assert np.array_equal(predicted, probabilities >= thresholds.astype(np.float32) - 1e-6)
    assert np.array_equal(values[:, columns.index("label_count")], predicted.sum(axis=1))
    # each found cell's top class is a class of the generated cell it mostly covers
    for row, label in enumerate(values[:, columns.index("label")].astype(int)):
        truth = np.bincount(field.cell_labels[labels == label]).argmax()
        top = int(values[row, columns.index("top_class")])
        assert truth > 0 and field.classes[truth - 1, top], (label, truth, top)
    # the image summary: the best cell per class and the cells carrying it
    summary = result.tables["image_classes"]
    assert list(summary.columns) == image_class_column_names(CLASS_NAMES)
    row = table_values(summary)[0]
    assert np.allclose(row[:19], probabilities.max(axis=0)) and np.array_equal(row[19:], predicted.sum(0))
    assert result.provenance["classifier_model"].startswith("hpa-generated ")


def test_the_result_is_kept_packed_and_read_back_whole(
    stack: Stack, field: CellField, settings: Settings, redis_for: redis.Redis
) -> None:
    """Its two label images make most of it: Redis keeps it LZ4-packed (labsight.stored_results),
    and GetJobResult answers the plain JobResult."""
    job = stack.client.submit_request(build_request("hpa-cells", image_from_array(field.image),
                                                    FIELD_PARAMS))
    assert stack.client.wait(job.job_id, timeout_s=120).status == pb.JOB_STATUS_DONE
    plain = b"".join(chunk.data for chunk in stack.client.stub.GetJobResult(
        pb.GetJobResultRequest(job_id=job.job_id)))
    kept = redis_for.get(RedisKeys(settings.key_prefix).job_result(job.job_id))
    assert kept is not None and kept.startswith(PACKED_MAGIC) and len(kept) < len(plain) / 3
    assert unpack_result(kept) == plain
    labels = from_tensor(pb.JobResult.FromString(plain).tensors["cell_labels"])
    assert labels.shape == field.image.shape[:2] and labels.max() >= 3


def test_four_channel_images_give_the_same_classes(stack: Stack, field: CellField) -> None:
    whole = build_request("hpa-cells", image_from_array(field.image), FIELD_PARAMS)
    split = pb.SubmitJobRequest(pipeline="hpa-cells", params=FIELD_PARAMS)
    for index, channel in enumerate(("red", "green", "blue", "yellow")):
        split.input.images[channel].CopyFrom(image_from_array(field.image[..., index]))
    first, second = (_run(stack.client, request) for request in (whole, split))
    assert np.array_equal(from_tensor(first.tensors["probabilities"]),
                          from_tensor(second.tensors["probabilities"]))


def test_png_channel_files_are_decoded_once_in_the_worker_and_classed_as_their_pixels(
    stack: Stack, field: CellField, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reads the four files for the job's warnings; the segmentation and classifier
    services get those pixels, not the files to decode again (twelve decodes before)."""
    decoded: list[tuple[int, ...]] = []
    decode = labsight.images._decode_pillow

    def counting(image: Image.Image) -> np.ndarray:
        decoded.append(image.size)
        return decode(image)

    monkeypatch.setattr(labsight.images, "_decode_pillow", counting)
    files = pb.SubmitJobRequest(pipeline="hpa-cells", params=FIELD_PARAMS)
    for index, channel in enumerate(("red", "green", "blue", "yellow")):
        files.input.images[channel].encoded.data = encode_png(field.image[..., index])
    from_files = _run(stack.client, files)
    assert len(decoded) == 4
    from_pixels = _run(stack.client, build_request("hpa-cells", image_from_array(field.image),
                                                   FIELD_PARAMS))
    for name in ("cell_labels", "probabilities", "crops"):
        assert np.array_equal(from_tensor(from_files.tensors[name]),
                              from_tensor(from_pixels.tensors[name])), name
    assert from_files.tables["classes"] == from_pixels.tables["classes"]


def test_an_image_without_cells_gives_an_empty_table(stack: Stack) -> None:
    dark = np.zeros((128, 128, 4), np.uint8)
    result = _run(stack.client, build_request("hpa-cells", image_from_array(dark)))
    assert list(result.tables["classes"].row_ids) == []
    assert list(result.tables["classes"].columns) == cell_class_column_names(CLASS_NAMES)
    assert from_tensor(result.tensors["probabilities"]).shape == (0, 19)
    assert table_values(result.tables["image_classes"]).tolist() == [[0.0] * 38]
    assert result.scalars["classes_found"] == 0


def test_explain_and_plot_draw_the_job(stack: Stack, field: CellField, tmp_path: Path) -> None:
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, field.image, photometric="minisblack", planarconfig="contig")
    request = build_request("hpa-cells", image_from_array(field.image), FIELD_PARAMS)
    job = stack.client.submit_request(request)
    assert stack.client.wait(job.job_id, timeout_s=120).status == pb.JOB_STATUS_DONE
    gateway = ["--gateway", stack.address, "--token", ""]
    out = tmp_path / "why"
    assert main(["explain", job.job_id, "-o", str(out), "--cells", "1", *gateway]) == 0
    written = sorted(p.name for p in out.iterdir())
    kinds = ["crop", "gradcam_colour", "gradcam_grey", "gradcam_multiply", "gradcam_overlay", "lime"]
    stem = written[0].rsplit("_", 1)[0] if written[0].endswith("_crop.png") else ""
    assert stem.startswith("cell1_") and written[:-1] == sorted(f"{stem}_{k}.png" for k in kinds)
    assert written[-1] == "explanations.csv"
    assert np.asarray(Image.open(out / f"{stem}_gradcam_grey.png")).shape == (256, 256)
    assert main(["explain", job.job_id, "-o", str(out), "--image", str(path), "--class",
                 "Mitochondria", "--no-lime", "--cells", "2", *gateway]) == 0
    assert (out / "cell2_mitochondria_gradcam_overlay.png").is_file()
    # from the result's 8-bit crops and cut again from the image: the same pictures, give or take
    # the crops' rounding
    again = tmp_path / "again"
    assert main(["explain", job.job_id, "-o", str(again), "--class", "Mitochondria", "--no-lime",
                 "--cells", "2", *gateway]) == 0
    for picture in again.glob("*.png"):
        difference = np.asarray(Image.open(picture)).astype(int) - np.asarray(Image.open(out / picture.name))
        assert np.abs(difference).max() <= 1, picture.name
    with pytest.raises(SystemExit, match="--class: unknown class"):
        main(["explain", job.job_id, "-o", str(out), "--image", str(path), "--class", "Nucleus",
              *gateway])
    figure = tmp_path / "classes.png"
    assert main(["plot", job.job_id, "-o", str(figure), "--image", str(path), *gateway]) == 0
    assert Image.open(figure).size[0] > 1000
