"""The CLI against a real in-process stack: folders in, readable files out, re-runs that
duplicate nothing, bad files named, and jobs, models and columns listed."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from labsight.catalog import GATEWAY
from labsight.cli import build_parser, main
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.images import encode_png
from labsight.redis_server import free_port
from labsight.runtime.server import RunningServer
from services.gateway.keys import RedisKeys
from services.gateway.servicer import register as register_gateway

from .conftest import InProcessStack

INTERNAL_WORDS = r"(?i)\b(?:seed|muse|issues?)\b"
"""Words of the project's history that mean nothing to users."""


def _gateway(stack: InProcessStack) -> list[str]:
    return ["--gateway", stack.gateway.address, "--token", ""]


def _cli(stack: InProcessStack, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one `labsight` command against the stack."""
    status = main([*args, *_gateway(stack)])
    out, err = capsys.readouterr()
    return status, out, err


def _plate(root: Path) -> list[Path]:
    """Three images in two subfolders; two share a file name."""
    paths = [root / "a" / "n_0.png", root / "b" / "n_0.png", root / "b" / "deeper" / "n_1.png"]
    for index, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(np.roll(demo_image(), index * 7, axis=1)))
    return paths


def test_a_rerun_batch_queues_nothing_twice_and_ids_keep_their_folders(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _plate(tmp_path / "plate")
    stack.start_worker()
    submit = ("submit", "fractal", str(tmp_path / "plate"), "--param", "box_sizes=3-9",
              "--batch", "plate-1", "--wait", "--json")
    status, _, err = _cli(stack, capsys, *submit)
    assert status == 2 and "no images" in err and "--recursive" in err
    assert stack.client.list_jobs() == []

    status, out, err = _cli(stack, capsys, *submit, "--recursive")
    assert status == 0, err
    assert err.splitlines()[0] == "labsight: batch plate-1: 3 jobs"
    first = [json.loads(line) for line in out.splitlines()]
    assert [job["input_name"] for job in first] == ["a/n_0.png", "b/deeper/n_1.png", "b/n_0.png"]

    status, out, err = _cli(stack, capsys, *submit, "--recursive")
    assert status == 0, err
    assert err.splitlines()[0].startswith("labsight: batch plate-1: 3 jobs (3 submitted before")
    assert [json.loads(line)["job_id"] for line in out.splitlines()] == [j["job_id"] for j in first]
    assert len(stack.client.list_jobs()) == 3 and stack.client.batch("plate-1").total == 3

    table = tmp_path / "fractal.csv"
    for _ in range(2):  # the README's export, run twice: the file is replaced, not appended to
        status, _, err = _cli(stack, capsys, "results", "--batch", "plate-1", "--table",
                              "weka_fractal", "-o", str(table))
        assert status == 0, err
    frame = pd.read_csv(table)
    assert sorted(frame["id"]) == ["a/n_0.png", "b/deeper/n_1.png", "b/n_0.png"]
    assert list(frame.columns[:3]) == ["id", "MinkLAC1", "MinkLAC2"]

    lines = tmp_path / "results.jsonl"
    assert _cli(stack, capsys, "results", "--batch", "plate-1", "-o", str(lines))[0] == 0
    assert len(lines.read_text().splitlines()) == 3
    with pytest.raises(SystemExit, match="--format json contradicts the output file"):
        main(["results", "--batch", "plate-1", "--format", "json", "-o", str(table),
              *_gateway(stack)])


def test_results_follow_writes_each_job_of_a_running_batch_as_it_ends(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _plate(tmp_path / "plate")
    assert _cli(stack, capsys, "submit", "fractal", str(tmp_path / "plate"), "--recursive",
                "--param", "box_sizes=3-9", "--batch", "plate-2")[0] == 0
    lines = tmp_path / "followed.jsonl"
    follow = threading.Thread(target=main, args=(
        ["results", "--batch", "plate-2", "--follow", "-o", str(lines), *_gateway(stack)],))
    follow.start()
    # No worker until the gateway's following stream listens to the batch: every job is
    # still queued when it first reads them.
    channel = RedisKeys(stack.settings.key_prefix).batch_events("default", "plate-2")
    events = redis.Redis.from_url(stack.settings.redis_url)
    deadline = time.monotonic() + 60
    while dict(events.pubsub_numsub(channel)).get(channel.encode(), 0) == 0:
        assert time.monotonic() < deadline, "the results stream never waited for the batch"
        time.sleep(0.05)
    stack.start_worker()
    follow.join(120)
    assert not follow.is_alive()
    written = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [line["job_id"] for line in written] == [
        job.job_id for job in stack.client.batch_jobs("plate-2")]
    assert all(line["scalars"]["fractal_dimension"] > 0 for line in written)
    with pytest.raises(SystemExit, match="--follow reads a batch"):
        main(["results", written[0]["job_id"], "--follow", *_gateway(stack)])


def test_resubmit_queues_the_same_files_again(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _plate(tmp_path)[0]
    ids = [_cli(stack, capsys, "submit", "fractal", str(image), *extra)[1].split()[0]
           for extra in ((), (), ("--resubmit",))]
    assert ids[0] == ids[1] != ids[2]
    stack.client.cancel(ids[0])
    status, out, err = _cli(stack, capsys, "submit", "fractal", str(image))
    assert status == 0 and out.split()[:3] == [ids[0], "fractal", "cancelled"]
    assert "1 of 1 jobs did not finish" in err and "--resubmit runs them anew" in err


def test_a_bad_file_is_named_and_nothing_is_queued(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _plate(tmp_path / "plate")
    notes = tmp_path / "plate" / "a" / "notes.png"
    notes.write_text("not an image")
    status, _, err = _cli(stack, capsys, "submit", "fractal", *map(str, good), str(notes))
    assert status == 2
    assert f"labsight: {notes}: is not a PNG, JPEG or TIFF image" in err
    assert "nothing was submitted" in err

    corrupt = tmp_path / "plate" / "b" / "broken.png"  # a PNG signature, then garbage
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    status, _, err = _cli(stack, capsys, "submit", "fractal", *map(str, good), str(corrupt))
    assert status == 2
    assert err.startswith(f"labsight: {corrupt}: INVALID_ARGUMENT: jobs[3]")
    assert "nothing of this batch was queued" in err
    assert stack.client.list_jobs() == []


def test_the_job_id_is_printed_before_waiting(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    image = _plate(tmp_path)[0]
    status, out, err = _cli(stack, capsys, "submit", "fractal", str(image), "--wait", "--json")
    assert status == 0, err
    job_id = json.loads(out)["job_id"]
    assert err.splitlines()[0] == f"labsight: job {job_id}"


def test_jobs_lists_recent_jobs_filtered_and_limited(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _plate(tmp_path)
    _cli(stack, capsys, "submit", "fractal", *map(str, paths), "--batch", "plate-2")
    _cli(stack, capsys, "submit", "fractal", str(paths[0]), "--param", "box_sizes=3-5")
    status, out, _ = _cli(stack, capsys, "jobs")
    header, *rows = out.splitlines()
    assert status == 0 and header.split() == ["JOB", "PIPELINE", "STATUS", "PROGRESS", "CREATED",
                                              "BATCH", "INPUT"]
    assert len(rows) == 4 and rows[0].split()[1:4] == ["fractal", "queued", "0%"]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+-\s+n_0\.png$", rows[0])
    _, out, _ = _cli(stack, capsys, "jobs", "--batch", "plate-2", "--limit", "2", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(job["batch_id"], job["input_name"]) for job in listed] == [
        ("plate-2", "a/n_0.png"), ("plate-2", "b/n_0.png")]
    assert _cli(stack, capsys, "jobs", "--status", "done")[1].splitlines()[1:] == []


def test_models_without_a_features_service_is_unavailable(
    serve: Callable[..., RunningServer], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.service_addresses = {name: f"127.0.0.1:{free_port()}"
                                  for name in ("features", "segmentation", "classifier")}
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    assert main(["models", "--gateway", gateway.address, "--token", ""]) == 2
    assert "UNAVAILABLE: models: the features service does not answer" in capsys.readouterr().err


def test_models_lists_models_versions_sizes_and_layers(
    stack: InProcessStack, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _cli(stack, capsys, "models")
    assert status == 0, err
    assert re.search(r"^efficientnet-lite0  version \S+, input 224x224 pixels  \(default model\)$",
                     out, re.MULTILINE)
    assert re.search(r"^inception-v3  version \S+, input 299x299 pixels$", out, re.MULTILINE)
    assert re.search(r"^    avgpool  \(default layer\)$", out, re.MULTILINE)
    listing = json.loads(_cli(stack, capsys, "models", "--json")[1])
    assert listing["default_model"] == "efficientnet-lite0"
    assert all("layer_paths" not in model for model in listing["models"])


def test_columns_explain_every_fractal_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["columns", "fractal"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^    MinkDF7 +box count N\(r\) at box side r = 15$", out, re.MULTILINE)
    assert "table weka_percolation:" in out and "Minkh20" in out
    assert re.findall(INTERNAL_WORDS, out) == []


def test_help_and_pipeline_texts_use_no_internal_words(
    stack: InProcessStack, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    texts = [parser.format_help()]
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    texts += [command.format_help() for name, command in commands.items()
              # their --seed is a random seed, not a history word
              if name not in ("train-features", "train-classifier", "train-vessel", "generate-vessels")]
    texts.append(_cli(stack, capsys, "pipelines")[1])
    assert [re.findall(INTERNAL_WORDS, text) for text in texts] == [[] for _ in texts]
