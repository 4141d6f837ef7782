"""One period's routing and generator output by an exact LP, around a learned policy's other decisions.

``agent_lp`` (:class:`AgentLPPolicy`): at every period the trained agent acts as it would alone; its
job starts (those the env would accept) and its battery set points are kept, and a small LP
(:class:`PeriodLP`) replaces its routing fractions and generator set points with the ones that
maximise **this period's reward** given those decisions. Why: the gap split of
``python -m agents.diagnose`` shows that most of what the agent loses to MPC under forecast error is
routing (docs/evaluation.md), and routing couples periods only through energy and the carbon budget;
with the battery fixed by the agent, the period's routing and generator are an in-period problem on
data that is known exactly (lead 0 of every forecast is the truth, envs/forecast.py). The battery
keeps the agent's look-ahead: a myopic one-period re-decision of it scores far lower (``hybrid
--hybrid-window 1``, docs/evaluation.md).

The LP of period ``t`` (USD per hour; every term of the period's reward is ``dt_h`` times one of
these, so ``dt_h`` drops out), MODEL.md §4.2-§4.9 and §5 for one period with the job starts and the
battery power fixed, plus the env's penalties of §7 as priced slacks:

- variables: ``serve[k,s] ≥ 0`` GPUs on routes (``latency_ms ≤ slo_ms``), ``unserved[k] ≥ 0``,
  ``imp[s] ∈ [0, import_limit_mw]``, ``exp[s] ∈ [0, export_limit_mw]`` (0 where
  ``price_export ≤ 0``: the env curtails then), ``ren[s] ∈ [0, renewable_mw]``,
  ``gen[s] ∈ [0, gen_capacity_mw]`` (the agent's where ``generator=False``), ``spill[s] ≥ 0`` (battery
  discharge the env would cut), ``lost[s] ≥ 0`` MW (lost load), ``over ≥ 0`` tCO2/h (budget overrun);
- demand: ``Σ_s serve[k,s] + unserved[k] = demand_gpus[k,t]``;
- GPUs: ``Σ_k serve[k,s] ≤ free_gpus[s]`` (capacity minus running and just-started jobs);
- power: ``(1+cooling[s,t])·(it_fixed[s] + gpu_mw[s]·Σ_k serve[k,s]) + charge[s] − discharge[s] + exp[s]
  + spill[s] = ren[s] + gen[s] + imp[s] + lost[s]`` (``it_fixed``: base IT and the jobs' MW);
- carbon: ``Σ_s (carbon_intensity[s,t]·imp[s] + gen_emissions[s]·gen[s]) − over ≤ budget_left/dt_h``;
- maximise ``Σ revenue_k·serve − Σ penalty_k·unserved + Σ (price_export·exp − price_import·imp
  − gen_cost·gen) − carbon_price·emissions − voll·lost − overrun_price·over``.

The LP is built once per scenario (its rows and columns do not change) and each period only updates
costs, bounds, right-hand sides and the cooling coefficients, so HiGHS re-solves from the previous
basis: a fraction of a millisecond on ``paper``.

Choices, measured on training seeds 1000-1019 of ``paper`` at ``typical`` with the shipped agent
(% of the oracle; the agent alone 89.0): routing only, the agent's generator kept, 92.43; routing and
generator (the default) 92.95. Emissions are priced at the scenario's carbon price only: adding a
shadow price of the budget (40 or 80 USD/t more) scored 91.82 / 90.75 without the generator, below
92.43, as the budget left is enforced by its overrun row anyway. Re-deciding the battery too by a
per-site arbitrage LP on the forecast (import price plus carbon price, first period applied) scored
84.4 (half-and-half with the agent's set point 89.5): the learned battery stays. Forcing a start of
jobs the agent leaves at their last start period, when the forecast says they pay and the budget
estimate allows, scored 91.66 vs 91.77 at ``poor``; the same at the job's release (budget estimate
within 95 %) +0.6 at both levels on seeds 1000-1019 but +0.02 / +0.38 at poor / typical on
2000-2039 (not kept); a bias toward starting in the decoding of the start scores +0.2-0.4 (not kept:
the agent alone lost up to 1.5 points with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import highspy
import numpy as np

from agents.hybrid import ProposerPolicy
from agents.policy_base import held_gpus, held_mw, route_fractions
from envs.dynamics import battery_power, generator_power
from envs.scenario import OperatingState, Scenario
from oracle.solvers import use_threads

__all__ = ["AgentLPPolicy", "PeriodLP"]


class PeriodLP:
    """The per-period LP of the module docstring for one scenario's sites, classes and routes.

    Args:
        scenario: the scenario (its sites, classes and routes; its series are not read here).
        voll_usd_per_mwh, carbon_overrun_usd_per_t: the env's penalty prices (USD/MWh, USD/t).
        generator: the LP decides the generator output (True) or takes the caller's (False).
    """

    def __init__(
        self,
        scenario: Scenario,
        voll_usd_per_mwh: float,
        carbon_overrun_usd_per_t: float,
        generator: bool = True,
    ) -> None:
        sc = scenario
        self.S, self.K = S, K = sc.S, sc.K
        self.generator = bool(generator)
        self.pairs = [(k, s) for k in range(K) for s in range(S) if sc.routes[k, s]]
        P = len(self.pairs)
        self._k = np.array([k for k, _ in self.pairs], dtype=np.int64)
        self._s = np.array([s for _, s in self.pairs], dtype=np.int64)
        # Column blocks: serve (P), unserved (K), then per site imp, exp, ren, gen, spill, lost, then over.
        self._u = P
        base = P + K
        self._imp, self._exp, self._ren, self._gen, self._spill, self._lost = (
            np.arange(S) + base + i * S for i in range(6)
        )
        self._over = base + 6 * S
        n = self._over + 1
        self.n_cols = n
        # Rows: demand (K), GPUs (S), power (S), carbon (1).
        self._row_dem, self._row_gpu, self._row_pow = 0, K, K + S
        self._row_co2 = K + 2 * S
        m = self._row_co2 + 1
        sites = sc.sites
        self.gpu_mw = np.array([site.gpu_power_kw / 1000.0 for site in sites])
        self.import_limit = np.array([site.import_limit_mw for site in sites], dtype=float)
        self.export_limit = np.array([site.export_limit_mw for site in sites], dtype=float)
        self.gen_cap = np.array([site.gen_capacity_mw for site in sites], dtype=float)
        self.gen_cost = np.array([site.gen_cost_usd_per_mwh for site in sites], dtype=float)
        self.gen_em = np.array([site.gen_emissions_t_per_mwh for site in sites], dtype=float)
        self.carbon_price = float(sc.carbon_price_usd_per_t)
        self.revenue = np.array([c.revenue_usd_per_gpu_h for c in sc.classes], dtype=float)
        self.penalty = np.array([c.unserved_penalty_usd_per_gpu_h for c in sc.classes], dtype=float)
        voll, overrun = float(voll_usd_per_mwh), float(carbon_overrun_usd_per_t)

        # The constant matrix (COO), the power rows' serve coefficients set per call.
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []

        def put(r: int, c: int, v: float) -> None:
            rows.append(r)
            cols.append(c)
            vals.append(v)

        for i, (k, s) in enumerate(self.pairs):
            put(self._row_dem + k, i, 1.0)
            put(self._row_gpu + s, i, 1.0)
            put(self._row_pow + s, i, 1.0)  # (1 + cooling)·gpu_mw, changed per call
        for k in range(K):
            put(self._row_dem + k, self._u + k, 1.0)
        for s in range(S):
            r = self._row_pow + s
            put(r, self._exp[s], 1.0)
            put(r, self._spill[s], 1.0)
            put(r, self._imp[s], -1.0)
            put(r, self._ren[s], -1.0)
            put(r, self._gen[s], -1.0)
            put(r, self._lost[s], -1.0)
            put(self._row_co2, self._imp[s], 1.0)  # carbon intensity, changed per call
            put(self._row_co2, self._gen[s], float(self.gen_em[s]))
        put(self._row_co2, self._over, -1.0)
        order = np.lexsort((np.array(rows), np.array(cols)))
        rows_a, cols_a, vals_a = np.array(rows)[order], np.array(cols)[order], np.array(vals)[order]
        starts = np.searchsorted(cols_a, np.arange(n + 1))

        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n, m
        lp.col_cost_ = np.zeros(n)
        lp.col_lower_ = np.zeros(n)
        lp.col_upper_ = np.full(n, highspy.kHighsInf)
        lp.row_lower_ = np.full(m, -highspy.kHighsInf)
        lp.row_upper_ = np.full(m, highspy.kHighsInf)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = starts.astype(np.int32)
        lp.a_matrix_.index_ = rows_a.astype(np.int32)
        lp.a_matrix_.value_ = vals_a.astype(float)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.passModel(lp)
        self._h = h
        # Constant costs (minimised: the negative of the reward per hour).
        cost = np.zeros(n)
        cost[:P] = -self.revenue[self._k]
        cost[self._u : self._u + K] = self.penalty
        cost[self._lost] = voll
        cost[self._over] = overrun
        self._cost = cost
        self._idx = np.arange(n, dtype=np.int32)
        self._lower = np.zeros(n)
        self._upper = np.full(n, highspy.kHighsInf)
        self._upper[self._imp] = self.import_limit
        self._row_lo = np.full(m, -highspy.kHighsInf)
        self._row_hi = np.full(m, highspy.kHighsInf)
        self._ridx = np.arange(m, dtype=np.int32)
        self.solves = 0

    def solve(
        self,
        demand_gpus: np.ndarray,
        free_gpus: np.ndarray,
        it_fixed_mw: np.ndarray,
        charge_mw: np.ndarray,
        discharge_mw: np.ndarray,
        gen_mw: np.ndarray,
        cooling: np.ndarray,
        renewable_mw: np.ndarray,
        price_import: np.ndarray,
        price_export: np.ndarray,
        carbon_intensity: np.ndarray,
        budget_left_t_per_h: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The period's best ``serve`` (K, S) GPUs and generator output (S,) MW (the given ``gen_mw``
        where the LP does not decide it). Arguments are this period's values per class (K,) or site
        (S,), in GPUs, MW, USD/MWh and tCO2/MWh; ``budget_left_t_per_h`` is the carbon budget left
        divided by ``dt_h`` (``inf``: no budget). Raises ``RuntimeError`` if HiGHS finds no optimum
        (it always exists: every row has a priced slack)."""
        h, S, K = self._h, self.S, self.K
        load = 1.0 + cooling
        for i, s in enumerate(self._s.tolist()):
            h.changeCoeff(self._row_pow + s, i, float(load[s] * self.gpu_mw[s]))
        for s in range(S):
            h.changeCoeff(self._row_co2, int(self._imp[s]), float(carbon_intensity[s]))
        cost = self._cost.copy()
        cost[self._imp] = price_import + self.carbon_price * carbon_intensity
        cost[self._exp] = -price_export
        cost[self._gen] = self.gen_cost + self.carbon_price * self.gen_em
        upper = self._upper.copy()
        lower = self._lower.copy()
        upper[self._exp] = np.where(price_export > 0.0, self.export_limit, 0.0)
        upper[self._ren] = np.maximum(renewable_mw, 0.0)
        if self.generator:
            upper[self._gen] = self.gen_cap
        else:
            lower[self._gen] = upper[self._gen] = gen_mw
        upper[self._spill] = discharge_mw
        row_lo, row_hi = self._row_lo.copy(), self._row_hi.copy()
        row_lo[self._row_dem : self._row_dem + K] = row_hi[self._row_dem : self._row_dem + K] = demand_gpus
        row_hi[self._row_gpu : self._row_gpu + S] = np.maximum(free_gpus, 0.0)
        power_rhs = -(load * it_fixed_mw + charge_mw - discharge_mw)
        row_lo[self._row_pow : self._row_pow + S] = row_hi[self._row_pow : self._row_pow + S] = power_rhs
        row_hi[self._row_co2] = max(float(budget_left_t_per_h), 0.0)
        h.changeColsCost(self.n_cols, self._idx, cost)
        h.changeColsBounds(self.n_cols, self._idx, lower, upper)
        h.changeRowsBounds(len(row_lo), self._ridx, row_lo, row_hi)
        use_threads(1)  # HiGHS's scheduler is process-wide: agree with the oracle's solves on it
        h.run()
        self.solves += 1
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            raise RuntimeError(f"period LP: HiGHS status {h.modelStatusToString(h.getModelStatus())}")
        x = np.asarray(h.getSolution().col_value)
        serve = np.zeros((K, S))
        serve[self._k, self._s] = np.maximum(x[: len(self.pairs)], 0.0)
        return serve, np.clip(x[self._gen], 0.0, self.gen_cap)


