"""Evaluation: one rollout loop for every controller, sweeps over held-out seeds, metrics, report.

- :func:`rollout` plays one episode of any controller (SB3's ``predict`` protocol on Dict
  observations) and returns an :class:`EpisodeResult`.
- :func:`evaluate` runs every (policy, seed) pair through :func:`oracle.executor.run_sweep` (items keyed
  ``policy-preset-seed``, cached in ``out_dir/items`` so an interrupted evaluation resumes), takes
  the oracle's objective per seed as the reference, and aggregates: mean benefit with a 95 % bootstrap
  confidence interval over seeds, gap to the oracle, normalized score
  ``(agent - greedy) / (oracle - greedy)``, emissions, energy cost, inference served, jobs completed,
  violations and decision time per step.
- :func:`write_report` writes ``results.csv``, ``results.json`` and the PNG plots
  (:mod:`agents.plots`); :func:`format_table` renders the table.

Benefit is the sum of the MILP objective's terms in ``info["reward_terms"]`` (MODEL.md §5), without
the env's penalties; the penalties (lost load, carbon above the budget, terminal state of charge,
mandatory jobs) are reported beside it as ``penalty_usd`` and counted, with the env's repairs, in
``violations``. ``return_usd = benefit_usd - penalty_usd`` is the env's episode return.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.ensemble import model_digest
from envs.dc_env import CarbonAwareDCEnv
from envs.dynamics import PENALTY_TERMS
from envs.presets import make_scenario
from envs.scenario import OBJECTIVE_TERMS, Scenario

PENALTY_TOL_USD = 1e-3
"""A penalty term counts as a violation above this (the env charges floating-point dust, e.g. a
terminal state of charge 1e-14 MWh below the initial one in a replayed optimal schedule)."""
ENERGY_TERMS = ("export_revenue_usd", "import_cost_usd", "gen_cost_usd", "degradation_cost_usd")

BOOTSTRAP_SEED = 20240601
"""Seed of the bootstrap resampling (recorded in results.json)."""
N_BOOTSTRAP = 10_000
REFERENCE = "oracle"
BASELINE = "greedy"

JSON_FIELDS = (
    "policy",
    "preset",
    "seed",
    "benefit_usd",
    "oracle_benefit_usd",
    "gap_pct",
    "emissions_t",
    "energy_cost_usd",
    "inference_served_pct",
    "jobs_completed",
    "violations",
    "decision_ms",
)
"""Fields of one (policy, seed) row of ``evaluate.py --json``."""


@dataclasses.dataclass
class EpisodeResult:
    """The outcome of one episode of one controller (USD, tCO2, percent, milliseconds)."""

    policy: str
    preset: str
    seed: int | None
    benefit_usd: float
    return_usd: float
    penalty_usd: float
    violations: int
    repairs: dict[str, int]
    emissions_t: float
    energy_cost_usd: float
    carbon_cost_usd: float
    inference_served_pct: float
    jobs_completed: int
    jobs_total: int
    steps: int
    decision_ms: float
    decision_ms_max: float
    terms: dict[str, float]
    fallbacks: int = 0
    trace: dict[str, list] | None = None
    frame: Any = None
    """With ``rollout(..., trace=True)``: the per-step table of :class:`agents.trace.TraceRecorder`."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the traces omitted)."""
        out = dataclasses.asdict(self)
        out.pop("trace")
        out.pop("frame")
        return out


