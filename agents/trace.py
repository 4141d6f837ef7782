"""Per-step traces of an episode as a table: one row per (period, site), plus one ``system`` row.

:class:`TraceRecorder` is fed every step's Dict action and ``info`` (``rollout(..., trace=True)`` in
:mod:`agents.evaluation` does it) and returns a :class:`pandas.DataFrame` with, per period ``t`` and
site ``s``:

- the action parts: ``battery`` and ``generator`` set points, ``route_<class>`` fractions of each
  inference class sent to the site, ``starts`` (the jobs started there in this period, ``"j0 j3"``);
- the flows of ``info["flows"]`` (MW, MWh, GPUs), ``serve_gpus`` summed over classes;
- the true prices (USD/MWh), carbon intensity (tCO2/MWh) and renewable availability (MW);
- the objective's terms (USD, signed like ``info["reward_terms"]``) attributed to the site:
  ``training_value_usd`` of the jobs started there, ``inference_revenue_usd`` of the GPUs served
  there, the energy terms and ``carbon_cost_usd`` of its import and generator, and ``lost_load_usd``;
- ``repairs``: the names of the env's repairs in this period (on every row of the period).

Terms that belong to no site (``unserved_penalty_usd``, ``carbon_overrun_usd``, ``soc_shortfall_usd``,
``mandatory_miss_usd``) are on the period's ``system`` row (``site = -1``). So, per period, the sum of
a term's column over the rows equals ``info["reward_terms"]`` (checked at every step: a trace that
disagrees with the env raises), and the sum of all term columns over the episode is its return.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.dynamics import REWARD_KEYS
from envs.scenario import OperatingState, Scenario

SITE_TERMS = (
    "training_value_usd",
    "inference_revenue_usd",
    "export_revenue_usd",
    "import_cost_usd",
    "gen_cost_usd",
    "degradation_cost_usd",
    "carbon_cost_usd",
    "lost_load_usd",
)
"""Reward terms split over sites (the rest of :data:`envs.dynamics.REWARD_KEYS` is on the system row)."""
SYSTEM_TERMS = tuple(k for k in REWARD_KEYS if k not in SITE_TERMS)
FLOW_COLUMNS = (
    "load_mw",
    "grid_import_mw",
    "grid_export_mw",
    "renewable_used_mw",
    "curtailed_mw",
    "gen_mw",
    "charge_mw",
    "discharge_mw",
    "soc_mwh",
    "lost_load_mw",
)


class TraceRecorder:
    """Collects the rows of one episode on ``scenario`` (see the module docstring).

    ``voll_usd_per_mwh`` is the env's value of lost load (``env.unwrapped.voll_usd_per_mwh``)."""

    def __init__(self, scenario: Scenario, voll_usd_per_mwh: float) -> None:
        self.scenario = scenario
        self.voll = float(voll_usd_per_mwh)
        self.rows: list[dict[str, Any]] = []
        self._started: set[int] = set()
        site = scenario.site_array
        self._gen_cost = site("gen_cost_usd_per_mwh")
        self._gen_em = site("gen_emissions_t_per_mwh")
        self._degr = site("degradation_usd_per_mwh")
        self._revenue = scenario.class_array("revenue_usd_per_gpu_h")

    def add(
        self, period: int, action: dict[str, Any], info: dict[str, Any], state_after: OperatingState
    ) -> None:
        """Record period ``period``: the Dict ``action`` sent, the step's ``info`` and the
        ``state_snapshot()`` after the step (its ``job_starts`` tell which jobs started now)."""
        sc, t, dt = self.scenario, int(period), float(self.scenario.dt_h)
        flows = info["flows"]
        terms = info["reward_terms"]
        new = [(j, s) for j, s, t0 in state_after.job_starts if t0 == t and j not in self._started]
        self._started.update(j for j, _ in new)
        serve = np.asarray(flows["serve_gpus"], dtype=np.float64)
        route = np.asarray(action["route"], dtype=np.float64)
        imp, exp = np.asarray(flows["grid_import_mw"]), np.asarray(flows["grid_export_mw"])
        gen = np.asarray(flows["gen_mw"])
        store = np.asarray(flows["charge_mw"]) + np.asarray(flows["discharge_mw"])
        ci, p_imp, p_exp = sc.carbon_intensity[:, t], sc.price_import[:, t], sc.price_export[:, t]
        site_terms = {
            "training_value_usd": np.array(
                [sum(sc.jobs[j].value_usd for j, s2 in new if s2 == s) for s in range(sc.S)], dtype=np.float64
            ),
            "inference_revenue_usd": (self._revenue[:, None] * serve).sum(axis=0) * dt,
            "export_revenue_usd": p_exp * exp * dt,
            "import_cost_usd": -p_imp * imp * dt,
            "gen_cost_usd": -self._gen_cost * gen * dt,
            "degradation_cost_usd": -self._degr * store * dt,
            "carbon_cost_usd": -sc.carbon_price_usd_per_t * (ci * imp + self._gen_em * gen) * dt,
            "lost_load_usd": -self.voll * np.asarray(flows["lost_load_mw"]) * dt,
        }
        for key, values in site_terms.items():
            if not np.isclose(values.sum(), terms[key], rtol=1e-9, atol=1e-6):
                raise RuntimeError(
                    f"trace: {key} per site sums to {values.sum()!r}, the env says {terms[key]!r}"
                )
        repairs = " ".join(sorted(info["repairs"]))
        names = [c.name for c in sc.classes]
        for s, site in enumerate(sc.sites):
            row: dict[str, Any] = {"period": t, "site": s, "site_name": site.name}
            row["starts"] = " ".join(f"j{j}" for j, s2 in new if s2 == s)
            row["battery"] = float(np.asarray(action["battery"])[s])
            row["generator"] = float(np.asarray(action["generator"])[s])
            for k, name in enumerate(names):
                row[f"route_{name}"] = float(route[k, s])
            for key in FLOW_COLUMNS:
                row[key] = float(np.asarray(flows[key])[s])
            row["serve_gpus"] = float(serve[:, s].sum())
            row["price_import_usd_per_mwh"] = float(p_imp[s])
            row["price_export_usd_per_mwh"] = float(p_exp[s])
            row["carbon_intensity_t_per_mwh"] = float(ci[s])
            row["renewable_mw"] = float(sc.renewable_mw[s, t])
            for key in REWARD_KEYS:
                row[key] = float(site_terms[key][s]) if key in site_terms else 0.0
            row["repairs"] = repairs
            self.rows.append(row)
        system: dict[str, Any] = {
            "period": t,
            "site": -1,
            "site_name": "system",
            "starts": "",
            "repairs": repairs,
        }
        for key in REWARD_KEYS:
            system[key] = float(terms[key]) if key in SYSTEM_TERMS else 0.0
        system["emissions_t"] = float(info["emissions_t"])
        self.rows.append(system)

    def frame(self) -> Any:
        """The trace as a :class:`pandas.DataFrame` (rows in period order, sites then ``system``)."""
        import pandas as pd

        return pd.DataFrame(self.rows)
