"""Replay an oracle :class:`~oracle.solve.Schedule` through the environment, one period per step.

:class:`OracleReplayPolicy` speaks the common ``predict`` protocol. It reads only the schedule's
decision arrays, so replaying the schedule of any configuration in an env built from
``schedule.scenario`` earns exactly the schedule's objective (the replay identity, MODEL.md §7).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class OracleReplayPolicy:
    """The Dict action of a schedule for the period in ``obs["period"]``.

    - ``start[j] = 1 + s`` for each job the schedule starts at site ``s`` in this period, else 0;
    - ``route[k, s] = serve_gpus[k, s, t] / demand_gpus[k, t]`` (0 where the demand is 0);
    - ``battery = charge / charge_mw - discharge / discharge_mw`` (a zero limit contributes 0);
    - ``generator = gen / gen_capacity_mw`` (0 where the capacity is 0).

    ``schedule`` is anything with the attributes of ``oracle.solve.Schedule`` (``scenario``,
    ``job_start``, ``serve_gpus``, ``gen_mw``, ``charge_mw``, ``discharge_mw``); its arrays cover
    periods ``0 .. T-1``.
    """

    def __init__(self, schedule: Any) -> None:
        sc = schedule.scenario
        if schedule.serve_gpus is None:
            raise ValueError(f"schedule has no decisions (status {getattr(schedule, 'status', '?')!r})")
        self.scenario = sc
        self.T = sc.T
        demand = sc.demand_gpus[:, None, :]
        serve = np.asarray(schedule.serve_gpus, dtype=np.float64)
        self._route = np.divide(serve, demand, out=np.zeros_like(serve), where=demand > 0)  # (K, S, T)
        charge_lim = sc.site_array("charge_mw")[:, None]
        discharge_lim = sc.site_array("discharge_mw")[:, None]
        gen_cap = sc.site_array("gen_capacity_mw")[:, None]
        charge = np.asarray(schedule.charge_mw, dtype=np.float64)
        discharge = np.asarray(schedule.discharge_mw, dtype=np.float64)
        gen = np.asarray(schedule.gen_mw, dtype=np.float64)
        self._battery = np.divide(charge, charge_lim, out=np.zeros_like(charge), where=charge_lim > 0)
        self._battery -= np.divide(
            discharge, discharge_lim, out=np.zeros_like(discharge), where=discharge_lim > 0
        )
        self._generator = np.divide(gen, gen_cap, out=np.zeros_like(gen), where=gen_cap > 0)
        self._starts: dict[int, list[tuple[int, int]]] = {}
        for j, s, t in schedule.job_start or ():
            self._starts.setdefault(int(t), []).append((int(j), int(s)))

    def action(self, period: int, n_slots: int) -> dict[str, np.ndarray]:
        """The Dict action for ``period`` with ``n_slots`` job slots."""
        start = np.zeros(n_slots, dtype=np.int64)
        for j, s in self._starts.get(period, ()):
            start[j] = 1 + s
        t = min(period, self.T - 1)
        return {
            "start": start,
            "route": self._route[:, :, t].copy(),
            "battery": self._battery[:, t].copy(),
            "generator": self._generator[:, t].copy(),
        }

    def predict(
        self,
        obs: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """SB3's protocol: ``(action, state)`` for one Dict observation (``state`` passes through)."""
        period = int(np.asarray(obs["period"]).ravel()[0])
        n_slots = int(np.asarray(obs["jobs"]).shape[0])
        return self.action(period, n_slots), state
