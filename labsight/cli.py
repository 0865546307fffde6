"""The ``labsight`` command: run the stack, serve one service, and use the gateway."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

from labsight import classifier_cli, evaluate_cli, explain_cli, inspect_cli, track_cli, vessel_cli
from labsight.catalog import SERVERS
from labsight.columns import CELL_CHANNELS, PIPELINES_WITH_TABLES
from labsight.export import (
    FORMATS,
    JSON_LINES,
    SUFFIX_FORMATS,
    TEXT_FORMATS,
    output_format,
    write_atomically,
    write_table,
)
from labsight.home import ENDPOINTS_FILE, GatewayNotFound, home_dir, read_endpoints
from labsight.inputs import IMAGE_SUFFIXES


class RecordedEndpoints:
    """The environment a process took from the endpoints of ``labsight up``, kept current.

    Variables already set are left alone; the others come from the endpoints,
    and ``refresh`` follows them when ``up`` restarts elsewhere (a new Redis port).
    """

    def __init__(self) -> None:
        endpoints = read_endpoints()
        recorded = endpoints.as_environment() if endpoints else {}
        self.names = {name for name in recorded if name not in os.environ}
        os.environ.update({name: recorded[name] for name in self.names})

    def refresh(self) -> bool:
        """Re-read the endpoints; True if a variable taken from them changed (now applied)."""
        endpoints = read_endpoints()
        recorded = endpoints.as_environment() if endpoints else {}
        changed = {name: value for name, value in recorded.items()
                   if name in self.names and os.environ.get(name) != value}
        os.environ.update(changed)
        return bool(changed)


def job_to_dict(job: Any) -> dict[str, Any]:
    """A Job message as a JSON-ready dict with a lower-case status name."""
    from labsight.v1 import gateway_pb2 as pb

    data = MessageToDict(job, preserving_proto_field_name=True)
    data["status"] = pb.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower()
    return data


def _parse_pairs(pairs: Sequence[str], option: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"labsight: {option} expects key=value, got {pair!r}")
        parsed[key] = value
    return parsed


def _load_array(path: Path) -> np.ndarray:
    """An array from a .npy file, or from a CSV/TSV of numbers only (one row per line)."""
    if not path.is_file():
        raise SystemExit(f"labsight: --tensor: no such file {path}")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix.lower() in (".csv", ".tsv"):
        return _load_number_table(path, "," if path.suffix.lower() == ".csv" else "\t")
    raise SystemExit(f"labsight: --tensor {path}: expected a .npy, .csv or .tsv file")


def _load_number_table(path: Path, delimiter: str) -> np.ndarray:
    """The numbers of a CSV/TSV file. A first line with a name in it is a header: then the
    columns named x and y (any case) are taken when it has both, else every column."""
    with path.open() as handle:
        first = handle.readline()
    names = [name.strip().strip('"').lower() for name in first.split(delimiter)]
    header = any(name and not _is_number(name) for name in names)
    if header and names[0] == "barcode":
        raise SystemExit(f"labsight: --tensor {path} is Space Ranger's spot positions file; "
                         "give its folder instead: --visium SPACERANGER_OUT")
    columns = [names.index("x"), names.index("y")] if {"x", "y"} <= set(names) else None
    try:
        return np.loadtxt(path, delimiter=delimiter, ndmin=2, skiprows=int(header), usecols=columns)
    except ValueError as error:
        raise SystemExit(f"labsight: --tensor {path}: expected numbers below an optional header "
                         f"line ({error})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cmd_up(args: argparse.Namespace) -> int:
    """Start Redis, all services and workers; optionally run the demo; serve until stopped."""
    from labsight.client import LabSightClient
    from labsight.demo import run_demo
    from labsight.runtime.server import stop_on_signals
    from labsight.up import Stack, StackLayout, describe, serve_until

    stop = stop_on_signals()  # before any child starts, so Ctrl-C always stops them all
    home = home_dir()
    try:
        layout = StackLayout.from_base_port(args.base_port, args.workers)
    except ValueError as error:  # a malformed sizing variable (LABSIGHT_REPLICAS)
        print(f"labsight up: {error}", file=sys.stderr)
        return 2
    stack = Stack(home, layout)
    print(f"labsight up: starting in {home} ...", flush=True)
    try:
        stack.start(os.environ.get("REDIS_URL"))
        print(describe(stack), flush=True)
        print("labsight up: all services SERVING; Ctrl-C stops everything", flush=True)
        if args.demo:
            endpoints = stack.endpoints()
            with LabSightClient(endpoints.gateway, token=endpoints.token) as client:
                print(json.dumps({"demo": run_demo(client)}), flush=True)
        return 0 if args.demo and args.exit_after_demo else serve_until(stack, stop)
    except RuntimeError as error:
        print(f"labsight up: {error}", file=sys.stderr)
        return 1
    finally:
        print("labsight up: stopping ...", flush=True)
        stack.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service in the foreground."""
    from labsight.runtime.entry import run_service_named

    RecordedEndpoints()
    run_service_named(args.service)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one worker in the foreground."""
    from services.gateway.worker import main as worker_main

    recorded = RecordedEndpoints()
    # A worker that found Redis through `up` follows it when `up` restarts on another port.
    worker_main(recorded.refresh if "REDIS_URL" in recorded.names else None)
    return 0


def _client(args: argparse.Namespace) -> Any:
    from labsight.client import LabSightClient

    return LabSightClient(args.gateway, token=args.token)


def _add_visium_input(
    args: argparse.Namespace, params: dict[str, str], tensors: dict[str, np.ndarray]
) -> None:
    """Make ``args.images``, ``params`` and ``tensors`` the in-tissue spots of the Space Ranger
    folder ``args.visium`` on its full-resolution image; --param values given win."""
    from labsight.visium import find_fullres_image, read_spaceranger

    folder = Path(args.visium)
    if args.pipeline != "spot-features" or args.images:
        raise SystemExit("labsight: --visium goes with `submit spot-features` and no image "
                         "arguments (the image is --image or found in the folder)")
    try:
        image = Path(args.image) if args.image else find_fullres_image(folder)
        every = read_spaceranger(folder, image)
    except ValueError as error:
        raise SystemExit(f"labsight: {error}") from None
    if image is None:
        raise SystemExit(f"labsight: --visium {folder}: Space Ranger keeps no full-resolution "
                         "image in its output; give the one it was run on with --image FULLRES.tif")
    spots = every.tissue_spots()
    if not spots.barcodes:
        raise SystemExit(f"labsight: --visium {folder}: no spot is in the tissue")
    args.images = [str(image)]
    tensors["spot_centres"] = spots.centres
    params.setdefault("spot_ids", ",".join(spots.barcodes))
    if "spot_diameter_um" not in params:  # a diameter in micrometres given instead wins
        params.setdefault("spot_diameter", repr(spots.spot_diameter))
    diameter = (f"{params['spot_diameter_um']} µm" if "spot_diameter_um" in params
                else f"{params['spot_diameter']} px")
    print(f"labsight: {len(spots.barcodes)} of {len(every.barcodes)} spots of "
          f"{spots.library_id} are in the tissue; spot diameter {diameter} on {image}",
          file=sys.stderr)


STACK_HINT_FILES = 256
"""From this many images, ``labsight submit`` of a pipeline that takes stacks mentions ``--stack``
(64² fractal tiles, bench/small_jobs.py, 2026-12-06 23:05-23:40 UTC: 2,475-3,095 images/s as stacks of
256, 2,317-2,636 as stacks of 64, 1,182-1,242 as a job each)."""


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one job per image (several images, or --batch, go as one batch); --wait shows
    progress on a terminal and prints each job's final state and result.

    Folders are expanded and every file is checked before anything is sent; each job is
    named by its file's path relative to the files' common folder and keyed by its content
    and parameters, so submitting the same files again queues nothing twice. A batch goes in
    parts, each recorded once queued: --resume after an interruption sends only the rest."""
    from labsight.results import result_to_dict

    if args.resume and args.resubmit:
        raise SystemExit("labsight: --resume continues a submission by its jobs' keys, which "
                         "--resubmit leaves out; give one of them")
    params = _parse_pairs(args.param, "--param")
    labels = _parse_pairs(args.label, "--label")
    tensors = {role: _load_array(Path(path))
               for role, path in _parse_pairs(args.tensor, "--tensor").items()}
    extra_images = {role: Path(path)
                    for role, path in _parse_pairs(args.input_image, "--input-image").items()}
    if args.mask:
        extra_images["vessel_mask"] = Path(args.mask)
    if args.visium:
        _add_visium_input(args, params, tensors)
    elif not args.images and not any(getattr(args, channel) for channel in CELL_CHANNELS):
        if not args.tensor:
            raise SystemExit("labsight: give the images to submit (or --visium SPACERANGER_OUT, or "
                             "--tensor arrays alone for one job without an image, e.g. "
                             "--tensor tiles=stack.npy)")
    files = _submitted_inputs(args)
    if files is None:
        return 2
    if args.each_series:
        files = _each_series(args, files, params)
        if files is None:
            return 2
    if args.each_plane:
        files = _each_plane(args, files, params)
        if files is None:
            return 2
    if args.stack:
        files = _stacked_inputs(args, files, tensors)
        if files is None:
            return 2
    elif len(files) >= STACK_HINT_FILES and args.pipeline in _stack_pipelines():
        print(f"labsight: {len(files)} images, a job each; small images of one size run faster as "
              "stacks: --stack 256 sends up to 256 per job (result rows named by file; for fractal, "
              "--param probabilities=false keeps each result small)",
              file=sys.stderr)
    requests = (_file_request(args, file, params, labels, tensors, extra_images) for file in files)
    with _client(args) as client:
        job_ids = _submit_files(client, args, files, requests)
        if job_ids is None:
            return 2
        statuses = []
        for job_id in job_ids:
            job = _wait_with_progress(client, job_id) if args.wait else client.get(job_id)
            line = job_to_dict(job)
            if args.wait and line["status"] == "done":
                line["result"] = result_to_dict(client.result(job_id))
            statuses.append(line["status"])
            print(json.dumps(line) if args.json else _job_line(line), flush=True)
    ended_badly = sum(status in ("failed", "dead", "cancelled") for status in statuses)
    if ended_badly and not args.resubmit:
        print(f"labsight: {ended_badly} of {len(job_ids)} jobs did not finish; submitting the same "
              "files and parameters again returns these jobs, --resubmit runs them anew",
              file=sys.stderr)
    return 0 if not args.wait or statuses.count("done") == len(statuses) else 1


