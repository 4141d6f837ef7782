"""oracle.executor: ordering, per-item failures, timeouts, resumability, key checks, both backends."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from oracle.executor import RAY_MISSING, ItemResult, add_backend_args, backend_kwargs, run_sweep

# ---------------------------------------------------------------------------------------------------
# Work functions: module level so spawned workers (and Ray workers) can import them by name.
# ---------------------------------------------------------------------------------------------------


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(item: dict[str, Any]) -> dict[str, Any]:
    """The worker's thread-count environment."""
    return {name: os.environ.get(name) for name in THREAD_VARS}


def _count_call(item: dict[str, Any]) -> int:
    """Append one line to calls/<key> and return how many calls this key has had, this one included."""
    path = Path(item["calls"]) / item["key"]
    with open(path, "a") as f:  # O_APPEND: one short write per call, atomic across processes
        f.write("x\n")
    return len(path.read_text().splitlines())


def work(item: dict[str, Any]) -> dict[str, Any]:
    """Square ``x``, misbehaving as ``item["do"]`` says."""
    n = _count_call(item) if "calls" in item else 1
    do = item.get("do")
    time.sleep(item.get("sleep", 0.0))
    if do == "raise":
        raise ValueError(f"bad input {item['x']}")
    if do == "exit" or (do == "exit_once" and n == 1):
        os._exit(3)
    if do == "sigkill" or (do == "sigkill_once" and n == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    if do == "hang":
        Path(item["pid_file"]).write_text(str(os.getpid()))
        time.sleep(120)
    return {
        "x": item["x"],
        "square": item["x"] ** 2,
        "pair": (item["x"], -item["x"]),
        "threads": thread_env(item),
    }


def nested(item: dict[str, Any]) -> dict[str, Any]:
    """Start a process of its own, as SB3's SubprocVecEnv does."""
    child = multiprocessing.get_context("spawn").Process(target=os.getpid)
    child.start()
    child.join()
    return {"exitcode": child.exitcode}


def calls(calls_dir: Path) -> dict[str, int]:
    """Calls per key so far."""
    return {p.name: len(p.read_text().splitlines()) for p in sorted(calls_dir.iterdir())}


def items_for(calls_dir: Path, n: int = 6, **special: dict[str, Any]) -> list[dict[str, Any]]:
    """Items k0..k{n-1} with x = index; ``special`` adds fields to named keys."""
    calls_dir.mkdir(exist_ok=True)
    items = [{"key": f"k{i}", "x": i, "calls": str(calls_dir)} for i in range(n)]
    for it in items:
        it.update(special.get(it["key"], {}))
    return items


def ok(x: int) -> dict[str, Any]:
    """``work``'s result for ``x``: after the JSON round trip (tuples become lists), single-threaded."""
    return {"x": x, "square": x * x, "pair": [x, -x], "threads": dict.fromkeys(THREAD_VARS, "1")}


# ---------------------------------------------------------------------------------------------------
# Local backend
# ---------------------------------------------------------------------------------------------------


def test_results_come_back_in_item_order_as_json(tmp_path: Path) -> None:
    # Later items finish first; the order must still be the items' order.
    items = items_for(tmp_path / "calls", 4, k0={"sleep": 0.6}, k1={"sleep": 0.3})
    res = run_sweep(work, items, max_workers=2, progress=False)
    assert [r.key for r in res] == ["k0", "k1", "k2", "k3"]
    assert [r.status for r in res] == ["ok"] * 4
    assert [r.result for r in res] == [ok(i) for i in range(4)]
    assert all(r.error is None and r.elapsed_s >= 0 for r in res)
    assert res[0].elapsed_s >= 0.6
    assert calls(tmp_path / "calls") == {f"k{i}": 1 for i in range(4)}


def test_exception_is_reported_for_its_item_with_message(tmp_path: Path) -> None:
    items = items_for(tmp_path / "calls", 4, k2={"do": "raise"})
    res = run_sweep(work, items, max_workers=2, progress=False)
    assert [r.status for r in res] == ["ok", "ok", "error", "ok"]
    assert res[2].error == "ValueError: bad input 2"
    assert res[2].result is None
    assert "Traceback" in res[2].detail and "ValueError: bad input 2" in res[2].detail
    assert [r.result for r in res if r.ok] == [ok(0), ok(1), ok(3)]


@pytest.mark.parametrize("how", ["exit_once", "sigkill_once"])
def test_dead_worker_is_charged_to_its_item_and_rerun_skips_finished(tmp_path: Path, how: str) -> None:
    # k2 kills its worker on its first call, after a pause so that other items are in flight.
    items = items_for(tmp_path / "calls", 6, k2={"do": how, "sleep": 0.3})
    out = tmp_path / "out"
    first = run_sweep(work, items, out_dir=out, max_workers=2, progress=False)
    assert [r.status for r in first] == ["ok", "ok", "worker_died", "ok", "ok", "ok"]
    assert first[2].error == "worker process died while running this item"
    assert first[2].result is None
    assert [r.result for r in first if r.ok] == [ok(i) for i in (0, 1, 3, 4, 5)]
    assert calls(tmp_path / "calls") == {f"k{i}": 1 for i in range(6)}
    # The failure is stored, so the record of the sweep is complete ...
    assert json.loads((out / "k2.json").read_text())["status"] == "worker_died"

    # ... but re-attempted on rerun, while finished items are loaded, not recomputed.
    second = run_sweep(work, items, out_dir=out, max_workers=2, progress=False)
    assert calls(tmp_path / "calls") == {**{f"k{i}": 1 for i in range(6)}, "k2": 2}
    assert [r.status for r in second] == ["ok"] * 6
    assert [r.result for r in second] == [ok(i) for i in range(6)]
    assert [second[i] for i in (0, 1, 3, 4, 5)] == [first[i] for i in (0, 1, 3, 4, 5)]


def test_worker_that_always_dies_is_reported_every_time(tmp_path: Path) -> None:
    items = items_for(tmp_path / "calls", 3, k0={"do": "exit"}, k1={"do": "sigkill"})
    res = run_sweep(work, items, max_workers=2, progress=False)
    assert [r.status for r in res] == ["worker_died", "worker_died", "ok"]
    assert res[0].detail == "exit code 3"
    assert res[1].detail == f"exit code {-signal.SIGKILL}"


def test_timeout_kills_the_stuck_worker_and_the_sweep_continues(tmp_path: Path) -> None:
    pid_file = tmp_path / "hang.pid"
    items = items_for(tmp_path / "calls", 5, k1={"do": "hang", "pid_file": str(pid_file)})
    start = time.monotonic()
    res = run_sweep(work, items, max_workers=2, item_timeout_s=1.0, progress=False)
    assert time.monotonic() - start < 30
    assert [r.status for r in res] == ["ok", "timeout", "ok", "ok", "ok"]
    assert res[1].error == "timed out after 1 s"
    assert 1.0 <= res[1].elapsed_s < 10
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_stored_files_are_complete_and_atomic(tmp_path: Path) -> None:
    items = items_for(tmp_path / "calls", 3, k1={"do": "raise"})
    out = tmp_path / "out"
    res = run_sweep(work, items, out_dir=out, max_workers=2, progress=False)
    # Only <key>.json files; no temp files left behind.
    assert sorted(p.name for p in out.iterdir()) == ["k0.json", "k1.json", "k2.json"]
    for r in res:
        stored = json.loads((out / f"{r.key}.json").read_text())
        assert ItemResult.from_json(stored) == r
        assert stored["elapsed_s"] == r.elapsed_s


INTERRUPTED_SWEEP = """
import sys
sys.path.insert(0, {tests!r})
from test_executor import work
from oracle.executor import run_sweep
items = {items!r}
run_sweep(work, items, out_dir={out!r}, max_workers=2, progress=False)
"""


def stored(out: Path) -> set[str]:
    """Keys of the items stored in ``out`` (``<key>.json``). The atomic writer's temp files
    (``.<key>.json.<random>.tmp.json``) are not items; a SIGKILL during a write leaves one behind."""
    return {p.stem for p in out.glob("*.json") if not p.name.startswith(".")}


def test_interrupted_sweep_resumes_without_recomputing(tmp_path: Path) -> None:
    # Kill the driver (SIGKILL: no cleanup at all) once some items are stored, then run again.
    items = items_for(tmp_path / "calls", 8, **{f"k{i}": {"sleep": 0.4} for i in range(8)})
    out = tmp_path / "out"
    script = INTERRUPTED_SWEEP.format(tests=str(Path(__file__).parent), items=items, out=str(out))
    cwd = Path(__file__).parents[1]
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd)
    try:
        deadline = time.monotonic() + 60
        while len(stored(out)) < 3:
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "the sweep stored nothing"
            time.sleep(0.05)
        driver.kill()
    finally:
        driver.wait()
    done_before = stored(out)
    assert 3 <= len(done_before) < 8
    time.sleep(1.0)  # orphaned workers finish their item, fail to report it, and exit

    res = run_sweep(work, items, out_dir=out, max_workers=2, progress=False)
    assert [r.status for r in res] == ["ok"] * 8
    assert [r.result for r in res] == [ok(i) for i in range(8)]
    n_calls = calls(tmp_path / "calls")
    assert all(n_calls[k] == 1 for k in done_before)
    assert set(n_calls) == {f"k{i}" for i in range(8)}
    assert stored(out) == {f"k{i}" for i in range(8)}
    assert not [p for p in out.iterdir() if not p.name.endswith(".json")]


