"""Where sweep items run: spawned local worker processes or Ray tasks, each failure charged to its item.

The execution half of :func:`oracle.executor.run_sweep` (which re-exports :class:`ItemResult`,
:data:`Status` and :data:`RAY_MISSING`). Both backends run the same worker-side :func:`call_item`,
so an item's outcome is the same :class:`ItemResult` whichever ran it: ``"ok"``, ``"error"`` (its
function raised), ``"timeout"`` (its worker was killed) or ``"worker_died"``. Like the executor it
imports neither PuLP, NumPy nor torch.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "worker_died"]

RAY_MISSING = 'backend "ray" needs Ray, an optional extra: pip install -e ".[ray]"'

# Each worker runs one item at a time, so BLAS/OpenMP thread pools would only oversubscribe the cores.
# These are read when the libraries load, so they must be in the environment before the worker starts.
_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}
_ENV_LOCK = threading.Lock()
_READY = b"ready"
ITEM_STATUSES = ("ok", "error", "timeout", "worker_died")
"""The values of :data:`Status` (a stored item with another status is invalid)."""


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item.

    Attributes:
        key: The item's ``"key"``.
        status: ``"ok"``; ``"error"`` (``fn`` raised, or returned something that is not a JSON dict);
            ``"timeout"`` (ran longer than ``item_timeout_s``; its worker was killed); ``"worker_died"``
            (the process running it exited, was killed or crashed).
        result: ``fn``'s return value after a JSON round trip (``None`` unless ok).
        error: One-line message, e.g. ``"ValueError: infeasible"`` (``None`` when ok).
        detail: Traceback or backend diagnostics; excluded from equality (it names paths and pids).
        elapsed_s: Wall time of the item; excluded from equality.
    """

    key: str
    status: Status
    result: dict[str, Any] | None = None
    error: str | None = None
    detail: str | None = field(default=None, compare=False)
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        """True when ``fn`` returned normally."""
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """The stored form: a plain dict with every field."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemResult:
        """Inverse of :meth:`to_json`."""
        return cls(**data)


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def import_ray() -> Any:
    """The ``ray`` module, or ImportError saying how to install the optional extra."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


def call_item(fn: Callable[[dict[str, Any]], Any], item: dict[str, Any]) -> dict[str, Any]:
    """Run one item inside a worker; exceptions become data so both backends report them alike."""
    start = time.perf_counter()
    try:
        out = fn(item)
        if not isinstance(out, dict):
            raise TypeError(f"fn must return a dict, got {type(out).__name__}")
        # The round trip makes fresh results equal to ones loaded from disk (tuples -> lists, ...).
        result = json.loads(json.dumps(out))
    except Exception as exc:
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "detail": traceback.format_exc(),
            "elapsed_s": time.perf_counter() - start,
        }
    return {"status": "ok", "result": result, "elapsed_s": time.perf_counter() - start}


def _timeout(key: str, limit: float | None, elapsed: float) -> ItemResult:
    return ItemResult(key, "timeout", error=f"timed out after {limit:g} s", elapsed_s=elapsed)


def _died(key: str, detail: str, elapsed: float) -> ItemResult:
    return ItemResult(
        key,
        "worker_died",
        error="worker process died while running this item",
        detail=detail,
        elapsed_s=elapsed,
    )


Finish = Callable[[int, ItemResult], None]
"""Called by a backend with (item index, its result) as each item finishes."""


# ---------------------------------------------------------------------------------------------------
# Local backend
# ---------------------------------------------------------------------------------------------------
# Not concurrent.futures.ProcessPoolExecutor: when one of its workers dies the whole pool is marked
# broken, every in-flight solve is lost and the culprit is unknown; and a stuck item cannot be killed
# without killing the pool. Here each worker is a spawned process with its own pipe, so a death or a
# timeout is charged to exactly the item that worker was running, and only that worker is replaced.
# Spawn, not fork: forking a parent that runs torch/OpenMP/BLAS threads can deadlock the child.


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Temporarily set environment variables (so a spawned child starts with them)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _worker_main(conn: Connection) -> None:
    """Worker loop: receive pickled ``(fn, item)``, send back :func:`call_item`'s outcome; stop on EOF."""
    # Own process group, so killing a stuck item also kills solver subprocesses it started; and the
    # driver, not the workers, handles Ctrl-C.
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send_bytes(_READY)
    while True:
        try:
            payload = conn.recv_bytes()
        except EOFError:
            return
        if not payload:
            return
        try:
            fn, item = pickle.loads(payload)
        except Exception as exc:
            outcome = {"status": "error", "error": f"cannot unpickle fn/item in worker: {exc!r}"}
        else:
            outcome = call_item(fn, item)
        conn.send_bytes(pickle.dumps(outcome))


