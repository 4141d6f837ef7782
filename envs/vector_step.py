"""One period over all lanes of :class:`envs.vector.CarbonAwareDCVectorEnv`, its observation and its
batched ``info``.

:class:`LaneStepper` holds the step's five stages (docs/env.md, "One step") over the env's lane
arrays; they call the batched dynamics of :mod:`envs.vector_dynamics` in the order in which
``CarbonAwareDCEnv.step`` calls :mod:`envs.dynamics`. :func:`lane_info` turns a batched ``info``
back into one lane's single-env ``info``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import vector_dynamics as vd
from envs.dc_env import JOB_FEATURES, OBS_BOUND
from envs.dynamics import FLOW_FIELDS, REPAIR_RTOL
from envs.vector_pool import SERIES_FIELDS, SITE_FIELDS

_I = {name: i for i, name in enumerate(SITE_FIELDS)}
_F = len(JOB_FEATURES)
_COL = {name: i for i, name in enumerate(JOB_FEATURES)}
_PATCH = np.array([_COL[k] for k in ("waiting", "running", "done", "remaining", "slack", "until_release")])
"""Job features a start changes, in the order of the patch values written by ``_observe_flat``."""
CASCADE_KEYS = FLOW_FIELDS[10:]
"""Repairs of the two power cascades (``discharge_cut_mw`` .. ``shed_gpus``), in the single env's order."""
STEP_KEYS = ("reward_terms", "flows", "emissions_t", "emissions_total_t", "repairs")
"""Info keys a lane has only after a step (not after a reset)."""


def carbon_features(emissions_t: np.ndarray, budget_t: np.ndarray, all_positive: bool = False) -> np.ndarray:
    """(n, 3) ``obs["carbon"]``: has a budget, emissions / budget (clipped), remaining fraction; no
    budget (NaN): (0, 0, 1); a zero budget: (1, 10 if anything was emitted else 0, 0).
    ``all_positive``: the caller knows every budget is > 0 (the same values, fewer passes)."""
    if all_positive:
        used = emissions_t / budget_t
        out = np.empty((len(emissions_t), 3))
        out[:, 0] = 1.0
        out[:, 1] = np.minimum(used, OBS_BOUND)
        out[:, 2] = np.maximum(1.0 - used, 0.0)
        return out
    has = ~np.isnan(budget_t)
    pos = has & (budget_t > 0)
    used = emissions_t / np.where(pos, budget_t, 1.0)
    out = np.empty((len(emissions_t), 3))
    out[:, 0] = has
    out[:, 1] = np.where(pos, np.minimum(used, OBS_BOUND), np.where(has & (emissions_t > 0), OBS_BOUND, 0.0))
    out[:, 2] = np.where(pos, np.maximum(1.0 - used, 0.0), np.where(has, 0.0, 1.0))
    return out


