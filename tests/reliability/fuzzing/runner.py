"""Runs a seeded stream of fuzz cases against a live stack and tallies what came back.

Failures are what no client input may cause: INTERNAL or UNKNOWN, a call that hangs
past a generous deadline, a known-in-advance answer that differs (another tenant's id
not NOT_FOUND, a bad token not UNAUTHENTICATED, one tenant's job answered to the
other), a process that dies or stops
answering health, a job accepted and then lost to INTERNAL/UNKNOWN or `dead`, and
resident memory that grows past a bound.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from labsight.v1 import features_pb2, gateway_pb2

from . import media
from .cases import RPCS, SWAPPED, Case, CaseStream, Metadata, Rpc, valid_requests
from .mutate import Pools
from .stack import IDLE_TRIM_S, Stack
from .values import World

MiB = 1024 * 1024
BAD_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
TERMINAL = {gateway_pb2.JOB_STATUS_DONE, gateway_pb2.JOB_STATUS_FAILED,
            gateway_pb2.JOB_STATUS_CANCELLED, gateway_pb2.JOB_STATUS_DEAD}
OVERSIZED_STATUS = "metadata size exceeds"
"""What gRPC says instead of a status whose details (an echoed 20 KB value) are over 16 KiB."""
STREAM_OPEN = "STREAM_OPEN"
"""A server stream still open at its deadline: a live watch that sent messages, or a
GetBatchResults following a batch whose jobs have not all ended."""
PROBE_NAME = "fuzz-probe"
"""Image name of the job that asks whether a cancelled upload left a job under its key."""
STEPS_SHOWN = 4
"""Largest VmRSS steps kept and shown for each process (one process's big steps hide no other's)."""
WARM_UP_BATCH = 32
"""Images of the warm-up call per model: the features service's largest batch by default."""
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 * MiB),
                   ("grpc.max_receive_message_length", 64 * MiB)]


@dataclass
class FuzzConfig:
    """What to run and the bounds that count as failures."""

    seed: int
    calls: int
    deadline_s: float = 60.0
    """A unary call or result stream still unanswered after this long is a hang."""
    watch_deadline_s: float = 10.0
    """How long a watch stream is read; one without a first message by then is a hang."""
    rss_growth_bound: int = 300 * MiB
    jobs_wait_s: float = 120.0
    """How long accepted jobs may take to end after the last call."""
    verbose: bool = False
    """Print every call's outcome as it happens."""
    only: int | None = None
    """Make only this case's call (the stream is drawn up to it the same way)."""


@dataclass
class Outcome:
    """What one call answered."""

    code: str
    message: str
    seconds: float
    responses: list[bytes]


@dataclass
class Finding:
    """One failure, with what reproduces it."""

    kind: str
    rpc: str
    input_class: str
    code: str
    message: str
    reproducer: str

    def row(self) -> str:
        """One line of the failure table."""
        message = " ".join(self.message.split())[:200]
        return (f"{self.kind:<10} | {self.rpc:<20} | {self.input_class[:40]:<40} | {self.code:<17} "
                f"| {message} | {self.reproducer[:300]}")


@dataclass
class Memory:
    """Resident memory of one process over the run."""

    before: int
    after: int
    peak: int

    @property
    def growth(self) -> int:
        """VmRSS after minus before."""
        return self.after - self.before


