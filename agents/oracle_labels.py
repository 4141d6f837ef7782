"""The oracle as the expert, in sweep workers: full-horizon schedules and labels of visited states.

:func:`solve_schedules` solves many scenarios in parallel (:func:`oracle.executor.run_sweep`, a
resumable JSON cache keyed by scenario); its worker is :func:`solve_full_horizon`.
:func:`solve_from_state` is the DAgger expert: the oracle's action for the current period of a
visited state (:func:`state_to_json` carries the state to the worker). Work items name their
scenario by preset and seed, or carry a source run's scenario (:mod:`agents.training_scenarios`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.replay import schedule_action
from agents.training_scenarios import item_scenario, scenario_item
from envs.presets import PRESETS
from envs.scenario import OperatingState, Scenario
from oracle.executor import ItemResult, run_sweep


def solve_full_horizon(item: dict[str, Any]) -> dict[str, Any]:
    """Sweep worker: the ``joint`` full-horizon schedule of the item's scenario (``make_scenario(preset,
    seed)``, or a source's scenario in the item, :func:`agents.training_scenarios.item_scenario`)."""
    from oracle.solve import solve

    sc = item_scenario(item)
    sched = solve(sc, "joint", time_limit_s=item["time_limit_s"], mip_gap=item["mip_gap"], threads=1)
    if not sched.has_solution:
        raise RuntimeError(f"no oracle schedule for seed {item['seed']}: {sched.status} {sched.diagnosis}")
    return {"schedule": sched.to_dict()}


def state_to_json(state: OperatingState) -> dict[str, Any]:
    """An :class:`OperatingState` as a JSON-ready dict (floats kept exactly)."""
    return {
        "period": int(state.period),
        "soc_mwh": [float(x) for x in state.soc_mwh],
        "job_starts": [[int(j), int(s), int(t)] for j, s, t in state.job_starts],
        "emissions_t": float(state.emissions_t),
    }


def state_from_json(data: dict[str, Any]) -> OperatingState:
    """Inverse of :func:`state_to_json`."""
    return OperatingState(
        period=int(data["period"]),
        soc_mwh=tuple(float(x) for x in data["soc_mwh"]),
        job_starts=tuple((int(j), int(s), int(t)) for j, s, t in data["job_starts"]),
        emissions_t=float(data["emissions_t"]),
    )


def solve_from_state(item: dict[str, Any]) -> dict[str, Any]:
    """Sweep worker (DAgger expert): the oracle's action for the current period of a visited state.

    Solves ``joint`` from ``item["state"]`` over the remaining horizon. When the state's emissions
    already make the carbon budget infeasible, the budget is dropped (the env charges an overrun
    penalty instead) and ``relaxed`` is True.
    """
    from oracle.solve import solve

    sc = item_scenario(item)
    state = state_from_json(item["state"])
    kwargs = {"time_limit_s": item["time_limit_s"], "mip_gap": item["mip_gap"], "threads": 1}
    sched = solve(sc, "joint", initial_state=state, **kwargs)
    relaxed = False
    if not sched.has_solution and sc.carbon_budget_t is not None:
        relaxed = True
        sched = solve(sc.replace(carbon_budget_t=None), "joint", initial_state=state, **kwargs)
    if not sched.has_solution:
        raise RuntimeError(f"oracle found no schedule from period {state.period}: {sched.diagnosis}")
    slots = item["slots"] if "slots" in item else PRESETS[item["preset"]]["J"]
    action = schedule_action(sched, state.period, slots)
    return {
        "action": {key: value.tolist() for key, value in action.items()},
        "status": sched.status,
        "objective_usd": sched.objective_usd,
        "relaxed": relaxed,
    }


def results_or_raise(results: list[ItemResult], what: str, allowed_failures: float) -> list[ItemResult]:
    failed = [r for r in results if not r.ok]
    if len(failed) > allowed_failures * max(len(results), 1):
        first = failed[0]
        raise RuntimeError(
            f"{len(failed)} of {len(results)} {what} failed; first: {first.key} {first.status} {first.error}"
        )
    return [r for r in results if r.ok]


def solve_schedules(
    preset: str,
    seeds: Sequence[int],
    *,
    cache_dir: str | Path | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    progress: bool = True,
    scenarios: Mapping[int, Scenario] | None = None,
    **sweep_kwargs: Any,
) -> dict[int, Any]:
    """Full-horizon ``joint`` oracle schedules of ``preset`` for ``seeds``, solved in parallel.

    ``scenarios`` (a source run, :mod:`agents.training_scenarios`): the scenario of each key in
    ``seeds`` instead of ``make_scenario(preset, seed)``; its cache key is its content digest.
    ``cache_dir`` makes the sweep resumable (solved seeds are loaded, not re-solved). Returns
    ``{seed: Schedule}``; seeds whose solve failed are left out (at most 5 % may fail).
    ``sweep_kwargs`` go to :func:`oracle.executor.run_sweep` (``backend``, ``max_workers``, ...).
    """
    from oracle.solve import Schedule

    items = []
    for seed in seeds:
        item = scenario_item(preset, seed, scenarios)
        prefix = item.pop("prefix")
        key = {"key": f"{prefix}-joint-full-gap{mip_gap:g}"}
        items.append({**key, **item, "time_limit_s": float(time_limit_s), "mip_gap": float(mip_gap)})
    results = run_sweep(
        solve_full_horizon, items, out_dir=cache_dir, progress=progress, desc="oracle solves", **sweep_kwargs
    )
    ok = results_or_raise(results, "oracle solves", 0.05)
    by_key = {r.key: r for r in ok}
    return {
        item["seed"]: Schedule.from_dict(by_key[item["key"]].result["schedule"])
        for item in items
        if item["key"] in by_key
    }