def _input_files(args: argparse.Namespace) -> list[Any] | None:
    """The files of ``args.images`` (folders expanded), all checked; None after saying what is
    wrong with them (nothing is sent then)."""
    from labsight.inputs import InputError, check_inputs, expand_inputs, input_names

    try:
        paths = expand_inputs(args.images, args.recursive)
        check_inputs(paths)
    except InputError as error:
        _say_nothing_submitted(error)
        return None
    return input_names(paths)


def _submitted_inputs(args: argparse.Namespace) -> list[Any] | None:
    """The files of ``args.images`` (see _input_files) or of --red/--green/--blue/--yellow;
    for a 4-channel pipeline, HPA-named files (ID_red.png ...) grouped into one input per ID.
    None after saying what is wrong (nothing is sent then)."""
    from labsight.inputs import (
        FOUR_CHANNEL_PIPELINES,
        InputError,
        InputFile,
        channel_files,
        check_inputs,
        group_channel_files,
    )

    flags = [getattr(args, channel) for channel in CELL_CHANNELS]
    if not args.images and not any(flags) and args.tensor:  # one job of the arrays alone
        first = Path(next(iter(_parse_pairs(args.tensor, "--tensor").values())))
        return [InputFile(first, "")]
    four = args.pipeline in FOUR_CHANNEL_PIPELINES
    if any(flags) and (not four or not all(flags) or args.images):
        raise SystemExit("labsight: --red, --green, --blue and --yellow go together, without other "
                         f"images, with a 4-channel pipeline ({', '.join(FOUR_CHANNEL_PIPELINES)})")
    try:
        if any(flags):
            paths = [Path(flag) for flag in flags]
            check_inputs(paths)
            return [channel_files(*paths)]
        files = _input_files(args)
        if files is None or not four:
            return files
        sets, others = group_channel_files(files)
        return [*sets, *others]
    except InputError as error:
        _say_nothing_submitted(error)
        return None


