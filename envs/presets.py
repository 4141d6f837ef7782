"""Built-in scenario presets, drawn reproducibly from a seed (MODEL.md §8).

``make_scenario(name, seed)`` returns a validated :class:`~envs.scenario.Scenario`:

========================  =======  =======  ======  =========
preset                    sites    periods  jobs    classes
========================  =======  =======  ======  =========
``paper``                 3        24       6       3
``paper-genrich``         3        24       6       3   (local generation doubled)
``week``                  5        168      40      6
``large``                 10       168      150     10
========================  =======  =======  ======  =========

Seed 0 of each preset sits at the centre of the calibration of MODEL.md §8 (site price levels,
temperatures and demand amplitudes exactly as listed there); other seeds shift those levels and
redraw the weather, price noise, demand and jobs around them. Hardware (GPUs, batteries,
generators, grid limits) is the same for every seed.

The carbon budget is ``BUDGET_FACTOR`` times a cheap reference, the emissions of the
carbon-agnostic workload (:mod:`envs.rules`) served from the grid after renewables. The factor was
calibrated with the oracle so that the budget is about 1.1x the emissions of the unconstrained
joint optimum on the ``paper`` preset (see ``docs/model.md``, "Carbon budget of the presets").
``paper-genrich`` keeps the budget of the ``paper`` scenario with the same seed, so that the two
are comparable.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from envs.rules import greedy_workload, grid_only_emissions_t
from envs.scenario import InferenceClass, Scenario, ScenarioError, Site, TrainingJob

PRESETS: dict[str, dict[str, int]] = {
    "paper": {"S": 3, "T": 24, "J": 6, "K": 3},
    "paper-genrich": {"S": 3, "T": 24, "J": 6, "K": 3},
    "week": {"S": 5, "T": 168, "J": 40, "K": 6},
    "large": {"S": 10, "T": 168, "J": 150, "K": 10},
}
"""Preset sizes; ``PRESETS[name]["J"]`` is also the env's number of job slots."""

BUDGET_FACTOR = 0.751
"""Carbon budget = BUDGET_FACTOR x grid-only emissions of the carbon-agnostic workload."""

CARBON_PRICE_USD_PER_T = 80.0

# Site templates, in site order; the first three are MODEL.md §8's paper sites.
_BASE_PRICE = (80.0, 60.0, 70.0, 75.0, 65.0, 85.0, 55.0, 72.0, 68.0, 78.0)
_CARBON = (0.62, 0.40, 0.22, 0.50, 0.30, 0.55, 0.35, 0.45, 0.25, 0.60)
RENEWABLE_TEMPLATES = (  # (kind, peak or installed MW) per site
    ("solar", 5.0),
    ("wind", 8.0),
    ("solar", 12.0),
    ("wind", 6.0),
    ("solar", 9.0),
    ("wind", 10.0),
    ("solar", 7.0),
    ("wind", 5.0),
    ("solar", 10.0),
    ("wind", 9.0),
)
_TEMP_OFFSET_C = (-4.0, 0.0, 4.0, -2.0, 2.0, -6.0, 6.0, -1.0, 3.0, 1.0)
_STREAM = {"paper": 0, "week": 1, "large": 2}


