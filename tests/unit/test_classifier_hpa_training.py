"""`labsight train-classifier --csv --images` and `evaluate-classifier` on an HPA-format data set
written to disk: one grey PNG per channel and a label CSV, cells segmented by SegmentCells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labsight.cli import main
from labsight.models import load_torch_model
from services.classifier.classes import CLASS_NAMES
from services.classifier.generated_cells import generate_cell_field
from services.classifier.hpa_data import CHANNELS, read_label_csv
from services.classifier.repository import classifier_repository, load_thresholds

PIXEL_SIZE_UM = 0.3
"""The generated cells' size in µm at this pixel size is HPA cells' size."""

LABEL_SETS = ([0], [13], [14], [0, 13], [14, 16])
"""Nucleoplasm, plasma membrane, mitochondria, and two pairs: each image's label set."""


def write_hpa_set(folder: Path, images: int, *, kaggle: bool = False) -> Path:
    """``images`` generated fields as ID_red/green/blue/yellow.png with a label CSV; returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["Id,Target" if kaggle else "ID,Label"]
    for index in range(images):
        labels = LABEL_SETS[index % len(LABEL_SETS)]
        classes = np.zeros((4, len(CLASS_NAMES)), bool)
        classes[:, labels] = True
        field = generate_cell_field(np.random.default_rng((31, index)), size=256, cells=4, classes=classes)
        image_id = f"img{index:02d}"
        for channel, name in enumerate(CHANNELS):
            Image.fromarray(field.image[..., channel]).save(folder / f"{image_id}_{name}.png")
        rows.append(f"{image_id},{(' ' if kaggle else '|').join(map(str, labels))}")
    csv = folder / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _json_line(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hpa_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hpa_set(tmp_path_factory.mktemp("hpa") / "train", 10)


def test_training_on_hpa_files_reports_scores_and_registers_a_loadable_model(
    hpa_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    code = main(["train-classifier", "--csv", str(hpa_set), "--images", str(hpa_set.parent),
                 "--model-dir", str(models), "--name", "tiny-hpa", "--epochs", "2",
                 "--pixel-size-um", str(PIXEL_SIZE_UM), "--held-out", "0.2", "--validation", "0.2"])
    out = capsys.readouterr().out
    assert code == 0
    line = _json_line(out)
    assert line["model"] == "tiny-hpa" and line["data"] == "hpa"
    assert 0 <= line["mean_average_precision"] <= 1 and 0 <= line["macro_f1"] <= 1  # type: ignore[operator]
    assert [row["name"] for row in line["classes"]] == list(CLASS_NAMES)  # type: ignore[union-attr]
    images = line["images"]
    assert [len(images[s]) for s in ("train", "validation", "test")] == [6, 2, 2]  # type: ignore[index]
    assert line["cells"] >= 2 * 2  # type: ignore[operator]  # the two test images' cells, ~4 each
    assert "Mitochondria" in out and "mAP" in out  # the table
    manifest = classifier_repository([models]).get("tiny-hpa")
    assert manifest.origin.startswith(str(models))
    network = load_torch_model(manifest)
    assert network(torch.zeros(3, 4, 64, 64)).shape == (3, len(CLASS_NAMES))
    card = (models / "tiny-hpa" / "MODEL_CARD.md").read_text()
    assert "weak labels" in card and str(hpa_set) in card
    metrics = json.loads((models / "tiny-hpa" / "metrics.json").read_text())
    assert metrics["split_images"]["test"] == images["test"]  # type: ignore[index]
    assert load_thresholds(manifest).tolist() == metrics["thresholds"]


def test_evaluate_classifier_scores_hpa_files_and_generated_cells(
    hpa_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate-classifier", "--csv", str(hpa_set), "--images", str(hpa_set.parent),
                 "--pixel-size-um", str(PIXEL_SIZE_UM), "--json"]) == 0
    line = _json_line(capsys.readouterr().out)
    assert line["model"].startswith("hpa-generated ") and line["images"] == 10  # type: ignore[union-attr]
    positives = {row["name"]: row["positives"] for row in line["classes"]}  # type: ignore[union-attr]
    assert positives["Cytosol"] > 0 and positives["Golgi apparatus"] == 0
    # The shipped model on cells of the generator it was trained on (its card: macro-F1 0.952).
    assert main(["evaluate-classifier", "--cells", "300"]) == 0
    out = capsys.readouterr().out
    generated = _json_line(out)
    assert generated["cells"] >= 300 and generated["macro_f1"] > 0.85  # type: ignore[operator]
    assert "all (mAP, macro-F1)" in out


def test_kaggle_and_hpa_csv_layouts_read_alike(tmp_path: Path) -> None:
    (tmp_path / "hpa.csv").write_text("ID,Label\na,0|14\nb,18\n")
    (tmp_path / "kaggle.csv").write_text("Id,Target\na,0 14\nb,18\n")
    hpa, kaggle = read_label_csv(tmp_path / "hpa.csv"), read_label_csv(tmp_path / "kaggle.csv")
    assert hpa.ids == kaggle.ids == ("a", "b")
    assert np.array_equal(hpa.classes, kaggle.classes) and hpa.classes.sum() == 3


def test_an_unknown_class_index_is_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_hpa_set(tmp_path / "data", 3)
    csv.write_text(csv.read_text().replace("img01,13", "img01,13|19"))
    assert main(["train-classifier", "--csv", str(csv), "--images", str(csv.parent),
                 "--model-dir", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert f"{csv}: line 3 (image img01): class '19' is not a class index 0..18" in err
    assert not (tmp_path / "models").exists()


def test_a_missing_channel_file_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_hpa_set(tmp_path / "data", 3, kaggle=True)
    (csv.parent / "img02_yellow.png").unlink()
    assert main(["evaluate-classifier", "--csv", str(csv), "--images", str(csv.parent)]) == 2
    assert f"no channel file {csv.parent / 'img02_yellow.png'}" in capsys.readouterr().err


def test_csv_without_images_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-classifier", "--csv", str(tmp_path / "x.csv")]) == 2
    assert "--csv and --images go together" in capsys.readouterr().err


def test_a_running_segmentation_service_is_used_when_its_address_is_given(
    hpa_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labsight.catalog import SEGMENTATION
    from labsight.config import Settings
    from labsight.runtime.server import start_server
    from services.segmentation.servicer import register

    running = start_server(register, SEGMENTATION.grpc_services, Settings(port=0))
    try:
        assert main(["evaluate-classifier", "--csv", str(hpa_set), "--images", str(hpa_set.parent),
                     "--pixel-size-um", str(PIXEL_SIZE_UM), "--segmentation-address", running.address,
                     "--json"]) == 0
        assert _json_line(capsys.readouterr().out)["cells"] >= 30  # type: ignore[operator]
        running.stop(0)
        assert main(["evaluate-classifier", "--csv", str(hpa_set), "--images", str(hpa_set.parent),
                     "--segmentation-address", running.address]) == 2
        assert "segmentation refused it: UNAVAILABLE" in capsys.readouterr().err
    finally:
        running.stop(0)