def _say_nothing_submitted(error: Exception) -> None:
    """Print what is wrong with the inputs, a line each, and that nothing was sent."""
    for line in [*str(error).splitlines(), "nothing was submitted"]:
        print(f"labsight: {line}", file=sys.stderr)


def _each_series(args: argparse.Namespace, files: list[Any], params: dict[str, str]
                 ) -> list[Any] | None:
    """--each-series: every image of the files holding several as a job of its own (see
    labsight.inputs.each_series); None after saying what is wrong (nothing is sent then)."""
    from labsight.inputs import each_series

    if args.stack or "series" in params:
        raise SystemExit("labsight: --each-series makes a job of every image of each file; it goes "
                         "without --stack and without --param series")
    return _expanded("--each-series", files, each_series)


def _each_plane(args: argparse.Namespace, files: list[Any], params: dict[str, str]
                ) -> list[Any] | None:
    """--each-plane AXIS: every plane along AXIS of the files as a job of its own (see
    labsight.inputs.each_plane); None after saying what is wrong (nothing is sent then)."""
    from labsight.inputs import each_plane

    if args.stack:
        raise SystemExit("labsight: --each-plane makes a job of every plane of each file; it goes "
                         "without --stack")
    if params.get("plane", "").strip().isdigit():
        raise SystemExit("labsight: with --each-plane, name the axis of --param plane (z=3, not 3)")
    return _expanded("--each-plane", files, lambda chosen: each_plane(chosen, args.each_plane))


def _expanded(flag: str, files: list[Any], expand: Callable[[list[Any]], list[Any]]
              ) -> list[Any] | None:
    """``expand(files)`` for ``flag``, which takes single image files; None after saying what is
    wrong with them (nothing is sent then)."""
    from labsight.inputs import InputError, InputFile

    if any(not isinstance(file, InputFile) for file in files):
        raise SystemExit(f"labsight: {flag} takes image files, not sets of channel files")
    try:
        return expand(files)
    except InputError as error:
        _say_nothing_submitted(error)
        return None


def _stack_pipelines() -> set[str]:
    """The pipelines ``--stack`` packs images for."""
    from labsight.stack_inputs import STACK_ROLES

    return set(STACK_ROLES)


def _stacked_inputs(args: argparse.Namespace, files: list[Any], tensors: dict[str, np.ndarray]
                    ) -> list[Any] | None:
    """--stack N: the files packed into stacks of up to N same-size images, one job each
    (labsight.stack_inputs); None after saying what is wrong (nothing is sent then)."""
    from labsight.inputs import InputError, InputFile
    from labsight.stack_inputs import STACK_ROLES, stack_files

    role = STACK_ROLES.get(args.pipeline)
    if args.stack < 0:
        raise SystemExit(f"labsight: --stack must be a number of images >= 1, got {args.stack}")
    if role is None:
        raise SystemExit(f"labsight: --stack packs images into the stack of "
                         f"{' or '.join(f'{p} ({r})' for p, r in STACK_ROLES.items())}, not of "
                         f"{args.pipeline}")
    if role in tensors or not args.images or not all(isinstance(f, InputFile) for f in files):
        raise SystemExit(f"labsight: --stack packs image files into tensor {role!r}; give image "
                         f"files or folders, without --tensor {role}=...")
    try:
        return list(stack_files(files, args.stack))
    except InputError as error:
        _say_nothing_submitted(error)
        return None


def _file_request(args: argparse.Namespace, file: Any, params: dict[str, str],
                  labels: dict[str, str], tensors: dict[str, np.ndarray],
                  extra_images: dict[str, Path]) -> Any:
    """The SubmitJobRequest of one input file (or set of channel files), named and keyed
    (see cmd_submit)."""
    from labsight.client import build_request
    from labsight.inputs import ChannelFiles, content_key
    from labsight.stack_inputs import StackFiles, stack_request
    from labsight.v1 import tensor_pb2

    # A set of channel files sends them as input images by channel, and only a name as image;
    # a job of --tensor arrays alone has no image (its file is the first array's); a stack of
    # files (--stack) goes as the pipeline's stack tensor, each image named by its file.
    if isinstance(file, StackFiles):
        request = stack_request(args.pipeline, file, params, priority=args.priority, labels=labels,
                                tensors=tensors, images=extra_images)
    else:
        image, images = ((tensor_pb2.Image(name=file.name), {**extra_images, **file.channels})
                         if isinstance(file, ChannelFiles) else
                         (None if not file.name else file.path, extra_images))
        request = build_request(args.pipeline, image, _file_params(file, params),
                                priority=args.priority, labels=labels, tensors=tensors, images=images)
    if file.name:
        request.input.image.name = file.name
    if not args.resubmit:
        request.idempotency_key = content_key(request)
    return request


def _file_params(file: Any, params: dict[str, str]) -> dict[str, str]:
    """``params`` with the image (--each-series) and the plane (--each-plane, added to a plane
    given with --param) this file's job reads."""
    series, plane = getattr(file, "series", ""), getattr(file, "plane", "")
    chosen = dict(params)
    if series:
        chosen["series"] = series
    if plane:
        chosen["plane"] = f"{params['plane']},{plane}" if params.get("plane") else plane
    return chosen


