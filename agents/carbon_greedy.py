"""The hand-written carbon- and price-aware rule (``carbon_greedy``) and its tuned knobs.

It acts on the env's forecast and operating state only, like every controller of
:mod:`agents.baselines` (which re-exports both names): jobs admitted by their forecast score within
the carbon budget and GPU room, inference on the cheapest routes, generator and battery by price.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import gymnasium as gym
import numpy as np

from agents.policy_base import FORECAST_SERIES, EnvPolicy, held_gpus, held_mw, route_fractions
from envs.scenario import OperatingState, Scenario


@dataclasses.dataclass(frozen=True)
class CarbonGreedyParams:
    """Tunable knobs of :class:`CarbonGreedyPolicy`.

    Defaults were tuned by hand on ``paper`` training seeds 1000-1039 (never on the evaluation seeds
    0-19) over a small grid of these knobs; there they reach 62.3 % of the oracle's mean benefit
    (60.4 % net of penalties).

    - ``job_margin``: a job starts only if its value exceeds its estimated energy + carbon cost by this
      fraction of its value;
    - ``wait_gain``: hold a job for a later window only when that window is better by at least this
      fraction of the job's value;
    - ``inference_reserve``: GPUs kept free for inference, as a multiple of forecast demand;
    - ``budget_safety``: fraction of the remaining carbon budget the plan may use;
    - ``carbon_shadow_usd_per_t``: added to the carbon price in routing and dispatch when there is a
      budget, and ``tight_shadow_usd_per_t`` on top once the forecast baseline exceeds what is left;
    - ``charge_quantile`` / ``discharge_quantile``: the battery charges when the effective price is at
      or below this quantile of the forecast, discharges at or above the other;
    - ``battery_margin_usd``: minimum arbitrage gain per MWh (after losses and degradation);
    - ``recovery_power``: share of the charge limit assumed available to restore the initial state
      of charge by the end (discharging never goes below what that can restore).
    """

    job_margin: float = 0.0
    wait_gain: float = 0.15
    inference_reserve: float = 1.05
    budget_safety: float = 0.9
    carbon_shadow_usd_per_t: float = 50.0
    tight_shadow_usd_per_t: float = 300.0
    charge_quantile: float = 0.3
    discharge_quantile: float = 0.7
    battery_margin_usd: float = 5.0
    recovery_power: float = 0.5


class CarbonGreedyPolicy(EnvPolicy):
    """A price- and carbon-aware rule that uses only the forecast and the operating state.

    The effective cost of energy at a site is ``price_import + carbon_price * carbon_intensity`` when it
    imports, and the lost export revenue (or nothing, for curtailed renewables) while its forecast
    renewables exceed its estimated load; every MW of IT load costs ``1 + cooling`` MW of it.

    - **Jobs**: every waiting job is scored at every eligible site and every start period in its
      window that the forecast covers: ``value - energy cost - carbon cost`` of its run. Jobs are taken
      in order of their best score; a job is planned at its best window only if the GPUs (with a reserve
      for the forecast inference that can only go there) are free for its whole run and the plan's
      estimated emissions stay within the remaining carbon budget. Jobs planned for now start now; the
      others wait and are re-planned next period. A job whose best score is negative never starts.
    - **Inference**: each class is served at its routes (within its SLO) in order of the marginal energy
      cost per GPU now, up to the free GPUs.
    - **Generator**: runs (up to the site's import) when its cost plus carbon beats the grid's.
    - **Battery**: charges when the effective price is low relative to the rest of the forecast and a
      later period pays back losses and degradation, discharges (up to the import) when it is high;
      it is brought back to its initial state of charge by the end of the horizon.
    """

    name = "carbon_greedy"

    def __init__(self, env: gym.Env, params: CarbonGreedyParams | None = None) -> None:
        super().__init__(env)
        self.params = params or CarbonGreedyParams()
        self._subsets_for: Scenario | None = None

    # -- scenario constants, cached per scenario
    def _prepare(self, sc: Scenario) -> None:
        if self._subsets_for is sc:
            return
        self._subsets_for = sc
        routes = np.asarray(sc.routes, dtype=bool)
        # Hall's condition for routing inference: every subset of classes must fit on its routes.
        subsets = [c for r in range(1, sc.K + 1) for c in itertools.combinations(range(sc.K), r)]
        if len(subsets) > 1023:  # beyond 10 classes: single classes and all classes only
            subsets = [(k,) for k in range(sc.K)] + [tuple(range(sc.K))]
        self._class_sets = np.zeros((len(subsets), sc.K))
        self._site_sets = np.zeros((len(subsets), sc.S))
        for i, subset in enumerate(subsets):
            self._class_sets[i, list(subset)] = 1.0
            self._site_sets[i] = routes[list(subset)].any(axis=0)

    def act(self, period: int) -> dict[str, np.ndarray]:
        sc, p = self.scenario, self.params
        self._prepare(sc)
        fc = self.base.forecast()
        state = self.base.state_snapshot()
        t, dt = period, sc.dt_h
        n = max(1, sc.T - t)  # periods left, including this one
        H1 = fc["demand_gpus"].shape[1]
        m = min(n, H1)  # forecast periods that matter
        f = {key: np.asarray(fc[key], dtype=np.float64)[:, :m] for key in FORECAST_SERIES}
        cap = sc.site_array("gpu_capacity")
        cp = sc.carbon_price_usd_per_t
        gpu_mw = np.asarray(sc.gpu_mw)
        base_it = sc.site_array("base_it_mw")
        export_lim = sc.site_array("export_limit_mw")

        held = held_gpus(sc, state, m)
        job_mw = held_mw(sc, state, m)
        demand = f["demand_gpus"]
        # Jobs are valued at the true carbon price (the budget is enforced by admission); routing and
        # dispatch add a shadow price that stands in for the budget.
        job_eff = f["price_import"] + cp * f["carbon_intensity"]
        shadow = p.carbon_shadow_usd_per_t if sc.carbon_budget_t is not None else 0.0
        grid_eff = f["price_import"] + (cp + shadow) * f["carbon_intensity"]
        # Inference load estimate: classes (fewest routes first) at their cheapest routes, within the
        # GPUs that running jobs leave free.
        infer_gpus = np.zeros((sc.S, m))
        room = np.maximum(cap[:, None] - held, 0.0)
        for k in sorted(range(sc.K), key=lambda k: (int(sc.routes[k].sum()), k)):
            left = demand[k].copy()
            sites = np.flatnonzero(sc.routes[k])
            for i in range(m):
                for s in sites[np.argsort(grid_eff[sites, i], kind="stable")]:
                    amount = min(left[i], room[s, i])
                    infer_gpus[s, i] += amount
                    room[s, i] -= amount
                    left[i] -= amount
        export_val = np.where(f["price_export"] > 0, f["price_export"], 0.0)

        def marginal_cost(
            load_mw: np.ndarray, extra_mw: np.ndarray, eff: np.ndarray = grid_eff
        ) -> np.ndarray:
            """USD per period of adding ``extra_mw`` facility MW to ``load_mw`` (both (S, m'))."""
            mm = load_mw.shape[1]
            surplus = np.maximum(0.0, f["renewable_mw"][:, :mm] - load_mw)
            exported = np.where(f["price_export"][:, :mm] > 0, np.minimum(surplus, export_lim[:, None]), 0.0)
            curtailed = surplus - exported
            free_part = np.minimum(extra_mw, curtailed)
            export_part = np.minimum(extra_mw - free_part, exported)
            import_part = extra_mw - free_part - export_part
            return (export_part * export_val[:, :mm] + import_part * eff[:, :mm]) * dt

        def emissions_of(load_mw: np.ndarray, extra_mw: np.ndarray) -> np.ndarray:
            mm = load_mw.shape[1]
            before = np.maximum(0.0, load_mw + extra_mw - f["renewable_mw"][:, :mm])
            after = np.maximum(0.0, load_mw - f["renewable_mw"][:, :mm])
            return (before - after) * f["carbon_intensity"][:, :mm] * dt

        pue = 1.0 + f["cooling"]
        load = pue * (base_it[:, None] + job_mw + infer_gpus * gpu_mw[:, None])

        # Carbon budget left for the rest of the horizon, after the baseline load's emissions.
        budget = sc.carbon_budget_t
        slack = math.inf
        if budget is not None:
            baseline = float((np.maximum(0.0, load - f["renewable_mw"]) * f["carbon_intensity"]).sum() * dt)
            if m < n:  # beyond the forecast: assume the last forecast period repeats
                last = np.maximum(0.0, load[:, -1] - f["renewable_mw"][:, -1]) * f["carbon_intensity"][:, -1]
                baseline += float(last.sum()) * dt * (n - m)
            slack = p.budget_safety * (budget - state.emissions_t) - baseline
            if slack < 0:  # the budget is in danger: dispatch for carbon from now on
                shadow += p.tight_shadow_usd_per_t
                grid_eff = f["price_import"] + (cp + shadow) * f["carbon_intensity"]

        # ---- jobs: score every (site, start) in the forecast, plan greedily by best score
        started = {j for j, _, _ in state.job_starts}
        options: dict[int, list[tuple[float, int, int, float]]] = {}
        for j, job in enumerate(sc.jobs):
            if j in started or t > job.latest_start:
                continue
            mine = []
            for s in range(sc.S):
                if not job.eligible[s]:
                    continue
                for tau in range(max(t, job.release), min(job.latest_start, t + m - 1) + 1):
                    i0, i1 = tau - t, min(tau - t + job.duration, m)
                    extra = np.zeros((sc.S, i1 - i0))
                    extra[s] = pue[s, i0:i1] * sc.job_power_mw[j, s]
                    cost = float(marginal_cost(load[:, i0:i1], extra, job_eff).sum())
                    beyond = tau + job.duration - (t + m)  # run beyond the forecast: at its mean cost
                    if beyond > 0:
                        cost += cost / max(i1 - i0, 1) * beyond
                    score = job.value_usd - cost
                    if score > p.job_margin * job.value_usd:
                        emis = float(emissions_of(load[:, i0:i1], extra).sum())
                        # Starting now is worth a bonus: a later window may be taken or repriced.
                        bonus = p.wait_gain * job.value_usd if tau == t else 0.0
                        mine.append((score + bonus, s, tau, emis))
            if mine:
                options[j] = sorted(mine, key=lambda o: (-o[0], o[2], o[1]))
        start = np.zeros(self.n_slots, dtype=np.int64)
        planned = held.copy()
        has_inference = bool(demand.any())
        for j in sorted(options, key=lambda j: -options[j][0][0]):
            job = sc.jobs[j]
            for _score, s, tau, emis in options[j]:
                i0, i1 = tau - t, min(tau - t + job.duration, m)
                trial = planned.copy()
                trial[s, i0:i1] += job.gpus
                if (trial[:, i0:i1] > cap[:, None] + 1e-9).any():
                    continue
                if has_inference and not self._fits(
                    demand[:, i0:i1] * p.inference_reserve, cap, trial[:, i0:i1]
                ):
                    continue
                if emis > slack:
                    continue
                slack -= emis
                planned = trial
                if tau == t:
                    start[j] = 1 + s
                break

        # ---- inference: cheapest routes first, up to the GPUs left free now
        free = (
            cap
            - held[:, 0]
            - np.array([sum(sc.jobs[j].gpus for j in range(sc.J) if start[j] == 1 + s) for s in range(sc.S)])
        )
        now_job_mw = job_mw[:, 0] + np.array(
            [sum(sc.job_power_mw[j, s] for j in range(sc.J) if start[j] == 1 + s) for s in range(sc.S)]
        )
        load_now = pue[:, 0] * (base_it + now_job_mw)
        unit = marginal_cost(load[:, :1], (pue[:, :1] * gpu_mw[:, None])).ravel()  # USD per GPU now
        serve = np.zeros((sc.K, sc.S))
        d_now = demand[:, 0]
        # classes with fewer routes first, so flexible classes take what is left
        order = sorted(range(sc.K), key=lambda k: (int(sc.routes[k].sum()), k))
        for k in order:
            left = float(d_now[k])
            for s in sorted((s for s in range(sc.S) if sc.routes[k, s]), key=lambda s: (unit[s], s)):
                if left <= 0:
                    break
                amount = min(left, max(free[s], 0.0))
                serve[k, s] += amount
                free[s] -= amount
                left -= amount
        load_now = load_now + pue[:, 0] * serve.sum(axis=0) * gpu_mw

        # ---- generator and battery
        gen_cap = sc.site_array("gen_capacity_mw")
        gen_eff = sc.site_array("gen_cost_usd_per_mwh") + (cp + shadow) * sc.site_array(
            "gen_emissions_t_per_mwh"
        )
        gen, battery = self._energy(sc, state, f, load_now, grid_eff, gen_eff, export_val, n, m)
        return {
            "start": start,
            "route": route_fractions(serve, d_now),
            "battery": battery,
            "generator": np.divide(gen, gen_cap, out=np.zeros_like(gen), where=gen_cap > 0),
        }

    def _fits(self, demand: np.ndarray, cap: np.ndarray, held: np.ndarray) -> bool:
        """Hall's condition: every subset of classes fits on the free GPUs of its routes, every period."""
        free = np.maximum(cap[:, None] - held, 0.0)
        need = self._class_sets @ demand
        room = self._site_sets @ free
        return bool((need <= room + 1e-6).all())

    def _energy(
        self,
        sc: Scenario,
        state: OperatingState,
        f: dict[str, np.ndarray],
        load_now: np.ndarray,
        grid_eff: np.ndarray,
        gen_eff: np.ndarray,
        export_val: np.ndarray,
        n: int,
        m: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        p, dt = self.params, sc.dt_h
        gen_cap = sc.site_array("gen_capacity_mw")
        imp_lim = sc.site_array("import_limit_mw")
        c_lim, d_lim = sc.site_array("charge_mw"), sc.site_array("discharge_mw")
        eta_c, eta_d = sc.site_array("eta_charge"), sc.site_array("eta_discharge")
        degr = sc.site_array("degradation_usd_per_mwh")
        soc = np.asarray(state.soc_mwh, dtype=np.float64)
        soc_min = np.array([site.soc_min_mwh for site in sc.sites])
        soc_max = np.array([site.soc_max_mwh for site in sc.sites])
        soc_init = np.array([site.soc_init_mwh for site in sc.sites])

        net = load_now - f["renewable_mw"][:, 0]  # > 0: the site imports
        gen = np.zeros(sc.S)
        battery = np.zeros(sc.S)
        for s in range(sc.S):
            if gen_cap[s] > 0 and net[s] > 0 and gen_eff[s] < grid_eff[s, 0]:
                gen[s] = min(gen_cap[s], net[s])
            residual = net[s] - gen[s]
            if sc.sites[s].capacity_mwh <= 0 or c_lim[s] <= 0 or d_lim[s] <= 0:
                continue
            # The price one more MWh is worth at the site in each forecast period.
            price = grid_eff[s].copy()
            price[0] = grid_eff[s, 0] if residual > 0 else export_val[s, 0]
            later = price[1:] if m > 1 else price
            loop = eta_c[s] * eta_d[s]
            # Energy that must come back before the end: recharge capacity left after this period.
            recharge = p.recovery_power * eta_c[s] * c_lim[s] * dt * max(n - 1, 0)
            lo_q = np.quantile(price, p.charge_quantile)
            hi_q = np.quantile(price, p.discharge_quantile)
            want = 0.0
            if (
                price[0] <= lo_q
                and later.max() * loop - price[0] - degr[s] * (1 + loop) > p.battery_margin_usd
            ):
                want = 1.0
            elif (
                price[0] >= hi_q
                and price[0] * loop - later.min() - degr[s] * (1 + loop) > p.battery_margin_usd
            ):
                want = -1.0
            if want > 0:
                room = (soc_max[s] - soc[s]) / (eta_c[s] * dt)
                headroom = imp_lim[s] - residual if residual > 0 else imp_lim[s] + (-residual)
                charge = max(0.0, min(c_lim[s], room, headroom))
                battery[s] = charge / c_lim[s]
            elif want < 0:
                floor = max(soc_min[s], soc_init[s] - recharge)
                avail = max(0.0, (soc[s] - floor) * eta_d[s] / dt)
                discharge = max(0.0, min(d_lim[s], avail, residual))
                battery[s] = -discharge / d_lim[s]
            # Return to the initial state of charge by the end of the horizon.
            # Recover at least what the later periods cannot, at recovery_power of the charge limit.
            short = soc_init[s] + 1e-6 - soc[s]
            later_cap = p.recovery_power * eta_c[s] * c_lim[s] * dt * (n - 1)
            if short > later_cap and battery[s] * c_lim[s] * eta_c[s] * dt < short - later_cap:
                need = (short - later_cap) / (eta_c[s] * dt)
                headroom = imp_lim[s] - residual
                battery[s] = max(0.0, min(c_lim[s], need, headroom)) / c_lim[s]
        return gen, battery
