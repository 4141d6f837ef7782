"""Where a policy loses against the oracle: the gap split into job choice, routing and energy.

``python -m agents.diagnose --model runs/default/ensemble.json --seeds 0-19`` plays the policy on
each scenario, then re-solves the day three times with more and more of the policy's own
decisions fixed (MODEL.md §6, ``oracle.solve``):

1. ``oracle``: nothing fixed (the full-horizon optimum);
2. ``jobs_fixed``: the policy's job starts fixed (each started job pinned to its site and period,
   the others worth nothing), routing, batteries and generators free (``joint``);
3. ``workload_fixed``: also the GPUs the policy served per class, site and period fixed
   (``energy_only`` with the policy's workload): only batteries, generators and the grid free;
4. ``policy``: the policy's own benefit.

The differences are the USD per day the policy loses by its **job choice** (1 - 2), its
**routing** (2 - 3) and its **energy dispatch** (3 - 4); they add up to the whole gap. Each step
fixes more, so each difference is >= 0 up to the MIP gap (the policy's own decisions are feasible
in every step); a carbon budget the policy's jobs or workload cannot meet is dropped for that step
and reported (``carbon_budget_relaxed``), as ``energy_only`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.dc_env import CarbonAwareDCEnv
from envs.scenario import Scenario

STEPS = ("oracle", "jobs_fixed", "workload_fixed", "policy")
"""The four benefits of :func:`gap_breakdown`, from the optimum down to the policy's own."""
PROPOSED = ("hybrid", "agent_lp")
"""Policies built around a trained model that proposes (``--hybrid-model``, default the default model)."""
PARTS = {
    "job_choice": ("oracle", "jobs_fixed"),
    "routing": ("jobs_fixed", "workload_fixed"),
    "energy": ("workload_fixed", "policy"),
}
"""Each part of the gap as the difference of two steps."""


def pinned_jobs(sc: Scenario, starts: Sequence[tuple[int, int, int]]) -> Scenario:
    """``sc`` with every job in ``starts`` (job, site, period) pinned: released at its start period,
    due when it finishes, eligible at its site only, mandatory; every other job worth 0 USD and
    optional, so an optimizer leaves it (it would only cost energy)."""
    at = {int(j): (int(s), int(t)) for j, s, t in starts}
    jobs = []
    for j, job in enumerate(sc.jobs):
        if j in at:
            s, t = at[j]
            eligible = tuple(i == s for i in range(sc.S))
            jobs.append(
                dataclasses.replace(
                    job, release=t, deadline=t + job.duration, eligible=eligible, mandatory=True
                )
            )
        else:
            jobs.append(dataclasses.replace(job, value_usd=0.0, mandatory=False))
    return sc.replace(jobs=tuple(jobs))


