"""The Gymnasium environment of MODEL.md §7: the scheduling model, one period per step.

This module is glue: it decodes the action, calls the pure functions of :mod:`envs.dynamics` and
assembles observations and ``info``. Everything that depends only on the scenario (scaled series,
padded forecast windows, forecast noise, job tables) is computed once at ``reset``; ``step`` only
indexes precomputed arrays. See ``docs/env.md`` for the full observation and action layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import dynamics
from envs.dynamics import CASCADE_START, FLOW, NO_CASCADE
from envs.forecast import ForecastModel, resolve_forecast
from envs.presets import PRESETS, make_scenario
from envs.scenario import OperatingState, Scenario, ScenarioError

PRICE_SCALE_USD_PER_MWH = 200.0
"""Prices in the observation are divided by this."""
OBS_BOUND = 10.0
"""Every scaled observation value is clipped to [-OBS_BOUND, OBS_BOUND] (prices) or [0, OBS_BOUND]."""


class SitePeriod(NamedTuple):
    """One site's constants for one period, as stages 3-4 read them (:meth:`CarbonAwareDCEnv._site_power`):
    the battery constants in the argument order of :func:`envs.dynamics.battery_power`, then those
    of :func:`envs.dynamics.complete_power` besides the set points. Precomputed for every (t, s) at
    scenario preparation, stored as a list of floats in this field order, so that the per-site loop
    unpacks one row."""

    charge_limit_mw: float
    discharge_limit_mw: float
    soc_min_mwh: float
    soc_max_mwh: float
    eta_charge: float
    eta_discharge: float
    gpu_mw: float
    cooling: float
    renewable_mw: float
    gen_capacity_mw: float
    import_limit_mw: float
    export_cap_mw: float


class SiteTariff(NamedTuple):
    """One site's prices and emission factors for one period, as stage 5 reads them
    (:func:`envs.dynamics.site_energy_terms`, same argument order; stored as a list of floats in
    this field order)."""

    price_import: float
    price_export: float
    gen_cost_usd_per_mwh: float
    degradation_usd_per_mwh: float
    carbon_intensity: float
    gen_emissions_t_per_mwh: float


class JobFeature(NamedTuple):
    """The per-slot job features of ``obs["jobs"]`` (columns 0-8; then one eligibility flag per site).

    All in [0, OBS_BOUND]: flags are 0/1, ``gpus`` is divided by the largest site's GPU capacity,
    ``remaining`` (periods left to run, or the duration while waiting), ``slack`` (periods until the
    latest start) and ``until_release`` (periods until the release) are divided by ``T``.
    """

    present: Any
    waiting: Any
    running: Any
    done: Any
    gpus: Any
    remaining: Any
    slack: Any
    value_usd_per_gpu_h: Any
    until_release: Any


JOB_FEATURES = JobFeature._fields
"""Names of the per-slot job features in ``obs["jobs"]``, followed by one eligibility flag per site."""
JOB = JobFeature(*range(len(JOB_FEATURES)))
"""Column of each job feature: ``jobs[:, JOB.waiting]``."""
FORECAST_KEYS = ("price_import", "price_export", "carbon_intensity", "renewable", "cooling", "demand")
"""Observation keys of the current + forecast series, (S, H+1) each except ``demand`` (K, H+1)."""
_SERIES_OF = {
    "price_import": "price_import",
    "price_export": "price_export",
    "carbon_intensity": "carbon_intensity",
    "renewable": "renewable_mw",
    "cooling": "cooling",
    "demand": "demand_gpus",
}

N_FLOW_FIELDS = len(dynamics.FLOW_FIELDS)
CASCADE_FIELDS = ("discharge_cut_mw", "gen_cut_mw", "charge_cut_mw", "gen_raised_mw", "shed_gpus")
"""The ``SiteFlows`` fields that say what a power cascade changed; each is a repair kind."""
SCENARIO_ORDERS = ("random", "cycle", "shuffle")
"""How ``reset`` goes through ``scenario_seeds`` (class docstring, Arguments)."""
ACTION_ABS_MAX = 1e9
"""Largest magnitude accepted in ``route``, ``battery`` and ``generator`` (their boxes are within
[-1, 1]; values beyond are repaired by clipping, but past this bound an action is an error so that
the reported repair amounts stay finite)."""
DEFAULT_VOLL_USD_PER_MWH = 10_000.0
DEFAULT_CARBON_OVERRUN_USD_PER_T = 1_000.0
DEFAULT_SOC_SHORTFALL_USD_PER_MWH = 1_000.0
DEFAULT_MANDATORY_MISS_USD = 100_000.0


class CarbonAwareDCEnv(gym.Env[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """Carbon-aware compute-power scheduling of AI data centers with microgrids (MODEL.md §7).

    ## Description
    An operator runs ``S`` data centers, each a microgrid with on-site renewables, a generator, a
    battery and a grid connection. Every period (one step, ``dt_h`` hours) it decides which waiting
    training jobs to start and where, how to route each inference class's demand over the sites
    within its latency SLO, and how to run each battery and generator. The environment then
    completes the period exactly as the MILP oracle would for those decisions (renewables first,
    deficit imported, surplus exported at a positive export price, import-limit cascade), so that
    replaying an oracle schedule earns exactly its objective.

    ## Action Space
    ``Dict``:

    - ``start``: ``MultiDiscrete([S+1] * slots)``; slot i is job i of the scenario (padded slots
      are ignored); 0 = hold, ``1+s`` = start at site ``s`` now.
    - ``route``: ``Box(0, 1, (K, S), float64)``, the fraction of class k's demand served at site s.
    - ``battery``: ``Box(-1, 1, (S,), float64)``, charge (+) or discharge (-) as a fraction of the
      power limit.
    - ``generator``: ``Box(0, 1, (S,), float64)``, output as a fraction of the generator capacity.

    Invalid parts are repaired deterministically (``docs/env.md``) and reported in
    ``info["repairs"]``; ``info["action_mask"]`` (slots, S+1) says which ``start`` choices are
    allowed in the next period. NaN or inf anywhere raises ``ValueError``.

    ## Observation Space
    ``Dict`` of float32 boxes with finite bounds (plus ``period``, int64): ``period`` (raw period
    index), ``time``, ``soc``, ``free_gpus``, ``jobs`` (slots, 9 + S), ``carbon``, and the current
    + next ``H`` periods of ``price_import``, ``price_export``, ``carbon_intensity``, ``renewable``,
    ``cooling`` (S, H+1) and ``demand`` (K, H+1). Scaling and padding: ``docs/env.md``.

    ## Rewards
    The period's term of the objective (MODEL.md §5) in USD, minus penalties for lost load, carbon
    above the budget, a terminal state of charge below the initial one and mandatory jobs never
    started. ``info["reward_terms"]`` holds the breakdown (costs negative) that sums to the reward.

    ## Starting State
    Period 0 with every battery at ``soc_init_frac`` and no job started. The scenario is the one
    given, or drawn from the preset with a seed taken from ``self.np_random`` in ``scenario_seeds``.

    ## Episode End
    ``terminated=True`` after the last period ``T - 1``; never truncated.

    ## Arguments
    - ``scenario``: a :class:`~envs.scenario.Scenario` used on every reset (None: draw from preset).
    - ``preset``: the preset whose scenarios are drawn and whose sizes fix the space shapes (``S``,
      ``K``, job slots ``J``, horizon ``T``). None (default): the shapes come from ``scenario`` if
      one is given, else from the ``"paper"`` preset.
    - ``seed_scenarios``: draw a new preset scenario on every reset (else always seed 0).
    - ``scenario_seeds``: the seeds drawn from (default 1000..999999; 0..999 are held out).
    - ``scenario_order``: ``"random"`` (each reset draws one of ``scenario_seeds`` with replacement),
      ``"cycle"`` (in the given order, then again; ``reset(seed=...)`` starts over at the first) or
      ``"shuffle"`` (every pass a new permutation from ``self.np_random``: no seed twice in a pass).
    - ``reset(options=...)``: ``{"scenario_seed": n}`` plays preset seed ``n``, ``{"scenario": sc}``
      plays ``sc``, for this episode only (neither consumes a draw).
    - ``forecast_horizon`` ``H`` periods.
    - ``forecast_level``: the forecast error model of :mod:`envs.forecast`: a level name
      (``"exact"``, ``"good"``, ``"typical"``, ``"poor"``), a scaled level (``"poor*2"``: every
      error twice as wide), a scalar ``sigma`` or a
      :class:`~envs.forecast.ForecastModel` (None: exact). ``forecast_noise=sigma`` is the old
      shorthand for the same (relative spread ``sigma·√lead``); giving both, differently, is an error.
    - ``render_mode``: None, ``"ansi"`` or ``"rgb_array"``.
    - penalty values: ``voll_usd_per_mwh``, ``carbon_overrun_usd_per_t``,
      ``soc_shortfall_usd_per_mwh``, ``mandatory_miss_usd``.

    ## Version History
    - v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        scenario: Scenario | None = None,
        preset: str | None = None,
        seed_scenarios: bool = True,
        scenario_seeds: Sequence[int] = range(1000, 1_000_000),
        scenario_order: str = "random",
        forecast_horizon: int = 24,
        forecast_noise: float | None = None,
        render_mode: str | None = None,
        voll_usd_per_mwh: float = DEFAULT_VOLL_USD_PER_MWH,
        carbon_overrun_usd_per_t: float = DEFAULT_CARBON_OVERRUN_USD_PER_T,
        soc_shortfall_usd_per_mwh: float = DEFAULT_SOC_SHORTFALL_USD_PER_MWH,
        mandatory_miss_usd: float = DEFAULT_MANDATORY_MISS_USD,
        forecast_level: str | float | ForecastModel | None = None,
    ) -> None:
        if preset is None and scenario is None:
            preset = "paper"
        if preset is None:
            sizes = {"S": scenario.S, "T": scenario.T, "J": scenario.J, "K": scenario.K}
        elif preset not in PRESETS:
            raise ScenarioError(f"preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        else:
            sizes = PRESETS[preset]
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: {render_mode!r} not in {self.metadata['render_modes']}")
        if int(forecast_horizon) < 0:
            raise ValueError(f"forecast_horizon: must be >= 0 (got {forecast_horizon!r})")
        model = resolve_forecast(forecast_level, forecast_noise)
        if len(scenario_seeds) == 0:
            raise ValueError("scenario_seeds: empty")
        if scenario_order not in SCENARIO_ORDERS:
            raise ValueError(f"scenario_order: {scenario_order!r} not one of {SCENARIO_ORDERS}")
        self.scenario_order = scenario_order
        self._order: np.ndarray | None = None  # this pass's order of seed indices ("cycle", "shuffle")
        self._pos = 0
        self.preset = preset
        self.S, self.K, self.n_slots, self.T_max = sizes["S"], sizes["K"], sizes["J"], sizes["T"]
        self.H = int(forecast_horizon)
        self.forecast_model = model
        self.forecast_noise = model.noise  # scalar summary, 0 iff exact (the shorthand's sigma)
        self.seed_scenarios = bool(seed_scenarios)
        self.scenario_seeds = scenario_seeds
        self.render_mode = render_mode
        self.voll_usd_per_mwh = float(voll_usd_per_mwh)
        self.carbon_overrun_usd_per_t = float(carbon_overrun_usd_per_t)
        self.soc_shortfall_usd_per_mwh = float(soc_shortfall_usd_per_mwh)
        self.mandatory_miss_usd = float(mandatory_miss_usd)
        self._given: Scenario | None = None
        if scenario is not None:
            self.set_scenario(scenario)
        self.scenario: Scenario | None = None
        self.scenario_seed: int | None = None
        self._prepared: Scenario | None = None
        self._blocks_of: Scenario | None = None
        self._t = 0
        self._done = True

        S, K, slots, H1 = self.S, self.K, self.n_slots, self.H + 1
        b = OBS_BOUND
        f32 = np.float32
        self.action_space = spaces.Dict(
            {
                "start": spaces.MultiDiscrete(np.full(slots, S + 1, dtype=np.int64)),
                "route": spaces.Box(0.0, 1.0, (K, S), np.float64),
                "battery": spaces.Box(-1.0, 1.0, (S,), np.float64),
                "generator": spaces.Box(0.0, 1.0, (S,), np.float64),
            }
        )
        self.observation_space = spaces.Dict(
            {
                "period": spaces.Box(0, self.T_max, (1,), np.int64),
                "time": spaces.Box(-1.0, 1.0, (3,), f32),
                "soc": spaces.Box(0.0, 1.0, (S,), f32),
                "free_gpus": spaces.Box(0.0, 1.0, (S,), f32),
                "jobs": spaces.Box(0.0, b, (slots, len(JOB_FEATURES) + S), f32),
                "carbon": spaces.Box(0.0, b, (3,), f32),
                "price_import": spaces.Box(-b, b, (S, H1), f32),
                "price_export": spaces.Box(-b, b, (S, H1), f32),
                "carbon_intensity": spaces.Box(0.0, b, (S, H1), f32),
                "renewable": spaces.Box(0.0, b, (S, H1), f32),
                "cooling": spaces.Box(0.0, b, (S, H1), f32),
                "demand": spaces.Box(0.0, b, (K, H1), f32),
            }
        )

    # ------------------------------------------------------------------ scenario handling
    def set_scenario(self, scenario: Scenario | None) -> None:
        """Use ``scenario`` on every following reset (None: draw from the preset again)."""
        if scenario is not None:
            self._check_sizes(scenario)
        self._given = scenario

    def _check_sizes(self, sc: Scenario) -> None:
        if not isinstance(sc, Scenario):
            raise ScenarioError(f"scenario: must be a Scenario (got {type(sc).__name__})")
        if self.preset is not None:
            where = f"preset {self.preset!r} has"
            hint = "; pass preset=None (or no preset) to take the sizes from the scenario"
        else:
            where = "the env's sizes have"
            hint = "; the spaces are fixed at construction: build a new env with scenario=this one"
        if sc.S != self.S:
            raise ScenarioError(f"scenario.S: {where} {self.S} sites (got {sc.S}){hint}")
        if sc.K != self.K:
            raise ScenarioError(f"scenario.K: {where} {self.K} inference classes (got {sc.K}){hint}")
        if sc.J > self.n_slots:
            raise ScenarioError(f"scenario.J: {where} {self.n_slots} job slots (got {sc.J} jobs){hint}")
        if sc.T > self.T_max:
            raise ScenarioError(f"scenario.T: {where} at most {self.T_max} periods (got {sc.T}){hint}")

    def _prepare(self, sc: Scenario) -> None:
        """Precompute every scenario constant the step needs (once per scenario)."""
        S, slots = self.S, self.n_slots
        self._dt = float(sc.dt_h)
        site = sc.site_array
        self._cap = site("gpu_capacity")
        self._gpu_mw = np.array(sc.gpu_mw, dtype=np.float64)
        self._base_it = site("base_it_mw")
        self._gen_cap = site("gen_capacity_mw")
        self._gen_cost = site("gen_cost_usd_per_mwh")
        self._gen_em = site("gen_emissions_t_per_mwh")
        self._cap_mwh = site("capacity_mwh")
        self._charge_lim = site("charge_mw")
        self._discharge_lim = site("discharge_mw")
        self._eta_c = site("eta_charge")
        self._eta_d = site("eta_discharge")
        self._soc_min = np.array([s.soc_min_mwh for s in sc.sites])
        self._soc_max = np.array([s.soc_max_mwh for s in sc.sites])
        self._soc_init = np.array([s.soc_init_mwh for s in sc.sites])
        self._degr = site("degradation_usd_per_mwh")
        self._imp_lim = site("import_limit_mw")
        self._exp_lim = site("export_limit_mw")
        self._cap_safe = np.where(self._cap > 0, self._cap, 1.0)
        self._soc_scale = np.where(self._cap_mwh > 0, 1.0 / np.where(self._cap_mwh > 0, self._cap_mwh, 1), 0)
        # Period-major (T, S) copies so that row t is contiguous.
        self._cooling = np.ascontiguousarray(sc.cooling.T)
        self._renewable = np.ascontiguousarray(sc.renewable_mw.T)
        self._p_imp = np.ascontiguousarray(sc.price_import.T)
        self._p_exp = np.ascontiguousarray(sc.price_export.T)
        self._ci = np.ascontiguousarray(sc.carbon_intensity.T)
        self._demand = np.ascontiguousarray(sc.demand_gpus.T)
        self._export_cap = np.where(self._p_exp > 0.0, self._exp_lim, 0.0)
        self._revenue = sc.class_array("revenue_usd_per_gpu_h")
        self._penalty = sc.class_array("unserved_penalty_usd_per_gpu_h")
        self._routes = np.array(sc.routes, dtype=np.float64)

        # Job slots (padded): absent slots have gpus 0 and an empty window.
        J = sc.J
        self._present = np.zeros(slots, dtype=bool)
        self._present[:J] = True
        self._gpus = np.zeros(slots)
        self._dur = np.zeros(slots, dtype=np.int64)
        self._release = np.zeros(slots, dtype=np.int64)
        self._latest = np.full(slots, -1, dtype=np.int64)
        self._value = np.zeros(slots)
        self._mandatory = np.zeros(slots, dtype=bool)
        self._elig = np.zeros((slots, S), dtype=bool)
        self._job_mw = np.zeros((slots, S))
        if J:
            self._gpus[:J] = sc.job_array("gpus")
            self._dur[:J] = sc.job_array("duration")
            self._release[:J] = sc.job_array("release")
            self._latest[:J] = sc.job_array("latest_start")
            self._value[:J] = sc.job_array("value_usd")
            self._mandatory[:J] = sc.job_array("mandatory").astype(bool)
            self._elig[:J] = sc.eligible
            self._job_mw[:J] = sc.job_power_mw
        self._any_mandatory = bool(self._mandatory.any())
        gpu_scale = float(max(self._cap.max(), 1.0))
        T = sc.T
        self._inv_T = 1.0 / T
        # Job features and start readiness of every slot for t = 0..T, as if no job had started;
        # step overwrites the rows of started jobs. Padded slots stay all zero.
        t_col = np.arange(T + 1)[:, None]
        waiting = self._present & (t_col <= self._latest)
        jobs = np.zeros((T + 1, slots, len(JOB_FEATURES) + S), dtype=np.float32)
        jobs[:, :, JOB.present] = self._present
        jobs[:, :, JOB.waiting] = waiting
        jobs[:, :, JOB.done] = self._present & ~waiting
        jobs[:, :, JOB.gpus] = np.minimum(self._gpus / gpu_scale, OBS_BOUND)
        jobs[:, :, JOB.remaining] = np.where(waiting, self._dur, 0) / T
        jobs[:, :, JOB.slack] = np.where(waiting, self._latest - t_col, 0) / T
        gpu_h = np.where(self._present, self._gpus * self._dur * self._dt, 1.0)
        jobs[:, :, JOB.value_usd_per_gpu_h] = np.minimum(self._value / gpu_h, OBS_BOUND)
        jobs[:, :, JOB.until_release] = np.where(waiting, np.maximum(self._release - t_col, 0), 0) / T
        jobs[:, :, len(JOB_FEATURES) :] = self._elig
        self._jobs_block = np.minimum(jobs, OBS_BOUND)
        ready = waiting & (self._release <= t_col)
        self._ready_block = ready[:, :, None] & self._elig
        self._t_col = t_col
        self._gpus_col = self._gpus[:, None]
        # The action mask of every period as if no job had started (row T: hold only); a start
        # rewrites the rows after it (_start_jobs), so _action_mask is a row copy.
        self._mask_block = np.zeros((T + 1, slots, S + 1), dtype=bool)
        self._mask_block[:, :, 0] = True
        self._mask_block[:T, :, 1:] = self._ready_block[:T] & (self._gpus_col <= self._cap)

        # Per period, per site: the constants of stages 3-4 (SitePeriod) and of stage 5 (SiteTariff),
        # as nested lists [t][s] of floats in the tuples' field order (one numpy table and one
        # tolist: building T*S named tuples in Python cost a millisecond per week reset).
        per_site = np.empty((T, S, len(SitePeriod._fields)))
        per_site[:] = np.stack(
            [self._charge_lim, self._discharge_lim, self._soc_min, self._soc_max, self._eta_c, self._eta_d,
             self._gpu_mw, np.zeros(S), np.zeros(S), self._gen_cap, self._imp_lim, np.zeros(S)], axis=1,
        )  # fmt: skip
        per_site[:, :, SitePeriod._fields.index("cooling")] = self._cooling
        per_site[:, :, SitePeriod._fields.index("renewable_mw")] = self._renewable
        per_site[:, :, SitePeriod._fields.index("export_cap_mw")] = self._export_cap
        self._site_periods = per_site.tolist()
        tariff = np.empty((T, S, len(SiteTariff._fields)))
        tariff[:, :, 0], tariff[:, :, 1], tariff[:, :, 4] = self._p_imp, self._p_exp, self._ci
        tariff[:, :, 2], tariff[:, :, 3], tariff[:, :, 5] = self._gen_cost, self._degr, self._gen_em
        self._site_tariffs = tariff.tolist()
        self._soc_init_l = self._soc_init.tolist()
        self._demand_l = self._demand.tolist()
        self._revenue_l = self._revenue.tolist()
        self._penalty_l = self._penalty.tolist()
        tol = dynamics.REPAIR_RTOL
        self._tol_gpus = tol * max(1.0, float(self._cap.max()))
        self._tol_mw = tol * max(
            1.0,
            float(self._imp_lim.max()),
            float(self._gen_cap.max()),
            float(self._charge_lim.max()),
            float(self._discharge_lim.max()),
        )

        # Time features for t = 0..T (the terminal observation included).
        t = np.arange(T + 1)
        hour = (t * self._dt) % 24.0
        self._time_block = np.stack(
            [t / T, np.sin(2 * np.pi * hour / 24.0), np.cos(2 * np.pi * hour / 24.0)], axis=1
        ).astype(np.float32)
        self._time_block.flags.writeable = False
        self._period_block = np.arange(T + 1, dtype=np.int64)[:, None]
        self._period_block.flags.writeable = False

        # Forecast windows: series padded with their last value to T + H + 1 periods, then the
        # window of each issue period t = 0..T as one (T+1, rows, H+1) block.
        power_scale = np.where(self._imp_lim > 0, self._imp_lim, 1.0)[:, None]
        scales = {
            "price_import": PRICE_SCALE_USD_PER_MWH,
            "price_export": PRICE_SCALE_USD_PER_MWH,
            "carbon_intensity": 1.0,
            "renewable": power_scale,
            "cooling": 1.0,
            "demand": gpu_scale,
        }
        H1 = self.H + 1
        self._windows: dict[str, np.ndarray] = {}
        for key in FORECAST_KEYS:
            series = getattr(sc, _SERIES_OF[key])
            padded = np.concatenate([series, np.repeat(series[:, -1:], self.H + 1, axis=1)], axis=1)
            win = np.lib.stride_tricks.sliding_window_view(padded, H1, axis=1)[:, : T + 1]
            self._windows[key] = np.ascontiguousarray(win.transpose(1, 0, 2))
        self._scales = scales
        self._prepared = sc

    def _draw_forecasts(self) -> None:
        """Draw this episode's forecasts from ``self.forecast_model`` with ``self.np_random`` (every
        issue period and lead at once, see :mod:`envs.forecast`) and build the scaled float32
        observation blocks. Exact forecasts draw nothing and reuse the scenario's blocks."""
        exact = self.forecast_model.is_exact
        if exact and self._blocks_of is self._prepared:
            return  # exact forecasts: the blocks of this scenario are already built
        if exact:
            self._fc_windows = self._windows
        else:
            self._fc_windows = self.forecast_model.draw(self.np_random, self._windows, period_h=self._dt)
        self._blocks: dict[str, np.ndarray] = {}
        for key in FORECAST_KEYS:
            win = self._fc_windows[key]
            low = -OBS_BOUND if key.startswith("price") else 0.0
            block = np.clip(win / self._scales[key], low, OBS_BOUND).astype(np.float32)
            block.flags.writeable = False  # observations hand out read-only views of it
            self._blocks[key] = block
        self._blocks_of = self._prepared

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode at period 0 (see the class docstring, "Starting State")."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"scenario_seed", "scenario"})
        if unknown or len(options) > 1:
            raise ValueError(
                f"reset options: give at most one of 'scenario_seed', 'scenario' (got {sorted(options)})"
            )
        if "scenario" in options:
            sc, sc_seed = options["scenario"], None
            self._check_sizes(sc)
        elif "scenario_seed" in options:
            sc_seed = options["scenario_seed"]
            if isinstance(sc_seed, bool) or not isinstance(sc_seed, (int, np.integer)) or sc_seed < 0:
                raise ValueError(f"reset options: scenario_seed must be an integer >= 0 (got {sc_seed!r})")
            if self.preset is None:
                raise ScenarioError("reset options: scenario_seed needs a preset to draw from (preset=...)")
            sc_seed = int(sc_seed)
            sc = make_scenario(self.preset, sc_seed)
            self._check_sizes(sc)
        elif self._given is not None:
            sc, sc_seed = self._given, None
        else:
            if self.preset is None:
                raise ScenarioError(
                    "preset: None, and no scenario set; this env took its sizes from a scenario: "
                    "call set_scenario(sc), or build the env with preset=... to draw scenarios"
                )
            if self.seed_scenarios:
                sc_seed = self._next_seed(restart=seed is not None)
            else:
                sc_seed = 0
            sc = make_scenario(self.preset, sc_seed)
            self._check_sizes(sc)
        if sc is not self._prepared:
            self._prepare(sc)
        self.scenario = sc
        self.scenario_seed = sc_seed
        self._draw_forecasts()
        self._T = sc.T
        self._t = 0
        self._done = False
        self._soc = self._soc_init.tolist()
        self._start_period = np.full(self.n_slots, -1, dtype=np.int64)
        self._start_site = np.full(self.n_slots, -1, dtype=np.int64)
        self._is_started = np.zeros(self.n_slots, dtype=bool)
        # Per-episode copies of the job tables, rewritten from t on when a job starts.
        self._jobs_live = self._jobs_block.copy()
        self._ready_live = self._ready_block.copy()
        self._mask_live = self._mask_block.copy()
        # GPUs not held by running jobs, per period (row T: the terminal observation), and the
        # same as a float32 fraction of capacity for the observation.
        self._free = np.tile(self._cap, (sc.T + 1, 1))
        self._free_frac = np.tile((self._cap / self._cap_safe).astype(np.float32), (sc.T + 1, 1))
        self._fixed_it = np.tile(self._base_it, (sc.T, 1))  # base IT + running jobs, MW
        self._emissions = 0.0
        self._missed = np.zeros(self.n_slots, dtype=bool)
        self._last: dict[str, Any] | None = None
        self._history: list[dict[str, Any]] = []
        self._mask = self._action_mask(0)
        return self._observation(), {
            "period": 0,
            "action_mask": self._mask,
            "scenario_seed": sc_seed,
            "scenario": sc.name,
            "forecast_level": self.forecast_model.name,
        }

    def _next_seed(self, restart: bool) -> int:
        """The next preset seed of ``scenario_seeds`` in ``scenario_order`` (see the Arguments)."""
        seeds = self.scenario_seeds
        if self.scenario_order == "random":
            return int(seeds[int(self.np_random.integers(len(seeds)))])
        if restart or self._order is None or self._pos >= len(self._order):
            n = len(seeds)
            self._order = np.arange(n) if self.scenario_order == "cycle" else self.np_random.permutation(n)
            self._pos = 0
        self._pos += 1
        return int(seeds[int(self._order[self._pos - 1])])

    def step(self, action: dict[str, Any]) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Simulate one period: the five stages of ``docs/env.md`` ("One step"), each a method below.

        1. :meth:`_start_jobs`, 2. :meth:`_route_inference`, 3-4. :meth:`_site_power` (set points,
        then the power balance, site by site), 5. :meth:`_period_terms`; then the state advances
        and the next observation is built. Repairs are collected in ``info["repairs"]`` as the
        stages apply them.
        """
        if self._done:
            raise RuntimeError("the episode is over (or has not begun): call reset()")
        start, route, route_values, battery, generator, clipped = self._read_action(action)
        t = self._t
        repairs: dict[str, Any] = {}
        free, value_started = self._start_jobs(t, start, repairs)
        serve, site_gpus, route_clipped = self._route_inference(t, route, route_values, free, repairs)
        clipped += route_clipped
        if clipped > dynamics.REPAIR_RTOL:
            repairs["action_clipped"] = clipped
        rows, site, serve, lost_mw, new_soc = self._site_power(
            t, battery, generator, site_gpus, serve, repairs
        )
        terms, em, unserved = self._period_terms(t, value_started, rows, serve, lost_mw, new_soc)
        reward = sum(terms.values())

        # Advance and observe.
        self._soc = new_soc
        self._t = t + 1
        terminated = self._t >= self._T
        self._done = terminated
        self._mask = self._action_mask(self._t)
        soc_arr = np.array(new_soc)
        flows = {
            "grid_import_mw": site[FLOW.grid_import_mw],
            "grid_export_mw": site[FLOW.grid_export_mw],
            "renewable_used_mw": site[FLOW.renewable_used_mw],
            "curtailed_mw": site[FLOW.curtailed_mw],
            "gen_mw": site[FLOW.gen_mw],
            "charge_mw": site[FLOW.charge_mw],
            "discharge_mw": site[FLOW.discharge_mw],
            "soc_mwh": soc_arr,
            "load_mw": site[FLOW.load_mw],
            "lost_load_mw": site[FLOW.lost_load_mw],
            "serve_gpus": serve,
            "unserved_gpus": unserved,
        }
        info = {
            "period": t,
            "reward_terms": terms,
            "flows": flows,
            "emissions_t": em,
            "emissions_total_t": self._emissions,
            "repairs": repairs,
            "action_mask": self._mask,
            "scenario_seed": self.scenario_seed,
        }
        if self.render_mode is not None:
            self._last = {"period": t, "reward": reward, "terms": terms, "flows": flows, "free": free}
            self._history.append(self._last)
        return self._observation(soc_arr), reward, terminated, False, info

    # ------------------------------------------------------------------ the five stages of a step
    def _start_jobs(self, t: int, start: np.ndarray, repairs: dict[str, Any]) -> tuple[np.ndarray, float]:
        """Stage 1: place the requested starts in slot order against the GPUs held by running jobs
        (:func:`dynamics.place_starts`); a placed job holds its GPUs and power for ``duration``
        periods and its value is credited now. Returns the GPUs left free (S,) and the value, USD."""
        placed, ignored, free = dynamics.place_starts(start, self._mask, self._gpus, self._free[t])
        if ignored:
            repairs["start_ignored"] = ignored
        value_started = 0.0
        for i, s in placed:
            end = t + int(self._dur[i])
            self._free[t:end, s] -= self._gpus[i]
            self._free_frac[t:end, s] = self._free[t:end, s] / self._cap_safe[s]
            self._fixed_it[t:end, s] += self._job_mw[i, s]
            self._start_period[i] = t
            self._start_site[i] = s
            value_started += float(self._value[i])
            self._is_started[i] = True
            self._ready_live[t:, i] = False
            # Later action masks: this slot is taken; site s has fewer free GPUs while it runs.
            self._mask_live[t + 1 :, i, 1:] = False
            held = slice(t + 1, end)
            self._mask_live[held, :, 1 + s] = self._ready_live[held, :, s] & (
                self._gpus <= self._free[held, s, None]
            )
            rows = self._jobs_live[t:, i]  # this slot's feature rows from now on
            remaining = np.maximum(end - self._t_col[t:, 0], 0)
            rows[:, JOB.waiting] = 0.0
            rows[:, JOB.running] = remaining > 0
            rows[:, JOB.done] = remaining == 0
            rows[:, JOB.remaining] = remaining * self._inv_T
            rows[:, JOB.slack] = 0.0
            rows[:, JOB.until_release] = 0.0
        return free, value_started

    def _route_inference(
        self, t: int, route: np.ndarray, route_values: list[float], free: np.ndarray, repairs: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Stage 2: repair the routing fractions (:func:`dynamics.repair_routes`) and serve
        ``fraction * demand`` on the GPUs left free, cut proportionally where a site is full
        (:func:`dynamics.serve_within_capacity`). Returns ``serve`` (K, S) GPUs, the inference GPUs
        per site (S,) and the routing fraction clipped to [0, 1] (part of ``action_clipped``)."""
        frac, route_clipped, removed, scaled = dynamics.repair_routes(route, self._routes, route_values)
        serve, site_gpus, cut = dynamics.serve_within_capacity(frac, self._demand[t], free)
        tol = dynamics.REPAIR_RTOL
        if removed > tol:
            repairs["route_removed"] = removed
        if scaled > tol:
            repairs["route_scaled"] = scaled
        if cut > self._tol_gpus:
            repairs["serve_cut_gpus"] = cut
        return serve, site_gpus, route_clipped

    def _site_power(
        self,
        t: int,
        battery: list[float],
        generator: list[float],
        site_gpus: np.ndarray,
        serve: np.ndarray,
        repairs: dict[str, Any],
    ) -> tuple[list[dynamics.SiteFlows], np.ndarray, np.ndarray, float, list[float]]:
        """Stages 3 and 4, site by site: the battery set point to charge / discharge MW within what
        the state of charge allows (:func:`dynamics.battery_power`), the generator set point to MW
        (:func:`dynamics.generator_power`), then the completed power balance
        (:func:`dynamics.complete_power`: renewables first, import / export / curtailment, the
        surplus and import-limit cascades) and the state of charge it leaves
        (:func:`dynamics.soc_next`).

        Returns the per-site rows (``SiteFlows`` of floats), the same as a (15, S) table whose row
        ``FLOW.<name>`` is that field at every site, ``serve`` (K, S) after any inference shed by the
        import-limit cascade, the lost load summed over sites (MW) and the next state of charge per
        site (MWh)."""
        dt = self._dt
        rows, new_soc = [], []
        clipped_mw = 0.0
        cascaded = False
        battery_power, generator_power = dynamics.battery_power, dynamics.generator_power
        complete_power, soc_next = dynamics.complete_power, dynamics.soc_next
        for b, g, soc, it_mw, gpus, c in zip(
            battery, generator, self._soc, self._fixed_it[t].tolist(), site_gpus.tolist(),
            self._site_periods[t], strict=True,
        ):  # fmt: skip
            c_lim, d_lim, soc_lo, soc_hi, eta_c, eta_d, gpu_mw, cooling, renew, gen_cap, imp_lim, exp_cap = c
            charge, discharge, b_clip = battery_power(b, soc, c_lim, d_lim, soc_lo, soc_hi, eta_c, eta_d, dt)
            clipped_mw += b_clip
            gen = generator_power(g, gen_cap)
            f = complete_power(
                it_mw, gpus, gpu_mw, cooling, renew, charge, discharge, gen, gen_cap, imp_lim, exp_cap
            )
            rows.append(f)
            new_soc.append(soc_next(soc, f.charge_mw, f.discharge_mw, eta_c, eta_d, soc_lo, soc_hi, dt))
            if f[CASCADE_START:] != NO_CASCADE:
                cascaded = True
        if clipped_mw > self._tol_mw:
            repairs["battery_clipped_mw"] = clipped_mw
        # (15, S): row FLOW.<name> is that flow at every site.
        site = np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * N_FLOW_FIELDS)
        site = site.reshape(len(rows), N_FLOW_FIELDS).T
        if not cascaded:
            return rows, site, serve, 0.0, new_soc  # nothing shed, nothing lost, nothing to report
        for key in CASCADE_FIELDS:
            amount = site[getattr(FLOW, key)]
            if amount.max() > (self._tol_gpus if key == "shed_gpus" else self._tol_mw):
                repairs[key] = float(amount.sum())
        lost = site[FLOW.lost_load_mw]
        lost_mw = float(lost.sum())
        if lost.max() > self._tol_mw:
            repairs["lost_load_mw"] = lost_mw
        return rows, site, serve * site[FLOW.keep], lost_mw, new_soc

    def _period_terms(
        self,
        t: int,
        value_started: float,
        rows: list[dynamics.SiteFlows],
        serve: np.ndarray,
        lost_mw: float,
        new_soc: list[float],
    ) -> tuple[dict[str, float], float, np.ndarray]:
        """Stage 5: energy terms and emissions per site (:func:`dynamics.site_energy_terms`),
        inference terms (:func:`dynamics.inference_terms`), then the carbon budget and the terminal
        penalties (``new_soc``: the state of charge at the end of the period, MWh). Adds the
        period's emissions to the running total.

        Returns the reward terms (``dynamics.REWARD_KEYS``, signed USD), the period's emissions
        (tCO2) and the unserved GPUs per class (K,)."""
        dt = self._dt
        exp_usd = imp_usd = gen_usd = degr_usd = em = 0.0
        site_energy_terms = dynamics.site_energy_terms
        for f, c in zip(rows, self._site_tariffs[t], strict=True):
            e_usd, i_usd, g_usd, d_usd, e_t = site_energy_terms(f, *c, dt)
            exp_usd += e_usd
            imp_usd += i_usd
            gen_usd += g_usd
            degr_usd += d_usd
            em += e_t
        revenue_usd, unserved_usd, unserved = dynamics.inference_terms(
            [sum(row) for row in serve.tolist()], self._demand_l[t], self._revenue_l, self._penalty_l, dt
        )
        sc = self.scenario
        overrun = dynamics.carbon_overrun_t(self._emissions, em, sc.carbon_budget_t)
        self._emissions += em
        last = t == self._T - 1
        shortfall = 0.0
        if last:
            shortfall = sum(max(0.0, a - b) for a, b in zip(self._soc_init_l, new_soc, strict=True))
        missed = 0
        if self._any_mandatory:
            newly = self._mandatory & ~self._is_started & ~self._missed
            newly &= (self._latest <= t) | last
            missed = int(newly.sum())
            self._missed |= newly
        terms = {
            "training_value_usd": value_started,
            "inference_revenue_usd": revenue_usd,
            "unserved_penalty_usd": unserved_usd,
            "export_revenue_usd": exp_usd,
            "import_cost_usd": imp_usd,
            "gen_cost_usd": gen_usd,
            "degradation_cost_usd": degr_usd,
            "carbon_cost_usd": -sc.carbon_price_usd_per_t * em,
            "lost_load_usd": -self.voll_usd_per_mwh * lost_mw * dt if lost_mw else 0.0,
            "carbon_overrun_usd": -self.carbon_overrun_usd_per_t * overrun,
            "soc_shortfall_usd": -self.soc_shortfall_usd_per_mwh * shortfall,
            "mandatory_miss_usd": -self.mandatory_miss_usd * missed,
        }
        return terms, em, np.array(unserved)

    def _read_action(self, action: dict[str, Any]) -> tuple[Any, ...]:
        """The action parts: ``start`` (slots,) int64, ``route`` (K, S) float64 and the same as a flat
        list, ``battery`` and ``generator`` as lists of floats, and the total clipped from battery
        and generator set points outside their boxes.

        Raises ValueError for NaN or inf, for a magnitude above ``ACTION_ABS_MAX`` (so that every
        repair amount stays finite), and for a ``start`` that is not an integer choice: floats must
        be whole numbers (``2.0`` means 2; ``1.9`` is an error, never floored), booleans are refused.
        """
        try:
            start = np.asarray(action["start"])
            route = np.asarray(action["route"], dtype=np.float64)
            battery = np.asarray(action["battery"], dtype=np.float64)
            generator = np.asarray(action["generator"], dtype=np.float64)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"action: need a dict with start, route, battery, generator ({exc!r})") from exc
        if start.shape != (self.n_slots,):
            raise ValueError(f"action['start']: shape {start.shape}, expected {(self.n_slots,)}")
        if route.shape != (self.K, self.S):
            raise ValueError(f"action['route']: shape {route.shape}, expected {(self.K, self.S)}")
        if battery.shape != (self.S,) or generator.shape != (self.S,):
            raise ValueError(f"action['battery'], ['generator']: shapes must be {(self.S,)}")
        if start.dtype.kind != "i":
            start = _start_choices(start)
        b, g, r = battery.tolist(), generator.tolist(), route.ravel().tolist()
        values = b + g + r
        if not all(map(math.isfinite, values)):
            raise ValueError("action: NaN or inf in route, battery or generator")
        lo, hi = min(values), max(values)
        if lo < -ACTION_ABS_MAX or hi > ACTION_ABS_MAX:
            raise ValueError(
                f"action: route, battery and generator values must lie within ±{ACTION_ABS_MAX:g} "
                f"(got {lo:g} .. {hi:g}); their boxes are [0, 1], [-1, 1] and [0, 1]"
            )
        clipped = 0.0
        if lo < -1.0 or hi > 1.0 or min(g) < 0.0:  # some value may be outside its box
            clipped = sum(max(x - 1.0, -1.0 - x, 0.0) for x in b) + sum(max(x - 1.0, -x, 0.0) for x in g)
        return start, route, r, b, g, clipped

    # ------------------------------------------------------------------ observation
    def _action_mask(self, t: int) -> np.ndarray:
        """(slots, S+1) bool: hold always; start at s iff waiting, released, eligible and fitting."""
        return self._mask_live[t].copy()

    def _observation(self, soc: np.ndarray | None = None) -> dict[str, np.ndarray]:
        t = self._t
        jobs = self._jobs_live[t].copy()
        budget = self.scenario.carbon_budget_t
        if budget is None:
            carbon = (0.0, 0.0, 1.0)
        elif budget > 0:
            used = self._emissions / budget
            carbon = (1.0, min(used, OBS_BOUND), max(1.0 - used, 0.0))
        else:
            carbon = (1.0, OBS_BOUND if self._emissions > 0 else 0.0, 0.0)
        if soc is None:
            soc = np.array(self._soc)
        b = self._blocks
        return {
            "period": self._period_block[t],
            "time": self._time_block[t],
            "soc": (soc * self._soc_scale).astype(np.float32),
            "free_gpus": self._free_frac[t].copy(),
            "jobs": jobs,
            "carbon": np.array(carbon, dtype=np.float32),
            "price_import": b["price_import"][t],
            "price_export": b["price_export"][t],
            "carbon_intensity": b["carbon_intensity"][t],
            "renewable": b["renewable"][t],
            "cooling": b["cooling"][t],
            "demand": b["demand"][t],
        }

    def forecast(self) -> dict[str, np.ndarray]:
        """The current period's forecasts, unscaled (same noisy numbers as the observation).

        Keys are the scenario's series names: ``price_import``, ``price_export`` (USD/MWh),
        ``carbon_intensity`` (t/MWh), ``renewable_mw`` (MW), ``cooling`` (MW per IT MW), each (S, H+1),
        and ``demand_gpus`` (K, H+1); column 0 is the current period (exact), column ``l`` the
        forecast ``l`` periods ahead; beyond the horizon the last period's value is repeated.
        """
        if self.scenario is None:
            raise RuntimeError("call reset() first")
        t = self._t
        out = {}
        for key in FORECAST_KEYS:
            out[_SERIES_OF[key]] = np.array(self._fc_windows[key][t], dtype=np.float64)
        return out

    def state_snapshot(self) -> OperatingState:
        """Where the system stands at the start of the current period (for MPC and DAgger)."""
        if self.scenario is None:
            raise RuntimeError("call reset() first")
        starts = tuple(
            (int(i), int(self._start_site[i]), int(self._start_period[i]))
            for i in np.flatnonzero(self._start_period >= 0)
        )
        return OperatingState(
            period=self._t,
            soc_mwh=tuple(self._soc),
            job_starts=starts,
            emissions_t=float(self._emissions),
        )

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: a text summary of the last step; ``"rgb_array"``: an RGB frame (H, W, 3)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode= to the env")
            return None
        if self.scenario is None:
            raise RuntimeError("call reset() first")
        if self.render_mode == "ansi":
            return self._render_text()
        return self._render_frame()

    def _render_text(self) -> str:
        sc = self.scenario
        budget = "none" if sc.carbon_budget_t is None else f"{sc.carbon_budget_t:,.1f} t"
        lines = [
            f"{sc.name}  period {self._t}/{self._T}  emissions {self._emissions:,.2f} t (budget {budget})"
        ]
        last = self._last
        if last is None:
            lines.append("  (no step yet)")
            return "\n".join(lines) + "\n"
        f = last["flows"]
        lines.append(f"  step {last['period']}: reward {last['reward']:,.2f} USD")
        lines.append("  site  load   ren   gen   imp   exp  chg  dis  curt    SoC   job GPUs  served")
        busy = self._cap - last["free"]
        for s in range(self.S):
            lines.append(
                f"  {s:>4} {f['load_mw'][s]:5.1f} {f['renewable_used_mw'][s]:5.1f} {f['gen_mw'][s]:5.1f} "
                f"{f['grid_import_mw'][s]:5.1f} {f['grid_export_mw'][s]:5.1f} {f['charge_mw'][s]:4.1f} "
                f"{f['discharge_mw'][s]:4.1f} {f['curtailed_mw'][s]:5.1f} {f['soc_mwh'][s]:6.1f} "
                f"{busy[s]:10,.0f} {f['serve_gpus'][:, s].sum():7,.0f}"
            )
        terms = ", ".join(f"{k.removesuffix('_usd')} {v:,.0f}" for k, v in last["terms"].items() if v)
        lines.append(f"  terms: {terms}")
        jobs = [f"{i}@s{self._start_site[i]}" for i in np.flatnonzero(self._start_period >= 0)]
        lines.append(f"  jobs started: {', '.join(jobs) or '-'}")
        return "\n".join(lines) + "\n"

    def _render_frame(self) -> np.ndarray:
        """The 1280×720 dashboard of :mod:`envs.render` (its figure is built once per scenario)."""
        from envs.render import FrameRenderer

        if getattr(self, "_renderer", None) is None or self._renderer.scenario is not self.scenario:
            self._renderer = FrameRenderer(self.scenario)
        return self._renderer.frame(
            self._history, self._start_period, self._start_site, self._emissions, self._t
        )


def _start_choices(start: np.ndarray) -> np.ndarray:
    """``action["start"]`` of a non-integer dtype as int64 choices, or ValueError: unsigned
    integers pass, floats must be finite whole numbers (``2.0`` -> 2, ``1.9`` -> error), anything
    else (booleans, strings, objects) is refused."""
    kind = start.dtype.kind
    if kind == "u":
        if start.size and int(start.max()) > np.iinfo(np.int64).max:
            raise ValueError("action['start']: choice too large for int64")
        return start.astype(np.int64)
    if kind != "f":
        raise ValueError(
            f"action['start']: choices must be integers (0 = hold, 1+s = site s); got dtype {start.dtype}"
        )
    if not np.isfinite(start).all():
        raise ValueError("action['start']: NaN or inf")
    bad = np.flatnonzero((start != np.floor(start)) | (np.abs(start) > 2**31))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"action['start'][{i}]: {start[i]!r} is not a whole-number choice (0 = hold, 1+s = site s); "
            "floats are accepted only when whole, never floored"
        )
    return start.astype(np.int64)
