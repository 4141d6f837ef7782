"""Run embarrassingly parallel work items on local processes or a Ray cluster, resumably.

One interface for oracle dataset generation, evaluation sweeps and ``python -m oracle compare``::

    results = run_sweep(solve_one, items, backend="local", out_dir="runs/sweep1")

``fn`` is a picklable top-level function that takes one item (a JSON-serialisable dict with a unique
``"key"``) and returns a JSON-serialisable dict. Every item comes back as one :class:`ItemResult`, in
item order, whatever happened to it: ``"ok"``, ``"error"`` (``fn`` raised), ``"timeout"`` or
``"worker_died"``. Results are identical whichever backend ran them (timings and diagnostics aside).
See docs/sweeps.md for the failure semantics and how to run on a Ray cluster.

This module is generic: it imports neither PuLP, NumPy nor torch (its one project import is the
standard-library-only ``envs.atomic``, and :mod:`oracle.sweep_backends`, equally generic).

This module is the interface and the result store; where items run (spawned local processes, Ray
tasks) is :mod:`oracle.sweep_backends`.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from envs.atomic import atomic_write_json
from oracle.sweep_backends import (
    ITEM_STATUSES,
    RAY_MISSING,
    ItemResult,
    Status,
    import_ray,
    run_local,
    run_ray,
)

__all__ = [
    "BACKENDS",
    "RAY_MISSING",
    "ItemResult",
    "StaleItemWarning",
    "Status",
    "add_backend_args",
    "backend_kwargs",
    "run_sweep",
    "validate_items",
]

Backend = Literal["local", "ray"]
BACKENDS: tuple[Backend, ...] = ("local", "ray")

# Keys become file names: no separators, no leading dot (temp files are hidden), bounded length.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class StaleItemWarning(UserWarning):
    """A stored sweep item did not match its schema (or the caller's ``validate_result``) and is
    recomputed."""


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
    ray = import_ray() if backend == "ray" else None
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
                run_ray(ray, ray_address, fn, items, todo, finish, max_workers, item_timeout_s)
            else:
                run_local(fn, items, todo, finish, max_workers, item_timeout_s)
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
# CLI option and the result store
# ---------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    if data["status"] not in ITEM_STATUSES:
        raise ValueError(f"status {data['status']!r} is not one of {ITEM_STATUSES}")
    if data["status"] == "ok" and (not isinstance(data["result"], dict) or not data["result"]):
        raise ValueError("status ok but the result is empty or missing")
    for name in ("error", "detail"):
        if data[name] is not None and not isinstance(data[name], str):
            raise ValueError(f"{name} must be a string or null")
    if isinstance(data["elapsed_s"], bool) or not isinstance(data["elapsed_s"], (int, float)):
        raise ValueError("elapsed_s must be a number")
    return ItemResult.from_json(data)