class AgentLPPolicy(ProposerPolicy):
    """The trained agent's starts and battery, the period LP's routing and generator (module docstring).

    Args:
        env: the Dict env.
        model: path of the trained model (policy file, ensemble manifest or SB3 zip); None: the
            model evaluate.py scores as the agent row (:func:`agents.evaluation.default_model`).
        generator: the LP also decides the generator output (default) or keeps the agent's.
        trust_pickle, vecnormalize, safety_layer: how the agent is loaded
            (:func:`agents.loading.load_policy`).

    ``last_proposal`` is the agent's own action of the last period.
    """

    name = "agent_lp"

    def __init__(
        self,
        env: gym.Env,
        model: str | Path | None = None,
        generator: bool = True,
        trust_pickle: bool = False,
        vecnormalize: str | Path | None = None,
        safety_layer: bool | None = None,
    ) -> None:
        super().__init__(env, model, trust_pickle, vecnormalize, safety_layer)
        self.generator = bool(generator)
        self._lp: PeriodLP | None = None
        self._lp_for: Scenario | None = None

    def _period_lp(self) -> PeriodLP:
        sc = self.scenario
        if self._lp is None or self._lp_for is not sc:
            self._lp = PeriodLP(
                sc, self.base.voll_usd_per_mwh, self.base.carbon_overrun_usd_per_t, self.generator
            )
            self._lp_for = sc
        return self._lp

    def predict(
        self,
        obs: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """SB3's protocol: the agent acts on ``obs`` (its ``state`` passes through), the LP routes."""
        proposal, starts, state = self.propose(obs, state, episode_start, deterministic)
        action = {key: np.array(value, copy=True) for key, value in proposal.items()}
        now = {key: np.asarray(value)[:, 0] for key, value in self.base.forecast().items()}
        serve, gen = self.route(
            self.base.state_snapshot(), now, starts, action["battery"], action["generator"]
        )
        action["route"] = np.minimum(route_fractions(serve, now["demand_gpus"]), 1.0)
        cap = self._period_lp().gen_cap
        action["generator"] = np.divide(gen, cap, out=np.zeros_like(gen), where=cap > 0)
        return action, state

    def route(
        self,
        state: OperatingState,
        now: dict[str, np.ndarray],
        starts: list[tuple[int, int, int]],
        battery: np.ndarray,
        generator: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The period LP at ``state``: ``serve`` (K, S) GPUs and generator MW (S,), given the period's
        series ``now`` (column 0 of ``env.forecast()``, the truth), the accepted ``starts`` (job,
        site, period) and the battery / generator set points."""
        sc = self.scenario
        lp = self._period_lp()
        free = sc.site_array("gpu_capacity").astype(float) - held_gpus(sc, state, 1)[:, 0]
        it = sc.site_array("base_it_mw").astype(float) + held_mw(sc, state, 1)[:, 0]
        for j, s, _ in starts:
            free[s] -= sc.jobs[j].gpus
            it[s] += sc.job_power_mw[j, s]
        charge, discharge, gen = np.zeros(sc.S), np.zeros(sc.S), np.zeros(sc.S)
        for s, site in enumerate(sc.sites):
            cap = site.capacity_mwh
            charge[s], discharge[s], _ = battery_power(
                float(battery[s]), float(state.soc_mwh[s]), site.charge_mw, site.discharge_mw,
                site.soc_min_frac * cap, site.soc_max_frac * cap, site.eta_charge, site.eta_discharge,
                sc.dt_h,
            )  # fmt: skip
            gen[s] = generator_power(float(generator[s]), site.gen_capacity_mw)
        budget = sc.carbon_budget_t
        left = np.inf if budget is None else (budget - state.emissions_t) / sc.dt_h
        return lp.solve(
            now["demand_gpus"], free, it, charge, discharge, gen, now["cooling"], now["renewable_mw"],
            now["price_import"], now["price_export"], now["carbon_intensity"], left,
        )  # fmt: skip
