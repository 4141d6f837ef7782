"""Replay an oracle :class:`~oracle.solve.Schedule` through the environment, one period per step.

:func:`schedule_action` is the one conversion from a schedule's decision arrays to the env's Dict
action, used by :class:`OracleReplayPolicy`, MPC and DAgger's relabelling. It reads only the
schedule's arrays, so replaying the schedule of any configuration in an env built from
``schedule.scenario`` earns exactly the schedule's objective (the replay identity, MODEL.md §7).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _fraction(x: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """``x / limit``, 0 where the limit is 0."""
    return np.divide(x, limit, out=np.zeros_like(x), where=limit > 0)


def schedule_action(schedule: Any, period: int, n_slots: int) -> dict[str, np.ndarray]:
    """The Dict action of ``schedule`` for ``period`` with ``n_slots`` job slots.

    - ``start[j] = 1 + s`` for each job the schedule starts at site ``s`` in this period, else 0;
    - ``route[k, s] = serve_gpus[k, s, t] / demand_gpus[k, t]`` (0 where the demand is 0);
    - ``battery = charge / charge_mw - discharge / discharge_mw`` (a zero limit contributes 0);
    - ``generator = gen / gen_capacity_mw`` (0 where the capacity is 0).

    ``schedule`` is anything with the attributes of ``oracle.solve.Schedule`` (``scenario``, ``t0``,
    ``job_start``, ``serve_gpus``, ``gen_mw``, ``charge_mw``, ``discharge_mw``); its arrays cover
    periods ``t0 .. t0 + n - 1`` (``t0 = 0`` for a full-horizon schedule, later for one solved from a
    mid-episode state).
    """
    if schedule.serve_gpus is None:
        raise ValueError(f"schedule has no decisions (status {getattr(schedule, 'status', '?')!r})")
    sc = schedule.scenario
    col = period - int(getattr(schedule, "t0", 0))
    n_cols = np.shape(schedule.serve_gpus)[2]
    if not 0 <= col < n_cols:
        raise ValueError(f"period {period} is outside the schedule's periods (t0={period - col}, {n_cols})")
    start = np.zeros(n_slots, dtype=np.int64)
    for j, s, t in schedule.job_start or ():
        if int(t) == period:
            start[int(j)] = 1 + int(s)
    serve = np.asarray(schedule.serve_gpus, dtype=np.float64)[:, :, col]
    charge = np.asarray(schedule.charge_mw, dtype=np.float64)[:, col]
    discharge = np.asarray(schedule.discharge_mw, dtype=np.float64)[:, col]
    gen = np.asarray(schedule.gen_mw, dtype=np.float64)[:, col]
    return {
        "start": start,
        "route": _fraction(serve, sc.demand_gpus[:, period][:, None]),
        "battery": _fraction(charge, sc.site_array("charge_mw"))
        - _fraction(discharge, sc.site_array("discharge_mw")),
        "generator": _fraction(gen, sc.site_array("gen_capacity_mw")),
    }


class OracleReplayPolicy:
    """Plays a schedule: the Dict action of :func:`schedule_action` for the period in ``obs["period"]``."""

    def __init__(self, schedule: Any) -> None:
        if schedule.serve_gpus is None:
            raise ValueError(f"schedule has no decisions (status {getattr(schedule, 'status', '?')!r})")
        self.schedule = schedule
        self.scenario = schedule.scenario
        self.T = schedule.scenario.T

    def action(self, period: int, n_slots: int) -> dict[str, np.ndarray]:
        """The Dict action for ``period`` with ``n_slots`` job slots."""
        return schedule_action(self.schedule, period, n_slots)

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
