"""One period of MODEL.md §7 as pure functions: repair, battery, power completion, reward terms.

Every function returns new values; none keeps state, none mutates its inputs, none reads the
environment. Workload functions take arrays; the per-site power functions take floats (one site,
one period: for a handful of sites plain floats are several times faster than numpy calls, and
they read like MODEL.md's equations).
The environment (:mod:`envs.dc_env`) calls them in order, once per step:

1. :func:`place_starts` - job starts, in slot order, against the GPUs held by running jobs;
2. :func:`repair_routes` and :func:`serve_within_capacity` - routing fractions to GPUs served;
3. :func:`battery_power` and :func:`generator_power` - set points, clipped to what the state of
   charge and the generator allow;
4. :func:`complete_power` - renewables first, import / export / curtailment and the two cascades
   (surplus that curtailment cannot absorb; import above the limit);
5. :func:`soc_next`, :func:`site_energy_terms` and :func:`inference_terms` - the period's terms
   of the objective; :func:`carbon_overrun_t` for the budget penalty.

Units: power MW, energy MWh, GPUs, money USD, emissions tCO2, ``dt_h`` hours per period.
Arrays are indexed by site ``s`` (S,), class ``k`` (K,) or job slot (slots,).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from envs.scenario import OBJECTIVE_TERMS

REPAIR_RTOL = 1e-7
"""A repair is reported only above this fraction of its natural scale (a capacity, a limit, 1 for
fractions), so floating-point dust in a replayed optimal schedule is not reported as a repair."""

PENALTY_TERMS = ("lost_load_usd", "carbon_overrun_usd", "soc_shortfall_usd", "mandatory_miss_usd")
"""The env's penalties for what the MILP cannot do (MODEL.md §7), USD, negative in the reward."""
REWARD_KEYS = OBJECTIVE_TERMS + PENALTY_TERMS
"""Keys of ``info["reward_terms"]``: signed contributions (costs are negative) summing to the reward."""


def place_starts(
    requested_site: np.ndarray,
    allowed: np.ndarray,
    gpus: np.ndarray,
    free_gpus: np.ndarray,
) -> tuple[list[tuple[int, int]], list[int], np.ndarray]:
    """Place the requested job starts in slot order.

    ``requested_site`` (slots,) int: 0 = hold, 1+s = start at site s. ``allowed`` (slots, S+1) bool is
    the action mask (present, waiting, inside its start window, eligible). ``gpus`` (slots,) GPUs per
    job, ``free_gpus`` (S,) GPUs not held by running jobs. A start is placed if it is allowed and
    still fits after the starts of earlier slots; otherwise it is ignored.

    Returns ``(placed, ignored, free_after)``: ``placed`` lists ``(slot, site)``, ``ignored`` lists
    the slots whose request was dropped, ``free_after`` (S,) is the GPUs left free.
    """
    free = free_gpus.copy()
    placed: list[tuple[int, int]] = []
    ignored: list[int] = []
    n_choices = allowed.shape[1]
    for i, choice in enumerate(requested_site.tolist()):
        if choice == 0:
            continue
        if 0 < choice < n_choices and allowed[i, choice] and gpus[i] <= free[choice - 1]:
            free[choice - 1] -= gpus[i]
            placed.append((i, choice - 1))
        else:
            ignored.append(i)
    return placed, ignored, free