def _submit_files(client: Any, args: argparse.Namespace, files: list[Any],
                  requests: Iterator[Any]) -> list[str] | None:
    """Submit the requests (one job, or one batch); the job ids, printed on stderr before any
    waiting. None after naming the file the gateway refused.

    A batch of keyed jobs goes in parts, each recorded in a journal once queued, so that
    --resume after an interruption sends only the rest (see labsight.batch_submit); with
    --resubmit (no keys) it goes in one stream, all or none."""
    from labsight.batch_submit import PART_JOBS, journal_path, submission_id, submit_in_parts
    from labsight.progress import ProgressBar

    if len(files) == 1 and not args.batch:
        try:
            job_id = client.submit_request(next(requests)).job_id
        except grpc.RpcError as error:
            print(f"labsight: {_refused_file(error, files)}: {error.code().name}: {error.details()}",
                  file=sys.stderr)
            return None
        print(f"labsight: job {job_id}", file=sys.stderr, flush=True)
        return [job_id]
    before = _batch_total(client, args.batch) if not args.resume else 0
    from labsight.stack_inputs import StackFiles

    # another packing, another submission
    packed = ([f"--stack={args.stack}"] if args.stack else []) + (
        ["--each-series"] if args.each_series else []) + (
        [f"--each-plane={args.each_plane}"] if args.each_plane else [])
    submission = submission_id(client.address, args.pipeline, [*args.param, *packed], args.label,
                               args.priority, args.tensor, args.input_image, args.mask,
                               [str(Path(path).resolve()) for file in files for path in (
                                   [part.path for part in file.files] if isinstance(file, StackFiles)
                                   else [file.path])])
    bar = ProgressBar(lines=len(files) > PART_JOBS)  # on a pipe, a line per part if several
    done = 0

    def on_part(submitted: int, total: int) -> None:
        nonlocal done
        done = submitted
        bar.update(submitted, total, "files submitted")

    try:
        if args.resubmit:
            batch = client.submit_batch(requests, batch_id=args.batch)
            batch_id, job_ids, sent = batch.batch_id, list(batch.job_ids), len(batch.job_ids)
        else:
            submitted = submit_in_parts(client, requests, len(files), journal_path(submission),
                                        batch_id=args.batch, resume=args.resume, on_part=on_part)
            batch_id, job_ids, sent = submitted.batch_id, submitted.job_ids, submitted.sent
    except grpc.RpcError as error:
        bar.close()
        print(f"labsight: {_refused_file(error, files, done)}: {error.code().name}: "
              f"{error.details()}", file=sys.stderr)
        if done:
            print(f"labsight: the first {done} of {len(files)} files are queued; submit them "
                  "again with --resume to send the rest", file=sys.stderr)
        return None
    except ValueError as error:  # --batch other than the resumed submission's
        raise SystemExit(f"labsight: {error}") from None
    except KeyboardInterrupt:
        bar.close()
        print(f"labsight: interrupted; the first {done} of {len(files)} files are queued, run the "
              "same command with --resume to send the rest", file=sys.stderr)
        raise
    bar.close()
    reused = len(set(job_ids)) - (_batch_total(client, batch_id) - before)
    note = (f" ({reused} submitted before with the same file and parameters: their earlier "
            "jobs are reused; --resubmit queues them anew)") if reused > 0 else ""
    resumed = f", {len(job_ids) - sent} queued before this resumed run" if args.resume else ""
    print(f"labsight: batch {batch_id}: {len(job_ids)} jobs{resumed}{note}", file=sys.stderr,
          flush=True)
    if args.wait:
        _show_batch_progress(client, batch_id)
    return job_ids


def _batch_total(client: Any, batch_id: str) -> int:
    """Jobs in the caller's batch ``batch_id`` so far; 0 for none or a batch that does not exist."""
    if not batch_id:
        return 0
    try:
        return int(client.batch(batch_id).total)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return 0


def _refused_file(error: grpc.RpcError, files: list[Any], offset: int = 0) -> str:
    """The file a refusal is about: the one at the gateway's ``jobs[i]`` (of a part that began
    with file ``offset``), else the only one."""
    found = re.search(r"\bjobs\[(\d+)\]", error.details() or "")
    if found and offset + int(found.group(1)) < len(files):
        return str(files[offset + int(found.group(1))].path)
    return str(files[0].path) if len(files) == 1 else "batch"


def _show_batch_progress(client: Any, batch_id: str) -> None:
    from labsight.progress import ProgressBar

    bar = ProgressBar()
    try:
        for batch in client.watch_batch(batch_id):
            ended = sum(n for status, n in batch.counts.items()
                        if status not in ("queued", "running"))
            detail = " ".join(f"{status} {n}" for status, n in sorted(batch.counts.items()))
            bar.update(ended, batch.total, detail)
    except grpc.RpcError:
        pass  # the bar is a nicety: each job is waited for (polling if need be) afterwards
    finally:
        bar.close()


def _wait_with_progress(client: Any, job_id: str) -> Any:
    from labsight.client import TERMINAL
    from labsight.progress import ProgressBar, rate_and_time_left
    from labsight.v1 import gateway_pb2 as pb

    bar = ProgressBar()
    try:
        for job in client.watch(job_id):
            status = pb.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower()
            speed = rate_and_time_left(job.progress_rate, job.progress_unit, job.eta_seconds)
            bar.update(round(job.progress * 100), 100,
                       f"% {status} {job.progress_message}" + (f" ({speed})" if speed else ""))
            if job.status in TERMINAL:
                return job
    except grpc.RpcError:
        pass  # no watch stream free, or the stream broke: wait() polls, without a bar
    finally:
        bar.close()
    return client.wait(job_id)


def _unanswered_gateway(args: argparse.Namespace) -> str:
    """Which gateway did not answer, and where its address came from."""
    if args.gateway:
        return f"the gateway at {args.gateway} (--gateway) does not answer"
    if os.environ.get("LABSIGHT_GATEWAY_ADDR"):
        return (f"the gateway at {os.environ['LABSIGHT_GATEWAY_ADDR']} "
                "($LABSIGHT_GATEWAY_ADDR) does not answer")
    endpoints = read_endpoints()
    where = f"{home_dir() / ENDPOINTS_FILE}"
    address = endpoints.gateway if endpoints else "?"
    return (f"the gateway of `labsight up` at {address} (recorded in {where}) does not "
            f"answer; is it still starting, or did it stop? (see {home_dir() / 'logs'})")


def _job_line(job: dict[str, Any]) -> str:
    text = f"{job['job_id']}  {job['pipeline']:<14} {job['status']:<9} {job.get('input_name', '')}"
    if job.get("error"):
        text += f"  error: {job['error']}"
    if "result" in job:
        text += f"  scalars: {json.dumps(job['result']['scalars'])}"
    for warning in job.get("warnings", []):
        text += f"\n  warning: {warning}"
    return text


def cmd_status(args: argparse.Namespace) -> int:
    """Print a job's state (or follow it with --watch)."""
    with _client(args) as client:
        jobs = client.watch(args.job_id) if args.watch else [client.get(args.job_id)]
        for job in jobs:
            line = job_to_dict(job)
            print(json.dumps(line) if args.json else _job_line(line), flush=True)
    return 0


