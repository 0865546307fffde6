"""``labsight train-classifier`` and ``labsight evaluate-classifier``: the organelle classifier's
training and scoring, on generated cells or on HPA-format labelled images.

HPA-format data: a CSV of image ids and label sets (HPA's ``ID,Label`` with ``|``
between class indices, or Kaggle's ``Id,Target`` with spaces) and a folder of one
grey file per channel (``ID_red.png``, ``ID_green.png``, ``ID_blue.png``,
``ID_yellow.png``; PNG, TIFF or JPEG). Each image's cells are found by the
segmentation service's SegmentCells (the one at ``--segmentation-address``, else
one started inside this command) and take the image's label set (weak labels).
Without ``--csv``, cells are drawn by LabSight's generator.

Both commands print a table of per-class AP and F1 and one JSON line (``--json``:
the JSON line only). Bad input (a class index outside 0..18, a missing channel
file, an unreadable image) exits 2 with a message naming the file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parsers", "cmd_evaluate_classifier", "cmd_train_classifier", "read_hpa_cells"]

GENERATED_MODEL = "hpa-generated"
HPA_MODEL = "hpa-trained"
"""Default model names of a run on generated cells and on HPA-format data."""

Log = Callable[[str], None]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``train-classifier`` and ``evaluate-classifier`` to the ``labsight`` subcommands."""
    from services.classifier.training import BACKBONES, TrainingConfig

    defaults = TrainingConfig()
    train = sub.add_parser(
        "train-classifier",
        help="train the organelle classifier on HPA-format images (--csv, --images) or generated "
             "cells and write a model directory (manifest, weights, per-class thresholds, held-out "
             "scores, model card)",
        description=__doc__.split("\n\n")[0],
    )
    train.add_argument("destination", nargs="?", type=Path, default=None,
                       help="model directory to write (default: MODEL_DIR/NAME, MODEL_DIR from "
                            "--model-dir or $LABSIGHT_MODEL_DIR)")
    train.add_argument("--model-dir", type=Path, default=None,
                       help="model directory the classifier service reads (default: "
                            "$LABSIGHT_MODEL_DIR)")
    train.add_argument("--name", default="", help=f"model name in the repository (default: "
                       f"{HPA_MODEL} with --csv, else {GENERATED_MODEL})")
    _add_data_arguments(train)
    train.add_argument("--backbone", choices=BACKBONES, default=BACKBONES[0],
                       help="network: hpa-cell-cnn (small, from scratch; the default, better on "
                            "generated cells) or efficientnet-lite0 (offline ImageNet weights, "
                            "stem widened to 4 channels)")
    train.add_argument("--seed", type=int, default=None,
                       help=f"data split and initialisation seed (default: {defaults.seed} for "
                            "generated cells, 0 for --csv)")
    train.add_argument("--train-cells", type=int, default=defaults.train_cells,
                       help="generated training cells")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"most epochs (default: {defaults.epochs} generated, 30 with --csv)")
    train.add_argument("--learning-rate", type=float, default=0.0,
                       help="peak learning rate (default: 0.004 hpa-cell-cnn, 0.001 efficientnet-lite0)")
    train.add_argument("--time-budget", type=float, default=None,
                       help=f"seconds for the run (default: {defaults.time_budget:g} generated, "
                            "1800 with --csv); training stops with its schedule complete")
    train.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads")
    train.add_argument("--device", default="", help="auto, cpu or cuda (default: $LABSIGHT_DEVICE, "
                       "else auto: a GPU when there is one); the weights are saved from the CPU")
    train.add_argument("--held-out", type=float, default=0.2,
                       help="share of the images held out for the test scores (--csv)")
    train.add_argument("--validation", type=float, default=0.1,
                       help="share of the images that choose the thresholds (--csv)")
    train.add_argument("--json", action="store_true", help="print only the JSON line")
    train.set_defaults(func=cmd_train_classifier)

    evaluate = sub.add_parser(
        "evaluate-classifier",
        help="score a classifier model on labelled cells: per-class AP and F1, mAP, macro-F1",
        description=__doc__.split("\n\n")[0],
    )
    evaluate.add_argument("--model", default=GENERATED_MODEL,
                          help="model name among the shipped ones and $LABSIGHT_MODEL_DIR's "
                               f"(default {GENERATED_MODEL})")
    evaluate.add_argument("--model-dir", type=Path, default=None,
                          help="another model directory to look in")
    _add_data_arguments(evaluate)
    evaluate.add_argument("--cells", type=int, default=1500, help="generated cells to score")
    evaluate.add_argument("--style", choices=("standard", "shifted"), default="standard",
                          help="generator style of the generated cells")
    evaluate.add_argument("--random-state", type=int, default=2026,
                          help="which generated cells: 2026 (default) draws the shipped model's "
                               "held-out test cells")
    evaluate.add_argument("--json", action="store_true", help="print only the JSON line")
    evaluate.set_defaults(func=cmd_evaluate_classifier)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, default=None,
                        help="HPA-format labels: ID,Label (class indices joined by |) or Id,Target "
                             "(joined by spaces)")
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of the channel files ID_red.png, ID_green.png, ID_blue.png, "
                             "ID_yellow.png (or .tif/.jpg) of every id in --csv")
    parser.add_argument("--pixel-size-um", type=float, default=0.0,
                        help="pixel size for the segmentation (default: the one the channel files "
                        "state, else HPA's 0.08 um)")
    parser.add_argument("--segmentation-method", default="classical",
                        help="SegmentCells method: classical (default; fast on CPU) or flows")
    parser.add_argument("--segmentation-address", default="",
                        help="segmentation service to call (host:port; default: start one in this "
                             "command)")


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train as the arguments say, print the held-out scores (table and JSON line); 1 on bad
    numbers, 2 on bad data."""
    problem = _bad_numbers(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    log: Log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        args.device = _device(args.device)
        hpa = _hpa_mode(args)
        name = args.name or (HPA_MODEL if hpa else GENERATED_MODEL)
        destination = args.destination or _model_home(args.model_dir, name)
        if hpa:
            scores, extra = _train_hpa(args, destination, name, log)
        else:
            scores, extra = _train_generated(args, destination, name, log)
    except ValueError as error:
        print(f"labsight: {error}", file=sys.stderr)
        return 2
    _report({"model": name, "manifest": str(destination / "manifest.toml"), **extra}, scores,
            thresholds=None, only_json=args.json)
    return 0


def _bad_numbers(args: argparse.Namespace) -> str:
    if args.train_cells < 1 or (args.epochs is not None and args.epochs < 1):
        return "--train-cells and --epochs must be positive"
    if args.time_budget is not None and args.time_budget <= 0:
        return "--time-budget must be positive"
    if args.threads < 1:
        return "--threads must be positive"
    if args.learning_rate < 0:
        return "--learning-rate must not be negative"
    return ""


def _device(value: str) -> str:
    from labsight.models import device_from_env, parse_device, resolve_device

    return resolve_device(parse_device(value, "--device") if value else device_from_env())


def _hpa_mode(args: argparse.Namespace) -> bool:
    if (args.csv is None) != (args.images is None):
        raise ValueError("--csv and --images go together (labels and their channel files)")
    return args.csv is not None


def _model_home(model_dir: Path | None, name: str) -> Path:
    from labsight.models import model_dirs_from_env

    dirs = [model_dir] if model_dir else model_dirs_from_env()
    if not dirs:
        raise ValueError("give DESTINATION, --model-dir or set LABSIGHT_MODEL_DIR")
    return dirs[0] / name


def _train_generated(args: argparse.Namespace, destination: Path, name: str,
                     log: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    from services.classifier.training import (
        DEFAULT_LEARNING_RATES,
        TrainingConfig,
        train_generated_classifier,
    )

    defaults = TrainingConfig()
    config = replace(
        defaults, seed=defaults.seed if args.seed is None else args.seed, train_cells=args.train_cells,
        epochs=args.epochs or defaults.epochs, time_budget=args.time_budget or defaults.time_budget,
        threads=args.threads, backbone=args.backbone, device=args.device,
        learning_rate=args.learning_rate or DEFAULT_LEARNING_RATES[args.backbone],
    )
    report = train_generated_classifier(destination, config, name=name, log=log)
    return report.test, {"data": "generated", "thresholds": report.thresholds,
                         "shifted_macro_f1": report.shifted["macro_f1"]}


def _train_hpa(args: argparse.Namespace, destination: Path, name: str,
               log: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    from services.classifier.hpa_training import HpaTrainingConfig, train_hpa_classifier

    config = HpaTrainingConfig(
        seed=args.seed or 0, epochs=args.epochs or HpaTrainingConfig.epochs,
        learning_rate=args.learning_rate, time_budget=args.time_budget or HpaTrainingConfig.time_budget,
        threads=args.threads, backbone=args.backbone, held_out=args.held_out, validation=args.validation,
        device=args.device,
    )
    images, data = read_hpa_cells(args, log)
    report = train_hpa_classifier(images, destination, config, name=name, data=data, log=log)
    return report.test, {"data": "hpa", "images": report.split_images,
                         "image_level": _summary(report.test_images), "thresholds": report.thresholds}


def read_hpa_cells(args: argparse.Namespace, log: Log) -> tuple[Any, dict[str, object]]:
    """The cell crops and label sets of the images of ``args.csv``, segmented by SegmentCells.

    Returns
    -------
    (ImageCells, dict)
        The crops per image, and where they came from (for the model card).

    Raises
    ------
    ValueError
        Naming the CSV line or file that is wrong (see
        :func:`services.classifier.hpa_data.read_label_csv`,
        :func:`services.classifier.hpa_data.channel_paths`), an unreadable image,
        or the segmentation's refusal of one.
    """
    import grpc

    from labsight.cell_crops import cell_crops
    from labsight.cell_images import read_cell_image
    from labsight.errors import InvalidArgument
    from labsight.images import image_from_file
    from labsight.runtime.cpus import usable_cpus
    from labsight.tensors import from_tensor
    from labsight.v1 import segmentation_pb2
    from services.classifier.hpa_data import channel_paths, read_label_csv
    from services.classifier.hpa_training import ImageCells
    from services.classifier.training import INPUT_SIZE

    labelled = read_label_csv(args.csv)
    files = [channel_paths(args.images, image_id) for image_id in labelled.ids]  # all checked first
    def cut(image_id: str, paths: list[Path], stub: Any) -> tuple[np.ndarray, str, float]:
        parts = [(str(path), image_from_file(path)) for path in paths]
        try:
            image = read_cell_image(parts)
        except InvalidArgument as error:
            raise ValueError(f"image {image_id}: {error.details()}") from None
        request = segmentation_pb2.SegmentCellsRequest(
            channel_images=[part for _, part in parts], pixel_size_um=args.pixel_size_um,
            method=args.segmentation_method,
        )
        try:
            answer = stub.SegmentCells(request, timeout=600)
        except grpc.RpcError as error:
            raise ValueError(f"image {image_id} ({paths[0].parent}): segmentation refused it: "
                             f"{error.code().name}: {error.details()}") from None
        cells = cell_crops(image, from_tensor(answer.cell_labels, "cell_labels"), INPUT_SIZE, channels=4)
        return np.rint(cells.pixels * 255).astype(np.uint8), answer.method, answer.pixel_size_um

    crops: list[np.ndarray] = []
    methods: set[str] = set()
    sizes: set[str] = set()
    # A few images in flight keep the segmentation service's cores busy while this process
    # decodes and crops the previous ones; results come back in the CSV's order.
    with segmentation_stub(args.segmentation_address) as stub, ThreadPoolExecutor(usable_cpus()) as pool:
        for index, (image_crops, method, pixel_size) in enumerate(
            pool.map(lambda pair: cut(*pair, stub), zip(labelled.ids, files, strict=True))
        ):
            crops.append(image_crops)
            methods.add(method)
            sizes.add(f"{pixel_size:.4g}")
            if (index + 1) % 25 == 0 or index + 1 == len(labelled.ids):
                log(f"segmented {index + 1}/{len(labelled.ids)} images, "
                    f"{sum(len(c) for c in crops)} cells")
    data = {"labels": str(args.csv), "images": str(args.images),
            "segmentation": f"SegmentCells method {', '.join(sorted(methods))}, pixel size "
                            f"{', '.join(sorted(sizes, key=float))} um"}
    return ImageCells(labelled.ids, labelled.classes, tuple(crops)), data


@contextmanager
def segmentation_stub(address: str) -> Iterator[Any]:
    """A SegmentationService stub: to ``address`` (sending $LABSIGHT_SERVICE_TOKEN when set), or
    to a segmentation service started in this process on a free loopback port for the block."""
    import grpc

    from labsight.catalog import SEGMENTATION
    from labsight.config import Settings
    from labsight.runtime.server import start_server
    from labsight.runtime.service_token import with_service_token
    from labsight.v1 import segmentation_pb2_grpc

    settings = Settings.from_env(SEGMENTATION)
    running = None
    if not address:
        register = importlib.import_module(f"{SEGMENTATION.module}.servicer").register
        running = start_server(register, SEGMENTATION.grpc_services,
                               replace(settings, host="127.0.0.1", port=0, service_token=""))
        address = running.address
    channel = grpc.insecure_channel(address, options=settings.grpc_options())
    if running is None:
        channel = with_service_token(channel, os.environ.get("LABSIGHT_SERVICE_TOKEN", ""))
    try:
        yield segmentation_pb2_grpc.SegmentationServiceStub(channel)
    finally:
        channel.close()
        if running is not None:
            running.stop(0)


def cmd_evaluate_classifier(args: argparse.Namespace) -> int:
    """Score a model on generated cells or HPA-format images; print the table and JSON line."""
    from labsight.models import model_dirs_from_env
    from services.classifier.repository import classifier_repository, load_thresholds

    if args.cells < 1:
        print("error: --cells must be positive", file=sys.stderr)
        return 1
    dirs = [*([args.model_dir] if args.model_dir else []), *model_dirs_from_env()]
    manifest = classifier_repository(dirs).get(args.model)
    thresholds = load_thresholds(manifest)
    predict = _predictor(manifest)
    try:
        if _hpa_mode(args):
            scores, extra = _evaluate_hpa(args, predict, thresholds)
        else:
            scores, extra = _evaluate_generated(args, predict, thresholds)
    except ValueError as error:
        print(f"labsight: {error}", file=sys.stderr)
        return 2
    _report({"model": f"{manifest.name} {manifest.version}", **extra}, scores,
            thresholds=thresholds.tolist(), only_json=args.json)
    return 0


def _predictor(manifest: Any) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 crops (N, 4, S, S) → probabilities through the model on ONNX Runtime, as served:
    one session on every usable CPU, each run the classifier service's rows per thread
    (``serving_config().run_rows``), which takes less CPU and arena memory than whole chunks."""
    from labsight.models import build_engine
    from labsight.runtime.cpus import usable_cpus
    from services.classifier.servicer import serving_config

    config = serving_config()
    threads = usable_cpus()
    engine = build_engine(manifest, "", "cpu", config.cache_dir, threads=threads,
                          run_rows=config.run_rows * threads)
    mean = np.asarray(manifest.preprocessing.mean, np.float32)[None, :, None, None]
    std = np.asarray(manifest.preprocessing.std, np.float32)[None, :, None, None]
    output = manifest.outputs[0]

    def predict(crops: np.ndarray) -> np.ndarray:
        rows = [engine.outputs((crops[i : i + 64].astype(np.float32) / 255 - mean) / std)[output]
                for i in range(0, len(crops), 64)]
        return np.concatenate(rows) if rows else np.zeros((0, manifest.num_classes), np.float32)

    return predict


