"""The scenario pool of :class:`envs.vector.CarbonAwareDCVectorEnv`: every scenario a lane may play,
pre-built once into stacked arrays so that a lane's reset is a few array copies, not a scenario draw.

For each scenario ``p`` of the pool this module computes what ``CarbonAwareDCEnv`` computes at reset
(``envs/dc_env.py``: scaled forecast windows, the job-feature table as if no job had started, the
time features, site / job / class constants, the repair tolerances), with the same expressions on
arrays of the same shapes, so that the float32 observation rows are bit-for-bit the single env's.

Layout (``P`` scenarios, ``T1 = T_max + 1`` observation rows per scenario, ``D`` flat features):

- ``static`` (P·T1, D) float32: the flat observation (``FlatObsActionWrapper`` layout) of period t of
  scenario p at row ``p·T1 + t``, with the dynamic parts (``soc``, ``free_gpus``, ``carbon`` and the
  rows of started jobs) still to be written by the step;
- ``series`` (6, S, P·T_max) float64 at column ``p·T_max + t``: cooling, renewables, import price,
  export price, carbon intensity and the export cap (the export limit where the export price is
  positive, else 0); ``demand`` (K, P·T_max); ``period_rows`` (P·T_max, 6·S + K) the same values
  one row per (scenario, period) (what the step reads);
- ``site`` (len(SITE_FIELDS), S, P), job tables (J, P) and (J, S, P), class tables (K, P), (K, S, P),
  scalars (P,): the pool index last, as the lane index of the vector env's arrays
  (``envs/vector_dynamics.py`` says why).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from envs import dynamics
from envs.dc_env import FORECAST_KEYS, JOB_FEATURES, OBS_BOUND, PRICE_SCALE_USD_PER_MWH
from envs.forecast import ALIASES
from envs.presets import PRESETS
from envs.scenario import Scenario

SITE_FIELDS = (
    "cap",
    "gpu_mw",
    "base_it",
    "gen_cap",
    "gen_cost",
    "gen_em",
    "charge_lim",
    "discharge_lim",
    "eta_c",
    "eta_d",
    "soc_min",
    "soc_max",
    "soc_init",
    "degr",
    "imp_lim",
    "cap_safe",
    "soc_scale",
)
"""Rows of ``ScenarioPool.site``: per-site constants in the units of ``envs.scenario.Site``
(GPUs, MW per GPU, MW, USD/MWh, tCO2/MWh, MWh), ``cap_safe`` = capacity or 1 where 0, ``soc_scale`` =
1 / battery capacity (0 where the capacity is 0)."""
SERIES_FIELDS = ("cooling", "renewable", "price_import", "price_export", "carbon_intensity", "export_cap")
"""Rows of ``ScenarioPool.series`` (per period and site)."""
JOB_INT_FIELDS = ("duration", "release", "latest")
JOB_FLOAT_FIELDS = ("gpus", "value")
N_JOB_FEATURES = len(JOB_FEATURES)


TRAINING_SEEDS = range(1000, 1_000_000)
"""The single env's default ``scenario_seeds`` (0..999 are held out); the default pool is drawn from it."""
DEFAULT_POOL_SIZE = 1024
POOL_BUDGET_MIB = 256.0
"""The default pool holds ``min(DEFAULT_POOL_SIZE, as many scenarios as fit in this many MiB of
observation rows)``: 1024 for paper, 293 for week, 90 for large."""


