"""Evaluation: one rollout loop for every controller, sweeps over held-out scenarios.

- :func:`rollout` plays one episode of any controller (SB3's ``predict`` protocol on Dict
  observations) and returns an :class:`EpisodeResult`.
- :func:`evaluate` runs every (policy, scenario) pair through :func:`oracle.executor.run_sweep`, takes
  the oracle's objective per scenario as the reference, and aggregates (:mod:`agents.report`): mean
  benefit with a 95 % bootstrap confidence interval over scenarios, gap to the oracle, normalized
  score ``(agent - greedy) / (oracle - greedy)``, emissions, energy cost, inference served, jobs
  completed, violations and decision time per step.
- The scenarios are a preset's seeds (items keyed ``policy-preset-seed``) or a user's named
  scenarios (``evaluate.py --scenario PATH``: :func:`heldout_scenarios` of a scenario JSON, a folder
  or a data spec; items keyed ``policy-<name>``). Items are cached in ``out_dir/items`` (an
  interrupted evaluation resumes); a cached result is checked against :func:`check_result` when it
  is read and recomputed, with a warning, if it does not fit.
- :func:`agents.report.write_report` writes ``results.csv``, ``results.json`` and the PNG plots;
  :func:`agents.report.print_table` prints the table (both re-exported here).

Benefit is the sum of the MILP objective's terms in ``info["reward_terms"]`` (MODEL.md §5), without
the env's penalties; the penalties (lost load, carbon above the budget, terminal state of charge,
mandatory jobs) are reported beside it as ``penalty_usd`` and counted, with the env's repairs, in
``violations``. ``return_usd = benefit_usd - penalty_usd`` is the env's episode return.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.ensemble import model_digest
from agents.report import (
    BASELINE,
    BOOTSTRAP_SEED,
    JSON_FIELDS,
    N_BOOTSTRAP,
    REFERENCE,
    TABLE_COLUMNS,
    Report,
    bootstrap_ci,
    describe,
    format_table,
    gap_pct,
    print_table,
    summarize,
    table_cells,
    write_report,
)
from agents.rollout import ENERGY_TERMS, PENALTY_TOL_USD, EpisodeResult, rollout
from envs.dc_env import CarbonAwareDCEnv
from envs.presets import make_scenario
from envs.scenario import Scenario, ScenarioError

__all__ = [
    "BASELINE",
    "BOOTSTRAP_SEED",
    "ENERGY_TERMS",
    "JSON_FIELDS",
    "N_BOOTSTRAP",
    "PENALTY_TOL_USD",
    "REFERENCE",
    "TABLE_COLUMNS",
    "EpisodeResult",
    "Report",
    "bootstrap_ci",
    "check_result",
    "describe",
    "evaluate",
    "format_table",
    "gap_pct",
    "heldout_scenarios",
    "interrupted_message",
    "make_env",
    "make_items",
    "print_table",
    "rollout",
    "summarize",
    "table_cells",
    "write_report",
]

# ------------------------------------------------------------------------------------------- sweeps
DEFAULT_RUN = Path("runs/default")
"""Where ``python train.py`` writes by default."""
PRETRAINED = Path(__file__).resolve().parent / "pretrained" / "paper" / "ensemble.json"
"""The pretrained default agent: the 5-network ensemble of ``python train.py`` (default settings,
``--forecast-level typical``), pickle-free; how it was made: ``agents/pretrained/paper/README.md``."""


def default_model(run: Path = DEFAULT_RUN) -> Path:
    """The policy train.py deployed in ``run``: the pickle-free ``policy/ensemble.json`` or
    ``policy/model.json`` (:mod:`agents.policy_file`); for a run of an older version its
    ``ensemble.json`` or ``model.zip`` (which need ``--trust-pickle``). When ``run`` is the default
    run and holds none of these (no ``python train.py`` yet), the ensemble shipped with the package,
    :data:`PRETRAINED` (so that ``make demo`` has an agent row on a fresh clone)."""
    for name in ("policy/ensemble.json", "policy/model.json", "ensemble.json", "model.zip"):
        if (run / name).exists():
            return run / name
    if Path(run) == DEFAULT_RUN and PRETRAINED.exists():
        return PRETRAINED
    return run / "model.zip"


def training_range_note(seeds: Sequence[int]) -> str | None:
    """A one-line warning when ``seeds`` reach into the range ``train.py`` draws its scenarios from
    (:data:`agents.imitation.TRAIN_SEED_LOW` and up): scores there are not held-out scores."""
    from agents.imitation import TRAIN_SEED_LOW

    inside = [s for s in seeds if s >= TRAIN_SEED_LOW]
    if not inside:
        return None
    shown = ", ".join(map(str, inside[:3])) + (", ..." if len(inside) > 3 else "")
    return (
        f"note: --seeds {shown} lie in the training range (train.py draws seeds >= {TRAIN_SEED_LOW}); "
        "a trained agent may have seen them: these are not held-out scores"
    )


def parse_level(text: str) -> str:
    """One ``--forecast-level`` value (a level name, ``LEVEL*FACTOR`` or a number), spaces removed and
    checked now by :func:`envs.forecast.forecast_model`; its error names the problem."""
    from envs.forecast import forecast_model

    level = text.strip().replace(" ", "")
    try:
        forecast_model(level)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return level


def parse_seeds(text: str) -> list[int]:
    """``"0-19"``, ``"0,3,5"`` or a mix (``"0-4,10"``) -> a list of seeds (for ``--seeds``)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            first, last = -1, -1
        if first < 0 or last < first:
            raise argparse.ArgumentTypeError(
                f"seeds: {part!r} is not a seed >= 0 or a range low-high with low <= high; give seeds like "
                f"0-19 or 0,3,5 (got {text!r})"
            )
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise argparse.ArgumentTypeError(f"seeds: need non-negative seeds like 0-19 or 0,3,5 (got {text!r})")
    return list(dict.fromkeys(seeds))