def _finished(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """Job and result of ``args.job_id``, or of every finished job of ``args.batch`` as the
    batch's results stream in (one result held at a time; with ``args.follow``, each as its
    job ends, until the batch has ended)."""
    if bool(args.job_id) == bool(args.batch):
        raise SystemExit("labsight: give either a JOB_ID or --batch BATCH_ID")
    follow = getattr(args, "follow", False)
    if follow and not args.batch:
        raise SystemExit("labsight: --follow reads a batch: give --batch BATCH_ID")
    with _client(args) as client:
        if args.batch:
            yield from ((job, result) for job, result in client.batch_results(args.batch, follow)
                        if result)
        else:
            yield client.get(args.job_id), client.result(args.job_id)


def _plotted(args: argparse.Namespace) -> list[tuple[Any, Any]]:
    """Job and result of ``args.job_id`` or of every finished job of ``args.batch``; when
    there are several, each result is cut down to what figures of several results read
    (``labsight.plots.keep_for_several``) as the results stream in."""
    from labsight.plots import keep_for_several

    finished: list[tuple[Any, Any]] = []
    for job, result in _finished(args):
        finished.append((job, result))
        if len(finished) == 2:
            keep_for_several(finished[0][1])
        if len(finished) >= 2:
            keep_for_several(result)
    return finished


def _job_labels(finished: list[tuple[Any, Any]], label: str) -> list[str]:
    """Each job's value of ``label``; SystemExit naming the jobs without it."""
    missing = [job.job_id for job, _ in finished if label not in job.labels]
    if missing:
        raise SystemExit(f"labsight: jobs without label {label!r}: {missing[:5]}")
    return [job.labels[label] for job, _ in finished]


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the results of a job or batch into an image file: fractal curves, a PCA, spots or
    cells over their image, or a plate heatmap."""
    from labsight.inputs import FOUR_CHANNEL_PIPELINES
    from labsight.plots import (
        PlotOptions,
        load_cells_image,
        load_image,
        plot_hints,
        plot_results,
        read_groups,
    )

    if args.class_label and args.groups:
        raise SystemExit("labsight: give --by LABEL or --groups CSV, not both")
    finished = _plotted(args)
    if not finished:
        raise SystemExit("labsight: no finished results to plot")
    results = [result for _, result in finished]
    try:
        # A spot job's diameter places its spots; several jobs share no image.
        diameter = float(results[0].provenance.get("spot_diameter_px")
                         or finished[0][0].params.get("spot_diameter") or 0) if len(finished) == 1 else 0.0
        # A 4-channel job's image may be one of its channel files (ID_red.png: all four are
        # read); a cells job whose channels are named by role reads its image as it is.
        four = (finished[0][0].pipeline in FOUR_CHANNEL_PIPELINES
                and not finished[0][0].params.get("nucleus_channel"))
        options = PlotOptions(
            kind=args.kind, table=args.table, colour_by=args.colour_by, spot_diameter=diameter,
            ids=args.ids,
            groups=_job_labels(finished, args.class_label) if args.class_label else None,
            group_map=read_groups(Path(args.groups)) if args.groups else None,
            # Read as the job read its input (its channels, plane, z_project, intensity).
            image=(load_cells_image(Path(args.image), finished[0][0].params) if four else
                   load_image(Path(args.image), "--image", read=finished[0][0].params))
            if args.image else None,
            cell_labels=load_image(Path(args.cell_labels), "--cell-labels", labels=True)
            if args.cell_labels else None,
        )
        kind = plot_results(results, Path(args.output), options)
    except (ValueError, OSError) as error:
        raise SystemExit(f"labsight: {error}") from None
    count = f"{len(results)} result" + ("s" if len(results) != 1 else "")
    print(f"labsight: {kind} plot of {count} written to {args.output}", file=sys.stderr)
    for hint in plot_hints(results, options, kind):
        print(f"labsight: {hint}", file=sys.stderr)
    return 0


def _write_spatial_h5ad(
    args: argparse.Namespace, results: list[Any], table: str, class_labels: list[str] | None
) -> int:
    """The results as h5ad with a Space Ranger folder's layout (--visium) and/or filled into an
    existing h5ad by barcode (--into; written back to it unless -o names another file)."""
    import anndata

    from labsight.export import results_to_anndata
    from labsight.spatial import add_visium, fill_anndata
    from labsight.visium import read_spaceranger

    output = Path(args.output or args.into)
    if args.format not in ("", "h5ad") or output.suffix.lower() != ".h5ad":
        raise SystemExit("labsight: --visium and --into write an .h5ad file (-o x.h5ad)")
    try:
        adata = results_to_anndata(results, table, class_labels)
        if args.into:
            target = anndata.read_h5ad(args.into)
            filled = fill_anndata(target, adata)
            print(f"labsight: features for {filled} of the {target.n_obs} spots of {args.into}",
                  file=sys.stderr)
            adata = target
        if args.visium:
            add_visium(adata, read_spaceranger(Path(args.visium)))
    except ValueError as error:
        raise SystemExit(f"labsight: {error}") from None
    write_atomically(output, adata.write_h5ad)
    return 0


def _writing_masks(finished: Iterator[tuple[Any, Any]], folder: Path) -> Iterator[tuple[Any, Any]]:
    """``finished`` passed on, each result's label masks first written as int32 TIFFs into
    ``folder``; the paths are printed once all are written (a repeated name renames files)."""
    from labsight.result import MaskWriter

    writer = MaskWriter(folder)
    for job, result in finished:
        try:
            writer.add(result)
        except KeyError as error:
            raise SystemExit(f"labsight: --masks: {error.args[0]}") from None
        yield job, result
    for path in writer.written:
        print(f"labsight: wrote {path}", file=sys.stderr)


def _write_json_lines(finished: Iterator[tuple[Any, Any]], output: str) -> None:
    """Each result as a JSON line, written as it arrives, to stdout or (replaced whole) ``output``."""
    from labsight.results import result_to_dict

    def write(stream: Any) -> None:
        for _, result in finished:
            stream.write(json.dumps({"job_id": result.job_id, **result_to_dict(result)}) + "\n")

    if not output:
        write(sys.stdout)
        return

    def write_file(path: Path) -> None:
        with path.open("w") as stream:
            write(stream)

    write_atomically(Path(output), write_file)


def _table_results(
    finished: Iterator[tuple[Any, Any]], table: str, class_label: str
) -> tuple[list[Any], str, list[str] | None]:
    """The results cut down to ``table`` (the first result's first table by name when empty),
    the table, and each job's value of ``class_label`` (None without it); SystemExit naming
    jobs without that label."""
    from labsight.export import keep_table

    kept: list[tuple[Any, Any]] = []
    for job, result in finished:
        table = table or next(iter(sorted(result.tables)), "")
        kept.append((job, keep_table(result, table)))
    labels = _job_labels(kept, class_label) if class_label else None
    return [result for _, result in kept], table, labels


def cmd_results(args: argparse.Namespace) -> int:
    """Print or save the results of a job or of a whole batch (JSON, or one table as a file);
    the format follows the -o file's suffix, and a file is replaced whole.

    A batch's results stream in one at a time: JSON lines and masks are written as
    they come, and a table export keeps only that table of each result.
    """
    try:
        # --into writes back into its file; --visium makes an h5ad, and says so if -o is not one
        fmt = output_format(args.output or args.into, args.format or ("h5ad" if args.visium else ""))
    except ValueError as error:
        raise SystemExit(f"labsight: {error}") from None
    finished = _finished(args)
    if args.masks:
        finished = _writing_masks(finished, Path(args.masks))
        if not (args.output or args.format):
            for _ in finished:
                pass
            return 0
    if fmt == JSON_LINES:
        _write_json_lines(finished, args.output)
        return 0
    results, table, class_labels = _table_results(finished, args.table, args.class_label)
    if not results:
        print("labsight: no finished results to export", file=sys.stderr)
        return 2
    if args.visium or args.into:
        return _write_spatial_h5ad(args, results, table, class_labels)
    if args.output:
        write_table(results, table, Path(args.output), fmt, class_labels)
    elif fmt in TEXT_FORMATS:
        write_table(results, table, sys.stdout, fmt, class_labels)
    else:
        print(f"labsight: --format {fmt} needs -o FILE", file=sys.stderr)
        return 2
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job."""
    with _client(args) as client:
        print(json.dumps(job_to_dict(client.cancel(args.job_id))))
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    """List the gateway's pipelines."""
    with _client(args) as client:
        for info in client.pipelines():
            state = "available" if info.available else "planned"
            print(f"{info.name:<15} {state:<10} {info.description}")
            for param in info.parameters:
                print(f"    {param.name}={param.default_value}  {param.description}")
    return 0


def _positive(text: str) -> int:
    """An integer >= 1 from the command line."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def cmd_jobs(args: argparse.Namespace) -> int:
    """List the caller's recent jobs, newest first (a batch's in submission order)."""
    from labsight.v1 import gateway_pb2 as pb

    status = pb.JobStatus.Value(f"JOB_STATUS_{args.status.upper()}") if args.status else 0
    with _client(args) as client:
        jobs: list[Any] = []
        token = ""
        while len(jobs) < args.limit:
            page = client.stub.ListJobs(
                pb.ListJobsRequest(batch_id=args.batch, status=status,
                                   page_size=args.limit - len(jobs), page_token=token),
                timeout=client.timeout_s, metadata=client.metadata)
            jobs += page.jobs
            token = page.next_page_token
            if not token:
                break
    if args.json:
        for job in jobs:
            print(json.dumps(job_to_dict(job)))
        return 0
    print(f"{'JOB':<32}  {'PIPELINE':<14} {'STATUS':<9} {'PROGRESS':>8}  {'CREATED':<19}  "
          f"{'BATCH':<20} INPUT")
    for job in jobs:
        line = job_to_dict(job)
        created = job.created_at.ToDatetime(tzinfo=UTC).astimezone()
        print(f"{job.job_id:<32}  {job.pipeline:<14} {line['status']:<9} "
              f"{round(job.progress * 100):>7}%  {created:%Y-%m-%d %H:%M:%S}  "
              f"{job.batch_id or '-':<20} {job.input_name}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the models the features service runs, with their versions, input sizes and layers."""
    from labsight.v1 import features_pb2

    with _client(args) as client:
        reply = client.stub.ListModels(features_pb2.ListModelsRequest(),
                                       timeout=client.timeout_s, metadata=client.metadata)
    if args.json:
        print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True)))
        return 0
    for model in reply.models:
        default = "  (default model)" if model.name == reply.default_model else ""
        size = "x".join(map(str, model.input_size))
        print(f"{model.name}  version {model.version}, input {size} pixels{default}")
        for layer in model.layers:
            print(f"    {layer}{'  (default layer)' if layer == model.default_layer else ''}")
    return 0