def rollout(
    policy: Any,
    env: CarbonAwareDCEnv,
    scenario: Scenario | None = None,
    *,
    seed: int | None = None,
    preset: str | None = None,
    record: bool = False,
    trace: bool = False,
) -> EpisodeResult:
    """Play one episode of ``policy`` in ``env`` (on ``scenario`` if given) and measure it.

    ``policy.predict`` is timed per step (``decision_ms`` is the mean). ``seed`` seeds ``env.reset``
    (forecast noise) and labels the result. ``record=True`` keeps the per-step flows, state of
    charge and carbon intensity in ``trace`` (for the dispatch plot). ``trace=True`` puts the
    per-(period, site) table of :mod:`agents.trace` (actions, flows, prices, carbon, reward terms,
    repairs, job starts) in ``frame`` as a pandas DataFrame; it needs the Dict env (the recorder
    reads the Dict action).
    """
    base = env.unwrapped
    if scenario is not None:
        base.set_scenario(scenario)
    obs, info = env.reset(seed=seed)
    sc = base.scenario
    recorder = None
    if trace:
        from agents.trace import TraceRecorder

        recorder = TraceRecorder(sc, base.voll_usd_per_mwh)
    name = str(getattr(policy, "name", type(policy).__name__))
    terms = dict.fromkeys(OBJECTIVE_TERMS + PENALTY_TERMS, 0.0)
    repairs: dict[str, int] = {}
    violations = 0
    emissions = served = demand = 0.0
    times: list[float] = []
    recorded: dict[str, list] = {"flows": [], "carbon_intensity": [], "renewable_mw": []} if record else {}
    state = None
    episode_start = np.ones((1,), dtype=bool)
    terminated = truncated = False
    steps = 0
    while not (terminated or truncated):
        tick = time.perf_counter()
        action, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        times.append(time.perf_counter() - tick)
        episode_start = np.zeros((1,), dtype=bool)
        if record:
            fc = base.forecast()
            recorded["carbon_intensity"].append(fc["carbon_intensity"][:, 0].tolist())
            recorded["renewable_mw"].append(fc["renewable_mw"][:, 0].tolist())
        obs, _reward, terminated, truncated, info = env.step(action)
        steps += 1
        if recorder is not None:
            recorder.add(info["period"], action, info, base.state_snapshot())
        for key, value in info["reward_terms"].items():
            terms[key] = terms.get(key, 0.0) + float(value)
        violations += sum(1 for key in PENALTY_TERMS if -info["reward_terms"].get(key, 0.0) > PENALTY_TOL_USD)
        for key in info["repairs"]:
            repairs[key] = repairs.get(key, 0) + 1
        emissions += float(info["emissions_t"])
        flows = info["flows"]
        served += float(np.sum(flows["serve_gpus"]))
        demand += float(np.sum(flows["serve_gpus"]) + np.sum(flows["unserved_gpus"]))
        if record:
            recorded["flows"].append({k: np.asarray(v).tolist() for k, v in flows.items()})
    benefit = sum(terms[k] for k in OBJECTIVE_TERMS)
    penalty = -sum(terms[k] for k in PENALTY_TERMS)
    snap = base.state_snapshot()
    completed = sum(1 for j, _, t in snap.job_starts if t + sc.jobs[j].duration <= sc.T)
    ms = [1000.0 * x for x in times]
    return EpisodeResult(
        policy=name,
        preset=preset or (base.preset or sc.name),
        seed=seed,
        benefit_usd=float(benefit),
        return_usd=float(benefit - penalty),
        penalty_usd=float(penalty),
        violations=int(violations + sum(repairs.values())),
        repairs=repairs,
        emissions_t=float(emissions),
        energy_cost_usd=float(-sum(terms[k] for k in ENERGY_TERMS)),
        carbon_cost_usd=float(-terms["carbon_cost_usd"]),
        inference_served_pct=100.0 * served / demand if demand > 0 else 100.0,
        jobs_completed=int(completed),
        jobs_total=sc.J,
        steps=steps,
        decision_ms=float(np.mean(ms)) if ms else 0.0,
        decision_ms_max=float(np.max(ms)) if ms else 0.0,
        terms={k: float(v) for k, v in terms.items()},
        fallbacks=int(getattr(policy, "fallbacks", 0)),
        trace=recorded if record else None,
        frame=None if recorder is None else recorder.frame(),
    )


# ------------------------------------------------------------------------------------------- sweeps
DEFAULT_RUN = Path("runs/default")
"""Where ``python train.py`` writes by default."""


def default_model(run: Path = DEFAULT_RUN) -> Path:
    """The policy train.py deployed in ``run``: the pickle-free ``policy/ensemble.json`` or
    ``policy/model.json`` (:mod:`agents.policy_file`); for a run of an older version its
    ``ensemble.json`` or ``model.zip`` (which need ``--trust-pickle``)."""
    for name in ("policy/ensemble.json", "policy/model.json", "ensemble.json"):
        if (run / name).exists():
            return run / name
    return run / "model.zip"


