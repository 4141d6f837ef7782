"""Oracle sweeps through the executor: same schedules on every backend, resumable CLI (issue 7)."""

from __future__ import annotations

import csv

import pytest

from envs import make_scenario
from oracle.__main__ import main
from oracle.executor import run_sweep
from oracle.solve import Schedule, solve_item

TIMING = ("build_time_s", "solve_time_s")


def _items(configs=("joint", "no_battery", "energy_only")):
    sc = make_scenario("paper", 1)
    return [{"key": f"s1-{c}", "scenario": sc.to_dict(), "config": c, "threads": 1} for c in configs]


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def test_solve_item_returns_a_schedule():
    (item,) = _items(("joint",))
    sched = Schedule.from_dict(solve_item(item))
    assert sched.status == "optimal" and sched.config == "joint"
    assert sched.objective_usd == pytest.approx(sched.kpis["benefit_usd"])


@pytest.mark.slow
def test_local_and_ray_backends_give_identical_schedules(tmp_path):
    pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    items = _items()
    local = run_sweep(solve_item, items, backend="local", max_workers=2, progress=False)
    ray = run_sweep(solve_item, items, backend="ray", max_workers=2, progress=False)
    assert [r.status for r in local] == ["ok"] * 3 == [r.status for r in ray]
    for a, b in zip(local, ray, strict=True):
        assert _strip(a.result) == _strip(b.result)


def test_compare_cli_resumes_from_its_cache(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "compare.csv"
    args = ["compare", "--preset", "paper", "--seed", "2", "--cache", str(cache), "--out", str(out)]
    assert main([*args, "--workers", "2"]) == 0
    stored = sorted(p.name for p in cache.glob("*.json"))
    assert len(stored) == 6
    first = list(csv.DictReader(out.open()))
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert main(args) == 0  # every configuration is loaded from the cache, none re-solved
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")} == stamps
    second = list(csv.DictReader(out.open()))
    assert [r["benefit_usd"] for r in first] == [r["benefit_usd"] for r in second]
    assert [r["config"] for r in first] == ["joint", "compute_only", "energy_only", "no_battery",
                                             "no_routing", "no_carbon"]  # fmt: skip
