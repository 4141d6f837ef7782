"""The carbon-agnostic workload rule of MODEL.md §6 (``energy_only``), as pure functions.

One definition serves three users: the oracle's ``energy_only`` configuration fixes the workload to
it, the ``greedy`` baseline agent plays it step by step, and the presets use it to size a carbon
budget. The rule is chronological, so an online operator can follow it exactly:

- jobs: in each period t, in job order, a job that is released (``release <= t <= latest_start``) and
  not yet started starts at the first eligible site whose GPUs not held by running jobs can hold it;
- inference: in each period, in class order, each class is served at its routes in order of
  increasing latency, up to the GPUs left free by jobs and by earlier classes; the rest is unserved.
"""

from __future__ import annotations

import numpy as np

from envs.scenario import Scenario


def greedy_job_starts(sc: Scenario) -> list[tuple[int, int, int]]:
    """Job starts ``(job, site, period)`` of the carbon-agnostic rule, in start order."""
    capacity = sc.site_array("gpu_capacity")
    held = np.zeros((sc.S, sc.T + 1))  # GPUs held by started jobs, per site and period
    starts: list[tuple[int, int, int]] = []
    started = np.zeros(sc.J, dtype=bool)
    for t in range(sc.T):
        for j, job in enumerate(sc.jobs):
            if started[j] or not job.release <= t <= job.latest_start:
                continue
            for s in range(sc.S):
                if job.eligible[s] and capacity[s] - held[s, t] >= job.gpus:
                    held[s, t : t + job.duration] += job.gpus
                    starts.append((j, s, t))
                    started[j] = True
                    break
    return starts


def job_gpus_held(sc: Scenario, starts: list[tuple[int, int, int]]) -> np.ndarray:
    """(S, T) GPUs held by running jobs for the given starts ``(job, site, period)``."""
    held = np.zeros((sc.S, sc.T))
    for j, s, t in starts:
        held[s, t : t + sc.jobs[j].duration] += sc.jobs[j].gpus
    return held


def route_order(sc: Scenario, k: int) -> list[int]:
    """Class k's routes (sites within its SLO), lowest latency first (ties by site index)."""
    lat = sc.classes[k].latency_ms
    return sorted((s for s in range(sc.S) if sc.routes[k, s]), key=lambda s: (lat[s], s))


def greedy_serve(sc: Scenario, job_gpus: np.ndarray) -> np.ndarray:
    """(K, S, T) GPUs served by the rule, given the (S, T) GPUs held by jobs."""
    free = sc.site_array("gpu_capacity")[:, None] - job_gpus
    free = np.maximum(free, 0.0)
    serve = np.zeros((sc.K, sc.S, sc.T))
    orders = [route_order(sc, k) for k in range(sc.K)]
    for t in range(sc.T):
        for k in range(sc.K):
            left = sc.demand_gpus[k, t]
            for s in orders[k]:
                if left <= 0:
                    break
                amount = min(left, free[s, t])
                serve[k, s, t] = amount
                free[s, t] -= amount
                left -= amount
    return serve


def greedy_workload(sc: Scenario) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """The rule's job starts and (K, S, T) inference served."""
    starts = greedy_job_starts(sc)
    return starts, greedy_serve(sc, job_gpus_held(sc, starts))


def grid_only_emissions_t(sc: Scenario, starts: list[tuple[int, int, int]], serve: np.ndarray) -> float:
    """Emissions (tCO2) if a workload's facility load net of renewables were all imported.

    ``sum_{s,t} ci[s,t] * max(0, (1 + cooling[s,t]) * it[s,t] - renewable_mw[s,t]) * dt_h``, with no
    battery and no generator: a cheap reference used to size preset carbon budgets.
    """
    job_mw = np.zeros((sc.S, sc.T))
    for j, s, t in starts:
        job_mw[s, t : t + sc.jobs[j].duration] += sc.job_power_mw[j, s]
    it = sc.site_array("base_it_mw")[:, None] + job_mw + serve.sum(axis=0) * sc.gpu_mw[:, None]
    net = np.maximum(0.0, (1.0 + sc.cooling) * it - sc.renewable_mw)
    return float((sc.carbon_intensity * net).sum() * sc.dt_h)