def parse_seeds(text: str) -> list[int]:
    """``"0-19"``, ``"0,3,5"`` or a mix (``"0-4,10"``) -> a list of seeds (for ``--seeds``)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds: need non-negative seeds like 0-19 or 0,3,5 (got {text!r})")
    return list(dict.fromkeys(seeds))


def make_env(preset: str, scenario: Scenario, **env_kwargs: Any) -> CarbonAwareDCEnv:
    """The Dict env of ``preset`` fixed to ``scenario`` (forecast settings from ``env_kwargs``)."""
    return CarbonAwareDCEnv(scenario=scenario, preset=preset, **env_kwargs)


def policy_label(spec: str) -> str:
    """The table / key name of a policy spec: the name itself, or ``agent-<stem>`` for a model path
    (``agent`` for the default ``runs/default/model.zip`` or ``runs/default/ensemble.json``,
    ``agent-<run>`` for other runs)."""
    from agents.baselines import POLICY_NAMES

    if spec in POLICY_NAMES:
        return spec
    path = Path(spec)
    if path.parent.name == "policy":  # train.py's pickle-free export: runs/<run>/policy/<name>.json
        path = path.parent.parent / path.name
    stem = path.stem if path.stem not in ("model", "ensemble") else path.parent.name
    label = "agent" if stem in ("", "default") else f"agent-{stem}"
    return "".join(c if c.isalnum() or c in "._" else "_" for c in label.replace("agent-", "agent_", 1))


def policy_labels(specs: Sequence[str]) -> dict[str, str]:
    """:func:`policy_label` of every spec, made unique: model paths that would share a label (the
    ``model.zip`` and ``ensemble.json`` of one run, or ``member_1.zip`` of two runs) are named by as
    many trailing path parts as it takes (``agent_base_model`` / ``agent_base_ensemble``,
    ``agent_base_ensemble_member_1`` / ``agent_lv_ensemble_member_1``)."""
    specs = list(dict.fromkeys(specs))
    labels = {spec: policy_label(spec) for spec in specs}

    def tail(spec: str, k: int) -> str:
        parts = [*Path(spec).parent.parts, Path(spec).stem][-k:]
        return "".join(c if c.isalnum() or c in "._" else "_" for c in "agent_" + "_".join(parts))

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


def run_item(item: dict[str, Any]) -> dict[str, Any]:
    """One sweep item: build the scenario and env, play the policy, return the episode's metrics.

    The oracle item also returns the schedule's ``objective_usd``, ``bound_usd``, ``mip_gap`` and
    ``status`` (the per-seed reference)."""
    from agents.baselines import make_policy

    sc = make_scenario(item["preset"], int(item["seed"]))
    env = make_env(item["preset"], sc, **item.get("env_kwargs", {}))
    policy = make_policy(item["spec"], env, **item.get("policy_kwargs", {}))
    trace_dir = item.get("trace_dir")
    result = rollout(policy, env, seed=int(item["seed"]), preset=item["preset"], trace=trace_dir is not None)
    result.policy = item["policy"]
    if trace_dir is not None:
        from envs.atomic import atomic_write_text

        atomic_write_text(Path(trace_dir) / f"{item['key']}.csv", result.frame.to_csv(index=False))
    out = result.to_dict()
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


def make_items(
    specs: Sequence[str],
    preset: str,
    seeds: Sequence[int],
    policy_kwargs: dict[str, dict[str, Any]] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    trace_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """The sweep items, one per (policy, seed), keyed ``policy-preset-seed``. Each carries a
    ``fingerprint`` of everything its result depends on (settings, model file contents, the code:
    :func:`code_digest`, and where its trace goes: a traced item is rerun, not read from the cache
    of an untraced one). With ``trace_dir`` every item writes ``<trace_dir>/<key>.csv``."""
    trace = None if trace_dir is None else str(Path(trace_dir).resolve())
    policy_kwargs = policy_kwargs or {}
    code = code_digest()
    env_kwargs = env_kwargs or {}
    items = []
    labels = policy_labels(specs)
    for spec in specs:
        label = labels[spec]
        kw = policy_kwargs.get(label, policy_kwargs.get(spec, {}))
        digest = model_digest(spec) if Path(spec).is_file() else ""
        for seed in seeds:
            ident = {
                "spec": spec,
                "digest": digest,
                "preset": preset,
                "seed": int(seed),
                "policy_kwargs": kw,
                "env_kwargs": env_kwargs,
                "code": code,
                "trace_dir": trace,
            }
            fingerprint = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
            items.append(
                {
                    "key": f"{label}-{preset}-{int(seed)}",
                    "policy": label,
                    "spec": spec,
                    "preset": preset,
                    "seed": int(seed),
                    "policy_kwargs": kw,
                    "env_kwargs": env_kwargs,
                    "fingerprint": fingerprint,
                    **({} if trace is None else {"trace_dir": trace}),
                }
            )
    return items


def _drop_stale(cache: Path, items: Sequence[dict[str, Any]]) -> None:
    """Delete cached results whose fingerprint differs from the item's (settings or model changed)."""
    for item in items:
        path = cache / f"{item['key']}.json"
        if not path.exists():
            continue
        try:
            stored = json.loads(path.read_text())
            fingerprint = (stored.get("result") or {}).get("fingerprint")
        except (OSError, ValueError):
            fingerprint = None
        if fingerprint != item["fingerprint"]:
            path.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------- statistics