def heldout_scenarios(path: str | Path) -> tuple[list[tuple[str, Scenario]], dict[str, Any]]:
    """The named scenarios ``evaluate.py --scenario PATH`` scores, and a record of where they came from.

    ``path`` is anything :func:`envs.sources.load_scenarios` takes. A data spec gives its held-out
    windows, a folder with ``train/``/``validation/``/``heldout/`` sub-folders its ``heldout/`` files;
    a single scenario JSON, or a folder without splits, gives all its scenarios. Every scenario is
    built (and validated) here, so a bad file fails before any work with a :class:`ScenarioError`
    naming it. The record is the source's ``to_dict()`` plus ``evaluated``: ``"held-out"`` or
    ``"all"``.
    """
    from envs.sources import load_scenarios

    source = load_scenarios(path)
    info = source.to_dict()
    split = source.kind == "spec" or getattr(source, "split_kind", None) is not None
    chosen = source.split("heldout") if split else source
    scenarios = list(chosen)
    if not scenarios:
        where = "split.heldout" if source.kind == "spec" else "its heldout/ folder"
        raise ScenarioError(f"scenario: {path}: no held-out scenarios ({where} is empty or missing)")
    info["evaluated"] = "held-out" if split else "all"
    return scenarios, info


def make_env(preset: str | None, scenario: Scenario, **env_kwargs: Any) -> CarbonAwareDCEnv:
    """The Dict env fixed to ``scenario`` (forecast settings from ``env_kwargs``). ``preset`` fixes the
    env's shapes (job slots, horizon) to the preset's; ``None`` takes them from ``scenario``."""
    return CarbonAwareDCEnv(scenario=scenario, preset=preset, **env_kwargs)


def policy_label(spec: str) -> str:
    """The table / key name of a policy spec: the name itself, or ``agent-<stem>`` for a model path
    (``agent`` for the default ``runs/default/model.zip`` or ``runs/default/ensemble.json``,
    ``agent-<run>`` for other runs)."""
    from agents.baselines import POLICY_NAMES

    if spec in POLICY_NAMES:
        return spec
    path = Path(spec)
    if path.parent.parent.name == "pretrained":  # agents/pretrained/<preset>/ensemble.json
        return "agent_pretrained"
    if path.parent.name == "policy":  # train.py's pickle-free export: runs/<run>/policy/<name>.json
        path = path.parent.parent / path.name
    stem = path.stem if path.stem not in ("model", "ensemble") else path.parent.name
    label = "agent" if stem in ("", "default") else f"agent-{stem}"
    return _safe(label.replace("agent-", "agent_", 1))


