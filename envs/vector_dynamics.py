"""One period of MODEL.md §7 for a batch of lanes: the functions of :mod:`envs.dynamics` over arrays.

Each function here is the batched twin of the function of the same name in ``envs/dynamics.py``
(same arguments, one more axis: the lane axis ``N``, **last**). Per-site values are (S, N),
per-class (K, N), per-slot (J, N), routing (K, S, N), the start mask (S+1, J, N). The single env's
functions work on floats per site because that is fastest for one lane; these work on whole arrays
with no Python loop over lanes or sites. They are one model with the single env's: every
expression is the same, in the same order, and ``tests/test_vector_env.py`` checks every lane
against the single env.

Why lanes last: a sum over sites, classes or slots is then a reduction over a leading axis, which
numpy runs as whole-row additions (fast for any N, where a reduction over a trailing axis of 3
runs a tiny loop per lane), and which adds left to right, as the single env's Python sums do, so
that the results agree to the last bit (numpy's pairwise sum over a trailing axis of 8 or more
values would add in another order).

Units: power MW, energy MWh, GPUs, money USD, emissions tCO2, ``dt_h`` hours per period, (N,).
"""

from __future__ import annotations

import numpy as np

from envs.dynamics import SiteFlows


def arange_view(n: int) -> np.ndarray:
    """``np.arange(n)`` as a read-only view of one cached range, grown (doubled) when ``n`` exceeds
    it: the step's index ranges (slots × lanes, periods held by started jobs) without allocating."""
    global _RANGE
    if n > _RANGE.size:
        _RANGE = np.arange(max(n, 2 * _RANGE.size))
        _RANGE.flags.writeable = False
    return _RANGE[:n]


_RANGE = np.arange(1 << 16)
_RANGE.flags.writeable = False