def bootstrap_ci(
    values: Sequence[float], conf: float = 0.95, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (resampling with replacement).

    ``n_boot`` resamples from ``numpy.random.default_rng(seed)``; returns ``(low, high)``. A single
    value (or none) gives ``(mean, mean)``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - conf) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def gap_pct(benefit: float, oracle: float) -> float:
    """Gap to the oracle in percent of the oracle's benefit: ``100 (oracle - benefit) / |oracle|``."""
    if oracle is None or not math.isfinite(oracle) or oracle == 0:
        return math.nan
    return 100.0 * (oracle - benefit) / abs(oracle)


def summarize(rows: Sequence[dict[str, Any]], policies: Sequence[str]) -> list[dict[str, Any]]:
    """One summary row per policy over the seeds both it and the reference finished.

    ``benefit_*``: mean and bootstrap CI; ``pct_of_oracle``: ``100 * mean / mean(oracle)``;
    ``gap_pct``: mean of per-seed gaps; ``normalized_score``: ``(mean - mean(greedy)) / (mean(oracle) -
    mean(greedy))`` on the seeds where greedy ran too."""
    by = {(r["policy"], r["seed"]): r for r in rows}
    oracle = {r["seed"]: r["oracle_benefit_usd"] for r in rows if r.get("oracle_benefit_usd") is not None}
    out = []
    for pol in policies:
        mine = [r for r in rows if r["policy"] == pol]
        if not mine:
            continue
        seeds = [r["seed"] for r in mine]
        b = np.array([r["benefit_usd"] for r in mine])
        lo, hi = bootstrap_ci(b)
        ref = np.array([oracle.get(s, math.nan) for s in seeds], dtype=np.float64)
        gaps = np.array([r["gap_pct"] for r in mine], dtype=np.float64)
        both = np.isfinite(ref)
        greedy = np.array(
            [by[(BASELINE, s)]["benefit_usd"] if (BASELINE, s) in by else math.nan for s in seeds]
        )
        ok = both & np.isfinite(greedy)
        denom = ref[ok].mean() - greedy[ok].mean() if ok.any() else math.nan
        score = (b[ok].mean() - greedy[ok].mean()) / denom if ok.any() and denom != 0 else math.nan
        out.append(
            {
                "policy": pol,
                "n_seeds": len(mine),
                "benefit_mean_usd": float(b.mean()),
                "benefit_ci_low_usd": lo,
                "benefit_ci_high_usd": hi,
                "oracle_mean_usd": float(ref[both].mean()) if both.any() else math.nan,
                "pct_of_oracle": float(100.0 * b[both].mean() / ref[both].mean()) if both.any() else math.nan,
                "gap_pct": float(np.nanmean(gaps)) if np.isfinite(gaps).any() else math.nan,
                "normalized_score": float(score),
                "return_mean_usd": float(np.mean([r["return_usd"] for r in mine])),
                "emissions_mean_t": float(np.mean([r["emissions_t"] for r in mine])),
                "emissions_ci_low_t": bootstrap_ci([r["emissions_t"] for r in mine])[0],
                "emissions_ci_high_t": bootstrap_ci([r["emissions_t"] for r in mine])[1],
                "energy_cost_mean_usd": float(np.mean([r["energy_cost_usd"] for r in mine])),
                "inference_served_pct": float(np.mean([r["inference_served_pct"] for r in mine])),
                "jobs_completed_mean": float(np.mean([r["jobs_completed"] for r in mine])),
                "violations_mean": float(np.mean([r["violations"] for r in mine])),
                "penalty_mean_usd": float(np.mean([r["penalty_usd"] for r in mine])),
                "decision_ms": float(np.mean([r["decision_ms"] for r in mine])),
                "fallbacks": int(sum(r.get("fallbacks", 0) for r in mine)),
            }
        )
    return out