def repair_routes(
    route: np.ndarray, routes: np.ndarray, values: list[float] | None = None
) -> tuple[np.ndarray, float, float, float]:
    """Turn requested routing fractions (K, S) into valid ones.

    Values are clipped to [0, 1], fractions on sites that are not routes (``routes`` (K, S), 1 where
    the latency is within the SLO, else 0) are zeroed, and a class whose fractions sum above 1 is
    scaled to 1. Returns ``(fractions, clipped, removed, scaled)``: the three repair amounts are
    totals of fraction changed by each rule (dimensionless). ``values``: ``route.ravel().tolist()``
    if the caller already has it.
    """
    clipped = 0.0
    if values is None:
        values = route.ravel().tolist()
    if min(values) < 0.0 or max(values) > 1.0:
        frac = np.minimum(np.maximum(route, 0.0), 1.0)
        clipped = float(np.abs(frac - route).sum())
        route = frac
        values = frac.ravel().tolist()
    on_route = route * routes
    total = np.add.reduce(on_route, axis=1)
    totals = total.tolist()
    removed = sum(values) - sum(totals)
    scaled = 0.0
    if max(totals) > 1.0:
        # Dividing by 1.0 leaves the other classes bit-for-bit unchanged.
        scaled = sum([x - 1.0 for x in totals if x > 1.0])
        on_route /= np.array([x if x > 1.0 else 1.0 for x in totals])[:, None]
    return on_route, clipped, removed, scaled