class _Worker:
    """One spawned worker process and the item it is running."""

    def __init__(self, ctx: multiprocessing.context.SpawnContext) -> None:
        self.conn, child_conn = ctx.Pipe()
        # Not a daemon: fn may start processes of its own (e.g. SB3's SubprocVecEnv); the driver kills
        # its workers itself, and a worker whose driver vanished exits on the pipe's EOF.
        self.proc = ctx.Process(target=_worker_main, args=(child_conn,), name="sweep-worker")
        with _environ(_THREAD_ENV):
            self.proc.start()
        child_conn.close()
        self.ready = False
        self.index: int | None = None
        self.started = 0.0

    def kill(self) -> None:
        """Kill the worker and anything it started (its process group), then reap it."""
        pid = self.proc.pid
        if self.proc.is_alive() and pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if hasattr(os, "killpg"):
                    os.killpg(pid, signal.SIGKILL)
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not."""
        with contextlib.suppress(OSError):
            self.conn.send_bytes(b"")
        self.proc.join(2)
        self.kill()


def run_local(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    items: Sequence[Mapping[str, Any]],
    todo: list[int],
    finish: Finish,
    max_workers: int | None,
    item_timeout_s: float | None,
) -> None:
    """Run ``todo`` (indices into ``items``) on spawned local worker processes."""
    ctx = multiprocessing.get_context("spawn")
    n_workers = min(max_workers or usable_cores(), len(todo))
    pending = deque(todo)
    workers: list[_Worker] = []
    try:
        while pending or any(w.index is not None for w in workers):
            while len(workers) < n_workers and len(workers) < len(pending) + _busy(workers):
                workers.append(_Worker(ctx))
            for w in workers:
                if w.ready and w.index is None and pending:
                    i = pending.popleft()
                    w.index, w.started = i, time.monotonic()
                    try:
                        w.conn.send_bytes(pickle.dumps((fn, dict(items[i]))))
                    except OSError:
                        pass  # the worker is gone; its sentinel reports the death below
            wait(
                [x for w in workers for x in (w.conn, w.proc.sentinel)],
                _next_deadline(workers, item_timeout_s),
            )
            now = time.monotonic()
            for w in list(workers):
                key = None if w.index is None else str(items[w.index]["key"])
                if w.conn.poll():
                    try:
                        msg = w.conn.recv_bytes()
                    except (EOFError, OSError):
                        msg = None
                    if msg == _READY:
                        w.ready = True
                        continue
                    if msg is not None and w.index is not None and key is not None:
                        out = pickle.loads(msg)
                        finish(w.index, ItemResult(key=key, **out))
                        w.index = None
                        continue
                if not w.proc.is_alive():
                    w.kill()
                    workers.remove(w)
                    if not w.ready:
                        raise RuntimeError(
                            f"a sweep worker failed to start (exit code {w.proc.exitcode}); "
                            "is the main script guarded by `if __name__ == '__main__':`?"
                        )
                    if w.index is not None and key is not None:
                        finish(w.index, _died(key, f"exit code {w.proc.exitcode}", now - w.started))
                elif (
                    w.index is not None
                    and key is not None
                    and item_timeout_s is not None
                    and now - w.started >= item_timeout_s
                ):
                    w.kill()
                    workers.remove(w)
                    finish(w.index, _timeout(key, item_timeout_s, now - w.started))
    finally:
        for w in workers:
            if w.index is None:
                w.stop()
            else:
                w.kill()


def _busy(workers: list[_Worker]) -> int:
    return sum(w.index is not None for w in workers)


def _next_deadline(workers: list[_Worker], item_timeout_s: float | None) -> float | None:
    """Seconds until the earliest running item times out (None: wait without limit)."""
    if item_timeout_s is None:
        return None
    starts = [w.started for w in workers if w.index is not None]
    if not starts:
        return None
    return max(0.0, min(starts) + item_timeout_s - time.monotonic())


# ---------------------------------------------------------------------------------------------------
# Ray backend
# ---------------------------------------------------------------------------------------------------


def run_ray(
    ray: Any,
    ray_address: str | None,
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    items: Sequence[Mapping[str, Any]],
    todo: list[int],
    finish: Finish,
    max_workers: int | None,
    item_timeout_s: float | None,
) -> None:
    """Run ``todo`` as Ray tasks, starting (and afterwards stopping) a local instance if needed."""
    started_here = not ray.is_initialized()
    task_env: dict[str, str] = {}
    if started_here and ray_address is None:
        # "local" starts a fresh instance even if RAY_ADDRESS points at a cluster. Its workers get the
        # driver's import path, as spawned local workers do; setting the environment for the whole job
        # lets Ray prestart them.
        env = {"env_vars": {**_THREAD_ENV, "PYTHONPATH": _driver_pythonpath()}}
        ray.init(
            address="local",
            num_cpus=usable_cores(),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=env,
        )
    else:
        if started_here:
            # A job-level runtime_env here would have to agree with a submitted job's (`ray job
            # submit --working-dir`); task-level env_vars are merged into it instead.
            ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        task_env = dict(_THREAD_ENV)
    try:
        _ray_loop(ray, task_env, fn, items, todo, finish, max_workers, item_timeout_s)
    finally:
        if started_here:
            ray.shutdown()


def _driver_pythonpath() -> str:
    """The driver's import path outside the interpreter's own directories, as a PYTHONPATH."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if os.path.isdir(path) and not any(path.startswith(pre + os.sep) for pre in prefixes):
            paths.append(path)
    return os.pathsep.join(dict.fromkeys(paths))


