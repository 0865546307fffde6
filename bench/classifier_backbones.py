"""Organelle classifier backbones on generated cells: does the offline ImageNet start help?

Run from the repository root (a GPU makes it minutes instead of hours):

    python bench/classifier_backbones.py [--train-cells 8000] \
        [--runs hpa-cell-cnn:10,hpa-cell-cnn:16,efficientnet-lite0:2,efficientnet-lite0:16]

Data: the shipped model's data (seed 2026): training, validation, held-out test and
shifted-style test cells of services.classifier.generated_cells, drawn once. Each run
``BACKBONE:EPOCHS`` trains that network from the same initialisation seed with
``services.classifier.training.fit`` (AdamW, warm-up and cosine schedule, rotations and
flips) for that many epochs, chooses per-class thresholds on the validation cells and
scores the test cells (macro-F1, mAP) and the shifted cells. ``efficientnet-lite0:2`` is
about what the default 540 s CPU budget lets Lite0 see (it trains ~5x slower per crop
on a CPU thread than hpa-cell-cnn, which gets ~10 epochs there). Printed: one line per
run and a JSON line; also each run's training crops/s on this device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.classifier.generated_cells import SHIFTED, STANDARD  # noqa: E402
from services.classifier.metrics import best_thresholds  # noqa: E402
from services.classifier.training import (  # noqa: E402
    DEFAULT_LEARNING_RATES,
    SHIFTED_TEST,
    TEST,
    TRAIN,
    VALIDATION,
    LabelledCrops,
    TrainingConfig,
    fit,
    new_network,
    predict_crops,
    split_report,
    three_way_report,
)


def _draw(split: int, count: int, seed: int) -> LabelledCrops:
    from services.classifier.training import generated_cells

    return generated_cells(seed, split, count, style=SHIFTED if split == SHIFTED_TEST else STANDARD)


def main() -> None:
    """Draw the data once, train each run, print its scores."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--train-cells", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--runs", default="hpa-cell-cnn:10,hpa-cell-cnn:16,efficientnet-lite0:2,"
                        "efficientnet-lite0:16,efficientnet-lite0:30")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-cells", type=int, default=0,
                        help="validation, test and shifted cells each (default: the shipped run's)")
    args = parser.parse_args()
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    defaults = TrainingConfig()
    evaluation = (defaults.validation_cells, defaults.test_cells, defaults.shifted_cells)
    counts = {TRAIN: args.train_cells, **{split: args.eval_cells or count for split, count in
                                          zip((VALIDATION, TEST, SHIFTED_TEST), evaluation, strict=True)}}
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = {split: pool.submit(_draw, split, count, args.seed) for split, count in counts.items()}
        data = {split: future.result() for split, future in futures.items()}
    print(f"data: {', '.join(f'{len(d.classes)}' for d in data.values())} cells (train, validation, "
          f"test, shifted) in {time.perf_counter() - started:.0f} s; device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else f", {torch.get_num_threads()} "
             "threads"), flush=True)
    results = []
    for run in args.runs.split(","):
        backbone, epochs = run.split(":")
        config = replace(defaults, seed=args.seed, epochs=int(epochs), backbone=backbone, device=device,
                         learning_rate=DEFAULT_LEARNING_RATES[backbone], time_budget=1e9)
        torch.manual_seed(config.seed)
        model = new_network(backbone)
        history, epochs_run, seconds = fit(model, data[TRAIN], config, 1e9, lambda _: None)
        model.to(device)  # type: ignore[attr-defined]
        thresholds = best_thresholds(predict_crops(model, data[VALIDATION].crops), data[VALIDATION].classes)
        test = split_report(predict_crops(model, data[TEST].crops), data[TEST].classes, thresholds)
        shifted_probabilities = predict_crops(model, data[SHIFTED_TEST].crops)
        shifted = split_report(shifted_probabilities, data[SHIFTED_TEST].classes, thresholds)
        three = three_way_report(shifted_probabilities, data[SHIFTED_TEST].classes, thresholds)
        result = {
            "backbone": backbone, "epochs": epochs_run, "parameters": sum(
                p.numel() for p in model.parameters()),  # type: ignore[attr-defined]
            "train_seconds": round(seconds, 1),
            "train_crops_per_s": round(epochs_run * len(data[TRAIN].classes) / seconds, 1),
            "final_loss": round(history[-1], 4),
            "test_macro_f1": round(test["macro_f1"], 4),  # type: ignore[arg-type]
            "test_map": round(test["mean_average_precision"], 4),  # type: ignore[arg-type]
            "shifted_macro_f1": round(shifted["macro_f1"], 4),  # type: ignore[arg-type]
            "shifted_map": round(shifted["mean_average_precision"], 4),  # type: ignore[arg-type]
            "shifted_three_way_argmax": three["argmax_accuracy"],
        }
        results.append(result)
        print(f"{backbone:>18} {epochs_run:5.1f} epochs: held-out macro-F1 {result['test_macro_f1']:.3f}, "
              f"mAP {result['test_map']:.3f}; shifted macro-F1 {result['shifted_macro_f1']:.3f}, "
              f"three-way {three['argmax_accuracy']:.3f}; {seconds:.0f} s training "
              f"({result['train_crops_per_s']:.0f} crops/s)", flush=True)
    print(json.dumps({"device": device, "seed": args.seed, "train_cells": len(data[TRAIN].classes),
                      "runs": results}))


if __name__ == "__main__":
    main()