def gap_breakdown(
    policy: Any,
    env: CarbonAwareDCEnv,
    scenario: Scenario,
    *,
    seed: int = 0,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Play ``policy`` (SB3 ``predict``) on ``scenario`` in ``env`` (the env the policy was built
    for, with its forecast errors) and split its gap to the clairvoyant oracle (module doc). With
    forecast errors the re-solves still see the true scenario: the split says what the policy's
    decisions, taken on wrong forecasts, cost in each part.

    Returns the four benefits of :data:`STEPS` (USD), the parts of :data:`PARTS` (USD, their sum is
    ``oracle - policy``), the solver statuses, the policy's penalties (not part of the benefit) and
    ``carbon_budget_relaxed``: the steps re-solved without the carbon budget because the policy's
    jobs or workload cannot meet it (then that step can exceed the one before).
    Raises ``RuntimeError`` naming the step when a re-solve finds no schedule.
    """
    from agents.evaluation import rollout
    from oracle.solve import solve

    played = rollout(policy, env, scenario, seed=seed, record=True)
    starts = list(env.unwrapped.state_snapshot().job_starts)
    serve = np.stack([np.asarray(f["serve_gpus"], dtype=float) for f in played.trace["flows"]], axis=-1)
    kw = {"time_limit_s": time_limit_s, "mip_gap": mip_gap, "threads": threads}
    pinned = pinned_jobs(scenario, starts)
    solved = {
        "oracle": solve(scenario, "joint", **kw),
        "jobs_fixed": solve(pinned, "joint", **kw),
        "workload_fixed": solve(scenario, "energy_only", workload=(starts, serve), **kw),
    }
    relaxed = []
    if not solved["jobs_fixed"].has_solution and scenario.carbon_budget_t is not None:
        relaxed.append("jobs_fixed")  # the policy's jobs cannot run within the budget at all
        solved["jobs_fixed"] = solve(pinned.replace(carbon_budget_t=None), "joint", **kw)
    if solved["workload_fixed"].carbon_budget_relaxed:
        relaxed.append("workload_fixed")
    for step, sched in solved.items():
        if not sched.has_solution:
            raise RuntimeError(f"{step}: the re-solve found no schedule ({sched.status}: {sched.diagnosis})")
    benefit = {step: float(sched.objective_usd) for step, sched in solved.items()}
    benefit["policy"] = float(played.benefit_usd)
    return {
        "benefit_usd": benefit,
        "parts_usd": {part: benefit[a] - benefit[b] for part, (a, b) in PARTS.items()},
        "status": {step: sched.status for step, sched in solved.items()},
        "mip_gap": {step: sched.mip_gap for step, sched in solved.items()},
        "carbon_budget_relaxed": relaxed,
        "penalty_usd": float(played.penalty_usd),
    }


def breakdown_item(item: dict[str, Any]) -> dict[str, Any]:
    """Sweep worker: :func:`gap_breakdown` of ``item["spec"]`` on ``item["scenario"]`` (a user's
    scenario in its JSON form; the env takes its shapes) or on seed ``item["seed"]`` of
    ``item["preset"]``."""
    from agents.baselines import make_policy
    from agents.evaluation import make_env
    from envs.presets import make_scenario

    given = item.get("scenario")
    sc = Scenario.from_dict(given) if given is not None else make_scenario(item["preset"], int(item["seed"]))
    level = item.get("forecast_level")
    env = make_env(item["preset"], sc, forecast_level=level)
    kw = dict(item.get("policy_kwargs", {}))
    if item["spec"] == "mpc":
        kw.setdefault("exact", env.forecast_model.is_exact)
    policy = make_policy(item["spec"], env, **kw)
    out = gap_breakdown(policy, env, sc, seed=int(item["seed"]), time_limit_s=float(item["time_limit_s"]))
    seed = None if given is not None else int(item["seed"])
    return {"seed": seed, "scenario": item["name"], "fingerprint": item["fingerprint"], **out}


def check_row(row: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field if a stored breakdown lacks what :func:`summarize` reads
    (the sweep then recomputes it with a warning)."""
    for key, names in (("benefit_usd", STEPS), ("parts_usd", tuple(PARTS))):
        values = row.get(key)
        if not isinstance(values, dict):
            raise ValueError(f"result.{key}: missing or not a mapping")
        for name in names:
            v = values.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"result.{key}.{name}: missing or not a number (got {v!r})")
    if not isinstance(row.get("carbon_budget_relaxed"), list):
        raise ValueError("result.carbon_budget_relaxed: missing or not a list")
    for key in ("scenario", "fingerprint"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"result.{key}: missing or not a string")