def _ray_loop(
    ray: Any,
    task_env: dict[str, str],
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    items: Sequence[Mapping[str, Any]],
    todo: list[int],
    finish: Finish,
    max_workers: int | None,
    item_timeout_s: float | None,
) -> None:
    """Keep at most ``max_workers`` tasks running; report each as it finishes, fails or times out."""
    from ray import exceptions as rex

    died = tuple(
        getattr(rex, name)
        for name in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError")
        if hasattr(rex, name)
    )
    options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
    if task_env:
        options["runtime_env"] = {"env_vars": task_env}
    remote_call = ray.remote(**options)(call_item)
    # Only as many tasks in flight as can run, so a timeout counts running time, not queueing.
    limit = max_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending = deque(todo)
    running: dict[Any, tuple[int, float]] = {}
    try:
        while pending or running:
            while pending and len(running) < limit:
                i = pending.popleft()
                running[remote_call.remote(fn, dict(items[i]))] = (i, time.monotonic())
            timeout = None
            if item_timeout_s is not None:
                first = min(t for _, t in running.values())
                timeout = max(0.0, first + item_timeout_s - time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
            now = time.monotonic()
            for ref in ready:
                i, t0 = running.pop(ref)
                key = str(items[i]["key"])
                try:
                    out = ray.get(ref)
                except died as exc:
                    finish(i, _died(key, str(exc), now - t0))
                except rex.RayError as exc:
                    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    finish(
                        i,
                        ItemResult(
                            key, "error", error=f"{type(exc).__name__}: {first_line}", detail=str(exc)
                        ),
                    )
                else:
                    finish(i, ItemResult(key=key, **out))
            if item_timeout_s is not None:
                for ref, (i, t0) in list(running.items()):
                    if now - t0 >= item_timeout_s:
                        ray.cancel(ref, force=True)
                        del running[ref]
                        finish(i, _timeout(str(items[i]["key"]), item_timeout_s, now - t0))
    finally:
        for ref in running:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
