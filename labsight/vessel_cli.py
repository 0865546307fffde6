"""``labsight train-vessel``, ``evaluate-vessel`` and ``generate-vessels``: the vessel-content
network on data in the LabPics V2 folder layout.

- ``generate-vessels DIR``: write generated vessel photos with known layers in that layout
  (to try the commands, or to pre-train);
- ``train-vessel DATA``: train the LabPics network (the seed's Hungarian matching of its 10
  instance heads, pixel cross-entropy, Adam) and write a model directory the segmentation
  service serves (``weights.pt`` + ``manifest.toml``);
- ``evaluate-vessel DATA``: per-class IoU, panoptic quality at IoU 0.5 and fill-level errors
  of a trained model (``--model-dir``) or of the classical default; a table and one JSON line.

Bad data (no photo folders, unreadable masks) exits 2 naming the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the vessel-content commands to the ``labsight`` subcommands."""
    generate = sub.add_parser("generate-vessels", help="write generated vessel photos with known "
                              "layers in the LabPics V2 folder layout")
    generate.add_argument("destination", help="folder to write the photo folders into")
    generate.add_argument("--count", type=int, default=100, help="photos (default 100)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.set_defaults(func=cmd_generate_vessels)

    train = sub.add_parser("train-vessel", help="train the LabPics vessel-content network on "
                           "LabPics V2 folders")
    train.add_argument("data", help="folder of LabPics photo folders (Image.jpg, Data.json, ...)")
    train.add_argument("--model-dir", default="", help="model directory to write (default: "
                       "$LABSIGHT_MODEL_DIR/<name>)")
    train.add_argument("--name", default="labpics-vessel", help="the model's name")
    train.add_argument("--steps", type=int, default=1000, help="optimiser steps, one vessel each")
    train.add_argument("--width", type=float, default=1.0, choices=(1.0, 0.5, 0.25),
                       help="width factor: 1 is the seed's network, less is faster")
    train.add_argument("--max-side", type=int, default=512, help="photos shrunk to this side")
    train.add_argument("--learning-rate", type=float, default=1e-5, help="Adam (default 1e-5)")
    train.add_argument("--init", default="", help="state dict to start from (the seed's weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="", help="auto, cpu or cuda (default: $LABSIGHT_DEVICE, "
                       "else auto: the GPU when torch sees one)")
    train.set_defaults(func=cmd_train_vessel)

    evaluate = sub.add_parser("evaluate-vessel", help="score vessel-content segmentation on "
                              "LabPics V2 folders: class IoU, panoptic quality, fill levels")
    evaluate.add_argument("data", help="folder of LabPics photo folders")
    evaluate.add_argument("--model-dir", default="", help="a trained model directory (default: "
                          "the classical method)")
    evaluate.add_argument("--json", action="store_true", help="print only the JSON line")
    evaluate.set_defaults(func=cmd_evaluate_vessel)


def cmd_generate_vessels(args: argparse.Namespace) -> int:
    """Write ``--count`` generated photo folders."""
    from services.segmentation.generated_vessels import generate_vessels
    from services.segmentation.vessel_training import write_labpics

    if args.count < 1:
        print("labsight: --count: at least 1", file=sys.stderr)
        return 2
    written = write_labpics(generate_vessels(args.count, args.seed), Path(args.destination))
    print(f"labsight: wrote {len(written)} photo folders to {args.destination}", file=sys.stderr)
    return 0


def cmd_train_vessel(args: argparse.Namespace) -> int:
    """Train, write the model directory, print a JSON summary."""
    import torch

    from labsight.models import device_from_env, parse_device, resolve_device
    from services.segmentation.vessel_training import read_labpics, train_vessel_net

    torch.set_num_threads(max(1, int(os.environ.get("LABSIGHT_TRAIN_THREADS", "1"))))
    model_dir = Path(args.model_dir) if args.model_dir else None
    if model_dir is None:
        base = os.environ.get("LABSIGHT_MODEL_DIR", "").split(os.pathsep)[0]
        if not base:
            print("labsight: give --model-dir or set LABSIGHT_MODEL_DIR", file=sys.stderr)
            return 2
        model_dir = Path(base) / args.name
    try:
        device = resolve_device(parse_device(args.device, "--device") if args.device else device_from_env())
        examples = list(read_labpics(Path(args.data)))
        report = train_vessel_net(
            examples, model_dir, steps=args.steps, width_factor=args.width,
            max_side=args.max_side, learning_rate=args.learning_rate,
            initial=Path(args.init) if args.init else None, name=args.name, seed=args.seed,
            device=device)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"labsight: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"model_dir": str(report.model_dir), "vessels": len(examples),
                      "steps": report.steps, "first_loss": report.first_loss,
                      "last_loss": report.last_loss, "seconds": round(report.seconds, 2),
                      "device": device}))
    return 0


def cmd_evaluate_vessel(args: argparse.Namespace) -> int:
    """Score a model (or the classical method) on LabPics folders; table and JSON line."""
    from labsight.errors import FailedPrecondition
    from labsight.models import load_manifest, load_torch_model
    from services.segmentation.vessel_training import evaluate_vessels, read_labpics

    try:
        net, model = None, ""
        if args.model_dir:
            manifest = load_manifest(Path(args.model_dir) / "manifest.toml")
            net, model = load_torch_model(manifest), f"{manifest.name}:{manifest.version}"
        report = evaluate_vessels(list(read_labpics(Path(args.data))), net, model)  # type: ignore[arg-type]
    except (OSError, ValueError, FailedPrecondition) as error:
        print(f"labsight: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"method {report['method']}: {report['vessels']} vessels, panoptic quality "
              f"{report['panoptic_quality']:.3f}, mean instance IoU {report['mean_instance_iou']:.3f}, "
              f"mean fill-level error {report['mean_fill_error']:.3f}")
        print(f"{'class':<36} IoU")
        for name, value in sorted(report["class_iou"].items()):  # type: ignore[attr-defined]
            print(f"{name:<36} {value:.3f}")
    print(json.dumps(report))
    return 0