def _evaluate_generated(args: argparse.Namespace, predict: Callable[[np.ndarray], np.ndarray],
                        thresholds: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from services.classifier.generated_cells import SHIFTED, STANDARD
    from services.classifier.training import SHIFTED_TEST, TEST, generated_cells, split_report

    style = SHIFTED if args.style == "shifted" else STANDARD
    cells = generated_cells(args.random_state, SHIFTED_TEST if args.style == "shifted" else TEST,
                            args.cells, style=style)
    return (split_report(predict(cells.crops), cells.classes, thresholds),
            {"data": f"generated, style {args.style}, random state {args.random_state}"})


def _evaluate_hpa(args: argparse.Namespace, predict: Callable[[np.ndarray], np.ndarray],
                  thresholds: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from services.classifier.hpa_training import image_scores
    from services.classifier.training import split_report

    images, _ = read_hpa_cells(args, lambda line: print(line, file=sys.stderr, flush=True))
    everything = images.cells(range(len(images.ids)))
    if not len(everything.classes):
        raise ValueError(f"{args.csv}: the segmentation found no cell in any image (check --pixel-size-um)")
    probabilities = predict(everything.crops)
    per_image = image_scores(probabilities, [len(c) for c in images.crops])
    return (split_report(probabilities, everything.classes, thresholds),
            {"data": f"hpa {args.csv}", "images": len(images.ids),
             "image_level": _summary(split_report(per_image, images.classes, thresholds))})


def _summary(image_scores: dict[str, Any]) -> dict[str, Any]:
    """Image-level scores (each class's highest cell probability per image against its labels)."""
    return {"images": image_scores["cells"], "mean_average_precision": image_scores["mean_average_precision"],
            "macro_f1": image_scores["macro_f1"]}


def _report(head: dict[str, Any], scores: dict[str, Any], *, thresholds: Sequence[float] | None,
            only_json: bool) -> None:
    """Print the per-class table (unless ``only_json``) and the JSON line of ``scores``."""
    from services.classifier.classes import CLASS_NAMES

    limits = thresholds if thresholds is not None else head.get("thresholds")
    classes = [
        {"index": i, "name": name, "positives": scores["positives"][i],
         "average_precision": scores["average_precision"][i], "f1": scores["f1"][i],
         **({"threshold": limits[i]} if limits is not None else {})}
        for i, name in enumerate(CLASS_NAMES)
    ]
    if not only_json:
        width = max(len(name) for name in CLASS_NAMES)
        print(f"{'#':>2}  {'class':<{width}}  {'cells':>6}  {'AP':>6}  {'F1':>6}")
        for row in classes:
            print(f"{row['index']:>2}  {row['name']:<{width}}  {row['positives']:>6}  "
                  f"{_number(row['average_precision'])}  {_number(row['f1'])}")
        print(f"{'':>2}  {'all (mAP, macro-F1)':<{width}}  {scores['cells']:>6}  "
              f"{_number(scores['mean_average_precision'])}  {_number(scores['macro_f1'])}")
    line = {key: value for key, value in head.items() if key != "thresholds"}
    line.update(cells=scores["cells"], mean_average_precision=_finite(scores["mean_average_precision"]),
                macro_f1=_finite(scores["macro_f1"]), classes=classes)
    print(json.dumps(line, allow_nan=False))


def _number(value: float | None) -> str:
    return "   n/a" if value is None or math.isnan(value) else f"{value:6.3f}"


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