def nonzero2(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """``np.nonzero(a)`` of a 2-D array, the same indices in the same (C) order, from
    ``np.flatnonzero``: numpy 2.x's ``nonzero`` of a (6, 4096) bool array takes ~50-180 us, the flat
    one and a divmod ~10-60 us. Other ranks: ``np.nonzero``."""
    if a.ndim != 2:
        return np.nonzero(a)
    return np.divmod(np.flatnonzero(a), a.shape[1])


def _cells(x: np.ndarray, shape: tuple[int, ...], k: np.ndarray) -> np.ndarray:
    """``x`` broadcast to ``shape``, at the flat (C-order) cell indices ``k``: one ``take`` on the
    flat array where ``x`` already has that shape (2-3x faster than a tuple fancy index)."""
    x = np.asarray(x)
    if x.shape == shape and x.flags.c_contiguous:
        return x.reshape(-1).take(k)
    return np.broadcast_to(x, shape)[np.unravel_index(k, shape)]


def place_starts(
    requested_site: np.ndarray, allowed: np.ndarray, gpus: np.ndarray, free_gpus: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Place the requested job starts of every lane in slot order (``dynamics.place_starts``).

    ``requested_site`` (J, N) int: 0 hold, 1+s start at site s; ``allowed`` (S+1, J, N) the action
    mask; ``gpus`` (J, N); ``free_gpus`` (S, N). A start is placed iff allowed and it still fits
    after the starts of earlier slots of its lane. GPU counts are whole numbers, so the prefix sums
    below are exact and equal the single env's sequential subtraction.

    The greedy order is resolved in rounds: assume every allowed request is placed; in each lane the
    first request that then does not fit is certainly ignored (all earlier ones fit); drop it and
    repeat. Rounds = the largest number of ignored requests in one lane, plus one.

    Returns ``(placed, site, ignored, free_after)``: (J, N) bool, (J, N) int site (-1: none),
    (J, N) bool and (S, N) GPUs left free.
    """
    n_choices = allowed.shape[0]
    S = n_choices - 1
    valid = (requested_site > 0) & (requested_site < n_choices)
    choice = requested_site * valid  # 0 where not valid (np.where is slower on mixed masks)
    J, N = choice.shape
    # allowed[choice[j, n], j, n] for every (j, n), as one take on flat indices (fastest gather)
    cand = valid & allowed.reshape(-1).take(choice * (J * N) + arange_view(J * N).reshape(J, N))
    site = choice * cand - 1  # choice - 1 where a candidate, else -1
    j_i, n_i = nonzero2(cand)
    if not n_i.size:
        return cand, site, requested_site != 0, free_gpus
    # GPUs asked per (site, lane) if every allowed start were placed; where that fits, all are placed
    # (each fits alone: the mask checked it), so only lanes over capacity need the greedy rounds.
    cell = site[j_i, n_i] * N + n_i
    wanted = np.bincount(cell, weights=gpus[j_i, n_i], minlength=S * N).reshape(S, N)
    over = np.flatnonzero((wanted > free_gpus).any(axis=0))
    if over.size:
        sub = cand[:, over]
        sub_site = np.maximum(site[:, over], 0)
        sub_gpus = gpus[:, over]
        onehot = sub_site[:, None, :] == np.arange(S)[None, :, None]
        free_at = np.take_along_axis(free_gpus[:, over], sub_site, axis=0)
        while True:
            use = sub_gpus[:, None, :] * (sub[:, None, :] & onehot)  # GPU counts are finite
            before = np.cumsum(use, axis=0) - use
            before_at = np.take_along_axis(before, sub_site[:, None, :], axis=1)[:, 0, :]
            bad = sub & (sub_gpus > free_at - before_at)
            if not bad.any():
                break
            lanes = np.flatnonzero(bad.any(axis=0))
            sub[bad[:, lanes].argmax(axis=0), lanes] = False
        cand[:, over] = sub
        site = np.where(cand, site, -1)
        j_i, n_i = nonzero2(cand)
        cell = site[j_i, n_i] * N + n_i
        wanted = np.bincount(cell, weights=gpus[j_i, n_i], minlength=S * N).reshape(S, N)
    return cand, site, (requested_site != 0) & ~cand, free_gpus - wanted


def repair_routes(
    route: np.ndarray, routes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Routing fractions (K, S, N) made valid (``dynamics.repair_routes``): clipped to [0, 1], zero off
    the routes, a class summing above 1 scaled to 1. Returns ``(fractions, clipped, removed, scaled)``,
    the three repair amounts (N,) (totals of fraction changed, dimensionless)."""
    K, S, N = route.shape
    if route.min() >= 0.0 and route.max() <= 1.0:  # all in [0, 1]: nothing to clip (exact zeros)
        frac, clipped = route, np.zeros(N)
    else:
        frac = np.minimum(np.maximum(route, 0.0), 1.0)
        clipped = np.add.reduce(np.abs(frac - route).reshape(K * S, N), axis=0)
    on_route = frac * routes
    total = np.add.reduce(on_route, axis=1)
    removed = np.add.reduce(frac.reshape(K * S, N), axis=0) - np.add.reduce(total, axis=0)
    scaled = np.add.reduce(np.maximum(total - 1.0, 0.0), axis=0)  # total - 1 where above 1, else 0
    # Dividing by 1.0 leaves the other classes bit-for-bit unchanged (as in the single env).
    on_route /= np.maximum(total, 1.0)[:, None, :]
    return on_route, clipped, removed, scaled


def serve_within_capacity(
    fractions: np.ndarray, demand_gpus: np.ndarray, free_gpus: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPUs served (K, S, N) = fractions · demand, cut proportionally where a site is full
    (``dynamics.serve_within_capacity``). Returns ``(serve_gpus, site_gpus (S, N), cut_gpus (N,))``."""
    serve = fractions * demand_gpus[:, None, :]
    wanted = np.add.reduce(serve, axis=0)
    over = wanted > free_gpus
    factor = np.where(over, np.maximum(free_gpus, 0.0) / np.where(over, wanted, 1.0), 1.0)
    serve = serve * factor
    site = np.add.reduce(serve, axis=0)
    return serve, site, np.add.reduce(wanted - site, axis=0)


def battery_power(
    battery: np.ndarray,
    soc_mwh: np.ndarray,
    charge_limit_mw: np.ndarray,
    discharge_limit_mw: np.ndarray,
    soc_min_mwh: np.ndarray,
    soc_max_mwh: np.ndarray,
    eta_charge: np.ndarray,
    eta_discharge: np.ndarray,
    dt_h: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Set points (S, N) in [-1, 1] to SoC-feasible ``(charge_mw, discharge_mw, clipped_mw)``
    (``dynamics.battery_power``)."""
    # min(max(b, 0), 1) · limit is the single env's ``min(b, 1) · limit if b > 0 else 0`` (limits are
    # finite and >= 0, so 0 · limit = 0), in two ufuncs fewer than a where.
    want_c = np.minimum(np.maximum(battery, 0.0), 1.0)
    want_c *= charge_limit_mw
    charge = np.minimum(want_c, np.maximum((soc_max_mwh - soc_mwh) / (eta_charge * dt_h), 0.0))
    want_d = np.minimum(np.maximum(np.negative(battery), 0.0), 1.0)
    want_d *= discharge_limit_mw
    discharge = np.minimum(want_d, np.maximum((soc_mwh - soc_min_mwh) * eta_discharge / dt_h, 0.0))
    return charge, discharge, (want_c - charge) + (want_d - discharge)


def generator_power(generator: np.ndarray, gen_capacity_mw: np.ndarray) -> np.ndarray:
    """Set points (S, N) clipped to [0, 1] times the capacity, MW."""
    return np.minimum(np.maximum(generator, 0.0), 1.0) * gen_capacity_mw


def soc_next(
    soc_mwh: np.ndarray,
    charge_mw: np.ndarray,
    discharge_mw: np.ndarray,
    eta_charge: np.ndarray,
    eta_discharge: np.ndarray,
    soc_min_mwh: np.ndarray,
    soc_max_mwh: np.ndarray,
    dt_h: np.ndarray,
) -> np.ndarray:
    """State of charge at the end of the period (S, N), MWh (``dynamics.soc_next``)."""
    soc = soc_mwh + (eta_charge * charge_mw - discharge_mw / eta_discharge) * dt_h
    return np.minimum(np.maximum(soc, soc_min_mwh), soc_max_mwh)


def complete_power(
    fixed_it_mw: np.ndarray,
    inference_gpus: np.ndarray,
    gpu_mw: np.ndarray,
    cooling: np.ndarray,
    renewable_mw: np.ndarray,
    charge_mw: np.ndarray,
    discharge_mw: np.ndarray,
    gen_mw: np.ndarray,
    gen_capacity_mw: np.ndarray,
    import_limit_mw: np.ndarray,
    export_cap_mw: np.ndarray,
) -> tuple[SiteFlows, np.ndarray]:
    """Every site's power balance (S, N) completed as the MILP would (``dynamics.complete_power``:
    renewables first, deficit imported, surplus exported then curtailed, then the two cascades).

    Returns the flows and the (6, S, N) block ``cascades`` whose rows are ``lost_load_mw`` and the
    five cascade repairs (``discharge_cut_mw`` .. ``shed_gpus``, ``FLOW_FIELDS`` order); those
    ``SiteFlows`` fields are views of it, so the step reduces all six in one call.

    The cascades are computed only on the cells (site, lane) where they fire (an import above the
    limit; a surplus left after export and curtailment), a few percent of the cells; elsewhere their
    amounts are the exact zeros the single env computes there (``min(x, 0) = 0``, ``keep = 1``), and
    ``x - 0.0`` / ``x + 0.0`` leave the other flows at the single env's values."""
    # In-place steps keep the single env's operations and their order (x * y == y * x exactly).
    shape = np.broadcast_shapes(np.shape(fixed_it_mw), np.shape(inference_gpus), np.shape(cooling))
    k1 = 1.0 + cooling
    inference_it = inference_gpus * gpu_mw
    load = fixed_it_mw + inference_it
    load *= k1
    net = load + charge_mw
    net -= discharge_mw
    net -= gen_mw
    net -= renewable_mw
    deficit = net >= 0.0
    over = deficit & (net > import_limit_mw)  # net - limit > 0, as the single env tests it
    grid_import = np.maximum(net, 0.0)  # net where net >= 0, else 0
    surplus = np.negative(net)
    np.maximum(surplus, 0.0, out=surplus)  # -net where net < 0, else 0
    grid_export = np.minimum(surplus, export_cap_mw)
    rest = surplus
    rest -= grid_export
    curtailed = np.minimum(rest, renewable_mw)
    rest -= curtailed
    cut = rest > 0.0

    cascades = np.zeros((6, *shape))
    lost, discharge_cut, gen_cut, charge_cut, gen_raised, shed_gpus = cascades
    keep = np.ones(shape)
    if over.any():
        k = np.flatnonzero(over)
        net_c, limit_c, charge_c, cap_c, gen_c, inf_c, k1_c, gpu_c = (_cells(x, shape, k) for x in (
            net, import_limit_mw, charge_mw, gen_capacity_mw, gen_mw, inference_it, k1, gpu_mw
        ))  # fmt: skip
        excess = net_c - limit_c
        c_cut = np.minimum(charge_c, excess)
        excess -= c_cut
        raised = np.minimum(np.maximum(cap_c - gen_c, 0.0), excess)
        excess -= raised
        shed_it = np.minimum(inf_c, excess / k1_c)
        shed_load = shed_it * k1_c
        flat_lost, flat_keep, flat_shed = lost.reshape(-1), keep.reshape(-1), shed_gpus.reshape(-1)
        flat_lost[k] = np.maximum(excess - shed_load, 0.0)
        has_inf, has_gpu = inf_c > 0.0, gpu_c > 0.0
        flat_keep[k] = np.where(has_inf, 1.0 - shed_it / np.where(has_inf, inf_c, 1.0), 1.0)
        flat_shed[k] = np.where(has_gpu, shed_it / np.where(has_gpu, gpu_c, 1.0), 0.0)
        charge_cut.reshape(-1)[k], gen_raised.reshape(-1)[k] = c_cut, raised
        grid_import.reshape(-1)[k] = limit_c
        load.reshape(-1)[k] -= shed_load
    if cut.any():
        k = np.flatnonzero(cut)
        rest_c = rest.reshape(-1).take(k)
        d_cut = np.minimum(_cells(discharge_mw, shape, k), rest_c)
        discharge_cut.reshape(-1)[k] = d_cut
        gen_cut.reshape(-1)[k] = np.minimum(_cells(gen_mw, shape, k), rest_c - d_cut)
    gen_out = gen_mw + gen_raised
    gen_out -= gen_cut
    flows = SiteFlows(
        load_mw=load,
        grid_import_mw=grid_import,
        grid_export_mw=grid_export,
        renewable_used_mw=renewable_mw - curtailed,
        curtailed_mw=curtailed,
        gen_mw=gen_out,
        charge_mw=charge_mw - charge_cut,
        discharge_mw=discharge_mw - discharge_cut,
        lost_load_mw=lost,
        keep=keep,
        discharge_cut_mw=discharge_cut,
        gen_cut_mw=gen_cut,
        charge_cut_mw=charge_cut,
        gen_raised_mw=gen_raised,
        shed_gpus=shed_gpus,
    )
    return flows, cascades


def carbon_overrun_t(
    emissions_before_t: np.ndarray, emissions_now_t: np.ndarray, budget_t: np.ndarray
) -> np.ndarray:
    """Emissions of this period above the budget (N,), tCO2; ``budget_t`` NaN = no budget."""
    after = emissions_before_t + emissions_now_t
    overrun = np.maximum(0.0, after - budget_t) - np.maximum(0.0, emissions_before_t - budget_t)
    return np.where(np.isnan(budget_t), 0.0, overrun)


def site_energy_terms(
    flows: SiteFlows,
    price_import: np.ndarray,
    price_export: np.ndarray,
    gen_cost_usd_per_mwh: np.ndarray,
    degradation_usd_per_mwh: np.ndarray,
    carbon_intensity: np.ndarray,
    gen_emissions_t_per_mwh: np.ndarray,
    dt_h: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-site energy terms (S, N) (``dynamics.site_energy_terms``): export revenue, import cost,
    generator cost, degradation cost (USD, costs negative) and emissions (tCO2)."""
    return (
        price_export * flows.grid_export_mw * dt_h,
        -price_import * flows.grid_import_mw * dt_h,
        -gen_cost_usd_per_mwh * flows.gen_mw * dt_h,
        -degradation_usd_per_mwh * (flows.charge_mw + flows.discharge_mw) * dt_h,
        (carbon_intensity * flows.grid_import_mw + gen_emissions_t_per_mwh * flows.gen_mw) * dt_h,
    )


def inference_terms(
    serve_gpus: np.ndarray,
    demand_gpus: np.ndarray,
    revenue_usd_per_gpu_h: np.ndarray,
    unserved_penalty_usd_per_gpu_h: np.ndarray,
    dt_h: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inference_revenue_usd (N,), unserved_penalty_usd (N,), unserved_gpus (K, N))`` from the GPUs
    served (K, S, N) and demanded (K, N) (``dynamics.inference_terms``)."""
    served = np.add.reduce(serve_gpus, axis=1)
    unserved = np.maximum(demand_gpus - served, 0.0)
    revenue = np.add.reduce(revenue_usd_per_gpu_h * served, axis=0)
    penalty = np.add.reduce(unserved_penalty_usd_per_gpu_h * unserved, axis=0)
    return revenue * dt_h, -penalty * dt_h, unserved
