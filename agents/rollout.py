"""One episode of any controller, measured: :func:`rollout` and its :class:`EpisodeResult`.

Every controller speaks SB3's ``predict(obs, state, episode_start, deterministic)`` on the Dict env;
:func:`rollout` keeps the ``state`` it returns and passes ``episode_start`` (true at the first step
only), so a recurrent policy keeps its memory within the episode. :mod:`agents.evaluation` runs it
for every (policy, scenario) pair.

Benefit is the sum of the MILP objective's terms in ``info["reward_terms"]`` (MODEL.md §5), without
the env's penalties; the penalties are reported beside it as ``penalty_usd`` and counted, with the
env's repairs, in ``violations``. ``return_usd = benefit_usd - penalty_usd`` is the env's episode
return.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from envs.dc_env import CarbonAwareDCEnv
from envs.dynamics import PENALTY_TERMS
from envs.scenario import OBJECTIVE_TERMS, Scenario

PENALTY_TOL_USD = 1e-3
"""A penalty term counts as a violation above this (the env charges floating-point dust, e.g. a
terminal state of charge 1e-14 MWh below the initial one in a replayed optimal schedule)."""
ENERGY_TERMS = ("export_revenue_usd", "import_cost_usd", "gen_cost_usd", "degradation_cost_usd")


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
    scenario: str | None = None
    """The scenario's name (the scenario's own ``name``; :func:`evaluate` sets its source name)."""
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
        scenario=sc.name,
        trace=recorded if record else None,
        frame=None if recorder is None else recorder.frame(),
    )