def kwargs_for(policy_kwargs: dict[str, dict[str, Any]], label: str, spec: str) -> dict[str, Any]:
    """The keyword arguments of a policy from ``policy_kwargs``, keyed by its label (``mpc``,
    ``agent_mine``) or by its spec (a model path: evaluate.py's loading flags, e.g. ``trust_pickle``)."""
    return policy_kwargs.get(label, policy_kwargs.get(spec, {}))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in text)


def policy_labels(specs: Sequence[str]) -> dict[str, str]:
    """:func:`policy_label` of every spec, made unique: model paths that would share a label (the
    ``model.zip`` and ``ensemble.json`` of one run, or ``member_1.zip`` of two runs) are named by as
    many trailing path parts as it takes (``agent_base_model`` / ``agent_base_ensemble``,
    ``agent_base_ensemble_member_1`` / ``agent_lv_ensemble_member_1``)."""
    specs = list(dict.fromkeys(specs))
    labels = {spec: policy_label(spec) for spec in specs}

    def tail(spec: str, k: int) -> str:
        parts = [*Path(spec).parent.parts, Path(spec).stem][-k:]
        return _safe("agent_" + "_".join(parts))

    for label in set(labels.values()):
        group = [spec for spec in specs if labels[spec] == label]
        if len(group) < 2:
            continue
        depth = max(len(Path(spec).parts) for spec in group)
        for k in range(1, depth + 1):
            named = {spec: tail(spec, k) for spec in group}
            if len(set(named.values())) == len(group):
                break
        labels.update(named)
    if len(set(labels.values())) < len(labels):
        raise ValueError(f"policies: cannot give these specs distinct names: {specs}")
    return labels


def target_scenario(meta: dict[str, Any], scenarios: dict[str, Scenario], i: int) -> Scenario:
    """The ``i``-th scenario of an evaluation's ``meta``: a preset's seed, or a user's named scenario."""
    if meta.get("source"):
        return scenarios[meta["scenarios"][i]]
    return make_scenario(meta["preset"], int(meta["seeds"][i]))


def run_item(item: dict[str, Any]) -> dict[str, Any]:
    """One sweep item: build the scenario and env, play the policy, return the episode's metrics.

    A user's scenario travels in the item (``item["scenario"]``, its JSON form) and its env takes
    the scenario's shapes; a preset's is rebuilt from ``preset`` and ``seed``. The oracle item also
    returns the schedule's ``objective_usd``, ``bound_usd``, ``mip_gap`` and ``status`` (the
    per-scenario reference)."""
    from agents.baselines import make_policy

    given = item.get("scenario")
    sc = Scenario.from_dict(given) if given is not None else make_scenario(item["preset"], int(item["seed"]))
    env = make_env(item["preset"], sc, **item.get("env_kwargs", {}))
    policy = make_policy(item["spec"], env, **item.get("policy_kwargs", {}))
    trace_dir = item.get("trace_dir")
    result = rollout(policy, env, seed=int(item["seed"]), preset=item["preset"], trace=trace_dir is not None)
    result.policy = item["policy"]
    result.scenario = item["name"]
    if trace_dir is not None:
        from envs.atomic import atomic_write_text

        atomic_write_text(Path(trace_dir) / f"{item['key']}.csv", result.frame.to_csv(index=False))
    out = result.to_dict()
    if given is not None:  # a user's scenario: no preset seed; the env's reset seed is kept apart
        out["preset"], out["seed"], out["reset_seed"] = None, None, int(item["seed"])
    out["fingerprint"] = item["fingerprint"]
    schedule = getattr(policy, "schedule", None)
    if item["spec"] == "oracle" and schedule is not None:
        out["oracle"] = {
            "status": schedule.status,
            "objective_usd": _finite(schedule.objective_usd),
            "bound_usd": _finite(schedule.bound_usd),
            "mip_gap": _finite(schedule.mip_gap),
            "solve_time_s": schedule.solve_time_s,
        }
    if hasattr(policy, "solves"):
        out["solves"] = int(policy.solves)
    return out


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


