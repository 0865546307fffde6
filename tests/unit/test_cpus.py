"""CPU counting for thread pools: affinity mask capped by cgroup v1 and v2 quotas (real files);
how `labsight up` shares the CPUs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labsight.runtime.cpus import (
    REPLICAS_VARIABLE,
    cgroup_cpu_quota,
    gpu_visible,
    limit_thread_pools,
    size_stack,
    usable_cpus,
)
from labsight.up import StackLayout, service_target

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("text", "quota"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("400000 200000", 2.0), ("junk 100000", None)],
)
def test_cgroup_v2_cpu_max_is_read(tmp_path: Path, text: str, quota: float | None) -> None:
    (tmp_path / "cpu.max").write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


@pytest.mark.parametrize(("quota", "expected"), [("-1", None), ("50000", 0.5), ("300000", 3.0)])
def test_cgroup_v1_cfs_quota_is_read(tmp_path: Path, quota: str, expected: float | None) -> None:
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == expected


def test_a_quota_caps_the_affinity_count_and_rounds_up(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path) == AFFINITY  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("50000 100000")
    assert usable_cpus(tmp_path) == 1  # half a CPU still gets one thread
    (tmp_path / "cpu.max").write_text(f"{(AFFINITY + 8) * 100000} 100000")
    assert usable_cpus(tmp_path) == AFFINITY  # a quota above the mask does not add CPUs


def test_thread_pools_default_to_the_usable_cpus_and_keep_an_operator_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    limit_thread_pools()
    assert os.environ["NUMBA_NUM_THREADS"] == str(usable_cpus())
    assert os.environ["OMP_NUM_THREADS"] == "7"


@pytest.mark.parametrize(
    ("cpus", "workers", "expected"),
    [(1, None, (1, 4, 1)), (2, None, (1, 4, 2)), (16, None, (2, 16, 16)), (64, None, (8, 16, 64)),
     (2, 3, (3, 4, 2)), (8, 1, (1, 16, 8))],
)
def test_a_stack_is_sized_to_its_cpus(
    cpus: int, workers: int | None, expected: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(REPLICAS_VARIABLE, raising=False)
    sizing = size_stack(cpus, workers, gpu=True)  # one process per service, as on a GPU
    assert sizing.replicas == {}
    assert (sizing.workers, sizing.worker_concurrency, sizing.compute_threads) == expected
    assert sizing.service_environment() == {
        "NUMBA_NUM_THREADS": str(expected[2]), "OMP_NUM_THREADS": str(expected[2]),
        "OMP_WAIT_POLICY": "PASSIVE", "MALLOC_ARENA_MAX": "2",
    }
    bulk = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "134217728",
            "MALLOC_ARENA_MAX": "2"}
    for service in ("segmentation", "features", "classifier"):
        assert sizing.service_environment(service) == {
            **sizing.service_environment(), "MALLOC_MMAP_THRESHOLD_": "8388608",
            "MALLOC_TRIM_THRESHOLD_": "67108864", "MALLOC_ARENA_MAX": "2"}
    assert sizing.worker_environment() == {"LABSIGHT_WORKER_CONCURRENCY": str(expected[1]), **bulk}
    assert sizing.gateway_environment() == bulk
    assert sizing.describe() == (
        f"{cpus} CPUs: {expected[0]} worker(s) x {expected[1]} job slots (small jobs of one kind: "
        f"up to 32 per slot), {expected[2]} numba/OpenMP threads per model service")


def test_the_stack_sizing_defaults_to_the_usable_cpus() -> None:
    assert size_stack().cpus == usable_cpus()


@pytest.mark.parametrize(("cpus", "threads"), [(2, "1"), (16, "8")])
def test_without_a_gpu_segmentation_and_classifier_run_as_two_processes_of_one_session_each(
    cpus: int, threads: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(REPLICAS_VARIABLE, raising=False)
    sizing = size_stack(cpus, gpu=False)
    assert sizing.replicas == {"segmentation": 2, "classifier": 2}
    assert sizing.service_environment("classifier") == {
        "NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE",
        "MALLOC_ARENA_MAX": "2", "LABSIGHT_MODEL_INSTANCES": "1", "LABSIGHT_ORT_THREADS": threads,
        "MALLOC_MMAP_THRESHOLD_": "8388608", "MALLOC_TRIM_THRESHOLD_": "67108864",
    }
    assert sizing.service_environment("features")["NUMBA_NUM_THREADS"] == str(cpus)
    assert "LABSIGHT_MODEL_INSTANCES" not in sizing.service_environment("features")
    assert sizing.service_environment("segmentation")["LABSIGHT_ORT_THREADS"] == threads
    assert sizing.describe().endswith(
        "per model service, classifier x 2 processes, segmentation x 2 processes")
    assert size_stack(1, gpu=False).replicas == {}


def test_an_operator_sets_the_processes_of_each_model_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REPLICAS_VARIABLE, "segmentation=3, classifier=1")
    assert size_stack(4, gpu=False).replicas == {"classifier": 1, "segmentation": 3}  # named win
    assert size_stack(4, gpu=True).replicas == {"classifier": 1, "segmentation": 3}
    for bad in ("gateway=2", "classifier=0", "classifier", "features=two"):
        monkeypatch.setenv(REPLICAS_VARIABLE, bad)
        with pytest.raises(ValueError, match=f"{REPLICAS_VARIABLE}: '{bad}'"):
            size_stack(4)


@pytest.mark.parametrize(("device", "expected"), [("cpu", False), ("cuda", True), ("CUDA", True)])
def test_the_device_setting_decides_whether_a_gpu_is_used(
    device: str, expected: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABSIGHT_DEVICE", device)
    assert gpu_visible() is expected


def test_an_up_layout_puts_a_services_further_processes_a_port_step_apart() -> None:
    layout = StackLayout.from_base_port(31000, workers=1, replicas={"classifier": 2, "segmentation": 1})
    assert layout.servers == {"gateway": "gateway", "segmentation": "segmentation",
                              "features": "features", "classifier": "classifier",
                              "classifier-2": "classifier"}
    assert layout.grpc_ports["classifier-2"] == layout.grpc_ports["classifier"] + 1000
    assert layout.metrics_ports["classifier-2"] == layout.metrics_ports["classifier"] + 1000
    assert layout.replicas == {"classifier": 2}
    assert len(set(layout.ports())) == len(layout.ports())
    assert service_target(layout.addresses("classifier")) == "ipv4:127.0.0.1:31003,127.0.0.1:32003"
    assert service_target(layout.addresses("features")) == "127.0.0.1:31002"
