"""``OracleScore``: a Gymnasium wrapper that puts the oracle's benefit and the normalized score in ``info``.

Any agent trained or evaluated with plain Gymnasium/SB3 tools (``RecordEpisodeStatistics``,
``evaluate_policy``) only sees rewards in USD, which cannot be compared across scenarios. Wrapped in
:class:`OracleScore`, the env reports at the last step of every episode, under ``info["oracle_score"]``,
the same numbers as ``python evaluate.py``'s table:

- ``benefit_usd``: the episode's sum of the objective's terms (MODEL.md §5) in
  ``info["reward_terms"]``, without the env's penalties (``evaluate.py``'s benefit);
- ``oracle_benefit_usd``: the clairvoyant oracle's objective on the episode's true scenario (the
  joint MILP, solved once per scenario and cached);
- ``pct_of_oracle``: ``100 · benefit / oracle benefit``;
- ``greedy_benefit_usd`` and ``normalized_score``: ``(benefit − greedy) / (oracle − greedy)`` with the
  carbon-agnostic greedy rule's benefit on the same scenario (an env rollout, cached);
- ``penalty_usd``: the env's penalties of the episode (positive).

The wrapper lives in ``agents/`` because it calls the oracle (the env never imports it). It works on
the Dict env and on the flat env (it only reads ``info`` and ``env.unwrapped.scenario``) and keeps
the episodes it scored in :attr:`OracleScore.episodes`. Averaging ``benefit`` and ``oracle benefit``
over seeds and dividing gives the table's "% of oracle" (a ratio of means, not a mean of ratios).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym

from envs.dynamics import PENALTY_TERMS
from envs.scenario import OBJECTIVE_TERMS, Scenario


def _scenario_key(sc: Scenario) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(sc.to_dict(), sort_keys=True).encode()).hexdigest()


class OracleScore(gym.Wrapper):
    """Adds ``info["oracle_score"]`` (see the module docstring) at the end of every episode.

    ``time_limit_s`` and ``mip_gap`` are the oracle's solver settings (``evaluate.py``'s defaults);
    ``cache`` may be shared between wrappers (scenario digest -> (oracle, greedy) benefits).
    """

    def __init__(
        self,
        env: gym.Env,
        time_limit_s: float = 60.0,
        mip_gap: float = 1e-4,
        cache: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__(env)
        if not (math.isfinite(time_limit_s) and time_limit_s > 0):
            raise ValueError(f"time_limit_s: must be finite and > 0 (got {time_limit_s!r})")
        self.time_limit_s = float(time_limit_s)
        self.mip_gap = float(mip_gap)
        self.cache: dict[str, tuple[float, float]] = {} if cache is None else cache
        self.episodes: list[dict[str, Any]] = []
        self._benefit = 0.0
        self._penalty = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._benefit = 0.0
        self._penalty = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        terms = info["reward_terms"]
        self._benefit += sum(float(terms[k]) for k in OBJECTIVE_TERMS)
        self._penalty -= sum(float(terms[k]) for k in PENALTY_TERMS)
        if terminated or truncated:
            info = dict(info)
            info["oracle_score"] = self.score(self._benefit, self._penalty)
            self.episodes.append(info["oracle_score"])
        return obs, reward, terminated, truncated, info

    def references(self, sc: Scenario) -> tuple[float, float]:
        """(oracle benefit, greedy benefit) of ``sc``, USD (solved or rolled out once, then cached)."""
        key = _scenario_key(sc)
        if key not in self.cache:
            self.cache[key] = (self._oracle_benefit(sc), self._greedy_benefit(sc))
        return self.cache[key]

    def score(self, benefit: float, penalty: float = 0.0) -> dict[str, Any]:
        """The score record of an episode with ``benefit`` (USD) on the current scenario."""
        base = self.env.unwrapped
        sc = base.scenario
        oracle, greedy = self.references(sc)
        denom = oracle - greedy
        return {
            "scenario": sc.name,
            "scenario_seed": getattr(base, "scenario_seed", None),
            "benefit_usd": benefit,
            "penalty_usd": penalty,
            "oracle_benefit_usd": oracle,
            "greedy_benefit_usd": greedy,
            "pct_of_oracle": 100.0 * benefit / oracle if oracle else math.nan,
            "normalized_score": (benefit - greedy) / denom if denom else math.nan,
        }

    def _oracle_benefit(self, sc: Scenario) -> float:
        from agents.baselines import SOLVED
        from oracle.solve import solve

        sched = solve(sc, "joint", time_limit_s=self.time_limit_s, mip_gap=self.mip_gap, threads=1)
        if sched.status not in SOLVED or not sched.has_solution:
            raise RuntimeError(f"OracleScore: the oracle found no schedule for {sc.name!r} ({sched.status})")
        return float(sched.objective_usd)

    @staticmethod
    def _greedy_benefit(sc: Scenario) -> float:
        from agents.baselines import GreedyPolicy
        from agents.evaluation import rollout
        from envs.dc_env import CarbonAwareDCEnv

        env = CarbonAwareDCEnv(scenario=sc, preset=None)
        return float(rollout(GreedyPolicy(env), env, seed=0).benefit_usd)
