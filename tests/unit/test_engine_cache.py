"""The engine cache: least recently used engines closed beyond a memory budget, never while in use."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from labsight.models.engine_cache import EngineCache


class FakeEngine:
    """Holds ``nbytes`` and records its closing."""

    def __init__(self, name: str, nbytes: int) -> None:
        self.name = name
        self.nbytes = nbytes
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


class Builds:
    """Builds FakeEngines of one size and keeps every one it built."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.built: dict[str, list[FakeEngine]] = {}

    def __call__(self, name: str) -> Callable[[], FakeEngine]:
        def build() -> FakeEngine:
            engine = FakeEngine(name, self.nbytes)
            self.built.setdefault(name, []).append(engine)
            return engine

        return build


def _use(cache: EngineCache[FakeEngine], builds: Builds, *names: str) -> None:
    for name in names:
        with cache.lease(name, builds(name)):
            pass


def _loaded(cache: EngineCache[FakeEngine]) -> list[str]:
    return [engine.name for _, engine in cache.items()]


def test_least_recently_used_engines_are_closed_beyond_the_budget() -> None:
    cache: EngineCache[FakeEngine] = EngineCache(budget_bytes=100)
    builds = Builds(nbytes=40)
    _use(cache, builds, "a", "b")
    assert _loaded(cache) == ["a", "b"] and cache.nbytes == 80
    _use(cache, builds, "a", "c")  # a is used again, so b is the least recent
    assert _loaded(cache) == ["a", "c"] and cache.nbytes == 80
    assert builds.built["b"][0].closes == 1
    assert builds.built["a"][0].closes == 0 and len(builds.built["a"]) == 1
    _use(cache, builds, "b")  # built again after its eviction
    assert len(builds.built["b"]) == 2 and _loaded(cache) == ["c", "b"]


def test_an_engine_in_use_is_closed_only_when_its_last_lease_ends() -> None:
    cache: EngineCache[FakeEngine] = EngineCache(budget_bytes=10)
    builds = Builds(nbytes=40)
    with cache.lease("a", builds("a")) as a:
        with cache.lease("a", builds("a")) as again:
            assert again is a
        _use(cache, builds, "b", "c")
        assert a.closes == 0 and _loaded(cache) == ["a", "c"]  # b was idle: closed
        assert builds.built["b"][0].closes == 1
    assert a.closes == 1 and _loaded(cache) == ["c"]


def test_the_newest_engine_stays_even_over_the_budget_and_pinned_ones_stay() -> None:
    cache: EngineCache[FakeEngine] = EngineCache(budget_bytes=0)
    builds = Builds(nbytes=40)
    with cache.lease("pinned", builds("pinned"), pin=True):
        pass
    _use(cache, builds, "a", "b", "c")
    assert _loaded(cache) == ["pinned", "c"]
    assert [builds.built[name][0].closes for name in "abc"] == [1, 1, 0]
    assert builds.built["pinned"][0].closes == 0


def test_concurrent_first_leases_build_once() -> None:
    cache: EngineCache[FakeEngine] = EngineCache(budget_bytes=100)
    release = threading.Event()
    calls: list[int] = []

    def slow_build() -> FakeEngine:
        calls.append(1)
        release.wait(10)
        return FakeEngine("a", 1)

    got: list[FakeEngine] = []

    def lease() -> None:
        with cache.lease("a", slow_build) as engine:
            got.append(engine)

    threads = [threading.Thread(target=lease) for _ in range(6)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(got) == 6 and len({id(engine) for engine in got}) == 1


def test_a_failed_build_is_not_cached() -> None:
    cache: EngineCache[FakeEngine] = EngineCache(budget_bytes=100)

    def broken() -> FakeEngine:
        raise OSError("weights unreadable")

    with pytest.raises(OSError, match="weights unreadable"):
        with cache.lease("a", broken):
            pass
    assert len(cache) == 0
    builds = Builds(nbytes=1)
    _use(cache, builds, "a")
    assert _loaded(cache) == ["a"]


def test_the_gauges_add_up_every_cache_of_the_process() -> None:
    def gauges() -> tuple[float, float]:
        return (REGISTRY.get_sample_value("labsight_engine_cache_bytes") or 0.0,
                REGISTRY.get_sample_value("labsight_engine_cache_engines") or 0.0)

    bytes_before, engines_before = gauges()
    first: EngineCache[FakeEngine] = EngineCache(budget_bytes=100)
    second: EngineCache[FakeEngine] = EngineCache(budget_bytes=100)
    _use(first, Builds(nbytes=30), "a")
    _use(second, Builds(nbytes=30), "b", "c")
    assert gauges() == (bytes_before + 90, engines_before + 3)
    _use(second, Builds(nbytes=80), "d")  # b and c make room for d
    assert gauges() == (bytes_before + 110, engines_before + 2)


def test_clearing_closes_idle_and_pinned_engines_but_not_one_in_use() -> None:
    cache: EngineCache[FakeEngine] = EngineCache(budget_bytes=1000)
    builds = Builds(nbytes=10)
    with cache.lease("pinned", builds("pinned"), pin=True):
        pass
    _use(cache, builds, "idle")
    with cache.lease("busy", builds("busy")) as busy:
        cache.clear()
        assert _loaded(cache) == ["busy"] and cache.nbytes == 10 and busy.closes == 0
    assert builds.built["pinned"][0].closes == builds.built["idle"][0].closes == 1
