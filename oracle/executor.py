"""Run embarrassingly parallel work items on local processes or a Ray cluster, resumably.

One interface for oracle dataset generation, evaluation sweeps and ``python -m oracle compare``::

    results = run_sweep(solve_one, items, backend="local", out_dir="runs/sweep1")

``fn`` is a picklable top-level function that takes one item (a JSON-serialisable dict with a unique
``"key"``) and returns a JSON-serialisable dict. Every item comes back as one :class:`ItemResult`, in
item order, whatever happened to it: ``"ok"``, ``"error"`` (``fn`` raised), ``"timeout"`` or
``"worker_died"``. Results are identical whichever backend ran them (timings and diagnostics aside).
See docs/sweeps.md for the failure semantics and how to run on a Ray cluster.

This module is generic: it imports neither PuLP, NumPy nor torch (its one project import is the
standard-library-only ``envs.atomic``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from envs.atomic import atomic_write_json

__all__ = [
    "BACKENDS",
    "ItemResult",
    "StaleItemWarning",
    "Status",
    "add_backend_args",
    "backend_kwargs",
    "run_sweep",
    "validate_items",
]

Status = Literal["ok", "error", "timeout", "worker_died"]
Backend = Literal["local", "ray"]
BACKENDS: tuple[Backend, ...] = ("local", "ray")

RAY_MISSING = 'backend "ray" needs Ray, an optional extra: pip install -e ".[ray]"'

# Keys become file names: no separators, no leading dot (temp files are hidden), bounded length.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

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
_STATUSES = ("ok", "error", "timeout", "worker_died")


class StaleItemWarning(UserWarning):
    """A stored sweep item did not match its schema (or the caller's ``validate_result``) and is
    recomputed."""


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
# Public API
# ---------------------------------------------------------------------------------------------------


def run_sweep(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    items: Sequence[Mapping[str, Any]],
    *,
    backend: Backend = "local",
    out_dir: str | os.PathLike[str] | None = None,
    max_workers: int | None = None,
    ray_address: str | None = None,
    item_timeout_s: float | None = None,
    progress: bool = True,
    desc: str = "sweep",
    validate_result: Callable[[dict[str, Any]], object] | None = None,
) -> list[ItemResult]:
    """Run ``fn(item)`` for every item in parallel and return one result per item, in item order.

    Args:
        fn: Picklable top-level function ``item -> dict``; both must be JSON-serialisable.
        items: Dicts, each with a unique ``"key"`` that is a safe file name
            (``[A-Za-z0-9][A-Za-z0-9._-]*``, at most 200 characters).
        backend: ``"local"`` (spawned processes on this machine) or ``"ray"``.
        out_dir: If given, each finished item is written to ``out_dir/<key>.json`` atomically as soon
            as it finishes, and items whose stored status is ``"ok"`` are loaded instead of rerun.
            Failed items are stored too, but are attempted again on the next run.
        max_workers: Items run at once. Default: the usable cores (local) or the cluster's CPUs (ray).
        ray_address: ``"auto"`` or ``"host:port"`` joins an existing Ray cluster; ``None`` starts a
            local Ray instance for this sweep and shuts it down afterwards. If Ray is already
            initialised in this process, that connection is used and left open.
        item_timeout_s: Wall-clock limit per item, counted from dispatch to a ready worker; a stuck
            item is reported ``"timeout"`` and its worker is killed.
        progress: Show a tqdm bar on stderr (only when stderr is a terminal).
        desc: Label of the progress bar.
        validate_result: Called on every ``"ok"`` result loaded from ``out_dir``; if it raises, the
            item is recomputed with a :class:`StaleItemWarning` (e.g. a result without the keys the
            caller reads). Stored items are always checked against :class:`ItemResult`'s schema, and
            an ``"ok"`` item with an empty or missing result is recomputed the same way.

    Raises:
        ValueError: Bad keys or arguments.
        TypeError: ``fn`` cannot be pickled or an item is not JSON-serialisable.
        ImportError: ``backend="ray"`` without Ray installed (the message says how to install it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if ray_address is not None and backend != "ray":
        raise ValueError("ray_address is only meaningful with backend='ray'")
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if item_timeout_s is not None and not item_timeout_s > 0:
        raise ValueError(f"item_timeout_s must be > 0, got {item_timeout_s}")
    ray = _import_ray() if backend == "ray" else None
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise TypeError(f"fn must be a picklable top-level function: {exc}") from exc
    keys = validate_items(items)

    store = _Store(Path(out_dir), validate_result) if out_dir is not None else None
    results: list[ItemResult | None] = [None] * len(items)
    if store is not None:
        for i, key in enumerate(keys):
            results[i] = store.load_ok(key)
    todo = [i for i, r in enumerate(results) if r is None]

    disable = not progress or not sys.stderr.isatty()
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, disable=disable) as bar:

        def finish(i: int, res: ItemResult) -> None:
            results[i] = res
            if store is not None:
                store.save(res)
            bar.update(1)

        if todo:
            if ray is not None:
                _run_ray(ray, ray_address, fn, items, todo, finish, max_workers, item_timeout_s)
            else:
                _run_local(fn, items, todo, finish, max_workers, item_timeout_s)
    return [r for r in results if r is not None]


def validate_items(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Check that every item is a JSON-serialisable dict with a unique, file-safe key; return the keys."""
    keys: list[str] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "key" not in item:
            raise ValueError(f"item {i} must be a dict with a 'key', got {type(item).__name__}")
        key = item["key"]
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise ValueError(
                f"item {i}: key {key!r} is not a safe file name: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, at most 200 characters"
            )
        # Case-insensitive file systems (macOS, Windows) would store both keys in one file.
        folded = key.casefold()
        if folded in seen:
            raise ValueError(f"item {i}: key {key!r} duplicates {seen[folded]!r} (keys are case-insensitive)")
        seen[folded] = key
        try:
            json.dumps(item)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"item {key!r} is not JSON-serialisable: {exc}") from exc
        keys.append(key)
    return keys


def add_backend_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--backend``, ``--ray-address`` and ``--workers`` so every CLI spells them the same way.

    Pass the parsed namespace to :func:`backend_kwargs` to get the matching :func:`run_sweep` arguments.
    """
    group = parser.add_argument_group("parallel execution")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help='where items run: "local" processes (default) or "ray" (needs pip install -e ".[ray]")',
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help='Ray cluster to join ("auto" or host:port); default: start a local Ray instance',
    )
    group.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="items run at once (default: all usable cores, or the Ray cluster's CPUs)",
    )
    return parser


def backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`run_sweep` keyword arguments selected by :func:`add_backend_args`'s options."""
    return {"backend": args.backend, "ray_address": args.ray_address, "max_workers": args.workers}


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


def _call(fn: Callable[[dict[str, Any]], Any], item: dict[str, Any]) -> dict[str, Any]:
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


_Finish = Callable[[int, ItemResult], None]


class _Store:
    """One JSON file per item in ``root``, written atomically (``envs.atomic``) with the permissions
    of any new file (``0o666 & ~umask``), validated when read."""

    def __init__(self, root: Path, validate_result: Callable[[dict[str, Any]], object] | None = None) -> None:
        self.root = root
        self.validate_result = validate_result
        root.mkdir(parents=True, exist_ok=True)

    def load_ok(self, key: str) -> ItemResult | None:
        """The stored result of ``key`` if it finished ok and is valid; otherwise None (recompute).

        A missing file or a stored failure is simply redone; a file that does not match the schema
        (not JSON, missing or extra fields, wrong types, another key, an ok status without a result,
        or a result ``validate_result`` rejects) is redone with a :class:`StaleItemWarning`.
        """
        path = self.root / f"{key}.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            res = _parse_item(json.loads(text), key)
            if res.ok and self.validate_result is not None:
                self.validate_result(res.result)  # type: ignore[arg-type]
        except Exception as exc:
            warnings.warn(
                f"{path}: invalid stored sweep item, recomputing it ({exc})", StaleItemWarning, stacklevel=4
            )
            return None
        return res if res.ok else None

    def save(self, res: ItemResult) -> None:
        atomic_write_json(self.root / f"{res.key}.json", res.to_json(), indent=1)


def _parse_item(data: Any, key: str) -> ItemResult:
    """An :class:`ItemResult` from its stored JSON, or ValueError saying what does not fit."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    fields = {"key", "status", "result", "error", "detail", "elapsed_s"}
    if set(data) != fields:
        missing, extra = sorted(fields - set(data)), sorted(set(data) - fields)
        raise ValueError(f"fields differ from ItemResult's (missing {missing}, unexpected {extra})")
    if data["key"] != key:
        raise ValueError(f"holds key {data['key']!r}, not {key!r}")
    if data["status"] not in _STATUSES:
        raise ValueError(f"status {data['status']!r} is not one of {_STATUSES}")
    if data["status"] == "ok" and (not isinstance(data["result"], dict) or not data["result"]):
        raise ValueError("status ok but the result is empty or missing")
    for name in ("error", "detail"):
        if data[name] is not None and not isinstance(data[name], str):
            raise ValueError(f"{name} must be a string or null")
    if isinstance(data["elapsed_s"], bool) or not isinstance(data["elapsed_s"], (int, float)):
        raise ValueError("elapsed_s must be a number")
    return ItemResult.from_json(data)


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
    """Worker loop: receive pickled ``(fn, item)``, send back :func:`_call`'s outcome; stop on EOF."""
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
            outcome = _call(fn, item)
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


def _run_local(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    items: Sequence[Mapping[str, Any]],
    todo: list[int],
    finish: _Finish,
    max_workers: int | None,
    item_timeout_s: float | None,
) -> None:
    """Run ``todo`` (indices into ``items``) on spawned local worker processes."""
    ctx = multiprocessing.get_context("spawn")
    n_workers = min(max_workers or _usable_cores(), len(todo))
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


def _run_ray(
    ray: Any,
    ray_address: str | None,
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    items: Sequence[Mapping[str, Any]],
    todo: list[int],
    finish: _Finish,
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
            num_cpus=_usable_cores(),
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
    finish: _Finish,
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
    remote_call = ray.remote(**options)(_call)
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
