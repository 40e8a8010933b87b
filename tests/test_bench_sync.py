"""The pure output layer of ``scripts/bench_sync.py`` and its part modules: the target check
and the one-line summary, driven with result objects shaped as the parts return them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture(scope="module")
def bench_sync() -> Iterator[ModuleType]:
    """``bench_sync`` imported as the script runs: its directory first on ``sys.path``."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_sync as module

        yield module
    finally:
        sys.path.remove(str(SCRIPTS))


def recon_case(n: int, d: int, layout: str) -> dict[str, Any]:
    return {
        "n": n,
        "d": d,
        "layout": layout,
        "round_trips": 3,
        "bytes": 12_345,
        "baseline_bytes": 320_000,
        "cpu_s": 0.25,
        "exact": True,
    }


def daemons_result(quiet_ms: list[float]) -> dict[str, Any]:
    row = {"seconds": 0.05, "bytes_up": 1024, "bytes_down": 2048}
    return {
        "n": 2000,
        "d": 20,
        "first_sync": row,
        "idle_resync": {**row, "quiet_sessions_ms": quiet_ms},
        "warm_resync": row,
    }


def test_check_targets_reports_met_and_missed_and_skips_unmeasured(bench_sync: ModuleType) -> None:
    result = {**bench_sync.HOOKS, "catchup_entries_per_s": 15_000, "idle_cpu_percent": 1.0}
    checks = bench_sync.check_targets(result)
    assert checks == {
        "catchup_entries_per_s": {"value": 15_000, "target": ">= 15000", "met": True},
        "idle_cpu_percent": {"value": 1.0, "target": "< 1.0", "met": False},
    }
    line = bench_sync.summary({**result, "targets": checks})
    assert line == "bench_sync: missed: idle_cpu_percent"


def test_the_catchup_target_is_the_issues_for_its_size(bench_sync: ModuleType) -> None:
    """>= 15,000 entries/s from 10^5; >= 12,000/s from 10^6 on (issue 8)."""
    for transferred, rate, target, met in [
        (100_001, 14_384, ">= 15000", False),
        (1_000_001, 14_384, ">= 12000", True),
        (1_000_001, 11_999, ">= 12000", False),
    ]:
        result = {"catchup_entries_per_s": rate, "catchup": {"transferred": transferred}}
        check = bench_sync.check_targets(result)["catchup_entries_per_s"]
        assert check == {"value": rate, "target": target, "met": met}


def test_summary_of_one_recon_case_and_of_every_case(bench_sync: ModuleType) -> None:
    one = recon_case(10_000, 10, "recent")
    assert bench_sync.summary(one) == (
        "bench_sync: n=10000 d=10 recent: 3 RT, 12.3 KB (baseline 320 KB), 0.25 s CPU"
    )
    cases = [
        recon_case(10**6, 1000, "recent"),
        {**recon_case(10**4, 0, "scattered"), "exact": False},
    ]
    every = {"recon": cases, "recon_s": 12.0, "index_insert_us": 2.5, **bench_sync.HOOKS}
    assert bench_sync.summary(every) == (
        "bench_sync: recon 2 cases in 12 s, 1 inexact; n=1000000 d=1000 recent: 3 RT, 12.3 KB"
        " (baseline 320 KB), 0.25 s CPU; index insert 2.50 us/item"
    )


def test_daemons_summary_rounds_the_median_of_quiet_sessions(bench_sync: ModuleType) -> None:
    # The ten sessions of a recorded run: their median was printed as 14.649999999999999 ms.
    quiet = [11.6, 12.1, 12.8, 13.2, 13.7, 15.6, 16.0, 16.3, 16.9, 18.4]
    line = bench_sync.summary({**bench_sync.HOOKS, "daemons": daemons_result(quiet)})
    assert "(quiet sessions, median 14.65 ms)" in line
    assert line.startswith("bench_sync: daemons n=2000 d=20: first sync 0.05 s 3 KB")


def test_daemons_summary_gives_the_quiet_sessions_cpu_when_measured(
    bench_sync: ModuleType,
) -> None:
    result = daemons_result([9.0, 10.0, 11.0])
    result["idle_resync"]["quiet_sessions_cpu_ms"] = [20.0, 30.0, 40.0]
    result["idle_resync"]["quiet_background_cpu_ms"] = [0.0, 10.0, 10.0]
    line = bench_sync.summary({**bench_sync.HOOKS, "daemons": result})
    assert "(quiet sessions, median 10.0 ms, CPU of both daemons 23.3 ms per session)" in line