def make_scenario(name: str = "paper", seed: int = 0) -> Scenario:
    """Draw the scenario of preset ``name`` for ``seed`` (same seed, same scenario)."""
    if name not in PRESETS:
        raise ScenarioError(f"preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ScenarioError(f"seed: must be a non-negative integer (got {seed!r})")
    if name == "paper-genrich":
        base = make_scenario("paper", seed)
        sites = tuple(
            dataclasses.replace(site, gen_capacity_mw=2.0 * site.gen_capacity_mw) for site in base.sites
        )
        return base.replace(name=f"paper-genrich-s{seed}", sites=sites, renewable_mw=2.0 * base.renewable_mw)
    size = PRESETS[name]
    return draw_scenario(
        size["S"], size["T"], size["J"], size["K"], int(seed), name=name, stream=_STREAM[name]
    )


def paper_site(i: int) -> Site:
    """The hardware of preset site i (MODEL.md §8): 20,000 GPUs, 4 MW gas, 40 MWh battery."""
    kind, _ = RENEWABLE_TEMPLATES[i]
    return Site(
        name=f"dc{i}-{kind}",
        gpu_capacity=20_000,
        gpu_power_kw=1.0,
        base_it_mw=1.0,
        gen_capacity_mw=4.0,
        gen_cost_usd_per_mwh=90.0,
        gen_emissions_t_per_mwh=0.45,
        capacity_mwh=40.0,
        charge_mw=20.0,
        discharge_mw=20.0,
        eta_charge=0.95,
        eta_discharge=0.95,
        soc_min_frac=0.1,
        soc_max_frac=0.9,
        soc_init_frac=0.5,
        degradation_usd_per_mwh=5.0,
        import_limit_mw=40.0,
        export_limit_mw=10.0,
    )


def solar_shape(hour: np.ndarray) -> np.ndarray:
    """Clear-sky solar profile in [0, 1]: ``max(0, sin(pi (h - 6) / 12))``."""
    return np.maximum(0.0, np.sin(np.pi * (hour - 6.0) / 12.0))


def cooling_coefficient(temp_c: np.ndarray) -> np.ndarray:
    """Cooling MW per IT MW from ambient temperature: ``0.15 + 0.30 clip((temp - 12) / 20, 0, 1)``."""
    return 0.15 + 0.30 * np.clip((temp_c - 12.0) / 20.0, 0.0, 1.0)


def draw_scenario(
    S: int, T: int, J: int, K: int, seed: int = 0, *, name: str = "custom", stream: int = 99
) -> Scenario:
    """Draw a scenario of any size from the preset calibration (used for scaling studies).

    ``S`` <= 10 sites (the site templates), ``T`` hourly periods from 00:00, ``J`` jobs whose windows
    lie inside the horizon, ``K`` inference classes (class k originates at site ``k mod S``).
    ``stream`` separates the random streams of differently named presets.
    """
    if not 1 <= S <= len(RENEWABLE_TEMPLATES):
        raise ScenarioError(f"S: between 1 and {len(RENEWABLE_TEMPLATES)} sites (got {S!r})")
    if T < 13:
        raise ScenarioError(f"T: at least 13 periods so that every job window fits (got {T!r})")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))
    centre = seed == 0
    hour = np.arange(T, dtype=float) % 24.0
    sun = solar_shape(hour)

    renewable = np.zeros((S, T))
    for s in range(S):
        kind, peak = RENEWABLE_TEMPLATES[s]
        if kind == "solar":
            cloud_loss = rng.uniform(0.0, 0.2, T)
            renewable[s] = peak * sun * (1.0 - cloud_loss)
        else:  # wind: slowly varying around half of capacity (an AR(1) path)
            x = np.empty(T)
            x[0] = rng.normal(0.0, 0.2)
            for t in range(1, T):
                x[t] = 0.9 * x[t - 1] + rng.normal(0.0, 0.08)
            renewable[s] = peak * np.clip(0.5 + x, 0.0, 1.0)

    price_shift = np.zeros(S) if centre else rng.normal(0.0, 5.0, S)
    peak_adder = np.where((hour >= 17) & (hour < 21), 60.0, 0.0)
    night_adder = np.where((hour >= 1) & (hour < 5), -15.0, 0.0)
    price_import = (
        np.array(_BASE_PRICE[:S])[:, None]
        + price_shift[:, None]
        + peak_adder
        + night_adder
        + rng.normal(0.0, 3.0, (S, T))
    )
    price_export = 0.8 * price_import

    carbon_scale = np.ones(S) if centre else rng.uniform(0.9, 1.1, S)
    carbon = (np.array(_CARBON[:S]) * carbon_scale)[:, None] * (1.0 - 0.35 * sun)

    temp_shift = np.zeros(S) if centre else rng.normal(0.0, 2.0, S)
    temp = (
        18.0
        + 8.0 * np.sin(2.0 * np.pi * (hour - 9.0) / 24.0)
        + (np.array(_TEMP_OFFSET_C[:S]) + temp_shift)[:, None]
    )
    cooling = cooling_coefficient(temp)

    demand = draw_demand(rng, hour, K, centre=centre)

    classes = inference_classes(S, K)
    jobs = draw_jobs(rng, S, T, J)

    sc = Scenario(
        name=f"{name}-s{seed}",
        T=T,
        dt_h=1.0,
        sites=tuple(paper_site(s) for s in range(S)),
        jobs=jobs,
        classes=classes,
        cooling=cooling,
        renewable_mw=renewable,
        price_import=np.round(price_import, 2),
        price_export=np.round(price_export, 2),
        carbon_intensity=np.round(carbon, 4),
        demand_gpus=demand,
        carbon_price_usd_per_t=CARBON_PRICE_USD_PER_T,
    )
    reference = grid_only_emissions_t(sc, *greedy_workload(sc))
    budget = BUDGET_FACTOR * reference
    return sc.replace(carbon_budget_t=float(math.floor(budget * 100.0) / 100.0))