def cmd_columns(args: argparse.Namespace) -> int:
    """Explain every column of a pipeline's result tables in plain words."""
    from labsight.columns import pipeline_tables

    try:
        tables = pipeline_tables(args.pipeline)
    except KeyError as error:
        raise SystemExit(f"labsight: {error.args[0]}") from None
    for table in tables:
        if args.json:
            print(json.dumps({"table": table.name, "rows": table.rows,
                              "columns": dict(table.columns), "notes": list(table.notes)}))
            continue
        print(f"table {table.name}: {table.rows}")
        width = max(len(name) for name, _ in table.columns)
        for name, meaning in table.columns:
            print(f"    {name:<{width}}  {meaning}")
        for note in table.notes:
            print(f"  {note}")
        print()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create a token for a tenant; only its hash is written to the tokens file."""
    from services.gateway.auth import create_token

    tokens_file = Path(args.file) if args.file else home_dir() / "tokens"
    print(create_token(tokens_file, args.tenant))
    print(f"labsight: token for tenant {args.tenant!r} added to {tokens_file} (hash only); "
          "keep the token above, it is not stored", file=sys.stderr)
    return 0


def cmd_convert_hpa_weights(args: argparse.Namespace) -> int:
    """Run the HPA weight converter (services.segmentation.models.convert_hpa) on the arguments."""
    from services.segmentation.models import convert_hpa

    return convert_hpa.main(args.arguments)


def cmd_train_features(args: argparse.Namespace) -> int:
    """Fine-tune a backbone, print held-out accuracy as JSON, register the model."""
    from labsight.models import model_dirs_from_env
    from services.features.models import feature_repository
    from services.features.training import load_labelled_images, train_features

    dirs = model_dirs_from_env()
    model_dir = Path(args.model_dir) if args.model_dir else (dirs[0] if dirs else None)
    if model_dir is None:
        print("labsight: give --model-dir or set LABSIGHT_MODEL_DIR", file=sys.stderr)
        return 2
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        data = load_labelled_images(Path(args.data))
        report = train_features(
            data, feature_repository(dirs).get(args.backbone), args.name, model_dir,
            epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
            held_out=args.held_out, trainable=args.trainable, seed=args.seed,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except ValueError as error:
        print(f"labsight: {error}", file=sys.stderr)
        return 2
    print(json.dumps({
        "model": report.manifest.name, "manifest": report.manifest.origin,
        "held_out_accuracy": report.held_out_accuracy, "held_out_images": report.held_out_images,
        "train_images": report.train_images, "classes": list(report.manifest.classes),
    }))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``labsight`` command."""
    parser = argparse.ArgumentParser(prog="labsight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Redis, all services and a worker on this machine")
    up.add_argument("--demo", action="store_true", help="submit a demo fractal job once up")
    up.add_argument("--exit-after-demo", action="store_true", help="stop after the demo")
    up.add_argument("--base-port", type=int, default=None,
                    help="gRPC ports from here (gateway first); metrics from base+100")
    up.add_argument("--workers", type=int, default=None,
                    help="number of workers (default: one per 8 CPUs, at least 1)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVERS))
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a worker (finds `up`'s Redis by itself, "
                            "and again when `up` restarts)")
    worker.set_defaults(func=cmd_worker)

    token = sub.add_parser("token", help="manage gateway bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_create = token_sub.add_parser("create", help="create a token for a tenant")
    token_create.add_argument("tenant")
    token_create.add_argument("--file", default="",
                              help="tokens file (default: $LABSIGHT_HOME/tokens)")
    token_create.set_defaults(func=cmd_token_create)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--gateway", default=None, help="gateway address (default: from up)")
        command.add_argument("--token", default=None, help="bearer token (default: from up)")
        command.add_argument("--json", action="store_true", help="one JSON object per line")
        return command

    submit = client_command("submit", "submit one job per image")
    submit.add_argument("pipeline")
    submit.add_argument("images", nargs="*",
                        help="PNG, TIFF, JPEG or .npy files, or folders (their "
                             f"{' '.join(IMAGE_SUFFIXES)} files)")
    submit.add_argument("--recursive", action="store_true",
                        help="also take the images of the folders' subfolders")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="label stored with each job (e.g. class=1, sample=LIMS-42)")
    submit.add_argument("--stack", type=int, default=0, metavar="N",
                        help="pack same-size images into jobs of up to N each, as fractal's "
                             "'tiles' or deep-features' 'patches' stack (fewer, larger jobs: 64² "
                             "tiles ran about 2.5x faster as stacks of 256 than a job each); the "
                             "result rows are named by file")
    submit.add_argument("--each-series", action="store_true",
                        help="a job for every image of a TIFF holding several (the positions or "
                             "wells of an OME-TIFF), named FILE[OME image name or index]; by "
                             "default a job reads the first (--param series=N another)")
    submit.add_argument("--each-plane", default="", metavar="AXIS",
                        help="a job for every plane along a stack axis of each TIFF (t: each "
                             "time point of a time-lapse, z: each slice), named FILE[t=3]; other "
                             "stack axes still need --param plane or z_project")
    submit.add_argument("--tensor", action="append", default=[], metavar="ROLE=FILE",
                        help="array added to every job's input (.npy, or a CSV/TSV of numbers), "
                             "e.g. spot_centres=spots.csv or patches=stack.npy")
    submit.add_argument("--input-image", action="append", default=[], metavar="ROLE=FILE",
                        help="extra image added to every job's input, e.g. cell_labels=mask.tif")
    submit.add_argument("--mask", default="", metavar="VESSEL_MASK",
                        help="vessel-content: the vessel's mask (one channel, the photo's size), "
                             "as --input-image vessel_mask=FILE")
    submit.add_argument("--priority", choices=("normal", "high"), default="normal")
    submit.add_argument("--visium", default="", metavar="SPACERANGER_OUT",
                        help="spot-features of a Space Ranger output folder: its in-tissue spots "
                             "(barcodes as spot ids) with its spot diameter, on the "
                             "full-resolution image (--image, or the only .tif/.tiff/.btf/.jpg "
                             "in the folder)")
    submit.add_argument("--image", default="", metavar="FULLRES",
                        help="with --visium: the full-resolution image given to Space Ranger")
    for channel, shows in (("red", "microtubules"), ("green", "protein"), ("blue", "nuclei"),
                           ("yellow", "ER")):
        submit.add_argument(f"--{channel}", default="", metavar="FILE",
                            help=f"4-channel pipelines (cells): the {channel} ({shows}) channel's "
                                 "file, with the other three flags; a folder of HPA files "
                                 "(ID_red.png ...) is grouped by ID by itself")
    submit.add_argument("--wait", action="store_true", help="wait and print results")
    submit.add_argument("--batch", default="",
                        help="batch id (default: a new one for several images, none for one)")
    submit.add_argument("--resume", action="store_true",
                        help="continue an interrupted submission of the same files and "
                             "parameters: send only what its batch lacks (the journal of an "
                             "unfinished submission is kept in $LABSIGHT_HOME/submissions/, "
                             "default ~/.local/state/labsight/submissions/, and removed once "
                             "all its files are queued)")
    submit.add_argument("--resubmit", action="store_true",
                        help="queue new jobs even for files already submitted with the same "
                             "parameters (by default their earlier jobs are reused)")
    submit.set_defaults(func=cmd_submit)

    plot = client_command("plot", "draw a job's or batch's results into a PNG/PDF/SVG file")
    plot.add_argument("job_id", nargs="?", default="")
    plot.add_argument("--batch", default="", help="all finished jobs of this batch instead")
    plot.add_argument("-o", "--output", required=True, help="image file to write (.png, .pdf, .svg)")
    plot.add_argument("--kind", default="auto",
                      help="auto (default): curves for fractal jobs, masks (nuclei and cells, "
                           "and their outlines over --image) for one cells job, classes (cells "
                           "coloured by top class) for one hpa-cells job, vessel (instances and "
                           "fill levels, outlines over --image) for one vessel-content job, tissue (spots or "
                           "cells over their image) for one spot-features job, tracks (centroid "
                           "paths) for one cell-tracks job, else embedding "
                           "(a PCA); plate: a heatmap by well (A01-P24 in the image names)")
    plot.add_argument("--by", "--class-label", dest="class_label", default="", metavar="LABEL",
                      help="group jobs by this job label (e.g. class): one colour, and for "
                           "fractal curves one median and interquartile band, per group")
    plot.add_argument("--groups", default="", metavar="CSV",
                      help="CSV of id,group lines: job ids or image names to groups, or for one "
                           "spot-features job spot/cell ids to groups (e.g. clusters)")
    plot.add_argument("--image", default="", metavar="FILE",
                      help="the job's input image, drawn under its spots or cells (a cells "
                           "job: its 4-channel file, or one of its channel files ID_red.png)")
    plot.add_argument("--ids", action="store_true",
                      help="masks: write each cell's label at its centre")
    plot.add_argument("--cell-labels", default="", metavar="FILE",
                      help="the job's cell label mask: cells are drawn as outlines")
    plot.add_argument("--colour-by", "--color-by", dest="colour_by", default="", metavar="NAME",
                      help="PC1 (default), PC2, ..., a column of the table, or a result scalar "
                           "(plate default for fractal jobs: fractal_dimension)")
    plot.add_argument("--table", default="",
                      help="table to draw (default: the one named after the pipeline, else "
                           "features)")
    plot.set_defaults(func=cmd_plot)

    status = client_command("status", "show a job's state")
    status.add_argument("job_id")
    status.add_argument("--watch", action="store_true", help="follow until the job ends")
    status.set_defaults(func=cmd_status)

    results = client_command("results", "print or save a job's result")
    results.add_argument("job_id", nargs="?", default="")
    results.add_argument("--batch", default="", help="all finished jobs of this batch instead")
    results.add_argument("--follow", action="store_true",
                         help="with --batch: also wait for the jobs still queued or running, "
                              "each result written as its job ends, until the batch has ended")
    results.add_argument("--format", choices=(JSON_LINES, *FORMATS), default="",
                         help="file format (default: from the -o file's suffix, e.g. x.csv; "
                              "JSON lines on stdout)")
    results.add_argument("--table", default="",
                         help="table to export (default: the first; `labsight columns "
                              "PIPELINE` lists each pipeline's tables and columns)")
    results.add_argument("--class-label", default="",
                         help="job label whose value becomes the class (ARFF class attribute)")
    results.add_argument("-o", "--output", default="",
                         help="file to write, replaced if it exists (default stdout); its "
                              f"suffix names the format: {' '.join(SUFFIX_FORMATS)}")
    results.add_argument("--masks", default="", metavar="DIR",
                         help="write each job's label masks (cells, ...) as int32 TIFFs "
                              "DIR/<image>_nuclei.tif and DIR/<image>_cells.tif; tables only "
                              "with -o or --format")
    results.add_argument("--visium", default="", metavar="SPACERANGER_OUT",
                         help="h5ad in scanpy's Visium layout: uns['spatial'] (tissue images, "
                              "scale factors) and obs in_tissue/array_row/array_col from this "
                              "Space Ranger folder")
    results.add_argument("--into", default="", metavar="EXISTING.h5ad",
                         help="fill an existing AnnData (e.g. sc.read_visium's) by barcode: "
                              "obsm['features'], keeping its X; written back unless -o is given")
    results.set_defaults(func=cmd_results)

    cancel = client_command("cancel", "cancel a queued or running job")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=cmd_cancel)

    pipelines = client_command("pipelines", "list pipelines and their parameters")
    pipelines.set_defaults(func=cmd_pipelines)

    jobs = client_command("jobs", "list recent jobs, newest first")
    jobs.add_argument("--status", default="",
                      choices=("", "queued", "running", "done", "failed", "cancelled", "dead"),
                      help="only jobs with this status")
    jobs.add_argument("--batch", default="", help="only the jobs of this batch")
    jobs.add_argument("--limit", type=_positive, default=20, help="most jobs listed (default 20)")
    jobs.set_defaults(func=cmd_jobs)

    models = client_command("models", "list the models deep features can use, and their layers")
    models.set_defaults(func=cmd_models)

    columns = sub.add_parser("columns", help="explain every column of a pipeline's results")
    columns.add_argument("pipeline", help=", ".join(PIPELINES_WITH_TABLES))
    columns.add_argument("--json", action="store_true", help="one JSON object per table")
    columns.set_defaults(func=cmd_columns)

    train = sub.add_parser("train-features", help="fine-tune a CNN backbone on labelled images "
                           "and register it in the model directory")
    train.add_argument("data", help="folder with one sub-folder per class, or a CSV (path,label)")
    train.add_argument("--name", required=True, help="name of the new model")
    train.add_argument("--backbone", default="efficientnet-lite0",
                       help="built-in model to start from: efficientnet-lite0 or inception-v3")
    train.add_argument("--model-dir", default="", help="model directory (default: $LABSIGHT_MODEL_DIR)")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--learning-rate", type=float, default=3e-4)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--held-out", type=float, default=0.2, help="share of each class held out")
    train.add_argument("--trainable", choices=("head", "top", "all"), default="top")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_train_features)

    convert = sub.add_parser(
        "convert-hpa-weights",
        help="convert a released HPA-Cell-Segmentation weight file (dpn_unet_nuclei_v1.pth, "
             "dpn_unet_cell_3ch_v1.pth) into a model directory for LABSIGHT_MODEL_DIR",
    )
    convert.add_argument("arguments", nargs=argparse.REMAINDER,
                         help="SRC.pth DST_DIR [--kind nuclei|cell (default: from the file name)] "
                              "[--name NAME (default: hpa-nuclei or hpa-cell)]")
    convert.set_defaults(func=cmd_convert_hpa_weights)

    classifier_cli.add_parsers(sub)
    evaluate_cli.add_parser(sub)
    explain_cli.add_parser(sub)
    inspect_cli.add_parser(sub)
    track_cli.add_parser(sub)
    vessel_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labsight`` command; gRPC errors print their status and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GatewayNotFound as error:
        print(f"labsight: {error.details()}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"labsight: {error.code().name}: {error.details()}", file=sys.stderr)
        if error.code() == grpc.StatusCode.UNAVAILABLE and hasattr(args, "gateway"):
            print(f"labsight: {_unanswered_gateway(args)}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"labsight: no such file: {error.filename}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