def serve_within_capacity(
    fractions: np.ndarray, demand_gpus: np.ndarray, free_gpus: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """GPUs served (K, S): ``fractions * demand``, cut proportionally where a site is full.

    ``demand_gpus`` (K,) this period's demand, ``free_gpus`` (S,) GPUs left by jobs.
    Returns ``(serve_gpus, site_gpus, cut_gpus)``: ``site_gpus`` (S,) the inference GPUs per site,
    ``cut_gpus`` the total GPUs of inference dropped for lack of room.
    """
    serve = fractions * demand_gpus[:, None]
    wanted = np.add.reduce(serve, axis=0)
    wanted_l, free_l = wanted.tolist(), free_gpus.tolist()
    if max([w - f for w, f in zip(wanted_l, free_l, strict=True)]) <= 0.0:
        return serve, wanted, 0.0
    # Per site: the share of its wanted GPUs that fits (1 where all fit).
    factor = [(f if f > 0.0 else 0.0) / w if w > f else 1.0 for w, f in zip(wanted_l, free_l, strict=True)]
    serve = serve * np.array(factor)
    site = serve.sum(axis=0)
    return serve, site, float((wanted - site).sum())


def battery_power(
    battery: float,
    soc_mwh: float,
    charge_limit_mw: float,
    discharge_limit_mw: float,
    soc_min_mwh: float,
    soc_max_mwh: float,
    eta_charge: float,
    eta_discharge: float,
    dt_h: float,
) -> tuple[float, float, float]:
    """One site's battery set point ``b`` to charge and discharge power (MW), SoC-feasible.

    ``b`` is clipped to [-1, 1]; ``b > 0`` asks ``b * charge_limit_mw`` of charging, ``b < 0`` asks
    ``-b * discharge_limit_mw`` of discharging. Each is clipped so that
    ``soc' = soc + (eta_charge * charge - discharge / eta_discharge) * dt_h`` stays within
    ``[soc_min_mwh, soc_max_mwh]``. Returns ``(charge_mw, discharge_mw, clipped_mw)``, the last
    being the power removed by the SoC bounds.
    """
    # Conditional expressions rather than min / max calls: the same values, and this runs per site
    # per step.
    if battery > 0.0:
        want = (battery if battery < 1.0 else 1.0) * charge_limit_mw
        room = (soc_max_mwh - soc_mwh) / (eta_charge * dt_h)
        charge = want if want <= room else (room if room > 0.0 else 0.0)
        return charge, 0.0, want - charge
    if battery < 0.0:
        want = (-battery if battery > -1.0 else 1.0) * discharge_limit_mw
        room = (soc_mwh - soc_min_mwh) * eta_discharge / dt_h
        discharge = want if want <= room else (room if room > 0.0 else 0.0)
        return 0.0, discharge, want - discharge
    return 0.0, 0.0, 0.0


def generator_power(generator: float, gen_capacity_mw: float) -> float:
    """One site's generator set point (clipped to [0, 1]) to output power, MW."""
    if generator <= 0.0:
        return 0.0
    return (generator if generator < 1.0 else 1.0) * gen_capacity_mw


def soc_next(
    soc_mwh: float,
    charge_mw: float,
    discharge_mw: float,
    eta_charge: float,
    eta_discharge: float,
    soc_min_mwh: float,
    soc_max_mwh: float,
    dt_h: float,
) -> float:
    """State of charge at the end of the period, MWh (MODEL.md §4.7).

    ``soc + (eta_charge * charge - discharge / eta_discharge) * dt_h``; the final clip to the bounds
    only removes rounding (the set points were already made feasible by :func:`battery_power`).
    """
    soc = soc_mwh + (eta_charge * charge_mw - discharge_mw / eta_discharge) * dt_h
    return soc_min_mwh if soc < soc_min_mwh else (soc_max_mwh if soc > soc_max_mwh else soc)


class SiteFlows(NamedTuple):
    """One site's completed power flows for one period, MW (``shed_gpus`` in GPUs).

    The balance ``load + charge + export = renewable_used + gen + discharge + import + lost_load``
    holds (``lost_load_mw`` is unserved energy). ``keep`` is the fraction of the site's inference
    still served after shedding (1 when nothing was shed). The repair fields say what each cascade
    changed: ``discharge_cut_mw`` and ``gen_cut_mw`` (surplus cascade), ``charge_cut_mw``,
    ``gen_raised_mw`` and ``shed_gpus`` (import-limit cascade).
    """

    load_mw: float
    grid_import_mw: float
    grid_export_mw: float
    renewable_used_mw: float
    curtailed_mw: float
    gen_mw: float
    charge_mw: float
    discharge_mw: float
    lost_load_mw: float
    keep: float
    discharge_cut_mw: float
    gen_cut_mw: float
    charge_cut_mw: float
    gen_raised_mw: float
    shed_gpus: float


FLOW_FIELDS = SiteFlows._fields
CASCADE_START = FLOW_FIELDS.index("lost_load_mw")
"""``flows[CASCADE_START:]`` are the fields a cascade changes: ``lost_load_mw``, ``keep`` and the
five repair amounts."""
NO_CASCADE = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
"""``flows[CASCADE_START:]`` of a site where no cascade fired: nothing lost, all kept, no repair."""
FLOW = SiteFlows(*range(len(FLOW_FIELDS)))
"""Index of each field in a ``SiteFlows`` row: ``table[FLOW.grid_import_mw]`` is that flow at every
site of a (15, S) table of the rows."""


def complete_power(
    fixed_it_mw: float,
    inference_gpus: float,
    gpu_mw: float,
    cooling: float,
    renewable_mw: float,
    charge_mw: float,
    discharge_mw: float,
    gen_mw: float,
    gen_capacity_mw: float,
    import_limit_mw: float,
    export_cap_mw: float,
) -> SiteFlows:
    """Complete one site's power balance as the MILP would (MODEL.md §4.6, §4.8, §7).

    ``fixed_it_mw`` is the IT power that cannot be shed (base load + running jobs); inference on
    ``inference_gpus`` GPUs adds ``gpu_mw`` MW per GPU. Facility load is ``(1 + cooling) * it``.
    ``export_cap_mw`` is the export limit if the export price is positive, else 0.

    - Renewables are used first; a deficit is imported.
    - A surplus is exported up to ``export_cap_mw``, then renewables are curtailed; what curtailing
      all renewables cannot absorb is removed by lowering battery discharge, then the generator.
    - An import above ``import_limit_mw`` is removed by reducing battery charging, then raising the
      generator (up to its capacity), then shedding inference; the rest is lost load.
    """
    k1 = 1.0 + cooling
    inference_it = inference_gpus * gpu_mw
    load = k1 * (fixed_it_mw + inference_it)
    net = load + charge_mw - discharge_mw - gen_mw - renewable_mw
    if net >= 0.0:
        excess = net - import_limit_mw
        if excess <= 0.0:
            return SiteFlows(
                load, net, 0.0, renewable_mw, 0.0, gen_mw, charge_mw, discharge_mw, 0.0, 1.0,
                0.0, 0.0, 0.0, 0.0, 0.0,
            )  # fmt: skip
        charge_cut = min(charge_mw, excess)
        excess -= charge_cut
        gen_raised = min(max(gen_capacity_mw - gen_mw, 0.0), excess)
        excess -= gen_raised
        shed_it = min(inference_it, excess / k1)
        lost = max(excess - shed_it * k1, 0.0)
        keep = 1.0 - shed_it / inference_it if inference_it > 0.0 else 1.0
        shed_gpus = shed_it / gpu_mw if gpu_mw > 0.0 else 0.0
        return SiteFlows(
            load - shed_it * k1, import_limit_mw, 0.0, renewable_mw, 0.0, gen_mw + gen_raised,
            charge_mw - charge_cut, discharge_mw, lost, keep, 0.0, 0.0, charge_cut, gen_raised, shed_gpus,
        )  # fmt: skip
    surplus = -net
    grid_export = min(surplus, export_cap_mw)
    rest = surplus - grid_export
    curtailed = min(rest, renewable_mw)
    rest -= curtailed
    discharge_cut = gen_cut = 0.0
    if rest > 0.0:
        discharge_cut = min(discharge_mw, rest)
        gen_cut = min(gen_mw, rest - discharge_cut)
    return SiteFlows(
        load, 0.0, grid_export, renewable_mw - curtailed, curtailed, gen_mw - gen_cut, charge_mw,
        discharge_mw - discharge_cut, 0.0, 1.0, discharge_cut, gen_cut, 0.0, 0.0, 0.0,
    )  # fmt: skip


def carbon_overrun_t(emissions_before_t: float, emissions_now_t: float, budget_t: float | None) -> float:
    """Emissions of this period above the budget, tCO2 (the excess first crossed in this period)."""
    if budget_t is None:
        return 0.0
    after = emissions_before_t + emissions_now_t
    return max(0.0, after - budget_t) - max(0.0, emissions_before_t - budget_t)


def site_energy_terms(
    flows: SiteFlows,
    price_import: float,
    price_export: float,
    gen_cost_usd_per_mwh: float,
    degradation_usd_per_mwh: float,
    carbon_intensity: float,
    gen_emissions_t_per_mwh: float,
    dt_h: float,
) -> tuple[float, float, float, float, float]:
    """One site's energy terms of MODEL.md §5 for one period.

    Returns ``(export_revenue_usd, import_cost_usd, gen_cost_usd, degradation_cost_usd,
    emissions_t)``: revenue positive, costs negative (USD), emissions
    ``(carbon_intensity * import + gen_emissions * gen) * dt_h`` tCO2 (MODEL.md §4.9).
    """
    return (
        price_export * flows.grid_export_mw * dt_h,
        -price_import * flows.grid_import_mw * dt_h,
        -gen_cost_usd_per_mwh * flows.gen_mw * dt_h,
        -degradation_usd_per_mwh * (flows.charge_mw + flows.discharge_mw) * dt_h,
        (carbon_intensity * flows.grid_import_mw + gen_emissions_t_per_mwh * flows.gen_mw) * dt_h,
    )


def inference_terms(
    served_gpus: list[float],
    demand_gpus: list[float],
    revenue_usd_per_gpu_h: list[float],
    unserved_penalty_usd_per_gpu_h: list[float],
    dt_h: float,
) -> tuple[float, float, list[float]]:
    """Inference terms of one period from the GPUs served and demanded per class (K values each).

    Returns ``(inference_revenue_usd, unserved_penalty_usd, unserved_gpus)``, the penalty negative
    and ``unserved_gpus = max(demand - served, 0)`` per class.
    """
    unserved = []
    revenue = penalty = 0.0
    for d, x, r, p in zip(
        demand_gpus, served_gpus, revenue_usd_per_gpu_h, unserved_penalty_usd_per_gpu_h, strict=True
    ):
        u = d - x
        if u < 0.0:
            u = 0.0
        unserved.append(u)
        revenue += r * x
        penalty += p * u
    return revenue * dt_h, -penalty * dt_h, unserved