def draw_demand(rng: np.random.Generator, hour: np.ndarray, K: int, *, centre: bool = False) -> np.ndarray:
    """(K, T) inference demand, GPUs, at the given hours of day (the presets' generator).

    ``demand[k, t] = max(0, round((7000 + A_k sin(2 pi (h_t - 14 + 3k) / 24)) (1 + e_kt)))`` with
    amplitude ``A_k = 2000 U(0.8, 1.2)`` (exactly 2000 if ``centre``) and noise ``e ~ N(0, 0.03)``.
    Pass *local* hours of day (``index.tz_convert(tz).hour``) for demand that follows local time.
    """
    hour = np.asarray(hour, dtype=np.float64)
    amplitude = 2000.0 * (np.ones(K) if centre else rng.uniform(0.8, 1.2, K))
    k_idx = np.arange(K, dtype=float)[:, None]
    demand = 7000.0 + amplitude[:, None] * np.sin(2.0 * np.pi * (hour - 14.0 + 3.0 * k_idx) / 24.0)
    demand = np.round(demand * (1.0 + rng.normal(0.0, 0.03, (K, hour.size))))
    return np.maximum(demand, 0.0)


def inference_classes(S: int, K: int) -> tuple[InferenceClass, ...]:
    """The presets' K inference classes over S sites: class k originates at site ``k mod S`` (10 ms),
    the next site is 35 ms away and the others 80 ms; SLO 50 ms; 0.12 / 0.24 USD per GPU-h."""
    classes = []
    for k in range(K):
        origin = k % S
        latency = [80.0] * S
        latency[origin] = 10.0
        if S > 1:
            latency[(origin + 1) % S] = 35.0
        classes.append(
            InferenceClass(
                name=f"inference{k}",
                revenue_usd_per_gpu_h=0.12,
                unserved_penalty_usd_per_gpu_h=0.24,
                latency_ms=tuple(latency),
                slo_ms=50.0,
            )
        )
    return tuple(classes)


def draw_jobs(rng: np.random.Generator, S: int, T: int, J: int) -> tuple[TrainingJob, ...]:
    """J training jobs for S sites and a horizon of T >= 13 hourly periods (the presets' generator).

    Each job: duration U{4..12} h, 1000 x U{3..8} GPUs, release U{0..T-duration}, deadline
    ``min(T, release + duration + U{2..15})``, value 0.15 USD per GPU-h of work, each site eligible
    with probability 0.8 (at least one). Any horizon works, e.g. ``T=168`` for a week's jobs.
    """
    if T < 13:
        raise ScenarioError(f"T: at least 13 periods so that every job window fits (got {T!r})")
    jobs = []
    for j in range(J):
        duration = int(rng.integers(4, 13))
        gpus = 1000 * int(rng.integers(3, 9))
        release = int(rng.integers(0, T - duration + 1))
        deadline = min(T, release + duration + int(rng.integers(2, 16)))
        eligible = rng.random(S) < 0.8
        if not eligible.any():
            eligible[rng.integers(S)] = True
        jobs.append(
            TrainingJob(
                name=f"job{j}",
                gpus=gpus,
                duration=duration,
                release=release,
                deadline=deadline,
                value_usd=round(0.15 * gpus * duration, 2),
                eligible=tuple(bool(e) for e in eligible),
            )
        )
    return tuple(jobs)