def default_pool_size(preset: str, forecast_horizon: int = 24) -> int:
    """The default pool size of ``preset``: ``DEFAULT_POOL_SIZE``, or fewer so that the pool's
    observation rows fit in ``POOL_BUDGET_MIB``."""
    size = PRESETS[preset]
    obs = single_spaces(size["S"], size["K"], size["J"], size["T"], int(forecast_horizon))[0]
    row_bytes = (size["T"] + 1) * max(sl.stop for sl, _ in flat_layout(obs).values()) * 4
    return min(DEFAULT_POOL_SIZE, max(1, int(POOL_BUDGET_MIB * 2**20 // row_bytes)))


def draw_pool_seeds(size: int, pool_seed: int = 0) -> tuple[int, ...]:
    """``size`` preset seeds drawn without replacement from ``TRAINING_SEEDS`` with generator seed
    ``pool_seed``, sorted: the default ``scenario_seeds`` of the vector env."""
    rng = np.random.default_rng(int(pool_seed))
    drawn = rng.choice(len(TRAINING_SEEDS), size=min(int(size), len(TRAINING_SEEDS)), replace=False)
    return tuple(sorted(int(TRAINING_SEEDS[i]) for i in drawn))


def single_spaces(S: int, K: int, J: int, T: int, H: int) -> tuple[spaces.Dict, spaces.Dict]:
    """The single env's ``(observation_space, action_space)`` for these sizes (``envs/dc_env.py``)."""
    b, f32, H1 = OBS_BOUND, np.float32, H + 1
    action = spaces.Dict(
        {
            "start": spaces.MultiDiscrete(np.full(J, S + 1, dtype=np.int64)),
            "route": spaces.Box(0.0, 1.0, (K, S), np.float64),
            "battery": spaces.Box(-1.0, 1.0, (S,), np.float64),
            "generator": spaces.Box(0.0, 1.0, (S,), np.float64),
        }
    )
    obs = spaces.Dict(
        {
            "period": spaces.Box(0, T, (1,), np.int64),
            "time": spaces.Box(-1.0, 1.0, (3,), f32),
            "soc": spaces.Box(0.0, 1.0, (S,), f32),
            "free_gpus": spaces.Box(0.0, 1.0, (S,), f32),
            "jobs": spaces.Box(0.0, b, (J, N_JOB_FEATURES + S), f32),
            "carbon": spaces.Box(0.0, b, (3,), f32),
            "price_import": spaces.Box(-b, b, (S, H1), f32),
            "price_export": spaces.Box(-b, b, (S, H1), f32),
            "carbon_intensity": spaces.Box(0.0, b, (S, H1), f32),
            "renewable": spaces.Box(0.0, b, (S, H1), f32),
            "cooling": spaces.Box(0.0, b, (S, H1), f32),
            "demand": spaces.Box(0.0, b, (K, H1), f32),
        }
    )
    return obs, action


def flat_layout(obs_space: dict) -> dict[str, tuple[slice, tuple[int, ...]]]:
    """``key -> (slice, shape)`` of the flat observation: the Dict keys in the space's order without
    ``period``, as ``envs.wrappers.FlatObsActionWrapper.obs_layout``."""
    layout, offset = {}, 0
    for key, box in obs_space.items():
        if key == "period":
            continue
        size = int(np.prod(box.shape))
        layout[key] = (slice(offset, offset + size), tuple(box.shape))
        offset += size
    return layout


def _series_name(key: str) -> str:
    return ALIASES.get(key, key)


class ScenarioPool:
    """Stacked per-scenario constants of ``scenarios`` (see the module docstring).

    ``sizes`` are the env's shapes (S, K, job slots J, longest horizon T); ``H`` the forecast
    horizon; ``layout`` the flat observation layout; ``keep_windows``: keep each scenario's exact
    forecast windows (float64, (T+1, rows, H+1) per key) for per-lane noisy forecast draws.
    """

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        S: int,
        K: int,
        J: int,
        T_max: int,
        H: int,
        layout: dict[str, tuple[slice, tuple[int, ...]]],
        keep_windows: bool = False,
    ) -> None:
        P = len(scenarios)
        self.P, self.S, self.K, self.J, self.T_max, self.H = P, S, K, J, T_max, H
        self.T1 = T_max + 1
        self.layout = layout
        self.D = max(sl.stop for sl, _ in layout.values())
        self.scenarios = tuple(scenarios)
        self.names = np.array([sc.name for sc in scenarios], dtype=object)
        self.static = np.zeros((P * self.T1, self.D), dtype=np.float32)
        self.series = np.zeros((len(SERIES_FIELDS), S, P * T_max))
        self.demand = np.zeros((K, P * T_max))
        self.site = np.zeros((len(SITE_FIELDS), S, P))
        self.job_int = np.zeros((len(JOB_INT_FIELDS), J, P), dtype=np.int64)
        self.job_int[JOB_INT_FIELDS.index("latest")] = -1
        self.job_float = np.zeros((len(JOB_FLOAT_FIELDS), J, P))
        self.present = np.zeros((J, P), dtype=bool)
        self.mandatory = np.zeros((J, P), dtype=bool)
        self.eligible = np.zeros((J, S, P), dtype=bool)
        self.job_mw = np.zeros((J, S, P))
        self.routes = np.zeros((K, S, P))
        self.revenue = np.zeros((K, P))
        self.penalty = np.zeros((K, P))
        self.dt = np.zeros(P)
        self.T = np.zeros(P, dtype=np.int64)
        self.inv_T = np.zeros(P)
        self.budget = np.full(P, np.nan)
        self.carbon_price = np.zeros(P)
        self.tol_gpus = np.zeros(P)
        self.tol_mw = np.zeros(P)
        self.windows: list[dict[str, np.ndarray]] | None = [] if keep_windows else None
        self.max_duration = 1
        for p, sc in enumerate(scenarios):
            self._add(p, sc)
        self.static.flags.writeable = False
        # The same numbers, one row per (scenario, period): the step gathers all 6·S + K values of a
        # lane's period as one contiguous row (a take over rows is ~2x faster than over columns).
        self.period_rows = np.ascontiguousarray(
            np.concatenate([self.series.reshape(len(SERIES_FIELDS) * S, -1), self.demand]).T
        )

    def gather_periods(self, cols: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """(6·S + K, n) the period rows ``cols`` (``p·T_max + t``), lane axis last, via ``buf`` (n, 6·S + K):
        a row take, then one transposing copy (later ops on a strided view would be slow)."""
        return self.period_rows.take(cols, axis=0, mode="clip", out=buf).T.copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool's arrays (forecast windows included)."""
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray) and v.dtype != object]
        total = sum(a.nbytes for a in arrays)
        for win in self.windows or ():
            total += sum(a.nbytes for a in win.values())
        return total

    def _add(self, p: int, sc: Scenario) -> None:
        """Fill pool entry ``p`` from ``sc`` (the expressions of ``CarbonAwareDCEnv._prepare``)."""
        S, J, T = self.S, self.J, sc.T
        site = sc.site_array
        cap = site("gpu_capacity")
        cap_mwh = site("capacity_mwh")
        imp_lim = site("import_limit_mw")
        values = {
            "cap": cap,
            "gpu_mw": np.array(sc.gpu_mw, dtype=np.float64),
            "base_it": site("base_it_mw"),
            "gen_cap": site("gen_capacity_mw"),
            "gen_cost": site("gen_cost_usd_per_mwh"),
            "gen_em": site("gen_emissions_t_per_mwh"),
            "charge_lim": site("charge_mw"),
            "discharge_lim": site("discharge_mw"),
            "eta_c": site("eta_charge"),
            "eta_d": site("eta_discharge"),
            "soc_min": np.array([s.soc_min_mwh for s in sc.sites]),
            "soc_max": np.array([s.soc_max_mwh for s in sc.sites]),
            "soc_init": np.array([s.soc_init_mwh for s in sc.sites]),
            "degr": site("degradation_usd_per_mwh"),
            "imp_lim": imp_lim,
            "cap_safe": np.where(cap > 0, cap, 1.0),
            "soc_scale": np.where(cap_mwh > 0, 1.0 / np.where(cap_mwh > 0, cap_mwh, 1), 0),
        }
        for i, name in enumerate(SITE_FIELDS):
            self.site[i, :, p] = values[name]
        rows = slice(p * self.T_max, p * self.T_max + T)
        export_cap = np.where(sc.price_export > 0.0, site("export_limit_mw")[:, None], 0.0)
        series = {
            "cooling": sc.cooling,
            "renewable": sc.renewable_mw,
            "price_import": sc.price_import,
            "price_export": sc.price_export,
            "carbon_intensity": sc.carbon_intensity,
            "export_cap": export_cap,
        }
        for i, name in enumerate(SERIES_FIELDS):
            self.series[i, :, rows] = series[name]
        self.demand[:, rows] = sc.demand_gpus
        self.revenue[:, p] = sc.class_array("revenue_usd_per_gpu_h")
        self.penalty[:, p] = sc.class_array("unserved_penalty_usd_per_gpu_h")
        self.routes[:, :, p] = np.array(sc.routes, dtype=np.float64)
        dt = float(sc.dt_h)
        self.dt[p], self.T[p], self.inv_T[p] = dt, T, 1.0 / T
        self.budget[p] = np.nan if sc.carbon_budget_t is None else sc.carbon_budget_t
        self.carbon_price[p] = sc.carbon_price_usd_per_t
        tol = dynamics.REPAIR_RTOL
        self.tol_gpus[p] = tol * max(1.0, float(cap.max()))
        self.tol_mw[p] = tol * max(
            1.0,
            float(imp_lim.max()),
            float(values["gen_cap"].max()),
            float(values["charge_lim"].max()),
            float(values["discharge_lim"].max()),
        )

        # Job slots, padded: absent slots have gpus 0 and an empty window (latest -1).
        present = np.zeros(J, dtype=bool)
        present[: sc.J] = True
        gpus, dur, release = np.zeros(J), np.zeros(J, dtype=np.int64), np.zeros(J, dtype=np.int64)
        latest, value = np.full(J, -1, dtype=np.int64), np.zeros(J)
        elig = np.zeros((J, S), dtype=bool)
        if sc.J:
            gpus[: sc.J] = sc.job_array("gpus")
            dur[: sc.J] = sc.job_array("duration")
            release[: sc.J] = sc.job_array("release")
            latest[: sc.J] = sc.job_array("latest_start")
            value[: sc.J] = sc.job_array("value_usd")
            self.mandatory[: sc.J, p] = sc.job_array("mandatory").astype(bool)
            elig[: sc.J] = sc.eligible
            self.job_mw[: sc.J, :, p] = sc.job_power_mw
            self.max_duration = max(self.max_duration, int(dur.max()))
        self.present[:, p], self.eligible[:, :, p] = present, elig
        for i, arr in enumerate((dur, release, latest)):
            self.job_int[i, :, p] = arr
        self.job_float[0, :, p], self.job_float[1, :, p] = gpus, value

        # The observation rows t = 0..T: jobs as if none had started, time, forecast windows.
        block = self.static[p * self.T1 : p * self.T1 + T + 1]
        gpu_scale = float(max(cap.max(), 1.0))
        t_col = np.arange(T + 1)[:, None]
        waiting = present & (t_col <= latest)
        jobs = np.zeros((T + 1, J, N_JOB_FEATURES + S), dtype=np.float32)
        jobs[:, :, 0] = present
        jobs[:, :, 1] = waiting
        jobs[:, :, 3] = present & ~waiting
        jobs[:, :, 4] = np.minimum(gpus / gpu_scale, OBS_BOUND)
        jobs[:, :, 5] = np.where(waiting, dur, 0) / T
        jobs[:, :, 6] = np.where(waiting, latest - t_col, 0) / T
        gpu_h = np.where(present, gpus * dur * dt, 1.0)
        jobs[:, :, 7] = np.minimum(value / gpu_h, OBS_BOUND)
        jobs[:, :, 8] = np.where(waiting, np.maximum(release - t_col, 0), 0) / T
        jobs[:, :, N_JOB_FEATURES:] = elig
        block[:, self.layout["jobs"][0]] = np.minimum(jobs, OBS_BOUND).reshape(T + 1, -1)
        t = np.arange(T + 1)
        hour = (t * dt) % 24.0
        block[:, self.layout["time"][0]] = np.stack(
            [t / T, np.sin(2 * np.pi * hour / 24.0), np.cos(2 * np.pi * hour / 24.0)], axis=1
        ).astype(np.float32)
        windows = self.exact_windows(sc)
        self.write_forecasts(block, windows, sc)
        if self.windows is not None:
            self.windows.append(windows)

    def exact_windows(self, sc: Scenario) -> dict[str, np.ndarray]:
        """The exact forecast windows of ``sc``: per key of ``FORECAST_KEYS`` a (T+1, rows, H+1)
        float64 array, column l = the value l periods ahead, the last period repeated beyond T."""
        H1, T = self.H + 1, sc.T
        out = {}
        for key in FORECAST_KEYS:
            series = getattr(sc, _series_name(key))
            padded = np.concatenate([series, np.repeat(series[:, -1:], H1, axis=1)], axis=1)
            win = np.lib.stride_tricks.sliding_window_view(padded, H1, axis=1)[:, : T + 1]
            out[key] = np.ascontiguousarray(win.transpose(1, 0, 2))
        return out

    def write_forecasts(self, block: np.ndarray, windows: dict[str, np.ndarray], sc: Scenario) -> None:
        """Write the scaled, clipped float32 forecast features of ``windows`` into the observation rows
        ``block`` (T+1, D) of scenario ``sc``."""
        imp_lim = sc.site_array("import_limit_mw")
        gpu_scale = float(max(sc.site_array("gpu_capacity").max(), 1.0))
        scales = {
            "price_import": PRICE_SCALE_USD_PER_MWH,
            "price_export": PRICE_SCALE_USD_PER_MWH,
            "carbon_intensity": 1.0,
            "renewable": np.where(imp_lim > 0, imp_lim, 1.0)[:, None],
            "cooling": 1.0,
            "demand": gpu_scale,
        }
        for key in FORECAST_KEYS:
            win = windows[key]
            low = -OBS_BOUND if key.startswith("price") else 0.0
            scaled = np.clip(win / scales[key], low, OBS_BOUND).astype(np.float32)
            block[:, self.layout[key][0]] = scaled.reshape(scaled.shape[0], -1)