class LaneStepper:
    """The step and the observation over the lane arrays of ``CarbonAwareDCVectorEnv`` (a mixin: the
    arrays are allocated and reset by the env, ``envs/vector.py``)."""

    def _physics(
        self,
        start: np.ndarray,
        route: np.ndarray,
        battery: np.ndarray,
        generator: np.ndarray,
        periods: tuple[np.ndarray, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Simulate the current period of every lane; advance the state; return ``(reward, terminated,
        info)`` (info without ``action_mask`` and ``scenario_seed``). Actions lane axis last. Lanes
        about to be reset (at ``t = T``) are computed on clamped indices and discarded by the caller.
        ``periods``: ``(guessed rows, future)`` of the period rows gathered on the gather thread during
        the previous step; lanes whose row is not the one guessed are gathered again."""
        N, S, T_max = self.num_envs, self.S, self.T_max
        c, T, dt = self._site_c, self._T, self._dt
        t_now = self._t
        t = np.minimum(t_now, T - 1)
        cols = self._p * T_max + t
        if periods is None:
            rows = self._pool.gather_periods(cols, self._period_buf)
        else:
            guessed, future = periods
            rows = future.result()
            stale = np.flatnonzero(guessed != cols)
            if stale.size:
                rows[:, stale] = self._pool.period_rows.take(cols[stale], axis=0).T
                self._stale_periods += stale.size
        n_series = len(SERIES_FIELDS)
        cooling, renewable, p_imp, p_exp, ci, export_cap = rows[: n_series * S].reshape(n_series, S, N)
        demand = rows[n_series * S :]
        gpus, value = self._job_float
        latest = self._job_int[2]

        # 1. Job starts, in slot order, against the GPUs held by running jobs.
        placed, site, ignored, free = vd.place_starts(start, self._mask, gpus, self._free_now)
        value_started = np.add.reduce(value * placed, axis=0)  # values are finite: 0 where not placed
        j_i, n_i = vd.nonzero2(placed)
        if n_i.size:
            s_i = site[j_i, n_i]
            self._started[j_i, n_i] = True
            self._start_t[j_i, n_i] = t[n_i]
            self._site[j_i, n_i] = s_i
            self._add_ranges(j_i, n_i, s_i, t[n_i])

        # 2. Inference routing on the GPUs left free.
        frac, route_clipped, removed, scaled = vd.repair_routes(route, self._routes)
        serve, site_gpus, cut = vd.serve_within_capacity(frac, demand, free)

        # 3-4. Set points, power completion, state of charge, energy terms.
        soc = self._soc
        lo, hi, eta_c, eta_d = c[_I["soc_min"]], c[_I["soc_max"]], c[_I["eta_c"]], c[_I["eta_d"]]
        charge, discharge, b_clip = vd.battery_power(
            battery, soc, c[_I["charge_lim"]], c[_I["discharge_lim"]], lo, hi, eta_c, eta_d, dt
        )
        gen_cap = c[_I["gen_cap"]]
        gen = vd.generator_power(generator, gen_cap)
        fixed_it = self._fixed.take(self._fixed_at0 + t * S)
        f, casc = vd.complete_power(
            fixed_it, site_gpus, c[_I["gpu_mw"]], cooling, renewable, charge, discharge, gen, gen_cap,
            c[_I["imp_lim"]], export_cap,
        )  # fmt: skip
        new_soc = vd.soc_next(soc, f.charge_mw, f.discharge_mw, eta_c, eta_d, lo, hi, dt)
        e_usd, i_usd, g_usd, d_usd, e_t = vd.site_energy_terms(
            f, p_imp, p_exp, c[_I["gen_cost"]], c[_I["degr"]], ci, c[_I["gen_em"]], dt
        )
        em = np.add.reduce(e_t, axis=0)
        lost = f.lost_load_mw
        # Lost load and the five cascade repairs, summed and maximal over sites: (6, N) each. All
        # amounts are >= 0, so a lane cascaded iff one of its peaks is positive.
        casc_sum, casc_max = np.add.reduce(casc, axis=1), np.maximum.reduce(casc, axis=1)
        cascaded = np.logical_or.reduce(casc_max > 0.0, axis=0)
        if casc_max[5].any():  # some site shed inference (keep < 1); elsewhere keep is exactly 1
            serve = serve * f.keep
        revenue_usd, unserved_usd, unserved = vd.inference_terms(
            serve, demand, self._revenue, self._penalty, dt
        )

        # 5. Carbon budget and terminal penalties, then the reward.
        overrun = vd.carbon_overrun_t(self._emissions, em, self._budget)
        self._emissions = self._emissions + em
        last = t_now == T - 1
        shortfall = np.where(last, np.add.reduce(np.maximum(0.0, c[_I["soc_init"]] - new_soc), axis=0), 0.0)
        newly = self._mandatory & ~self._started & ~self._missed
        newly &= (latest <= t) | last
        self._missed |= newly
        lost_mwh = casc_sum[0]
        terms = {
            "training_value_usd": value_started,
            "inference_revenue_usd": revenue_usd,
            "unserved_penalty_usd": unserved_usd,
            "export_revenue_usd": np.add.reduce(e_usd, axis=0),
            "import_cost_usd": np.add.reduce(i_usd, axis=0),
            "gen_cost_usd": np.add.reduce(g_usd, axis=0),
            "degradation_cost_usd": np.add.reduce(d_usd, axis=0),
            "carbon_cost_usd": -self._carbon_price * em,
            "lost_load_usd": np.where(cascaded, -self.voll_usd_per_mwh * lost_mwh * dt, 0.0),
            "carbon_overrun_usd": -self.carbon_overrun_usd_per_t * overrun,
            "soc_shortfall_usd": -self.soc_shortfall_usd_per_mwh * shortfall,
            "mandatory_miss_usd": -self.mandatory_miss_usd * np.add.reduce(newly, axis=0),
        }
        reward = sum(terms.values())

        # 6. Repairs above the reporting tolerance (amounts per lane; 0 where not reported).
        repairs: dict[str, np.ndarray] = {"start_ignored": ignored.T, "_start_ignored": ignored.any(axis=0)}
        tol_gpus, tol_mw = self._tol_gpus, self._tol_mw
        for key, amount, peak in zip(CASCADE_KEYS, casc_sum[1:], casc_max[1:], strict=True):
            _report(repairs, key, amount, peak > (tol_gpus if key == "shed_gpus" else tol_mw))
        _report(repairs, "lost_load_mw", lost_mwh, casc_max[0] > tol_mw)
        if battery.min() < -1.0 or battery.max() > 1.0 or generator.min() < 0.0 or generator.max() > 1.0:
            clipped = np.add.reduce(np.maximum(np.maximum(battery - 1.0, -1.0 - battery), 0.0), axis=0)
            over_g = np.maximum(np.maximum(generator - 1.0, -generator), 0.0)
            clipped = clipped + np.add.reduce(over_g, axis=0)
            clipped = clipped + route_clipped
        else:  # every set point inside its box: the sums above would be exact zeros
            clipped = route_clipped + 0.0
        _report(repairs, "action_clipped", clipped, clipped > REPAIR_RTOL)
        _report(repairs, "route_removed", removed, removed > REPAIR_RTOL)
        _report(repairs, "route_scaled", scaled, scaled > REPAIR_RTOL)
        _report(repairs, "serve_cut_gpus", cut, cut > tol_gpus)
        battery_clipped = np.add.reduce(b_clip, axis=0)
        _report(repairs, "battery_clipped_mw", battery_clipped, battery_clipped > tol_mw)

        # 7. Advance: the next period's free GPUs and start mask.
        self._soc = new_soc
        self._t = t_now + 1
        terminated = self._t >= T
        t_obs = np.minimum(self._t, T)
        self._free_now = self._free.take(self._free_at0 + t_obs * S)
        self._mask = self._start_mask(t_obs)
        flows = {
            "grid_import_mw": f.grid_import_mw.T,
            "grid_export_mw": f.grid_export_mw.T,
            "renewable_used_mw": f.renewable_used_mw.T,
            "curtailed_mw": f.curtailed_mw.T,
            "gen_mw": f.gen_mw.T,
            "charge_mw": f.charge_mw.T,
            "discharge_mw": f.discharge_mw.T,
            "soc_mwh": new_soc.T.copy(),
            "load_mw": f.load_mw.T,
            "lost_load_mw": lost.T,
            "serve_gpus": serve.transpose(2, 0, 1),
            "unserved_gpus": unserved.T,
        }
        stepped = np.ones(N, dtype=bool)
        info: dict[str, Any] = {"period": t_now.copy(), "_period": np.ones(N, dtype=bool)}
        for key, value in (
            ("reward_terms", terms),
            ("flows", flows),
            ("emissions_t", em),
            ("emissions_total_t", self._emissions.copy()),
            ("repairs", repairs),
        ):
            if key in ("reward_terms", "flows"):
                value = {**value, **{f"_{k}": stepped for k in value}}
            info[key], info[f"_{key}"] = value, stepped
        return reward, terminated, info

    def _add_ranges(self, j_i: np.ndarray, n_i: np.ndarray, s_i: np.ndarray, t_i: np.ndarray) -> None:
        """Jobs ``j_i`` started in lanes ``n_i`` at sites ``s_i`` in periods ``t_i`` hold their GPUs and
        their power in periods ``t .. t + duration - 1``, added in slot order per lane as the single env
        adds them (the same sums to the bit)."""
        S, T_max, N = self.S, self.T_max, self.num_envs
        # One row per (start, period held), in start order then period: flat gathers (``take``) on
        # the (J, N) and (J, S, N) job tables are 2-3x faster than tuple indices.
        slot = j_i * N + n_i
        dur = self._job_int[0].reshape(-1).take(slot)
        row = np.repeat(vd.arange_view(len(dur)), dur)
        off = vd.arange_view(len(row)) - np.repeat(np.cumsum(dur) - dur, dur)
        n_r, s_r, tau = n_i[row], s_i[row], t_i[row] + off
        at_fixed = (n_r * T_max + tau) * S + s_r
        at_free = (n_r * (T_max + 1) + tau) * S + s_r
        mw = self._job_mw.reshape(-1).take((j_i * S + s_i) * N + n_i)[row]
        gpus = self._job_float[0].reshape(-1).take(slot)[row]
        fixed, free = self._fixed.reshape(-1), self._free.reshape(-1)
        place_cell = s_i * N + n_i
        shared = np.bincount(place_cell)[place_cell] > 1
        if shared.any():
            # Two starts in one lane at one site: add those in slot order (np.add.at keeps the order).
            shared = shared[row]
            np.add.at(fixed, at_fixed[shared], mw[shared])
            np.subtract.at(free, at_free[shared], gpus[shared])
            alone = ~shared
            at_fixed, at_free, mw, gpus = at_fixed[alone], at_free[alone], mw[alone], gpus[alone]
        fixed[at_fixed] += mw
        free[at_free] -= gpus

    def _observe_flat(self, idx: np.ndarray | None = None, prefetched: tuple | None = None) -> np.ndarray:
        """(n, D) float32 flat observations of all lanes (or of lanes ``idx``) at their current period:
        the pool's row for (scenario, period) with soc, free GPUs, carbon and started jobs written in.
        ``prefetched``: ``(rows, future)`` of the rows being copied on the gather thread
        (``_prefetch_rows``, all lanes); lanes whose row is not the one prefetched are copied again."""
        sel: Any = slice(None) if idx is None else idx
        L, c = self.obs_layout, self._site_c
        t = self._t[sel]
        rows = self._row_base[sel] + t
        if prefetched is None:
            flat = self._static.take(rows, axis=0, mode="clip")  # rows are in range
        else:
            guessed, future = prefetched
            flat = future.result()
            stale = np.flatnonzero(guessed != rows)
            if stale.size:
                flat[stale] = self._static.take(rows[stale], axis=0, mode="clip")
                self._stale_rows += stale.size
        flat[:, L["soc"][0]] = (self._soc[:, sel] * c[_I["soc_scale"]][:, sel]).T
        flat[:, L["free_gpus"][0]] = (self._free_now[:, sel] / c[_I["cap_safe"]][:, sel]).T
        flat[:, L["carbon"][0]] = carbon_features(
            self._emissions[sel], self._budget[sel], self._budgets_positive
        )
        # Started jobs: their features differ from the pre-built row (as if not started) while it
        # still shows them waiting (t <= latest start) or they run; a finished job past its latest
        # start reads (not waiting, not running, done, 0 remaining, 0 slack) in both.
        started, start_t = self._started[:, sel], self._start_t[:, sel]
        dur, latest = self._job_int[0][:, sel], self._job_int[2][:, sel]
        end = start_t + dur
        patch = started & ((t <= latest) | (end > t))
        k = np.flatnonzero(patch)
        if k.size:
            j_i, n_i = np.divmod(k, patch.shape[1])
            remaining = np.maximum(end.reshape(-1).take(k) - t[n_i], 0)
            values = np.zeros((n_i.size, len(_PATCH)), dtype=np.float32)
            values[:, 1] = remaining > 0
            values[:, 2] = remaining == 0
            values[:, 3] = remaining * self._inv_T[sel][n_i]  # float64 product, stored as float32
            at = n_i * flat.shape[1] + (L["jobs"][0].start + j_i * (_F + self.S))
            flat.reshape(-1)[at[:, None] + _PATCH] = values
        return flat


def _report(repairs: dict[str, np.ndarray], key: str, amount: np.ndarray, reported: np.ndarray) -> None:
    repairs[key] = np.where(reported, amount, 0.0)
    repairs[f"_{key}"] = reported


def copy_info(info: dict[str, Any]) -> dict[str, Any]:
    """A copy of a batched info whose arrays can be changed without touching ``info``'s."""
    return {k: copy_info(v) if isinstance(v, dict) else np.array(v, copy=True) for k, v in info.items()}


def clear_lanes(info: dict[str, Any], idx: np.ndarray) -> None:
    """Remove the step keys of lanes ``idx`` (reset in this call) from a step's batched ``info``: zero
    their values and masks, period 0 (the reset's)."""
    info["period"][idx] = 0
    for key in STEP_KEYS:
        value = info[key]
        for arr in value.values() if isinstance(value, dict) else (value,):
            arr[idx] = 0
        info[f"_{key}"][idx] = False


def lane_info(info: dict[str, Any], i: int) -> dict[str, Any]:
    """Lane ``i``'s part of a batched ``info`` in the single env's format: only the keys the lane has,
    ``repairs`` only as reported (``start_ignored`` a list of slots), floats and ints as Python
    numbers, ``scenario_seed`` None for a given scenario."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or (f"_{key}" in info and not info[f"_{key}"][i]):
            continue
        if key == "repairs":
            out[key] = {
                name: np.flatnonzero(amount[i]).tolist() if name == "start_ignored" else float(amount[i])
                for name, amount in value.items()
                if not name.startswith("_") and value[f"_{name}"][i]
            }
        elif key == "final_info":
            out[key] = lane_info(value, i)
        elif isinstance(value, dict):
            out[key] = {
                k: float(v[i]) if v.ndim == 1 else v[i] for k, v in value.items() if not k.startswith("_")
            }
        elif key == "scenario_seed":
            out[key] = None if value[i] < 0 else int(value[i])
        elif key == "period":
            out[key] = int(value[i])
        elif isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind == "f":
            out[key] = float(value[i])
        else:
            out[key] = value[i]
    return out