# --------------------------------------------------------------------------------------- evaluate
@dataclasses.dataclass
class Report:
    """The outcome of :func:`evaluate`: per-(policy, seed) rows, per-policy summary, failures, meta."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    meta: dict[str, Any]

    def json_rows(self) -> list[dict[str, Any]]:
        """The rows restricted to :data:`JSON_FIELDS` (``evaluate.py --json``)."""
        return [{k: _clean(r.get(k)) for k in JSON_FIELDS} for r in self.rows]


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def versions() -> dict[str, str]:
    """Versions of Python and the packages the results depend on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("carbon-aware-dc", "numpy", "gymnasium", "pulp", "highspy", "stable-baselines3", "torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def evaluate(
    policies: Sequence[str],
    preset: str = "paper",
    seeds: Sequence[int] = range(20),
    *,
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
    """Run every (policy, seed) pair of ``preset`` and aggregate (see the module docstring).

    ``policies`` are names of :func:`agents.baselines.make_policy` or model paths. The oracle and the
    greedy rule are always run too (the gap and the normalized score need them); rows are returned
    for the requested policies only. ``out_dir``: items are cached in ``out_dir/items`` (resumable;
    a cached item whose settings changed is rerun). ``policy_kwargs`` maps a policy label to its
    constructor arguments; ``env_kwargs`` go to the env (``forecast_horizon``, ``forecast_level``).
    ``trace_dir``: each (policy, seed) also writes its per-step trace CSV there (:mod:`agents.trace`).
    """
    from oracle.executor import run_sweep

    specs = list(dict.fromkeys([REFERENCE, BASELINE, *policies]))
    labels = policy_labels(specs)
    wanted = list(dict.fromkeys(labels[p] for p in policies))
    seeds = [int(s) for s in seeds]
    if trace_dir is not None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
    items = make_items(specs, preset, seeds, policy_kwargs, env_kwargs, trace_dir)
    cache = None
    if out_dir is not None:
        cache = Path(out_dir) / "items"
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
    )
    wall = time.perf_counter() - tick
    ok = [r.result for r in results if r.ok and r.result is not None]
    failures = [{"key": r.key, "status": r.status, "error": r.error} for r in results if not r.ok]
    oracle = {}
    for r in ok:
        if r["policy"] == REFERENCE and r.get("oracle"):
            oracle[r["seed"]] = r["oracle"]
    rows = []
    for r in ok:
        ref = oracle.get(r["seed"], {})
        r = dict(r)
        r["oracle_benefit_usd"] = ref.get("objective_usd")
        r["oracle_bound_usd"] = ref.get("bound_usd")
        r["oracle_mip_gap"] = ref.get("mip_gap")
        r["gap_pct"] = gap_pct(r["benefit_usd"], r["oracle_benefit_usd"])
        rows.append(r)
    summary_all = summarize(rows, list(dict.fromkeys([*wanted, REFERENCE, BASELINE])))
    summary = [s for s in summary_all if s["policy"] in wanted]
    rows = [r for r in rows if r["policy"] in wanted]
    rows.sort(key=lambda r: (wanted.index(r["policy"]), r["seed"]))
    meta = {
        "preset": preset,
        "seeds": seeds,
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
    return Report(rows=rows, summary=summary, failures=failures, meta=meta)


# ------------------------------------------------------------------------------------------ output
TABLE_COLUMNS = (
    ("policy", "policy"),
    ("benefit (USD) mean ± 95% CI", None),
    ("% of oracle", "pct_of_oracle"),
    ("gap %", "gap_pct"),
    ("norm. score", "normalized_score"),
    ("emissions (t)", "emissions_mean_t"),
    ("energy cost (USD)", "energy_cost_mean_usd"),
    ("inference served %", "inference_served_pct"),
    ("jobs completed", "jobs_completed_mean"),
    ("violations", "violations_mean"),
    ("decision ms/step", "decision_ms"),
)


def table_cells(s: dict[str, Any]) -> list[str]:
    """The formatted cells of one summary row, in :data:`TABLE_COLUMNS` order."""
    half = (s["benefit_ci_high_usd"] - s["benefit_ci_low_usd"]) / 2.0

    def num(x: float, fmt: str) -> str:
        if x is None or not math.isfinite(x):
            return "-"
        text = format(x, fmt)
        # a value that rounds to zero prints as 0, not -0.00
        return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text

    viol = num(s["violations_mean"], ".1f")
    if s["penalty_mean_usd"] >= 0.5:
        viol += f" ({s['penalty_mean_usd']:,.0f} USD)"
    return [
        s["policy"],
        f"{s['benefit_mean_usd']:,.0f} ± {half:,.0f}",
        num(s["pct_of_oracle"], ".1f"),
        num(s["gap_pct"], ".2f"),
        num(s["normalized_score"], ".3f"),
        num(s["emissions_mean_t"], ",.1f"),
        num(s["energy_cost_mean_usd"], ",.0f"),
        num(s["inference_served_pct"], ".2f"),
        num(s["jobs_completed_mean"], ".2f"),
        viol,
        num(s["decision_ms"], ".2f"),
    ]


def format_table(report: Report) -> str:
    """The summary as a plain-text table (one line per policy)."""
    header = [c for c, _ in TABLE_COLUMNS]
    body = [table_cells(s) for s in report.summary]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    m = report.meta
    lines.append(
        f"preset {m['preset']}, {len(m['seeds'])} held-out seeds, 95% bootstrap CI over seeds "
        f"(seed {m['bootstrap_seed']}); gap and % of oracle vs the oracle's objective per seed"
    )
    return "\n".join(lines)


def print_table(report: Report, file: Any = None, wide: bool = False) -> None:
    """Print the summary with rich when it is installed, else as plain text (to ``file``).

    On a terminal the table fits its width (rich wraps cells inside their columns); ``wide=True``,
    or output to a pipe or file, prints every row on one line."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        print(format_table(report), file=file)
        return
    m = report.meta
    table = Table(
        title=f"{m['preset']}: {len(m['seeds'])} held-out seeds",
        caption=f"95% bootstrap CI over seeds (bootstrap seed {m['bootstrap_seed']})",
    )
    for name, _ in TABLE_COLUMNS:
        table.add_column(name, justify="left" if name == "policy" else "right")
    for s in report.summary:
        table.add_row(*table_cells(s))
    import shutil

    try:
        tty = os.isatty((file or sys.stdout).fileno())
    except (AttributeError, OSError, ValueError):
        tty = False
    # a terminal: fit its width; a pipe or file: one line per row
    width = shutil.get_terminal_size((100, 24)).columns if tty and not wide else 250
    Console(file=file, width=width).print(table)


def write_report(report: Report, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``results.csv`` (one row per policy and seed), ``results.json`` (meta, summary, rows,
    failures) and, with ``plots``, the PNG figures. Returns the written paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "json": out / "results.json"}
    fields = [
        *JSON_FIELDS,
        "return_usd",
        "penalty_usd",
        "oracle_bound_usd",
        "oracle_mip_gap",
        "carbon_cost_usd",
        "jobs_total",
        "fallbacks",
        "decision_ms_max",
    ]
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in report.rows:
            writer.writerow({k: _clean(r.get(k)) for k in fields})
    payload = {
        "meta": report.meta,
        "summary": [{k: _clean(v) for k, v in s.items()} for s in report.summary],
        "rows": [{k: _clean(v) for k, v in r.items()} for r in report.rows],
        "failures": report.failures,
    }
    paths["json"].write_text(json.dumps(payload, indent=1))
    if plots and report.summary:
        from agents import plots as plotting

        paths.update(plotting.summary_plots(report, out))
        episode = dispatch_episode(report)
        if episode is not None:
            title = f"{episode.policy} on {report.meta['preset']} seed {episode.seed}"
            paths["dispatch"] = plotting.dispatch_plot(episode.trace, out / "dispatch.png", title)
    return paths


def dispatch_episode(report: Report) -> EpisodeResult | None:
    """Replay, recording the flows, the first seed of the best non-oracle policy (the oracle if it is
    the only one, or if no policy is within 10 % of it), for the dispatch figure."""
    if not report.summary or not report.meta["seeds"]:
        return None
    ranked = sorted(report.summary, key=lambda s: -s["benefit_mean_usd"])
    others = [s for s in ranked if s["policy"] != REFERENCE]
    choice = others[0]["policy"] if others else ranked[0]["policy"]
    spec = report.meta["specs"].get(choice, choice)
    preset, seed = report.meta["preset"], int(report.meta["seeds"][0])
    from agents.baselines import make_policy

    env = make_env(preset, make_scenario(preset, seed), **report.meta["env_kwargs"])
    policy = make_policy(spec, env, **report.meta["policy_kwargs"].get(choice, {}))
    result = rollout(policy, env, seed=seed, preset=preset, record=True)
    result.policy = choice
    return result