def make_items(
    spec: str,
    preset: str | None,
    seeds: Sequence[int],
    time_limit_s: float,
    policy_kwargs: dict[str, Any] | None = None,
    scenarios: Sequence[tuple[str, Scenario]] | None = None,
    forecast_level: str | None = None,
) -> list[dict[str, Any]]:
    """One item per scenario (a preset's seeds, keyed ``<preset>-<seed>``, or named ``scenarios``, keyed
    by their file-safe names; with a ``forecast_level`` the key ends in its folder name, e.g.
    ``-typical`` or ``-poorx2``, so each level keeps its own cached results), each with a
    ``fingerprint`` of what its result depends on (the model file's contents, or for ``hybrid`` and
    ``agent_lp`` their proposing model's, the scenario, the time limit, the level, the code)."""
    import hashlib
    import json

    from agents.ensemble import model_digest
    from agents.evaluation import _safe_key, _targets, code_digest, default_model
    from agents.uncertainty import level_dir

    code = code_digest()
    path = Path(spec)
    if spec in ("hybrid", "agent_lp"):  # policies around a proposing model (default: the agent row's)
        path = Path((policy_kwargs or {}).get("model") or default_model())
    digest = model_digest(path) if path.is_file() else ""
    suffix = "" if forecast_level is None else f"-{level_dir(forecast_level)}"
    items = []
    for target in _targets(preset, seeds, scenarios):
        ident = {
            "spec": spec,
            "digest": digest,
            "target": [target["name"], target.get("digest"), target["seed"]],
            "time_limit_s": time_limit_s,
            "policy_kwargs": policy_kwargs or {},
            "code": code,
            **({"forecast_level": forecast_level} if forecast_level is not None else {}),
        }
        if (policy_kwargs or {}).get("vecnormalize"):
            ident["vecnormalize"] = model_digest(policy_kwargs["vecnormalize"])
        items.append(
            {
                "key": _safe_key(target["name"] + suffix),
                "spec": spec,
                "name": target["name"],
                "preset": target["preset"],
                "seed": target["seed"],
                "time_limit_s": time_limit_s,
                "policy_kwargs": policy_kwargs or {},
                "forecast_level": forecast_level,
                "fingerprint": hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16],
                **({"scenario": target["scenario"]} if "scenario" in target else {}),
            }
        )
    return items


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over scenarios: benefits and parts in USD and in % of the oracle's mean benefit."""
    oracle = float(np.mean([r["benefit_usd"]["oracle"] for r in rows]))
    steps = {s: float(np.mean([r["benefit_usd"][s] for r in rows])) for s in STEPS}
    parts = {p: float(np.mean([r["parts_usd"][p] for r in rows])) for p in PARTS}
    return {
        "scenarios": len(rows),
        "benefit_usd": steps,
        "pct_of_oracle": {s: 100.0 * v / oracle for s, v in steps.items()},
        "parts_usd": parts,
        "parts_points": {p: 100.0 * v / oracle for p, v in parts.items()},
        "budget_relaxed": sum(bool(r["carbon_budget_relaxed"]) for r in rows),
    }


def format_summary(spec: str, what: str, summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`summarize`; ``what`` names the scenarios (``paper`` or
    ``held-out data_spec.yaml``)."""
    lines = [f"{spec} on {summary['scenarios']} {what} scenarios: where the gap to the oracle goes", ""]
    lines.append(f"{'step':<16}{'benefit (USD)':>15}{'% of oracle':>13}")
    for s in STEPS:
        lines.append(f"{s:<16}{summary['benefit_usd'][s]:>15,.0f}{summary['pct_of_oracle'][s]:>13.2f}")
    lines.append("")
    lines.append(f"{'lost to':<16}{'USD/scenario':>15}{'points':>13}")
    for p in PARTS:
        lines.append(f"{p:<16}{summary['parts_usd'][p]:>15,.0f}{summary['parts_points'][p]:>13.2f}")
    if summary["budget_relaxed"]:
        lines.append(
            f"\n(on {summary['budget_relaxed']} scenarios a step was re-solved without the carbon budget: "
            "the policy's jobs or workload cannot meet it)"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m agents.diagnose``."""
    from agents.evaluation import default_model, parse_level, parse_seeds
    from agents.loading import add_loading_args
    from envs.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m agents.diagnose",
        description="Split a policy's gap to the oracle into job choice, routing and energy dispatch.",
    )
    parser.add_argument(
        "--model",
        default=str(default_model()),
        help="trained model (.zip / ensemble .json) or a baseline name (default: %(default)s)",
    )
    parser.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help="preset whose seeds to use (default paper)"
    )
    parser.add_argument(
        "--seeds", type=parse_seeds, default=None, help="preset seeds, e.g. 0-19 or 0,3,5 (default 0-19)"
    )
    parser.add_argument(
        "--scenario",
        metavar="PATH",
        default=None,
        help="your scenarios instead of a preset: a scenario JSON, a folder (its heldout/ split if it "
        "has one) or a data spec .yaml (its held-out windows)",
    )
    parser.add_argument(
        "--forecast-level",
        type=parse_level,
        default=None,
        metavar="LEVEL",
        help="the policy plays with these forecast errors (exact, good, typical, poor, LEVEL*FACTOR or a "
        "number; default exact); the re-solves see the true scenario",
    )
    parser.add_argument(
        "--hybrid-model",
        metavar="PATH",
        default=None,
        help="with --model hybrid or agent_lp: the trained model that proposes (default: the default model)",
    )
    parser.add_argument("--time-limit", type=float, default=60.0, help="MILP time limit per solve, s")
    parser.add_argument("--workers", type=int, default=None, help="scenarios at once (default: all cores)")
    parser.add_argument(
        "--out",
        default="results/diagnose",
        help="cache folder: finished scenarios are kept in <out>/items, so a re-run resumes (default "
        "%(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the per-scenario rows and summary as JSON")
    return add_loading_args(parser)


