"""The batched environment: ``N`` lanes of :class:`~envs.dc_env.CarbonAwareDCEnv` stepped at once in numpy.

:class:`CarbonAwareDCVectorEnv` is a ``gymnasium.vector.VectorEnv`` whose lane ``i`` is, step for
step, the single env seeded ``seed + i`` (Gymnasium's vector seeding rule) with the same
``scenario_seeds``: the same scenario draws, forecast errors, observation, reward, reward terms,
flows, repairs and action mask (``tests/test_vector_env.py`` checks this lane by lane). The
physics is the batched twin of ``envs/dynamics.py`` in ``envs/vector_dynamics.py``; ``step`` has no
Python loop over lanes or sites. Scenarios come from a pre-built pool (``envs/vector_pool.py``), so
a lane's reset is an index and a few array copies. Layouts, autoreset and the differences from the
single env: ``docs/env.md``, "Vector env". The flat variant and the SB3 adapter are in
``envs/vector_flat.py`` and ``envs/vector_sb3.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.dc_env import (
    ACTION_ABS_MAX,
    DEFAULT_CARBON_OVERRUN_USD_PER_T,
    DEFAULT_MANDATORY_MISS_USD,
    DEFAULT_SOC_SHORTFALL_USD_PER_MWH,
    DEFAULT_VOLL_USD_PER_MWH,
    FORECAST_KEYS,
    SCENARIO_ORDERS,
)
from envs.forecast import ALIASES, ForecastModel, resolve_forecast
from envs.presets import PRESETS, make_scenario
from envs.scenario import OperatingState, Scenario, ScenarioError
from envs.vector_pool import (
    SERIES_FIELDS,
    SITE_FIELDS,
    ScenarioPool,
    default_pool_size,
    draw_pool_seeds,
    flat_layout,
    single_spaces,
)
from envs.vector_step import LaneStepper, clear_lanes, copy_info, lane_info

_I = {name: i for i, name in enumerate(SITE_FIELDS)}

GATHER_THREAD_MIN_BYTES = 4 * 2**20
"""``gather_thread="auto"`` copies the observation rows on a second thread from this many bytes per
step (N · D · 4). Measured idle, 2 cores, env-steps/s with / without the thread: paper N = 1,024
(2.2 MB) 645k / 656k, N = 2,048 868k / 820k, N = 4,096 1.06M / 907k; week N = 1,024 (5.5 MB)
380k / 358k, N = 4,096 422k / 362k."""
DRAW_BUFFER = 64
"""Scenario draws pre-drawn per lane at a time ("random" order, exact forecasts; ``_choose_all``)."""


class CarbonAwareDCVectorEnv(LaneStepper, VectorEnv):
    """``num_envs`` lanes of ``CarbonAwareDCEnv`` in one numpy step (Dict observations and actions).

    ## Equivalence
    Lane ``i`` after ``reset(seed=s)`` is ``CarbonAwareDCEnv(<same arguments>,
    scenario_seeds=env.scenario_seeds)`` after ``reset(seed=s + i)``, and every autoreset is that
    env's ``reset()``: the same scenario draws (``scenario_order``), the same forecast errors (drawn
    per lane from the lane's own generator), the same observation, reward, ``info`` and repairs.
    ``reset(seed=[s0, s1, ...])`` seeds each lane. A ``gymnasium.vector.SyncVectorEnv`` of single
    envs with these arguments produces the same rollout.

    ## Spaces
    ``single_observation_space`` / ``single_action_space`` are the single env's;
    ``observation_space`` / ``action_space`` their ``batch_space`` (leading axis N). Observation
    arrays are views into one (N, D) float32 buffer per step (fresh every step), ``period`` (N, 1).

    ## Scenarios
    - ``preset`` (default ``"paper"``): lanes draw from a pool of pre-built preset scenarios.
      ``scenario_seeds`` (default: ``pool_size`` seeds drawn without replacement from 1000..999999
      with ``pool_seed``, sorted) are all built at construction; ``env.scenario_seeds`` lists them.
      The single env draws from all 999,000 training seeds; building a scenario costs about 1 ms
      (paper) to 4 ms (week), far more than a step, so the vector env draws from a fixed pool.
    - ``scenario``: every lane plays it on every reset; ``scenarios``: lane i plays ``scenarios[i]``.
    - ``seed_scenarios=False``: preset seed 0 only. ``scenario_order``: as the single env, per lane.

    ## Autoreset
    ``autoreset_mode`` (``metadata["autoreset_mode"]``): ``NEXT_STEP`` (default, as Gymnasium's own
    vector envs): the step after a lane's last period resets it, ignores its action and returns
    its first observation with reward 0, ``terminated=False`` and the reset ``info`` keys;
    ``SAME_STEP`` (used by the SB3 adapter): the terminating step resets the lane at once, returns
    the new first observation and puts the terminal one in ``info["final_obs"]`` (object array)
    and that step's info in ``info["final_info"]``; ``DISABLED``: ``reset(options={"reset_mask":
    mask})`` resets the lanes in ``mask``; stepping a finished lane raises ``RuntimeError``.

    ## info (batched)
    The single env's keys with a leading lane axis, each with a ``_key`` bool mask (Gymnasium's
    convention): ``period`` (N,), ``reward_terms`` {key: (N,)}, ``flows`` {key: (N, S), (N, K, S),
    (N, K)}, ``emissions_t``, ``emissions_total_t``, ``repairs`` {key: (N,) amount, 0 where not
    reported; ``start_ignored`` (N, J) bool}, ``action_mask`` (N, J, S+1), ``scenario_seed`` (N,)
    int64 (-1: a given scenario); lanes reset in this call carry ``scenario`` and
    ``forecast_level`` and no step keys. :func:`lane_info` gives one lane's info as the single env.

    ## Arguments
    ``num_envs``; ``scenario``, ``scenarios``, ``preset``, ``seed_scenarios``, ``scenario_seeds``,
    ``scenario_order``, ``pool_size``, ``pool_seed`` (above); ``forecast_horizon``,
    ``forecast_level``, ``forecast_noise`` and the penalty values as the single env;
    ``autoreset_mode``; ``max_pool_mib`` (refuse a pool whose observation rows exceed it);
    ``gather_thread`` (``"auto"``, True, False): copy the next observation's pre-built rows out of
    the pool on a second thread while the step's physics runs (numpy releases the GIL for the
    copy, memory-bound: 8.7 MB per step at N = 4096 on paper). ``"auto"`` (default) uses the thread
    when that copy is at least :data:`GATHER_THREAD_MIN_BYTES` (below it, handing work to a thread
    costs more than it saves); False: all in the calling thread. Same results either way.
    No rendering (``render_mode`` must be None).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        scenario: Scenario | None = None,
        scenarios: Sequence[Scenario] | None = None,
        preset: str | None = None,
        seed_scenarios: bool = True,
        scenario_seeds: Sequence[int] | None = None,
        scenario_order: str = "random",
        pool_size: int | None = None,
        pool_seed: int = 0,
        forecast_horizon: int = 24,
        forecast_level: str | float | ForecastModel | None = None,
        forecast_noise: float | None = None,
        voll_usd_per_mwh: float = DEFAULT_VOLL_USD_PER_MWH,
        carbon_overrun_usd_per_t: float = DEFAULT_CARBON_OVERRUN_USD_PER_T,
        soc_shortfall_usd_per_mwh: float = DEFAULT_SOC_SHORTFALL_USD_PER_MWH,
        mandatory_miss_usd: float = DEFAULT_MANDATORY_MISS_USD,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        max_pool_mib: float = 4096.0,
        gather_thread: bool | str = "auto",
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: must be an integer >= 1 (got {num_envs!r})")
        if render_mode is not None:
            raise ValueError(f"render_mode: the vector env does not render (got {render_mode!r})")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            choices = [m.value for m in AutoresetMode]
            raise ValueError(f"autoreset_mode: {autoreset_mode!r} not one of {choices}") from None
        if scenario_order not in SCENARIO_ORDERS:
            raise ValueError(f"scenario_order: {scenario_order!r} not one of {SCENARIO_ORDERS}")
        if int(forecast_horizon) < 0:
            raise ValueError(f"forecast_horizon: must be >= 0 (got {forecast_horizon!r})")
        if scenario is not None and scenarios is not None:
            raise ValueError("scenario, scenarios: give at most one")
        model = resolve_forecast(forecast_level, forecast_noise)
        self.num_envs = N = int(num_envs)
        if gather_thread not in (True, False, "auto"):
            raise ValueError(f"gather_thread: True, False or 'auto' (got {gather_thread!r})")
        self._gather: ThreadPoolExecutor | None = None
        self._kept: dict[str, np.ndarray] | None = None  # forecasts kept per lane (keep_forecasts)
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = None
        self.preset = preset
        self.scenario_order = scenario_order
        self.seed_scenarios = bool(seed_scenarios)
        self.forecast_model = model
        self.H = int(forecast_horizon)
        self.voll_usd_per_mwh = float(voll_usd_per_mwh)
        self.carbon_overrun_usd_per_t = float(carbon_overrun_usd_per_t)
        self.soc_shortfall_usd_per_mwh = float(soc_shortfall_usd_per_mwh)
        self.mandatory_miss_usd = float(mandatory_miss_usd)

        pool_scenarios, seeds = self._pool_scenarios(
            scenario, scenarios, scenario_seeds, pool_size, pool_seed
        )
        S, K, J, T = self.S, self.K, self.n_slots, self.T_max
        self.single_observation_space, self.single_action_space = single_spaces(S, K, J, T, self.H)
        self.observation_space = batch_space(self.single_observation_space, N)
        self.action_space = batch_space(self.single_action_space, N)
        self.obs_layout = flat_layout(self.single_observation_space)
        D = max(sl.stop for sl, _ in self.obs_layout.values())
        mib = len(pool_scenarios) * (T + 1) * D * 4 / 2**20
        if mib > max_pool_mib:
            raise ValueError(
                f"scenario_seeds: {len(pool_scenarios)} scenarios need {mib:,.0f} MiB of observation rows "
                f"(max_pool_mib={max_pool_mib:g}); pass fewer seeds or a smaller pool_size"
            )
        noisy = not model.is_exact
        self._pool = ScenarioPool(pool_scenarios, S, K, J, T, self.H, self.obs_layout, keep_windows=noisy)
        self._pool_seed_of = np.array(seeds, dtype=np.int64)  # pool index -> scenario seed (-1: given)
        self._alloc(N, noisy)
        if gather_thread is True or (
            gather_thread == "auto" and N * self._pool.D * 4 >= GATHER_THREAD_MIN_BYTES
        ):
            self._gather = ThreadPoolExecutor(1, thread_name_prefix="obs-gather")

    # ------------------------------------------------------------------ construction
    def _pool_scenarios(
        self,
        scenario: Scenario | None,
        scenarios: Sequence[Scenario] | None,
        scenario_seeds: Sequence[int] | None,
        pool_size: int | None,
        pool_seed: int,
    ) -> tuple[list[Scenario], list[int]]:
        """The pool's scenarios and their seeds (-1: given); sets the sizes and the lane choice rule."""
        given = [scenario] if scenario is not None else list(scenarios) if scenarios is not None else None
        preset = self.preset
        if given is not None:
            if scenarios is not None and len(given) != self.num_envs:
                raise ValueError(f"scenarios: need one per lane ({self.num_envs}), got {len(given)}")
            for i, sc in enumerate(given):
                if not isinstance(sc, Scenario):
                    raise ScenarioError(f"scenarios[{i}]: must be a Scenario (got {type(sc).__name__})")
        if preset is None and given is None:
            preset = self.preset = "paper"
        if preset is not None and preset not in PRESETS:
            raise ScenarioError(f"preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        if preset is not None:
            size = PRESETS[preset]
            self.S, self.K, self.n_slots, self.T_max = size["S"], size["K"], size["J"], size["T"]
        else:
            self.S, self.K = given[0].S, given[0].K
            self.n_slots, self.T_max = max(sc.J for sc in given), max(sc.T for sc in given)
        if given is not None:
            for i, sc in enumerate(given):
                self._check_sizes(sc, f"scenarios[{i}]" if scenarios is not None else "scenario")
            self._given = True
            self._per_lane = scenarios is not None
            self.scenario_seeds: tuple[int, ...] = ()
            return given, [-1] * len(given)
        self._given = False
        if not self.seed_scenarios:
            seeds = [0]
        elif scenario_seeds is not None:
            seeds = [int(s) for s in scenario_seeds]
            if not seeds:
                raise ValueError("scenario_seeds: empty")
            if any(s < 0 for s in seeds):
                raise ValueError(f"scenario_seeds: must be integers >= 0 (got {min(seeds)})")
        else:
            if pool_size is not None and int(pool_size) < 1:
                raise ValueError(f"pool_size: must be >= 1 (got {pool_size!r})")
            size = default_pool_size(preset, self.H) if pool_size is None else int(pool_size)
            seeds = list(draw_pool_seeds(size, pool_seed))
        self.scenario_seeds = tuple(seeds)
        unique = sorted(set(seeds))
        where = {s: p for p, s in enumerate(unique)}
        self._seed_pool = np.array([where[s] for s in seeds], dtype=np.int64)
        built = [make_scenario(preset, s) for s in unique]
        for s, sc in zip(unique, built, strict=True):
            self._check_sizes(sc, f"scenario_seeds (seed {s})")
        return built, unique

    def _check_sizes(self, sc: Scenario, field: str) -> None:
        where = f"preset {self.preset!r} has" if self.preset is not None else "the env's sizes have"
        if sc.S != self.S:
            raise ScenarioError(f"{field}.S: {where} {self.S} sites (got {sc.S})")
        if sc.K != self.K:
            raise ScenarioError(f"{field}.K: {where} {self.K} inference classes (got {sc.K})")
        if sc.J > self.n_slots:
            raise ScenarioError(f"{field}.J: {where} {self.n_slots} job slots (got {sc.J} jobs)")
        if sc.T > self.T_max:
            raise ScenarioError(f"{field}.T: {where} at most {self.T_max} periods (got {sc.T})")

    def _alloc(self, N: int, noisy: bool) -> None:
        """Per-lane state and the lane copies of the scenario constants (set at each lane's reset),
        lane axis last (``envs/vector_dynamics.py`` says why)."""
        S, K, J, T1 = self.S, self.K, self.n_slots, self.T_max + 1
        pool = self._pool
        self._noisy = noisy
        self._lanes = np.arange(N)
        # Flat index of (lane n, period t, site s) in a (N, rows, S) array is
        # (n * rows + t) * S + s: per lane its periods are adjacent (cache-friendly range updates).
        self._site_of = np.arange(S)[:, None]
        # ... and the (S, N) cells of period 0 in the (N, T_max, S) and (N, T_max + 1, S) tables
        self._fixed_at0 = self._lanes * self.T_max * S + self._site_of
        self._free_at0 = self._lanes * T1 * S + self._site_of
        self._p = np.zeros(N, dtype=np.int64)
        self._t = np.zeros(N, dtype=np.int64)
        self._T = np.ones(N, dtype=np.int64)
        self._soc = np.zeros((S, N))
        self._emissions = np.zeros(N)
        self._started = np.zeros((J, N), dtype=bool)
        self._start_t = np.full((J, N), -1, dtype=np.int64)
        self._site = np.full((J, N), -1, dtype=np.int64)
        self._missed = np.zeros((J, N), dtype=bool)
        self._free = np.zeros((N, T1, S))  # GPUs not held by running jobs, per period (row T: terminal)
        self._fixed = np.zeros((N, self.T_max, S))  # base IT + running jobs, MW, per period
        self._free_now = np.zeros((S, N))
        self._period_buf = np.empty((N, pool.period_rows.shape[1]))  # the step's gather of period_rows
        self._period_tbuf = np.empty_like(self._period_buf)  # the same, on the gather thread
        self._period_next: tuple[np.ndarray, Future] | None = None  # (guessed rows, their gather)
        self._mask = np.zeros((S + 1, J, N), dtype=bool)
        self._done = np.zeros(N, dtype=bool)
        self._site_c = np.zeros((len(SITE_FIELDS), S, N))
        self._job_int = np.zeros((3, J, N), dtype=np.int64)  # duration, release, latest start
        self._job_float = np.zeros((2, J, N))  # gpus, value_usd
        self._present = np.zeros((J, N), dtype=bool)
        self._mandatory = np.zeros((J, N), dtype=bool)
        self._elig = np.zeros((J, S, N), dtype=bool)
        self._job_mw = np.zeros((J, S, N))
        self._routes = np.zeros((K, S, N))
        self._revenue = np.zeros((K, N))
        self._penalty = np.zeros((K, N))
        self._dt = np.ones(N)
        self._inv_T = np.ones(N)
        self._budget = np.full(N, np.nan)
        self._budgets_positive = False  # every lane has a budget > 0 (carbon_features' short path)
        self._carbon_price = np.zeros(N)
        self._tol_gpus = np.zeros(N)
        self._tol_mw = np.zeros(N)
        self._row_base = np.zeros(N, dtype=np.int64)
        self._lane_static = np.zeros((N * T1, pool.D), dtype=np.float32) if noisy else None
        self._static = self._lane_static if noisy else pool.static
        self._rngs: list[np.random.Generator | None] = [None] * N
        self._unseeded = True  # some lane has no generator yet
        n_seeds = max(len(self.scenario_seeds), 1)
        # Scenario order state per lane: the pass's order and position ("cycle", "shuffle"), the
        # buffer of pre-drawn seed indices and its position ("random", exact forecasts).
        order = self.scenario_order if not self._given else "random"
        self._orders = np.tile(np.arange(n_seeds), (N, 1)) if order != "random" else None
        self._pos = np.full(N, n_seeds, dtype=np.int64)
        self._buf = np.zeros((N, DRAW_BUFFER), dtype=np.int64) if order == "random" else None
        self._buf_pos = np.full(N, DRAW_BUFFER, dtype=np.int64)
        self._started_ever = False  # reset() called at least once
        self._stale_rows = 0  # prefetched observation rows copied again (a wrong guess; tests read it)
        self._stale_periods = 0  # prefetched period rows of the physics gathered again (the same)

    # ------------------------------------------------------------------ lanes
    def lane_scenario(self, i: int) -> Scenario:
        """The scenario lane ``i`` is playing."""
        return self._pool.scenarios[int(self._p[i])]

    @property
    def pool_nbytes(self) -> int:
        """Bytes of the scenario pool (shared by all lanes)."""
        return self._pool.nbytes

    # ------------------------------------------------------------------ the operator's view, batched
    # What the safety layer (agents/safety_vector.py) reads: the single env's forecast() and
    # state_snapshot() for every lane at once, and which pool scenario each lane plays.
    @property
    def pool_scenarios(self) -> tuple[Scenario, ...]:
        """Every scenario a lane may play; lane i plays ``pool_scenarios[lane_scenario_index()[i]]``."""
        return self._pool.scenarios

    def lane_scenario_index(self) -> np.ndarray:
        """(N,) int64: each lane's index into ``pool_scenarios`` (a copy)."""
        return self._p.copy()

    def keep_forecasts(self) -> None:
        """Keep each lane's drawn forecasts from the next reset on, so that :meth:`forecasts` can return
        them with noisy forecasts (exact ones are read from the pool and need nothing).

        The drawn windows are otherwise used once, to write the float32 observation rows; keeping
        them costs ``(T_max+1)·(5·S + K)·(H+1)`` float64 per lane (15 MiB per key at N = 1024 on
        paper), so it is opt-in. ``_reset_lanes`` stores each lane's draw as it makes it. Call it
        before the ``reset`` whose forecasts are needed: lanes reset earlier have none kept.
        """
        if not self._noisy or self._kept is not None:
            return
        N, T1, H1 = self.num_envs, self.T_max + 1, self.H + 1
        rows = {key: self.K if key == "demand" else self.S for key in FORECAST_KEYS}
        self._kept = {key: np.zeros((N, T1, rows[key], H1)) for key in FORECAST_KEYS}
        self._kept_ok = np.zeros(N, dtype=bool)

    def forecasts(self) -> dict[str, np.ndarray]:
        """Every lane's ``CarbonAwareDCEnv.forecast()`` at its current period, unscaled float64: the
        same keys (``price_import``, ``price_export``, ``carbon_intensity``, ``renewable_mw``,
        ``cooling`` (N, S, H+1), ``demand_gpus`` (N, K, H+1)), column 0 the current period, the last
        period repeated beyond the lane's horizon. Noisy forecasts need :meth:`keep_forecasts`."""
        if not self._started_ever:
            raise RuntimeError("call reset() first")
        t, H1 = self._t, self.H + 1
        if not self._noisy:
            # The exact window of period t is the series at t .. t+H, the last period repeated.
            period = np.minimum(t[:, None] + np.arange(H1), self._T[:, None] - 1)
            cols = self._p[:, None] * self.T_max + period
            series = self._pool.series.take(cols, axis=2)  # (6, S, N, H+1)
            out = {}
            for key in FORECAST_KEYS:
                if key == "demand":
                    win = self._pool.demand.take(cols, axis=1)  # (K, N, H+1)
                else:
                    win = series[SERIES_FIELDS.index(key)]
                out[ALIASES.get(key, key)] = np.ascontiguousarray(win.transpose(1, 0, 2))
            return out
        if self._kept is None or not self._kept_ok.all():
            raise RuntimeError(
                "forecasts(): noisy forecasts are kept only after keep_forecasts(); call it, then reset()"
            )
        return {ALIASES.get(key, key): self._kept[key][self._lanes, t] for key in FORECAST_KEYS}

    def state_snapshots(self) -> dict[str, np.ndarray]:
        """Every lane's ``CarbonAwareDCEnv.state_snapshot()`` as arrays (copies): ``period`` (N,) int64,
        ``soc_mwh`` (N, S) MWh at the end of period - 1, ``emissions_t`` (N,) tCO2 emitted in periods
        0 .. period-1, ``start_period`` and ``start_site`` (N, J) int64 of every started job slot (-1:
        not started). :meth:`state_snapshot` gives one lane's as an ``OperatingState``."""
        if not self._started_ever:
            raise RuntimeError("call reset() first")
        return {
            "period": self._t.copy(),
            "soc_mwh": self._soc.T.copy(),
            "emissions_t": self._emissions.copy(),
            "start_period": self._start_t.T.copy(),
            "start_site": self._site.T.copy(),
        }

    def state_snapshot(self, i: int) -> OperatingState:
        """Lane ``i``'s ``OperatingState``, as ``CarbonAwareDCEnv.state_snapshot()`` of the single env."""
        if not self._started_ever:
            raise RuntimeError("call reset() first")
        i = int(i)
        slots = np.flatnonzero(self._start_t[:, i] >= 0)
        return OperatingState(
            period=int(self._t[i]),
            soc_mwh=tuple(float(x) for x in self._soc[:, i]),
            job_starts=tuple((int(j), int(self._site[j, i]), int(self._start_t[j, i])) for j in slots),
            emissions_t=float(self._emissions[i]),
        )

    def _choose(self, n: int, restart: bool) -> int:
        """Pool index of lane ``n``'s next scenario, drawing from its generator now
        (``CarbonAwareDCEnv._next_seed``; used when forecast draws follow on the same generator)."""
        n_seeds = len(self.scenario_seeds)
        if self.scenario_order == "random":
            return int(self._seed_pool[int(self._rngs[n].integers(n_seeds))])
        if restart or self._pos[n] >= n_seeds:
            if self.scenario_order == "shuffle":
                self._orders[n] = self._rngs[n].permutation(n_seeds)
            self._pos[n] = 0
        self._pos[n] += 1
        return int(self._seed_pool[int(self._orders[n, self._pos[n] - 1])])

    def _choose_all(self, idx: np.ndarray, restart: np.ndarray) -> np.ndarray:
        """Pool indices of the next scenarios of lanes ``idx`` (exact forecasts: nothing else draws
        from the lanes' generators). ``"random"`` reads per-lane buffers of ``DRAW_BUFFER`` draws
        made with one ``integers(n, size=DRAW_BUFFER)`` call, which yields exactly the values (and
        leaves the generator in the state) of as many single ``integers(n)`` calls."""
        n_seeds = len(self.scenario_seeds)
        if self.scenario_order == "random":
            self._refill_draws(idx)
            k = self._buf[idx, self._buf_pos[idx]]
            self._buf_pos[idx] += 1
            return self._seed_pool[k]
        fresh = idx[restart | (self._pos[idx] >= n_seeds)]
        if self.scenario_order == "shuffle":
            for n in fresh.tolist():
                self._orders[n] = self._rngs[n].permutation(n_seeds)
        self._pos[fresh] = 0
        k = self._orders[idx, self._pos[idx]]
        self._pos[idx] += 1
        return self._seed_pool[k]

    def _peek_choices(self, idx: np.ndarray) -> np.ndarray | None:
        """Pool indices of the scenarios lanes ``idx`` will play after their next reset, without
        consuming the draws (exact forecasts, no reseed), or None where that is not known cheaply
        ("cycle" / "shuffle" order). "random" refills an empty draw buffer now; ``_choose_all`` then
        reads the same values it would have drawn (nothing else draws from the generator)."""
        if self._given:
            return idx.copy() if self._per_lane else np.zeros(len(idx), dtype=np.int64)
        if not self.seed_scenarios:
            return np.zeros(len(idx), dtype=np.int64)
        if self.scenario_order != "random" or self._unseeded:
            return None
        self._refill_draws(idx)
        return self._seed_pool[self._buf[idx, self._buf_pos[idx]]]

    def _refill_draws(self, idx: np.ndarray) -> None:
        """Refill the empty draw buffers of lanes ``idx`` ("random" order): ``DRAW_BUFFER`` draws from
        one ``integers(n, size=DRAW_BUFFER)`` call, the values of as many single calls."""
        empty = idx[self._buf_pos[idx] >= DRAW_BUFFER]
        for n in empty.tolist():
            self._buf[n] = self._rngs[n].integers(len(self.scenario_seeds), size=DRAW_BUFFER)
        self._buf_pos[empty] = 0

    def _reset_lanes(self, idx: np.ndarray, seeds: Sequence[int | None] | None) -> None:
        """Start a new episode in lanes ``idx``: seed their generators (``seeds[n]`` not None), draw
        their scenarios and forecasts as the single env's reset does; then set all their state."""
        pool, T1 = self._pool, self.T_max + 1
        restart = np.zeros(len(idx), dtype=bool)
        if seeds is not None or self._unseeded:
            for k, n in enumerate(idx.tolist()):
                seed = None if seeds is None else seeds[n]
                if seed is not None or self._rngs[n] is None:
                    self._rngs[n] = seeding.np_random(seed)[0]
                    self._buf_pos[n] = DRAW_BUFFER
                    restart[k] = seed is not None
            self._unseeded = any(rng is None for rng in self._rngs)
        if self._given:
            ps = idx.copy() if self._per_lane else np.zeros(len(idx), dtype=np.int64)
        elif not self.seed_scenarios:
            ps = np.zeros(len(idx), dtype=np.int64)
        elif not self._noisy:
            ps = self._choose_all(idx, restart)
        else:
            ps = np.array([self._choose(n, r) for n, r in zip(idx.tolist(), restart.tolist(), strict=True)])
        if self._noisy:
            for n, p in zip(idx.tolist(), ps.tolist(), strict=True):
                sc = pool.scenarios[p]
                windows = self.forecast_model.draw(self._rngs[n], pool.windows[p], period_h=float(pool.dt[p]))
                if self._kept is not None:  # keep_forecasts(): the draw is kept for forecasts()
                    for key, win in windows.items():
                        self._kept[key][n, : win.shape[0]] = win
                    self._kept_ok[n] = True
                rows = self._lane_static[n * T1 : n * T1 + sc.T + 1]
                rows[:] = pool.static[p * T1 : p * T1 + sc.T + 1]
                pool.write_forecasts(rows, windows, sc)
        lanes: Any = slice(None) if len(idx) == self.num_envs else idx  # a slice writes faster
        self._p[lanes] = ps
        self._site_c[:, :, lanes] = pool.site[:, :, ps]
        self._job_int[:, :, lanes] = pool.job_int[:, :, ps]
        self._job_float[:, :, lanes] = pool.job_float[:, :, ps]
        self._present[:, lanes] = pool.present[:, ps]
        self._mandatory[:, lanes] = pool.mandatory[:, ps]
        self._elig[:, :, lanes] = pool.eligible[:, :, ps]
        self._job_mw[:, :, lanes] = pool.job_mw[:, :, ps]
        self._routes[:, :, lanes] = pool.routes[:, :, ps]
        self._revenue[:, lanes] = pool.revenue[:, ps]
        self._penalty[:, lanes] = pool.penalty[:, ps]
        for name in ("dt", "T", "inv_T", "budget", "carbon_price", "tol_gpus", "tol_mw"):
            getattr(self, f"_{name}")[lanes] = getattr(pool, name)[ps]
        self._budgets_positive = bool((self._budget > 0.0).all())  # NaN (no budget) is not
        cap = pool.site[_I["cap"]][:, ps]
        self._t[lanes] = 0
        self._soc[:, lanes] = pool.site[_I["soc_init"]][:, ps]
        self._emissions[lanes] = 0.0
        self._started[:, lanes] = False
        self._start_t[:, lanes] = -1
        self._site[:, lanes] = -1
        self._missed[:, lanes] = False
        self._free[lanes] = cap.T[:, None, :]
        self._fixed[lanes] = pool.site[_I["base_it"]][:, ps].T[:, None, :]
        self._free_now[:, lanes] = cap
        self._row_base[lanes] = (idx if self._noisy else ps) * T1
        self._mask[:, :, lanes] = self._start_mask(np.zeros(len(idx), dtype=np.int64), lanes)
        self._done[lanes] = False

    def _start_mask(self, t: np.ndarray, sel: Any = slice(None)) -> np.ndarray:
        """(S+1, J, n) bool: hold always; start at s iff waiting, released, eligible and fitting in the
        GPUs free at period ``t`` (``CarbonAwareDCEnv._action_mask``)."""
        ready = self._present[:, sel] & ~self._started[:, sel]
        ready &= (self._job_int[1][:, sel] <= t) & (t <= self._job_int[2][:, sel]) & (t < self._T[sel])
        mask = np.empty((self.S + 1, self.n_slots, len(t)), dtype=bool)
        mask[0] = True
        fits = self._job_float[0][:, None, sel] <= self._free_now[None, :, sel]
        np.logical_and(ready[:, None, :] & self._elig[:, :, sel], fits, out=mask[1:].transpose(1, 0, 2))
        return mask

    def action_mask(self) -> np.ndarray:
        """(N, J, S+1) bool: every lane's start mask for its current period (``info["action_mask"]``; a
        view of an array the env replaces, never changes, after each step)."""
        return self._mask.transpose(2, 1, 0)

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every lane (or the lanes of ``options["reset_mask"]``); ``seed`` an int (lane i gets
        ``seed + i``), one seed per lane, or None (keep each lane's generator)."""
        options = dict(options or {})
        reset_mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(f"reset options: only 'reset_mask' is supported (got {sorted(options)})")
        N = self.num_envs
        if seed is None:
            seeds = None
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
            seeds = [int(seed) + i for i in range(N)]
        else:
            seeds = list(seed)
            if len(seeds) != N:
                raise ValueError(f"seed: need one seed per lane ({N}), got {len(seeds)}")
        if reset_mask is None:
            lanes = np.ones(N, dtype=bool)
        else:
            lanes = np.asarray(reset_mask)
            if lanes.shape != (N,) or lanes.dtype != bool:
                raise ValueError(f"reset options: reset_mask must be a bool array of shape ({N},)")
            if not self._started_ever and not lanes.all():
                raise ValueError("reset options: the first reset must reset every lane")
        idx = np.flatnonzero(lanes)
        self._mask = self._mask.copy()  # the last step's info holds a view of the old one
        self._reset_lanes(idx, seeds)
        self._started_ever = True
        flat = self._observe_flat()
        info = {"period": np.zeros(N, dtype=np.int64), "_period": lanes.copy()}
        info.update(self._reset_info(lanes))
        info["action_mask"], info["_action_mask"] = self.action_mask(), lanes.copy()
        return self._output_obs(flat), info

    def _reset_info(self, lanes: np.ndarray) -> dict[str, Any]:
        """The reset-only info keys for the lanes in ``lanes`` (bool (N,))."""
        names = np.full(self.num_envs, None, dtype=object)
        names[lanes] = self._pool.names[self._p[lanes]]
        level = np.full(self.num_envs, None, dtype=object)
        level[lanes] = self.forecast_model.name
        return {
            "scenario_seed": self._pool_seed_of[self._p],
            "_scenario_seed": lanes.copy(),
            "scenario": names,
            "_scenario": lanes.copy(),
            "forecast_level": level,
            "_forecast_level": lanes.copy(),
        }

    def step(self, actions: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One period in every lane (autoreset per ``autoreset_mode``); ``actions`` a Dict of batched
        arrays: ``start`` (N, J) int, ``route`` (N, K, S), ``battery`` and ``generator`` (N, S)."""
        try:
            start = np.asarray(actions["start"])
            route = np.asarray(actions["route"], dtype=np.float64)
            battery = np.asarray(actions["battery"], dtype=np.float64)
            generator = np.asarray(actions["generator"], dtype=np.float64)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"actions: need a dict with start, route, battery, generator ({exc!r})") from exc
        N, S, K, J = self.num_envs, self.S, self.K, self.n_slots
        for name, arr, shape in (
            ("start", start, (N, J)),
            ("route", route, (N, K, S)),
            ("battery", battery, (N, S)),
            ("generator", generator, (N, S)),
        ):
            if arr.shape != shape:
                raise ValueError(f"actions['{name}']: shape {arr.shape}, expected {shape}")
        kind = start.dtype.kind
        if kind == "u":
            start = self._valid_rows(start, start <= np.iinfo(np.int64).max, "start", "choice too large")
        elif kind == "f":
            whole = np.isfinite(start) & (start == np.floor(start)) & (np.abs(start) <= 2**31)
            start = self._valid_rows(start, whole, "start", "not a whole-number choice (0 hold, 1+s site s)")
        elif kind != "i":
            raise ValueError(
                f"actions['start']: choices must be integers (0 = hold, 1+s = site s); got {start.dtype}"
            )
        start = start.astype(np.int64, copy=False)
        parts = [route.reshape(N, -1), battery, generator]
        for k, part in enumerate(parts):
            if part.min() >= -ACTION_ABS_MAX and part.max() <= ACTION_ABS_MAX:  # False for NaN too
                continue
            if not np.isfinite(part).all():
                part = self._valid_rows(part, np.isfinite(part), "route, battery or generator", "NaN or inf")
            if np.abs(part).max() > ACTION_ABS_MAX:
                part = self._valid_rows(
                    part,
                    np.abs(part) <= ACTION_ABS_MAX,
                    "route, battery or generator",
                    f"beyond ±{ACTION_ABS_MAX:g}",
                )
            parts[k] = part
        route, battery, generator = parts[0].reshape(N, K, S), parts[1], parts[2]
        return self._advance(
            np.ascontiguousarray(start.T),
            np.ascontiguousarray(route.transpose(1, 2, 0)),
            np.ascontiguousarray(battery.T),
            np.ascontiguousarray(generator.T),
        )

    def _valid_rows(self, arr: np.ndarray, ok: np.ndarray, what: str, problem: str) -> np.ndarray:
        """``arr`` (N, ...) where every lane with a value not ``ok`` is a lane about to be reset (its
        action is ignored, as a ``SyncVectorEnv`` ignores it): those rows zeroed. A bad value in any
        other lane raises ValueError, as the single env would."""
        bad = ~ok.reshape(len(ok), -1).all(axis=1)
        pending = self._done & (self.autoreset_mode == AutoresetMode.NEXT_STEP)
        if (bad & ~pending).any():
            lanes = np.flatnonzero(bad & ~pending)[:5].tolist()
            raise ValueError(f"actions['{what}']: {problem} (lanes {lanes})")
        arr = arr.copy()
        arr[bad] = 0
        return arr

    def _advance(
        self, start: np.ndarray, route: np.ndarray, battery: np.ndarray, generator: np.ndarray
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Simulate one period in every lane, then autoreset (see the class docstring). Actions lane
        axis last: ``start`` (J, N), ``route`` (K, S, N), ``battery`` and ``generator`` (S, N)."""
        if not self._started_ever:
            raise RuntimeError("call reset() first")
        mode = self.autoreset_mode
        resetting = self._done.copy()
        if mode == AutoresetMode.DISABLED and resetting.any():
            lanes = np.flatnonzero(resetting)[:5].tolist()
            raise RuntimeError(f"lanes {lanes} are done: call reset(options={{'reset_mask': ...}}) first")
        periods, self._period_next = self._period_next, None  # gathered during the previous step
        prefetch = self._prefetch_rows()
        reward, terminated, info = self._physics(start, route, battery, generator, periods)
        N = self.num_envs
        terminal = final_info = None
        every = np.ones(N, dtype=bool)
        if mode == AutoresetMode.SAME_STEP:
            resetting = terminated.copy()
            if resetting.any():
                terminal = self._observe_flat(np.flatnonzero(resetting))
                terminal_t = self._t[resetting].copy()
                final_info = copy_info(info)
                final_info["action_mask"], final_info["_action_mask"] = self.action_mask().copy(), every
                final_info["scenario_seed"] = self._pool_seed_of[self._p]
                final_info["_scenario_seed"] = every
        if resetting.any():
            idx = np.flatnonzero(resetting)
            self._reset_lanes(idx, None)
            if mode == AutoresetMode.NEXT_STEP:
                reward[idx] = 0.0
                terminated[idx] = False
            clear_lanes(info, idx)
            info.update(self._reset_info(resetting))
        info["action_mask"], info["_action_mask"] = self.action_mask(), every
        info["scenario_seed"], info["_scenario_seed"] = self._pool_seed_of[self._p], every
        flat = self._observe_flat(prefetched=prefetch)
        if terminal is not None:
            final = np.full(N, None, dtype=object)
            for i, row in zip(
                np.flatnonzero(resetting).tolist(), self._lane_obs(terminal, terminal_t), strict=True
            ):
                final[i] = row
            info["final_obs"], info["_final_obs"] = final, resetting.copy()
            info["final_info"], info["_final_info"] = final_info, resetting.copy()
        self._done = terminated.copy() if mode != AutoresetMode.SAME_STEP else np.zeros(N, dtype=bool)
        return self._output_obs(flat), reward, terminated, np.zeros(N, dtype=bool), info

    def _prefetch_rows(self) -> tuple[np.ndarray, Future] | None:
        """Start copying the pre-built observation rows of every lane's next period on the gather
        thread (for lanes reset in this step: their next scenario's first row, where
        :meth:`_peek_choices` knows it); ``_observe_flat`` waits for it and re-copies the lanes whose
        row turned out different. None without the thread."""
        if self._gather is None:
            return None
        rows = self._row_base + np.minimum(self._t + 1, self._T)
        cols = self._p * self.T_max + np.minimum(self._t + 1, self._T - 1)  # next step's period rows
        mode = self.autoreset_mode
        if not self._noisy and mode != AutoresetMode.DISABLED:
            # Lanes reset in this step start at row 0 of their next scenario, known beforehand with
            # exact forecasts (noisy ones rewrite the lane's rows at the reset).
            resetting = self._done if mode == AutoresetMode.NEXT_STEP else self._t + 1 >= self._T
            if resetting.any():
                idx = np.flatnonzero(resetting)
                nxt = self._peek_choices(idx)
                if nxt is not None:
                    rows[idx] = nxt * (self.T_max + 1)
                    cols[idx] = nxt * self.T_max
        out = np.empty((self.num_envs, self._static.shape[1]), dtype=self._static.dtype)
        future = self._gather.submit(self._static.take, rows, 0, out, "clip")
        # after the observation rows (which this step waits for): the next step's period rows
        self._period_next = (cols, self._gather.submit(self._pool.gather_periods, cols, self._period_tbuf))
        return rows, future

    def close(self, **kwargs: Any) -> None:
        """Stop the gather thread (the env can still be used: it then gathers in the calling thread)."""
        if self._gather is not None:
            self._gather.shutdown(wait=True)
            self._gather = None
        super().close(**kwargs)

    # ------------------------------------------------------------------ observation output
    def _output_obs(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The batched Dict observation: views into ``flat`` (N, D) plus ``period`` (N, 1)."""
        obs = {"period": self._t[:, None].copy()}
        n = flat.shape[0]
        for key, (sl, shape) in self.obs_layout.items():
            obs[key] = flat[:, sl].reshape(n, *shape)
        return {key: obs[key] for key in self.single_observation_space.spaces}

    def _lane_obs(self, rows: np.ndarray, periods: np.ndarray) -> list[dict[str, np.ndarray]]:
        """One single-env Dict observation per row of ``rows`` at ``periods`` (terminal observations)."""
        out = []
        for row, t in zip(rows, periods.tolist(), strict=True):
            obs = {key: row[sl].reshape(shape) for key, (sl, shape) in self.obs_layout.items()}
            obs["period"] = np.array([t], dtype=np.int64)
            out.append({key: obs[key] for key in self.single_observation_space.spaces})
        return out


__all__ = ["CarbonAwareDCVectorEnv", "default_pool_size", "draw_pool_seeds", "lane_info", "single_spaces"]