def test_workers_run_single_threaded_without_changing_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    (res,) = run_sweep(thread_env, [{"key": "a"}], progress=False)
    assert res.result == dict.fromkeys(THREAD_VARS, "1")
    assert os.environ["OMP_NUM_THREADS"] == "8"
    assert "MKL_NUM_THREADS" not in os.environ


def test_fn_may_start_processes_of_its_own() -> None:
    (res,) = run_sweep(nested, [{"key": "a"}], progress=False)
    assert res.result == {"exitcode": 0}


def test_empty_sweep_starts_nothing() -> None:
    assert run_sweep(work, [], progress=False) == []


# ---------------------------------------------------------------------------------------------------
# Validation and CLI
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"key": "a/b"}], "not a safe file name"),
        ([{"key": "../up"}], "not a safe file name"),
        ([{"key": ".hidden"}], "not a safe file name"),
        ([{"key": ""}], "not a safe file name"),
        ([{"key": "has space"}], "not a safe file name"),
        ([{"key": "x" * 201}], "not a safe file name"),
        ([{"key": 7}], "not a safe file name"),
        ([{"x": 1}], "must be a dict with a 'key'"),
        (["k0"], "must be a dict with a 'key'"),
        ([{"key": "a"}, {"key": "a"}], "duplicates 'a'"),
        ([{"key": "Case"}, {"key": "case"}], "duplicates 'Case'"),
    ],
)
def test_bad_keys_are_refused_before_anything_runs(tmp_path: Path, items: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_sweep(work, items, out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_good_keys_are_accepted(tmp_path: Path) -> None:
    items = [{"key": k, "x": 2} for k in ("a", "preset-1_seed.7", "0" * 200)]
    res = run_sweep(work, items, out_dir=tmp_path, max_workers=1, progress=False)
    assert [r.status for r in res] == ["ok"] * 3


def test_items_and_fn_must_be_serialisable() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        run_sweep(work, [{"key": "a", "x": {1, 2}}], progress=False)
    with pytest.raises(TypeError, match="picklable top-level function"):
        run_sweep(lambda item: item, [{"key": "a"}], progress=False)


def test_missing_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"') as info:
        run_sweep(work, [{"key": "a", "x": 1}], backend="ray", progress=False)
    assert str(info.value) == RAY_MISSING


def test_backend_args_share_one_spelling() -> None:
    parser = add_backend_args(argparse.ArgumentParser())
    args = parser.parse_args(["--backend", "ray", "--ray-address", "auto", "--workers", "3"])
    assert backend_kwargs(args) == {"backend": "ray", "ray_address": "auto", "max_workers": 3}
    assert backend_kwargs(parser.parse_args([])) == {
        "backend": "local",
        "ray_address": None,
        "max_workers": None,
    }
    for bad in (["--backend", "dask"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_bad_arguments_are_refused() -> None:
    item = [{"key": "a", "x": 1}]
    with pytest.raises(ValueError, match="backend must be one of"):
        run_sweep(work, item, backend="dask", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ray_address is only meaningful"):
        run_sweep(work, item, ray_address="auto", progress=False)
    with pytest.raises(ValueError, match="max_workers"):
        run_sweep(work, item, max_workers=0, progress=False)
    with pytest.raises(ValueError, match="item_timeout_s"):
        run_sweep(work, item, item_timeout_s=0, progress=False)


# ---------------------------------------------------------------------------------------------------
# Ray backend
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_and_local_give_identical_results(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    special = {
        "k1": {"do": "raise"},
        "k2": {"do": "exit"},
        "k3": {"do": "hang", "pid_file": str(tmp_path / "hang.pid")},
    }
    items = items_for(tmp_path / "calls", 7, **special)
    local = run_sweep(work, items, max_workers=2, item_timeout_s=5.0, progress=False)
    assert not ray.is_initialized()
    # No address: run_sweep starts a local Ray instance and shuts it down afterwards.
    remote = run_sweep(work, items, backend="ray", max_workers=2, item_timeout_s=5.0, progress=False)
    assert not ray.is_initialized()
    assert [r.status for r in remote] == ["ok", "error", "worker_died", "timeout", "ok", "ok", "ok"]
    assert remote == local
    assert remote[1].error == "ValueError: bad input 1"
    assert [r.result for r in remote if r.ok] == [ok(i) for i in (0, 4, 5, 6)]


@pytest.mark.slow
def test_ray_sweep_resumes_from_local_results(tmp_path: Path) -> None:
    # One out_dir format for both backends: a sweep begun locally is finished on Ray; and in a Ray
    # session the caller started, the single-thread variables are set per task (checked by ok()).
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    items = items_for(tmp_path / "calls", 4)
    out = tmp_path / "out"
    run_sweep(work, items[:2], out_dir=out, max_workers=2, progress=False)
    tests = str(Path(__file__).parent)
    env = {"env_vars": {"PYTHONPATH": tests}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
    try:
        res = run_sweep(work, items, backend="ray", out_dir=out, progress=False)
        assert ray.is_initialized()  # a caller's Ray session is left open
    finally:
        ray.shutdown()
    assert [r.result for r in res] == [ok(i) for i in range(4)]
    assert calls(tmp_path / "calls") == {f"k{i}": 1 for i in range(4)}