RESULT_NUMBERS = (
    "benefit_usd",
    "return_usd",
    "penalty_usd",
    "emissions_t",
    "energy_cost_usd",
    "inference_served_pct",
    "jobs_completed",
    "violations",
    "decision_ms",
)
"""Numbers every stored item result must carry (what :func:`evaluate` and the report read)."""


def check_result(result: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field if a stored item result lacks what :func:`evaluate`
    reads (the sweep recomputes such an item with a warning instead of failing on it later)."""
    for key in ("policy", "scenario", "fingerprint"):
        if not isinstance(result.get(key), str) or not result[key]:
            raise ValueError(f"result.{key}: missing or not a non-empty string")
    for key in RESULT_NUMBERS:
        value = result.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"result.{key}: missing or not a finite number (got {value!r})")
    oracle = result.get("oracle")
    if oracle is not None:
        if not isinstance(oracle, dict) or "objective_usd" not in oracle:
            raise ValueError("result.oracle: not a mapping with objective_usd")
        obj = oracle["objective_usd"]
        if obj is not None and (isinstance(obj, bool) or not isinstance(obj, (int, float))):
            raise ValueError(f"result.oracle.objective_usd: not a number or null (got {obj!r})")


CODE_PACKAGES = ("envs", "oracle", "agents")
"""Packages whose source a cached evaluation result depends on (see :func:`code_digest`)."""


def code_digest() -> str:
    """A hash of the Python source of :data:`CODE_PACKAGES`: a cached result computed by other
    code (a changed safety layer, env or oracle) is stale even if the model file is the same."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in CODE_PACKAGES:
        for path in sorted((root / pkg).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _targets(
    preset: str | None, seeds: Sequence[int], scenarios: Sequence[tuple[str, Scenario]] | None
) -> list[dict[str, Any]]:
    """One entry per evaluated scenario: its name, the env's preset (shapes), the reset seed and, for a
    user's scenario, its JSON form and content digest. A user's ``i``-th scenario is reset with seed
    ``i`` (its forecast-error draws), as a preset's seed ``s`` is reset with ``s``."""
    if scenarios is None:
        return [{"name": f"{preset}-{int(s)}", "preset": preset, "seed": int(s)} for s in seeds]
    out = []
    for i, (name, sc) in enumerate(scenarios):
        data = sc.to_dict()
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        out.append({"name": str(name), "preset": None, "seed": i, "scenario": data, "digest": digest})
    return out


def make_items(
    specs: Sequence[str],
    preset: str | None,
    seeds: Sequence[int],
    policy_kwargs: dict[str, dict[str, Any]] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    trace_dir: str | Path | None = None,
    *,
    scenarios: Sequence[tuple[str, Scenario]] | None = None,
) -> list[dict[str, Any]]:
    """The sweep items, one per (policy, scenario): keyed ``policy-preset-seed`` for a preset's seeds,
    ``policy-<name>`` for named ``scenarios`` (the name made file-safe: ``spec@2023-03-18T00`` ->
    ``spec_2023-03-18T00``). Each carries a ``fingerprint`` of everything its result depends on
    (settings, model file contents, the scenario's contents, the code: :func:`code_digest`, and where
    its trace goes: a traced item is rerun, not read from the cache of an untraced one). With
    ``trace_dir`` every item writes ``<trace_dir>/<key>.csv``."""
    trace = None if trace_dir is None else str(Path(trace_dir).resolve())
    policy_kwargs = policy_kwargs or {}
    code = code_digest()
    env_kwargs = env_kwargs or {}
    targets = _targets(preset, seeds, scenarios)
    names = [t["name"] for t in targets]
    if len(set(names)) < len(names):
        raise ValueError(f"scenarios: names must be unique (got {names})")
    items = []
    labels = policy_labels(specs)
    for spec in specs:
        label = labels[spec]
        kw = kwargs_for(policy_kwargs, label, spec)
        digest = model_digest(spec) if Path(spec).is_file() else ""
        for target in targets:
            ident = {
                "spec": spec,
                "digest": digest,
                "preset": target["preset"],
                "seed": target["seed"],
                "policy_kwargs": kw,
                "env_kwargs": env_kwargs,
                "code": code,
                "trace_dir": trace,
            }
            if scenarios is not None:
                ident["scenario"] = [target["name"], target["digest"]]
            if kw.get("vecnormalize"):  # the statistics' contents, not only their path
                ident["vecnormalize"] = model_digest(kw["vecnormalize"])
            if spec in ("hybrid", "agent_lp"):  # the proposing model's contents (default: the agent row's)
                proposer = Path(kw.get("model") or default_model())
                ident["hybrid_model"] = model_digest(proposer) if proposer.is_file() else str(proposer)
            fingerprint = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
            key = f"{label}-{preset}-{target['seed']}" if scenarios is None else f"{label}-{target['name']}"
            items.append(
                {
                    "key": _safe_key(key),
                    "policy": label,
                    "spec": spec,
                    "name": target["name"],
                    "preset": target["preset"],
                    "seed": target["seed"],
                    "policy_kwargs": kw,
                    "env_kwargs": env_kwargs,
                    "fingerprint": fingerprint,
                    **({"scenario": target["scenario"]} if "scenario" in target else {}),
                    **({} if trace is None else {"trace_dir": trace}),
                }
            )
    return items


def _safe_key(key: str) -> str:
    """``key`` as a sweep item key (a safe file name: letters, digits, ``.``, ``_``, ``-``)."""
    out = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
    return out if out[:1].isalnum() else "s" + out


def _drop_stale(cache: Path, items: Sequence[dict[str, Any]]) -> None:
    """Delete cached ok results whose fingerprint differs from the item's (settings or model changed).

    A file that is not a well-formed result is left in place: the sweep's reader
    (:func:`oracle.executor.run_sweep` with :func:`check_result`) recomputes it with a warning."""
    for item in items:
        path = cache / f"{item['key']}.json"
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        result = stored.get("result") if isinstance(stored, dict) else None
        fingerprint = result.get("fingerprint") if isinstance(result, dict) else None
        if isinstance(fingerprint, str) and fingerprint != item["fingerprint"]:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- evaluate
def versions() -> dict[str, str]:
    """Versions of Python and the packages the results depend on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in (
        "carbon-aware-dc",
        "numpy",
        "gymnasium",
        "pulp",
        "highspy",
        "stable-baselines3",
        "sb3-contrib",
        "torch",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def cache_dir(out_dir: str | Path) -> Path:
    """Where :func:`evaluate` caches its items under ``out_dir``."""
    return Path(out_dir) / "items"


def interrupted_message(out_dir: str | Path | None, command: str = "command") -> str:
    """The one line a CLI prints on Ctrl-C: how many finished items are cached where (``out_dir/items``
    and, across forecast levels, ``out_dir/levels/*/items``) and that re-running the same ``command``
    resumes from them (a cached item is reused only if its settings are unchanged)."""
    if out_dir is None:
        return (
            f"interrupted: nothing was cached (no output folder); re-running the same {command} starts over"
        )
    root = Path(out_dir)
    folders = [cache_dir(root), *sorted((root / "levels").glob("*/items"))]
    n = sum(_stored_ok(path) for folder in folders if folder.is_dir() for path in folder.glob("*.json"))
    where = ", ".join(str(f) for f in folders if f.is_dir()) or str(cache_dir(root))
    return (
        f"interrupted: {n} finished item{'s' * (n != 1)} cached in {where}; "
        f"re-run the same {command} to resume from them"
    )


def _stored_ok(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False


def evaluate(
    policies: Sequence[str],
    preset: str | None = None,
    seeds: Sequence[int] | None = None,
    *,
    scenarios: Sequence[tuple[str, Scenario]] | None = None,
    source: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    policy_kwargs: dict[str, dict[str, Any]] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    max_workers: int | None = None,
    item_timeout_s: float | None = None,
    progress: bool = True,
    trace_dir: str | Path | None = None,
) -> Report:
    """Run every (policy, scenario) pair and aggregate (see the module docstring).

    The scenarios are seeds ``seeds`` (default 0-19) of ``preset`` (default ``paper``), or the named
    ``scenarios`` (``(name, Scenario)`` pairs, e.g. :func:`heldout_scenarios`; then ``preset`` and
    ``seeds`` must be None, each env takes its shapes from its scenario, and ``source`` is recorded in
    the meta). ``policies`` are names of :func:`agents.baselines.make_policy` or model paths. The
    oracle and the greedy rule are always run too (the gap and the normalized score need them); rows
    are returned for the requested policies only. ``out_dir``: items are cached in ``out_dir/items``
    (resumable; a cached item whose settings changed is rerun, one that does not fit
    :func:`check_result` is recomputed with a warning). ``policy_kwargs`` maps a policy label to its
    constructor arguments; ``env_kwargs`` go to the env (``forecast_horizon``, ``forecast_level``).
    ``trace_dir``: each (policy, scenario) also writes its per-step trace CSV there (:mod:`agents.trace`).
    """
    from oracle.executor import run_sweep

    if scenarios is not None:
        if preset is not None or seeds is not None:
            raise ValueError("evaluate: give scenarios, or preset and seeds, not both")
        scenarios = list(scenarios)
        if not scenarios:
            raise ValueError("scenarios: empty")
        seeds = list(range(len(scenarios)))
    else:
        preset = preset or "paper"
        seeds = [int(s) for s in (range(20) if seeds is None else seeds)]
    specs = list(dict.fromkeys([REFERENCE, BASELINE, *policies]))
    labels = policy_labels(specs)
    wanted = list(dict.fromkeys(labels[p] for p in policies))
    if trace_dir is not None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
    items = make_items(specs, preset, seeds, policy_kwargs, env_kwargs, trace_dir, scenarios=scenarios)
    names = list(dict.fromkeys(item["name"] for item in items))
    cache = None
    if out_dir is not None:
        cache = cache_dir(out_dir)
        cache.mkdir(parents=True, exist_ok=True)
        _drop_stale(cache, items)
    tick = time.perf_counter()
    results = run_sweep(
        run_item,
        items,
        backend=backend,
        out_dir=cache,
        max_workers=max_workers,
        ray_address=ray_address,
        item_timeout_s=item_timeout_s,
        progress=progress,
        desc="evaluate",
        validate_result=check_result,
    )
    wall = time.perf_counter() - tick
    ok = [r.result for r in results if r.ok and r.result is not None]
    failures = [{"key": r.key, "status": r.status, "error": r.error} for r in results if not r.ok]
    oracle = {r["scenario"]: r["oracle"] for r in ok if r["policy"] == REFERENCE and r.get("oracle")}
    rows = []
    for r in ok:
        ref = oracle.get(r["scenario"], {})
        r = dict(r)
        r["oracle_benefit_usd"] = ref.get("objective_usd")
        r["oracle_bound_usd"] = ref.get("bound_usd")
        r["oracle_mip_gap"] = ref.get("mip_gap")
        r["gap_pct"] = gap_pct(r["benefit_usd"], r["oracle_benefit_usd"])
        rows.append(r)
    summary_all = summarize(rows, list(dict.fromkeys([*wanted, REFERENCE, BASELINE])))
    summary = [s for s in summary_all if s["policy"] in wanted]
    rows = [r for r in rows if r["policy"] in wanted]
    rows.sort(key=lambda r: (wanted.index(r["policy"]), names.index(r["scenario"])))
    meta = {
        "preset": preset,
        "seeds": seeds,
        "scenarios": names,
        "source": None if scenarios is None else {"evaluated": "given", **(source or {})},
        "policies": wanted,
        "specs": {labels[s]: s for s in specs},
        "policy_kwargs": policy_kwargs or {},
        "env_kwargs": env_kwargs or {},
        "bootstrap_seed": BOOTSTRAP_SEED,
        "n_bootstrap": N_BOOTSTRAP,
        "confidence": 0.95,
        "backend": backend,
        "wall_time_s": wall,
        "versions": versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
    }
    given = {} if scenarios is None else {str(name): sc for name, sc in scenarios}
    return Report(rows=rows, summary=summary, failures=failures, meta=meta, scenarios=given)