@dataclass
class Report:
    """Everything one fuzz run observed."""

    config: FuzzConfig
    seconds: float = 0.0
    calls: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    classes: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    memory: dict[str, Memory] = field(default_factory=dict)
    restarts: dict[str, list[int]] = field(default_factory=dict)
    job_statuses: Counter[str] = field(default_factory=Counter)
    steps: list[tuple[int, str, str]] = field(default_factory=list)
    """(VmRSS growth, process, reproducer) of the calls after which their process had grown
    most (STEPS_SHOWN for each process); work the worker does for earlier jobs may land on
    any call."""
    late_failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Jobs accepted at submit and failed in the worker: error prefix → (count, reproducer)."""

    def render(self) -> str:
        """The whole report as text: counts, memory, jobs, then every failure."""
        rate = self.calls / self.seconds if self.seconds else 0.0
        lines = [f"fuzz seed {self.config.seed}: {self.calls} calls in {self.seconds:.1f} s "
                 f"({rate:.1f} calls/s)", "", "status codes per RPC:"]
        for rpc in sorted(self.counts):
            codes = ", ".join(f"{code} {n}" for code, n in self.counts[rpc].most_common())
            lines.append(f"  {rpc:<36} {codes}")
        lines += ["", "cases per input class: " + ", ".join(
            f"{name} {n}" for name, n in sorted(self.classes.items()))]
        lines += ["", "resident memory (MiB): process, before, after, growth, peak growth, restarts"]
        for name, memory in self.memory.items():
            lines.append(f"  {name:<13} {memory.before / MiB:8.1f} {memory.after / MiB:8.1f} "
                         f"{memory.growth / MiB:+8.1f} {(memory.peak - memory.before) / MiB:+8.1f}"
                         f"   {self.restarts.get(name, [])}")
        lines.append("largest VmRSS steps of each process (MiB) and the call after which they showed:")
        for grown, name, reproducer in sorted(self.steps, key=lambda step: (step[1], -step[0])):
            lines.append(f"  {grown / MiB:+7.1f} {name:<13} {reproducer[:200]}")
        lines += ["", "accepted jobs: " + ", ".join(
            f"{status} {n}" for status, n in self.job_statuses.most_common())]
        if self.late_failures:
            lines.append("accepted at submit, failed in the worker (could be refused at submit):")
            for prefix, (count, reproducer) in sorted(self.late_failures.items()):
                lines.append(f"  {count:4d} x {prefix} <- {reproducer[:200]}")
        lines += ["", f"FAILURES: {len(self.findings)}"]
        causes: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
        for finding in self.findings:
            causes[(finding.kind, finding.code, " ".join(finding.message.split())[:70])].append(
                finding)
        for (kind, code, message), found in sorted(causes.items(), key=lambda c: -len(c[1])):
            rpcs = sorted({f.rpc for f in found})
            lines.append(f"  {len(found):4d} x {kind} {code} '{message}' on {', '.join(rpcs)}; "
                         f"first: {found[0].reproducer[:160]}")
        if self.findings:
            lines += ["", "kind       | RPC                  | input class                              "
                         "| code              | message | reproducer"]
            lines += [finding.row() for finding in self.findings]
        return "\n".join(lines)


class Runner:
    """Calls a live stack with fuzz cases and records the outcomes."""

    def __init__(self, stack: Stack, tokens: dict[str, str], service_token: str,
                 config: FuzzConfig) -> None:
        self.stack = stack
        self.tokens = tokens
        self.service_token = service_token
        self.config = config
        self.report = Report(config)
        self.world: World | None = None
        """The ids the run aims at (set by ``run``); accepted batches join their tenant's."""
        self.channels = {name: grpc.insecure_channel(stack.address(name), options=CHANNEL_OPTIONS)
                         for name, child in stack.children.items() if child.address}
        self.accepted: list[tuple[str, str, str]] = []
        """(tenant, job id, reproducer) of every job a call got accepted."""
        self.owners: dict[str, str] = {}
        """Job id → the tenant it was first answered to."""

    def close(self) -> None:
        """Close the channels."""
        for channel in self.channels.values():
            channel.close()

    def metadata(self, tenant: str, process: str = "gateway") -> Metadata:
        """Call metadata with the tenant's token (gateway) or the service token (model services)."""
        token = self.tokens[tenant] if process == "gateway" else self.service_token
        return [("authorization", f"Bearer {token}")]

    # Calls --------------------------------------------------------------------------------

    def call(self, case: Case) -> Outcome:
        """Make the case's call (requests sent as bytes, answers kept as bytes)."""
        rpc, channel = case.rpc, self.channels[case.rpc.process]
        wire = case.wire()
        metadata = self.metadata(case.tenant, case.rpc.process)
        if case.metadata is SWAPPED:
            other = "features" if case.rpc.process == "gateway" else "gateway"
            metadata = self.metadata(case.tenant, other)
        elif case.metadata is not None:
            metadata = case.metadata
        streaming = rpc.descriptor.server_streaming
        watch = streaming and (rpc.name.startswith("Watch") or _follows(case))  # open until something ends
        timeout = self.config.watch_deadline_s if watch else self.config.deadline_s
        started = time.monotonic()
        responses: list[bytes] = []
        try:
            if rpc.descriptor.client_streaming:
                responses = [self._client_stream(channel, rpc, wire, metadata, timeout,
                                                 case.cut_after)]
            elif streaming:
                call = channel.unary_stream(rpc.path)(wire[0], timeout=timeout, metadata=metadata)
                for response in call:
                    responses.append(response)
                    if len(responses) >= (case.cut_after or 1000):
                        call.cancel()
                        break
            else:
                responses = [channel.unary_unary(rpc.path)(wire[0], timeout=timeout,
                                                            metadata=metadata)]
            code, message = "OK", ""
        except grpc.FutureCancelledError:
            code, message = grpc.StatusCode.CANCELLED.name, "cancelled by the fuzzer"
        except grpc.RpcError as error:
            code, message = error.code().name, error.details() or ""
            if code == "DEADLINE_EXCEEDED" and watch and (responses or _follows(case)):
                code = STREAM_OPEN  # a following stream sends nothing while its first job runs
            if code == "CANCELLED" and case.cut_after is not None:
                message = "cancelled by the fuzzer"
        return Outcome(code, message, time.monotonic() - started, responses)

    def _client_stream(self, channel: grpc.Channel, rpc: Rpc, wire: list[bytes],
                       metadata: Metadata, timeout: float,
                       cut_after: int | None) -> bytes:
        multi = channel.stream_unary(rpc.path)
        if cut_after is None:
            return multi(iter(wire), timeout=timeout, metadata=metadata)
        sent, release = threading.Event(), threading.Event()

        def messages():  # noqa: ANN202 - a generator the gRPC thread drains
            yield from wire[:cut_after]
            sent.set()
            release.wait(timeout)  # hold the stream open: it is cut, not half-closed

        future = multi.future(messages(), timeout=timeout, metadata=metadata)
        while not sent.is_set() and not future.done():
            sent.wait(0.05)
        time.sleep(0.1)  # let what was sent reach the server before the cut
        future.cancel()
        release.set()
        return future.result()

    # Classification -------------------------------------------------------------------------

    def record(self, case: Case, outcome: Outcome) -> None:
        """Tally an outcome and note it as a finding when it is a failure."""
        report = self.report
        report.calls += 1
        report.counts[f"{case.rpc.process}.{case.rpc.name}"][outcome.code] += 1
        report.classes[case.input_class.split(":")[0]] += 1
        kind = ""
        if outcome.code in (c.name for c in BAD_CODES):
            kind = outcome.code.lower()
        elif outcome.code == "DEADLINE_EXCEEDED":
            kind = "hang"
        elif OVERSIZED_STATUS in outcome.message:
            kind = "echo"  # the service's answer was lost: its message was over gRPC's limit
        elif case.expect is not None and outcome.code not in {c.name for c in case.expect}:
            kind = "unexpected"
        elif outcome.code == "OK" and case.verify is not None and outcome.responses:
            problem = case.verify(case.rpc.message("output").FromString(outcome.responses[0]))
            if problem:
                kind, outcome.message = "unexpected", problem
        if kind:
            report.findings.append(Finding(kind, case.rpc.name, case.input_class, outcome.code,
                                           outcome.message, f"#{case.index} {case.reproducer()}"))
        if outcome.code == "OK" and case.rpc.name in ("SubmitJob", "UploadJob", "SubmitBatch"):
            self._note_accepted(case, outcome.responses[0])
        if outcome.code == "CANCELLED" and case.cut_after is not None:
            left = self._left_by_cut(case)
            if left:
                report.findings.append(Finding("cut-stream", case.rpc.name, case.input_class,
                                               outcome.code, left, f"#{case.index} {case.reproducer()}"))

    def _left_by_cut(self, case: Case) -> str:
        """What a client stream the fuzzer cancelled left behind ('' when nothing): a batch
        with jobs, or a job that its idempotency key returns."""
        first = case.requests[0]
        gateway = self.channels["gateway"]
        metadata = self.metadata(case.tenant)
        if isinstance(first, gateway_pb2.SubmitBatchRequest):
            try:
                batch = gateway_pb2.Batch.FromString(gateway.unary_unary(
                    "/labsight.v1.GatewayService/GetBatch")(
                        gateway_pb2.GetBatchRequest(batch_id=first.header.batch_id)
                        .SerializeToString(), timeout=self.config.deadline_s, metadata=metadata))
            except grpc.RpcError:
                return ""
            return f"the cancelled stream left batch {batch.batch_id} with {batch.total} jobs" \
                if batch.total else ""
        if isinstance(first, gateway_pb2.UploadJobRequest):
            probe = gateway_pb2.SubmitJobRequest(
                pipeline="fractal", params={"box_sizes": "3"},
                idempotency_key=first.job.idempotency_key,
                input=gateway_pb2.JobInput(image=media.tensor_image(np.zeros((8, 8), np.uint8),
                                                                    name=PROBE_NAME)))
            try:
                job = gateway_pb2.Job.FromString(gateway.unary_unary(
                    "/labsight.v1.GatewayService/SubmitJob")(
                        probe.SerializeToString(), timeout=self.config.deadline_s,
                        metadata=metadata))
            except grpc.RpcError:
                return ""
            self.accepted.append((case.tenant, job.job_id, f"probe of #{case.index}"))
            return "" if job.input_name == PROBE_NAME else (
                f"the cancelled upload was queued as job {job.job_id} (input "
                f"{job.input_name!r}): its idempotency key returns it")
        return ""

    def _note_accepted(self, case: Case, response: bytes) -> None:
        if case.rpc.name == "SubmitBatch":
            answer = gateway_pb2.SubmitBatchResponse.FromString(response)
            ids = list(answer.job_ids)
            # batch ids are the tenant's own names: a batch named like the other tenant's
            # (a hostile id) is this tenant's from now on, no longer a foreign target
            owned = self.world.batch_ids.setdefault(case.tenant, []) if self.world else []
            if answer.batch_id not in owned:
                owned.append(answer.batch_id)
        else:
            ids = [gateway_pb2.Job.FromString(response).job_id]
        reproducer = f"#{case.index} {case.reproducer()}"
        for job_id in ids:
            owner = self.owners.setdefault(job_id, case.tenant)
            if owner != case.tenant:  # e.g. both tenants sent the same idempotency key
                self.report.findings.append(Finding(
                    "tenant", case.rpc.name, case.input_class, "OK",
                    f"answered job {job_id} of tenant {owner} to tenant {case.tenant}", reproducer))
            else:
                self.accepted.append((case.tenant, job_id, reproducer))

    def check_processes(self, case: Case | None, context: str) -> None:
        """Note every process that died (restarting it) as a crash of the last case."""
        for name, code in self.stack.died():
            cause = f"#{case.index} {case.reproducer()}" if case else context
            self.report.findings.append(Finding(
                "crash", case.rpc.name if case else "-", case.input_class if case else "-",
                f"exit {code}", f"{name} died; log tail: {self.stack.log_tail(name, 8)}", cause))

    def note_steps(self, case: Case, before: dict[str, int], after: dict[str, int]) -> None:
        """Keep each process's STEPS_SHOWN largest VmRSS steps over one call."""
        steps = self.report.steps
        for name, rss in after.items():
            if rss - before.get(name, rss) > 0:
                steps.append((rss - before[name], name, f"#{case.index} {case.reproducer()}"))
        kept: list[tuple[int, str, str]] = []
        for name in {step[1] for step in steps}:
            kept += sorted((step for step in steps if step[1] == name), reverse=True)[:STEPS_SHOWN]
        self.report.steps = kept

    # Setup ----------------------------------------------------------------------------------

    def build_world(self, rng: np.random.Generator) -> World:
        """Real objects to aim at: per tenant a job, a batch of a name both tenants use and
        one of its own name."""
        tenants = tuple(self.tokens)
        assert len(tenants) == 2
        world = World(tenants=(tenants[0], tenants[1]),
                      batch_stem=f"plate-{self.config.seed}-{uuid.uuid4().hex[:4]}")
        world.models = {m.name: list(m.layers) for m in self.list_models(tenants[0])}
        gateway = self.channels["gateway"]
        for tenant in tenants:
            image = media.tensor_image(media.pixels(rng, 16))
            job = gateway_pb2.SubmitJobRequest(pipeline="fractal", params={"box_sizes": "3"},
                                               input=gateway_pb2.JobInput(image=image))
            answer = gateway_pb2.Job.FromString(gateway.unary_unary(
                "/labsight.v1.GatewayService/SubmitJob")(
                    job.SerializeToString(), timeout=self.config.deadline_s,
                    metadata=self.metadata(tenant)))
            world.job_ids[tenant] = [answer.job_id]
            world.batch_ids[tenant] = []
            # one batch name both tenants use, and one only this tenant uses
            for batch_id in (world.batch_stem, f"{world.batch_stem}-{tenant}"):
                batch = [gateway_pb2.SubmitBatchRequest(
                    header=gateway_pb2.BatchHeader(batch_id=batch_id)),
                    gateway_pb2.SubmitBatchRequest(jobs=gateway_pb2.BatchJobs(jobs=[job, job]))]
                batch_answer = gateway_pb2.SubmitBatchResponse.FromString(gateway.stream_unary(
                    "/labsight.v1.GatewayService/SubmitBatch")(
                        iter([m.SerializeToString() for m in batch]),
                        timeout=self.config.deadline_s, metadata=self.metadata(tenant)))
                world.job_ids[tenant] += batch_answer.job_ids
                world.batch_ids[tenant].insert(0, batch_answer.batch_id)
            self.accepted += [(tenant, job_id, "set-up") for job_id in world.job_ids[tenant]]
            self.owners.update((job_id, tenant) for job_id in world.job_ids[tenant])
        return world

    def list_models(self, tenant: str, with_layer_paths: bool = False) -> list[features_pb2.ModelInfo]:
        """The features service's models (with every module path of the loaded ones)."""
        request = features_pb2.ListModelsRequest(with_layer_paths=with_layer_paths)
        return list(features_pb2.ListModelsResponse.FromString(
            self.channels["features"].unary_unary("/labsight.v1.FeatureService/ListModels")(
                request.SerializeToString(), timeout=self.config.deadline_s,
                metadata=self.metadata(tenant, "features"))).models)

    def warm_up(self, pools: Pools, rng: np.random.Generator) -> None:
        """One valid call per model service RPC, per model and per pipeline, so loading
        models and engines is not counted as growth."""
        tenant = pools.world.tenants[0]
        submit = next(r for r in RPCS if r.name == "SubmitJob")
        deep = next(r for r in RPCS if r.name == "ExtractDeepFeatures")
        for model in pools.world.models:
            # a full batch, so the runtime's buffers for the largest batch exist before measuring
            stack = np.zeros((WARM_UP_BATCH, 8, 8, 3), np.uint8)
            request = features_pb2.ExtractDeepFeaturesRequest(model=model,
                                                              image_stack=media.tensor(stack))
            self._expect_ok(Case(-1, deep, "warm-up", model, [request], tenant))
            for pipeline, params in (("deep-features", {"model": model}),
                                     ("spot-features", {"model": model, "spot_diameter": "8"})):
                job = gateway_pb2.SubmitJobRequest(pipeline=pipeline, params=params)
                job.input.image.CopyFrom(media.valid_image(rng, 32))
                if pipeline == "spot-features":
                    job.input.tensors["spot_centres"].CopyFrom(
                        media.tensor(np.full((2, 2), 16.0)))
                self._expect_ok(Case(-1, submit, "warm-up", pipeline, [job], tenant))
        for rpc in RPCS:
            if rpc.process != "gateway" and rpc.name not in ("ExtractDeepFeatures", "Watch"):
                self.call(Case(-1, rpc, "warm-up", "", valid_requests(rpc, rng, pools, tenant),
                               tenant))
        self.wait_for_jobs(self.config.jobs_wait_s)
        pools.world.layer_paths = {m.name: list(m.layer_paths)
                                   for m in self.list_models(tenant, with_layer_paths=True)}

    def _expect_ok(self, case: Case) -> None:
        outcome = self.call(case)
        assert outcome.code == "OK", f"warm-up {case.reproducer()}: {outcome.code} {outcome.message}"
        if case.rpc.name == "SubmitJob":
            self._note_accepted(case, outcome.responses[0])

    # Jobs -----------------------------------------------------------------------------------

    def _job(self, tenant: str, job_id: str) -> gateway_pb2.Job | None:
        try:
            return gateway_pb2.Job.FromString(self.channels["gateway"].unary_unary(
                "/labsight.v1.GatewayService/GetJob")(
                    gateway_pb2.GetJobRequest(job_id=job_id).SerializeToString(),
                    timeout=self.config.deadline_s, metadata=self.metadata(tenant)))
        except grpc.RpcError:
            return None

    def wait_for_jobs(self, timeout_s: float) -> dict[str, gateway_pb2.Job | None]:
        """Wait until every accepted job ended (or ``timeout_s``); their last states."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, gateway_pb2.Job | None] = {}
        pending = list(self.accepted)
        while pending:
            for tenant, job_id, _ in pending:
                states[job_id] = self._job(tenant, job_id)
            pending = [entry for entry in pending
                       if states[entry[1]] is not None and states[entry[1]].status not in TERMINAL]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        return states

    def judge_jobs(self) -> None:
        """Tally the accepted jobs' ends; dead jobs and INTERNAL/UNKNOWN errors are failures."""
        states = self.wait_for_jobs(self.config.jobs_wait_s)
        for _, job_id, reproducer in self.accepted:
            job = states.get(job_id)
            status = gateway_pb2.JobStatus.Name(job.status) if job else "UNREADABLE"
            self.report.job_statuses[status.removeprefix("JOB_STATUS_").lower()] += 1
            if job is None:
                continue
            error = job.error
            if job.status == gateway_pb2.JOB_STATUS_DEAD or any(
                    code.name in error for code in BAD_CODES):
                self.report.findings.append(Finding(
                    "job", job.pipeline, "accepted job", status, error, reproducer))
            elif job.status == gateway_pb2.JOB_STATUS_FAILED:
                prefix = " ".join(error.split())[:90]
                count, first = self.report.late_failures.get(prefix, (0, reproducer))
                self.report.late_failures[prefix] = (count + 1, first)

    # The run --------------------------------------------------------------------------------

    def run(self) -> Report:
        """Build the world, warm up, make ``config.calls`` calls, then judge jobs, health and
        memory."""
        rng = np.random.default_rng(self.config.seed)
        world = self.build_world(rng)
        self.world = world
        pools = Pools.build(world, rng)
        self.warm_up(pools, rng)
        self.accepted.clear()
        self.check_processes(None, "start-up and warm-up")
        time.sleep(2 * IDLE_TRIM_S + 0.5)  # both ends measure an idle stack (labsight.runtime.idle_trim)
        self.stack.reset_peaks()
        before = self.stack.resident()
        stream = CaseStream(rng, pools, world.tenants)
        started = time.monotonic()
        for _ in range(self.config.calls):
            case = stream.next_case()
            if self.config.only is not None and case.index != self.config.only:
                continue
            before_call = self.stack.resident_now()
            outcome = self.call(case)
            self.record(case, outcome)
            self.note_steps(case, before_call, self.stack.resident_now())
            if self.config.verbose:
                print(f"#{case.index} {case.rpc.process}.{case.rpc.name} [{case.input_class}] "
                      f"{outcome.code} {outcome.seconds:.2f}s {' '.join(outcome.message.split())[:160]}"
                      f" | {case.detail[:200]}", flush=True)
            self.check_processes(case, "")
        self.report.seconds = time.monotonic() - started
        self.judge_jobs()
        self.check_processes(None, "while jobs finished")
        time.sleep(2 * IDLE_TRIM_S + 0.5)
        after = self.stack.resident()
        for name in before:
            self.report.memory[name] = Memory(before[name][0], after[name][0], after[name][1])
            growth = after[name][0] - before[name][0]
            if growth > self.config.rss_growth_bound:
                self.report.findings.append(Finding(
                    "rss", name, "whole run", "-",
                    f"VmRSS grew {growth / MiB:.0f} MiB (bound "
                    f"{self.config.rss_growth_bound / MiB:.0f} MiB)", f"seed {self.config.seed}"))
        for name, child in self.stack.children.items():
            if child.exits:
                self.report.restarts[name] = child.exits
            if child.address and not self.stack.serving(name):
                self.report.findings.append(Finding(
                    "health", name, "after the run", "-", "does not answer health SERVING",
                    f"seed {self.config.seed}"))
        return self.report


def run_fuzz(config: FuzzConfig, redis_url: str, key_prefix: str, workdir: Path) -> Report:
    """Start the stack, fuzz it, stop it; the report of the run."""
    tokens = {"fuzz-a": uuid.uuid4().hex, "fuzz-b": uuid.uuid4().hex}
    service_token = uuid.uuid4().hex
    stack = Stack(redis_url, key_prefix, workdir, tokens, service_token)
    try:
        stack.start()
        runner = Runner(stack, tokens, service_token, config)
        try:
            return runner.run()
        finally:
            runner.close()
    finally:
        stack.stop()


def _follows(case: Case) -> bool:
    """Whether the case is a GetBatchResults that follows its batch (open until the batch ends)."""
    request = case.requests[0]
    return isinstance(request, gateway_pb2.GetBatchResultsRequest) and request.follow