def main(argv: list[str] | None = None) -> int:
    from agents.baselines import POLICY_NAMES
    from agents.evaluation import _drop_stale, default_model, heldout_scenarios, interrupted_message
    from agents.loading import check_loading_args, loading_kwargs
    from envs.scenario import ScenarioError
    from oracle.executor import run_sweep

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model not in POLICY_NAMES and not Path(args.model).is_file():
        parser.error(
            f"--model {args.model}: not a baseline name and no model file there (run train.py first)"
        )
    proposer = None
    if args.model in PROPOSED:
        proposer = args.hybrid_model if args.hybrid_model is not None else str(default_model())
        if not Path(proposer).is_file():
            parser.error(
                f"--hybrid-model {proposer}: no model file there (train one, or give --hybrid-model)"
            )
        check_loading_args(parser, args, [proposer])
    elif args.hybrid_model is not None:
        parser.error("--hybrid-model: only with --model hybrid or --model agent_lp")
    if args.model not in POLICY_NAMES:
        check_loading_args(parser, args, [args.model])
    if not args.time_limit > 0 or args.time_limit == float("inf"):
        parser.error(f"--time-limit must be > 0 and finite (got {args.time_limit})")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1 (got {args.workers})")
    scenarios = None
    if args.scenario is not None:
        if args.seeds is not None or args.preset is not None:
            parser.error("--scenario names its own scenarios: give it without --seeds and --preset")
        try:
            scenarios, source = heldout_scenarios(args.scenario)
        except (ScenarioError, OSError) as exc:
            parser.error(str(exc).splitlines()[0])
        what = f"{source['evaluated']} {Path(args.scenario).name}"
    else:
        args.preset = args.preset or "paper"
        args.seeds = list(range(20)) if args.seeds is None else args.seeds
        from agents.evaluation import training_range_note

        note = training_range_note(args.seeds)
        if note:
            print(note, file=sys.stderr)
        what = args.preset
    loaded = [args.model] if args.model not in POLICY_NAMES else [proposer] if proposer else []
    if loaded:
        from agents.evaluation import make_env
        from agents.loading import check_model_shapes
        from envs.presets import make_scenario

        first = scenarios[0][1] if scenarios else make_scenario(args.preset, args.seeds[0])
        where = f"scenario {scenarios[0][0]}" if scenarios else f"preset {args.preset}"
        check_model_shapes(parser, loaded, make_env(args.preset, first), where)
    kw = {} if args.model in POLICY_NAMES else loading_kwargs(args)
    if proposer is not None:
        kw = {"model": proposer, **loading_kwargs(args)}
    items = make_items(
        args.model, args.preset, args.seeds or [], args.time_limit, kw, scenarios, args.forecast_level
    )
    cache = Path(args.out) / "items"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: cannot create {cache} ({exc.strerror or exc})")
    try:
        _drop_stale(cache, items)
        results = run_sweep(
            breakdown_item,
            items,
            max_workers=args.workers,
            out_dir=cache,
            desc="gap breakdown",
            validate_result=check_row,
        )
    except KeyboardInterrupt:
        print(interrupted_message(args.out, "python -m agents.diagnose command"), file=sys.stderr)
        return 130
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        print(f"{r.key}: {r.status}: {r.error}", file=sys.stderr)
    rows = [r.result for r in results if r.status == "ok"]
    if not rows:
        return 1
    summary = summarize(rows)
    if args.json:
        import json

        payload = {
            "model": args.model,
            "preset": args.preset,
            "scenario": args.scenario,
            "forecast_level": args.forecast_level or "exact",
        }
        print(json.dumps({**payload, "rows": rows, "summary": summary}))
    else:
        if args.forecast_level is not None:
            what = f"{what} ({args.forecast_level} forecasts)"
        print(format_summary(args.model, what, summary))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # while checking the inputs, before the sweep caught it
        print("interrupted before any work started; re-run the same command", file=sys.stderr)
        raise SystemExit(130) from None
