"""Build a scenario's exogenous series from CSV files a user brings, one per site.

The schema, units and defaults are documented in ``docs/data.md``. Every file has a ``timestamp``
column (ISO 8601; offsets honoured; naive = UTC unless ``tz=`` names the files' local zone) and one
row per period. The unit is part of the column name and converted explicitly (:data:`HEADERS`):

=====================================================  ==============================================
headers (one per quantity)                             becomes
=====================================================  ==============================================
``price_usd_per_mwh``                                  ``price_import``, USD/MWh (negative is legal)
``export_price_usd_per_mwh``                           ``price_export`` (or ``export_price_factor``)
``carbon_g_per_kwh`` = ``carbon_kg_per_mwh``,          ``carbon_intensity``, tCO2/MWh
``carbon_lb_per_mwh``, ``carbon_t_per_mwh``
``temp_c``, ``temp_f``                                 ``cooling`` via ``cooling_fn`` (MW per IT MW)
``solar_cf`` (or ``ghi_w_per_m2`` [+ ``dni_w_per_m2``  ``renewable_mw`` = cf x installed MW; weather
+ ``dhi_w_per_m2``], or ``cloud_cover[_pct]``)         goes through :mod:`envs.weather` (pvlib)
``wind_cf`` (or ``wind_ms`` / ``wind_kmh``)            ... (windpowerlib)
=====================================================  ==============================================

Nothing is clipped, zeroed or dropped: a value outside its plausible range (:data:`PLAUSIBLE`,
overridable per call with ``limits=``), an empty or non-numeric cell, an unsorted, duplicated or
irregular timestamp, a local time that does not exist or is ambiguous, or files that disagree on
their time range raise :class:`~envs.scenario.ScenarioError` naming the file, the column and the
data row (1-based, with its timestamp). Gaps in the time index are an error unless
``interpolate=True``, which fills them linearly and warns (:class:`DataGapWarning`).

Two steps, so that a long series is read once and cut into many windows (:mod:`envs.sources`):
:func:`load_site_series` reads, checks, converts and turns weather into power;
:func:`scenario_from_series` adds hardware and workload. :func:`scenario_from_csv` is both.

Reading and checking one file is :mod:`envs.site_csv`, whose names (:data:`HEADERS`,
:data:`PLAUSIBLE`, :class:`DataGapWarning`, the column names) are re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.presets import RENEWABLE_TEMPLATES, cooling_coefficient, make_scenario, paper_site
from envs.scenario import InferenceClass, Scenario, ScenarioError, Site, TrainingJob
from envs.site_csv import (
    CARBON,
    CARBON_TONNE_SUSPECT_G_PER_KWH,
    CLOUD,
    DHI,
    DNI,
    EXPORT_PRICE,
    G_PER_KWH_PER_T_PER_MWH,
    GHI,
    HEADERS,
    KG_PER_LB,
    NUMERIC_COLUMNS,
    PLAUSIBLE,
    PRICE,
    SOLAR_CF,
    TEMP,
    TIMESTAMP,
    WIND_CF,
    WIND_SPEED,
    DataGapWarning,
    SiteTable,
    fill_gaps,
    iso_utc,
    read_site_csv,
    row_label,
    step_hours,
)
from envs.weather import SiteWeather, solar_cf, wind_cf

__all__ = [
    "CARBON",
    "CARBON_TONNE_SUSPECT_G_PER_KWH",
    "CLOUD",
    "DHI",
    "DNI",
    "EXPORT_PRICE",
    "GHI",
    "G_PER_KWH_PER_T_PER_MWH",
    "HEADERS",
    "KG_PER_LB",
    "NUMERIC_COLUMNS",
    "PAPER_DEMAND_AMPLITUDE_GPUS",
    "PAPER_DEMAND_BASE_GPUS",
    "PLAUSIBLE",
    "PRICE",
    "SOLAR_CF",
    "TEMP",
    "TIMESTAMP",
    "WIND_CF",
    "WIND_SPEED",
    "DataGapWarning",
    "SiteSeries",
    "load_site_series",
    "scenario_from_csv",
    "scenario_from_series",
]

LOG = logging.getLogger(__name__)

PAPER_DEMAND_BASE_GPUS = 7000.0
PAPER_DEMAND_AMPLITUDE_GPUS = 2000.0


@dataclass(frozen=True)
class SiteSeries:
    """The checked exogenous series of S sites on one regular UTC grid (canonical units).

    ``index`` holds the T period starts (UTC); arrays are (S, T): ``price_import`` and
    ``price_export`` USD/MWh, ``carbon_t_per_mwh`` tCO2/MWh, ``cooling`` MW per IT MW,
    ``renewable_mw`` MW. ``renewable_source[s]`` says how site s's renewables were obtained (a
    capacity-factor column, or which weather path through pvlib/windpowerlib). ``tz`` is the local
    zone (None: UTC) used for local hours of day.
    """

    paths: tuple[Path, ...]
    index: pd.DatetimeIndex
    dt_h: float
    price_import: np.ndarray
    price_export: np.ndarray
    carbon_t_per_mwh: np.ndarray
    cooling: np.ndarray
    renewable_mw: np.ndarray
    renewable_source: tuple[str, ...]
    tz: str | None = None

    @property
    def S(self) -> int:
        return len(self.paths)

    @property
    def T(self) -> int:
        return len(self.index)

    def local_hour(self) -> np.ndarray:
        """(T,) hour of day of each period start in ``tz`` (UTC if None), fractional."""
        idx = self.index.tz_convert(self.tz) if self.tz is not None else self.index
        return (idx.hour + idx.minute / 60.0).to_numpy(dtype=np.float64)

    def window(self, start: int, periods: int) -> SiteSeries:
        """Periods ``start .. start + periods - 1`` (indices into ``index``)."""
        if not (0 <= start and periods >= 1 and start + periods <= self.T):
            raise ScenarioError(f"window: periods {start}..{start + periods - 1} outside 0..{self.T - 1}")
        cut = slice(start, start + periods)
        return dataclasses.replace(
            self,
            index=self.index[cut],
            price_import=self.price_import[:, cut],
            price_export=self.price_export[:, cut],
            carbon_t_per_mwh=self.carbon_t_per_mwh[:, cut],
            cooling=self.cooling[:, cut],
            renewable_mw=self.renewable_mw[:, cut],
        )


def scenario_from_csv(
    site_csvs: Sequence[str | Path] | str | Path,
    *,
    sites: Sequence[Site] | None = None,
    solar_mw: Sequence[float] | None = None,
    wind_mw: Sequence[float] | None = None,
    export_price_factor: float | None = None,
    cooling_fn: Callable[[np.ndarray], np.ndarray] = cooling_coefficient,
    jobs: Sequence[TrainingJob] | None = None,
    classes: Sequence[InferenceClass] | None = None,
    demand_gpus: Any = None,
    start: str | pd.Timestamp | None = None,
    periods: int | None = None,
    interpolate: bool = False,
    columns: Mapping[str, str] | None = None,
    tz: str | None = None,
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
    weather: Sequence[SiteWeather | None] | None = None,
    name: str = "csv",
    carbon_budget_t: float | None = None,
    carbon_price_usd_per_t: float = 0.0,
    seed: int = 0,
) -> Scenario:
    """Build a validated :class:`Scenario` whose series come from one CSV file per site.

    Args:
        site_csvs: one CSV path per site, in site order (a single path means one site).
        sites: the sites' hardware; default: the ``paper`` preset's site (20,000 GPUs, 40 MWh
            battery, 4 MW generator, 40/10 MW grid limits) for every file, named after the file's stem.
        solar_mw, wind_mw: installed solar (MWp DC) / wind capacity per site, MW; ``renewable_mw[s, t]
            = solar_mw[s] * solar_cf + wind_mw[s] * wind_cf``. Default: the paper preset's
            installation for site index s (5 MW solar, 8 MW wind, 12 MW solar, ...; defined for up
            to 10 sites). A site whose capacity of a kind is > 0 needs that kind's capacity-factor
            column or its weather columns (``ghi_w_per_m2`` or ``cloud_cover``; ``wind_ms``/``wind_kmh``).
        export_price_factor: if given, ``price_export = factor * price_import`` and the files must
            not have an ``export_price_usd_per_mwh`` column; if None, that column is required.
        cooling_fn: ambient temperature (deg C, array) -> cooling MW per IT MW (PUE - 1), >= 0;
            default :func:`envs.presets.cooling_coefficient`.
        jobs: training jobs; default (None): the ``paper`` preset's jobs for ``seed``, which fit only
            3 sites x 24 hourly periods; pass ``jobs=()`` for none, or
            :func:`envs.presets.draw_jobs` for any horizon.
        classes: inference classes; default (None): the paper rule for S sites (class k originates
            at site k at 10 ms, site k+1 at 35 ms, others 80 ms; SLO 50 ms; 0.12 / 0.24 USD/GPU-h).
        demand_gpus: (K, T) GPUs of inference demand; default (None, only with default classes):
            the paper curve ``round(7000 + 2000 sin(2 pi (h - 14 + 3k) / 24))`` at each period's
            local hour of day h (UTC unless ``tz`` is given).
        start: first period's timestamp (naive = UTC); default: the first file's first timestamp.
        periods: number of periods T; default: up to the first file's last timestamp. If neither
            ``start`` nor ``periods`` is given, every file must cover exactly the same time range;
            otherwise each file must cover the window and rows outside it are not used.
        interpolate: fill gaps in a file's time index linearly (warns with the count) instead of
            raising. Not for daylight-saving changes in local-time files: pass ``tz`` for those.
        columns: rename map applied to each file's header first, e.g. ``{"LMP": "price_usd_per_mwh"}``.
        tz: IANA zone of naive timestamps (e.g. ``"Europe/Berlin"``); None: naive means UTC.
            Timestamps with an offset are always honoured. A spring-forward wall time that does not
            exist is an error; an autumn wall time that occurs twice is resolved by order (first =
            daylight time, second = standard time).
        limits: per-quantity plausible ranges overriding :data:`PLAUSIBLE`, in canonical units,
            e.g. ``{"temp_c": (-80, 60)}`` (None = unbounded side).
        weather: one :class:`envs.weather.SiteWeather` (location, PV system, turbine) per site, or
            None for a site without weather columns; needed by the weather paths.
        name: scenario name.
        carbon_budget_t: emission cap, tCO2 (None = no cap).
        carbon_price_usd_per_t: USD per tCO2 emitted.
        seed: which ``paper`` preset draw supplies the default jobs.

    Returns:
        The validated scenario; ``dt_h`` is the files' common period length in hours. Which path
        each site's renewables took is logged (logger ``envs.data``, INFO) and kept in
        :attr:`SiteSeries.renewable_source` of :func:`load_site_series`.

    Raises:
        ScenarioError: a file is unreadable or malformed (the message names file, column and row),
            or an argument does not fit the files.
    """
    series = load_site_series(
        site_csvs,
        solar_mw=solar_mw,
        wind_mw=wind_mw,
        export_price_factor=export_price_factor,
        cooling_fn=cooling_fn,
        start=start,
        periods=periods,
        interpolate=interpolate,
        columns=columns,
        tz=tz,
        limits=limits,
        weather=weather,
    )
    return scenario_from_series(
        series,
        sites=sites,
        jobs=jobs,
        classes=classes,
        demand_gpus=demand_gpus,
        name=name,
        carbon_budget_t=carbon_budget_t,
        carbon_price_usd_per_t=carbon_price_usd_per_t,
        seed=seed,
    )


def load_site_series(
    site_csvs: Sequence[str | Path] | str | Path,
    *,
    solar_mw: Sequence[float] | None = None,
    wind_mw: Sequence[float] | None = None,
    export_price_factor: float | None = None,
    cooling_fn: Callable[[np.ndarray], np.ndarray] = cooling_coefficient,
    start: str | pd.Timestamp | None = None,
    periods: int | None = None,
    interpolate: bool = False,
    columns: Mapping[str, str] | None = None,
    tz: str | None = None,
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
    weather: Sequence[SiteWeather | None] | None = None,
) -> SiteSeries:
    """Read, check and convert the site files: the series half of :func:`scenario_from_csv` (same args)."""
    paths = [Path(site_csvs)] if isinstance(site_csvs, (str, Path)) else [Path(p) for p in site_csvs]
    if not paths:
        raise ScenarioError("site_csvs: at least one CSV file (one per site) is needed")
    S = len(paths)
    solar_cap = _capacities("solar_mw", solar_mw, "solar", S)
    wind_cap = _capacities("wind_mw", wind_mw, "wind", S)
    if export_price_factor is not None:
        _require_number("export_price_factor", export_price_factor, minimum=0.0)
    site_weather = list(weather) if weather is not None else [None] * S
    if len(site_weather) != S:
        raise ScenarioError(f"weather: {len(site_weather)} entries given for {S} sites (need one per site)")
    ranges = dict(PLAUSIBLE)
    for key, bounds in (limits or {}).items():
        if key not in PLAUSIBLE:
            raise ScenarioError(f"limits: unknown quantity {key!r}; choose from {sorted(PLAUSIBLE)}")
        ranges[key] = (bounds[0], bounds[1])
    if tz is not None:
        try:
            pd.Timestamp("2000-01-01").tz_localize(tz)
        except Exception as exc:  # pytz/zoneinfo raise different types for unknown zones
            raise ScenarioError(
                f"tz: unknown time zone {tz!r} (use an IANA name like 'Europe/Berlin')"
            ) from exc

    required_by_site = []
    for s in range(S):
        need: list[tuple[str, ...]] = [(PRICE,), (CARBON,), (TEMP,)]
        if export_price_factor is None:
            need.append((EXPORT_PRICE,))
        if solar_cap[s] > 0:
            need.append((SOLAR_CF, GHI, CLOUD))
        if wind_cap[s] > 0:
            need.append((WIND_CF, WIND_SPEED))
        required_by_site.append(need)

    tables = [
        read_site_csv(path, need, dict(columns or {}), tz, ranges, custom=set(limits or {}))
        for path, need in zip(paths, required_by_site, strict=True)
    ]
    for s, table in enumerate(tables):
        if export_price_factor is not None and EXPORT_PRICE in table.frame.columns:
            raise ScenarioError(
                f"{table.path}: column {EXPORT_PRICE!r}: present although export_price_factor="
                f"{export_price_factor} was given; use one or the other"
            )
        for column, cap, arg in ((SOLAR_CF, solar_cap[s], "solar_mw"), (WIND_CF, wind_cap[s], "wind_mw")):
            if cap == 0 and column in table.frame.columns:
                nonzero = np.flatnonzero(table.frame[column].fillna(0.0).to_numpy() != 0)
                if nonzero.size:
                    ts = table.frame.index[nonzero[0]]
                    raise ScenarioError(
                        f"{table.path}: column {column!r}, {row_label(table, ts)}: capacity factor "
                        f"{table.frame[column].iloc[nonzero[0]]!r} but {arg}[{s}] = 0 MW; give the "
                        f"site's installed capacity in {arg}=... or remove the column"
                    )

    first = tables[0]
    for table in tables[1:]:
        if table.step != first.step:
            raise ScenarioError(
                f"{table.path}: column {TIMESTAMP!r}, {row_label(table, table.frame.index[1])}: period "
                f"length {step_hours(table.step):g} h, but {first.path} has {step_hours(first.step):g} h"
            )
    step = first.step
    window = _window(tables, start, periods)
    T = len(window)

    price = np.zeros((S, T))
    export = np.zeros((S, T))
    carbon = np.zeros((S, T))
    temp = np.zeros((S, T))
    renewable = np.zeros((S, T))
    sources = []
    for s, table in enumerate(tables):
        frame = fill_gaps(table, window, interpolate, tz)
        price[s] = frame[PRICE].to_numpy(dtype=np.float64)
        if EXPORT_PRICE in frame.columns:
            export[s] = frame[EXPORT_PRICE].to_numpy(dtype=np.float64)
        carbon[s] = frame[CARBON].to_numpy(dtype=np.float64)
        temp[s] = frame[TEMP].to_numpy(dtype=np.float64)
        mw, source = _renewables(table, frame, solar_cap[s], wind_cap[s], site_weather[s], s)
        renewable[s] = mw
        sources.append(source)
        LOG.info("%s: renewables from %s", table.path, source)

    cooling = np.asarray(cooling_fn(temp), dtype=np.float64)
    if cooling.shape != (S, T):
        raise ScenarioError(f"cooling_fn: returned shape {cooling.shape} for temperatures of shape {(S, T)}")
    bad = np.argwhere(~np.isfinite(cooling) | (cooling < 0))
    if bad.size:
        s, t = bad[0]
        raise ScenarioError(
            f"{tables[s].path}: column {tables[s].headers[TEMP]!r}, {row_label(tables[s], window[t])}: "
            f"cooling_fn gave {cooling[s, t]!r} for {temp[s, t]} degC (must be finite and >= 0)"
        )
    price_export = export_price_factor * price if export_price_factor is not None else export
    return SiteSeries(
        paths=tuple(paths),
        index=window,
        dt_h=step_hours(step),
        price_import=price,
        price_export=price_export,
        carbon_t_per_mwh=carbon / G_PER_KWH_PER_T_PER_MWH,
        cooling=cooling,
        renewable_mw=renewable,
        renewable_source=tuple(sources),
        tz=tz,
    )


def scenario_from_series(
    series: SiteSeries,
    *,
    sites: Sequence[Site] | None = None,
    jobs: Sequence[TrainingJob] | None = None,
    classes: Sequence[InferenceClass] | None = None,
    demand_gpus: Any = None,
    name: str = "csv",
    carbon_budget_t: float | None = None,
    carbon_price_usd_per_t: float = 0.0,
    seed: int = 0,
) -> Scenario:
    """Hardware and workload on top of checked series: the scenario half of :func:`scenario_from_csv`."""
    S = series.S
    if sites is not None and len(sites) != S:
        raise ScenarioError(f"sites: {len(sites)} sites given for {S} CSV files (need one per file)")
    site_list = (
        tuple(sites) if sites is not None else tuple(_rename(paper_site(0), p.stem) for p in series.paths)
    )
    job_list, class_list, demand = _workload(jobs, classes, demand_gpus, series, seed)
    return Scenario(
        name=name,
        T=series.T,
        dt_h=series.dt_h,
        sites=site_list,
        jobs=job_list,
        classes=class_list,
        cooling=series.cooling,
        renewable_mw=series.renewable_mw,
        price_import=series.price_import,
        price_export=series.price_export,
        carbon_intensity=series.carbon_t_per_mwh,
        demand_gpus=demand,
        carbon_budget_t=carbon_budget_t,
        carbon_price_usd_per_t=carbon_price_usd_per_t,
    )


def _renewables(
    table: SiteTable,
    frame: pd.DataFrame,
    solar_cap: float,
    wind_cap: float,
    site: SiteWeather | None,
    s: int,
) -> tuple[np.ndarray, str]:
    """Site renewables, MW, and a description of the path each kind took (cf column or weather)."""

    def col(name: str) -> np.ndarray | None:
        return frame[name].to_numpy(dtype=np.float64) if name in frame.columns else None

    def need_site(kind: str, header: str) -> SiteWeather:
        if site is None:
            raise ScenarioError(
                f"{table.path}: column {header!r}: {kind} from weather needs the site's location and "
                f"system; pass weather=[..., SiteWeather(latitude, longitude, ...), ...] (entry {s})"
            )
        return site

    total = np.zeros(len(frame))
    parts = []
    if solar_cap > 0:
        if SOLAR_CF in frame.columns:
            cf, how = col(SOLAR_CF), f"{table.headers[SOLAR_CF]} column"
        else:
            header = table.headers.get(GHI, table.headers.get(CLOUD))
            cf, how = solar_cf(
                frame.index,
                need_site("solar", header),
                temp_air_c=col(TEMP),
                wind_ms=col(WIND_SPEED),
                ghi=col(GHI),
                dni=col(DNI),
                dhi=col(DHI),
                cloud_cover=col(CLOUD) if GHI not in frame.columns else None,
            )
            how = f"pvlib from {header}: {how}"
        total += solar_cap * cf
        parts.append(f"solar {solar_cap:g} MW <- {how}")
    if wind_cap > 0:
        if WIND_CF in frame.columns:
            cf, how = col(WIND_CF), f"{table.headers[WIND_CF]} column"
        else:
            header = table.headers[WIND_SPEED]
            cf, how = wind_cf(col(WIND_SPEED), need_site("wind", header))
            how = f"windpowerlib from {header}: {how}"
        total += wind_cap * cf
        parts.append(f"wind {wind_cap:g} MW <- {how}")
    return total, "; ".join(parts) if parts else "none installed"


# ----------------------------------------------------------------------------- the common window
def _window(tables: list[SiteTable], start: Any, periods: int | None) -> pd.DatetimeIndex:
    """The T period timestamps every file must cover (see ``start`` / ``periods``)."""
    first = tables[0]
    step = first.step
    grid = first.frame.index
    if start is None and periods is None:
        for table in tables[1:]:
            idx = table.frame.index
            if idx[0] != grid[0] or idx[-1] != grid[-1]:
                where = row_label(table, idx[0] if idx[0] != grid[0] else idx[-1])
                raise ScenarioError(
                    f"{table.path}: column {TIMESTAMP!r}, {where}: "
                    f"covers {iso_utc(idx[0])} .. {iso_utc(idx[-1])} ({len(idx)} periods), but "
                    f"{first.path} covers {iso_utc(grid[0])} .. {iso_utc(grid[-1])} ({len(grid)} periods); "
                    f"all files must cover the same time range (or pass start=/periods=)"
                )
        return grid
    if start is None:
        t0 = grid[0]
    else:
        try:
            t0 = pd.Timestamp(start)
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"start: not a timestamp ({start!r})") from exc
        t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    if periods is None:
        n = int((grid[-1] - t0) / step) + 1
        if n < 1:
            raise ScenarioError(
                f"start: {iso_utc(t0)} is after the end of {first.path} ({iso_utc(grid[-1])})"
            )
    else:
        _require_number("periods", periods, minimum=1, integer=True)
        n = int(periods)
    window = pd.date_range(t0, periods=n, freq=step)
    for table in tables:
        idx = table.frame.index
        if (window[0] - idx[0]) % step != pd.Timedelta(0):
            raise ScenarioError(
                f"{table.path}: column {TIMESTAMP!r}: start {iso_utc(window[0])} is not on the file's "
                f"{step_hours(step):g} h grid (first row {iso_utc(idx[0])})"
            )
        if window[0] < idx[0] or window[-1] > idx[-1]:
            raise ScenarioError(
                f"{table.path}: column {TIMESTAMP!r}: covers {iso_utc(idx[0])} .. {iso_utc(idx[-1])}, which "
                f"does not contain the window {iso_utc(window[0])} .. {iso_utc(window[-1])} ({n} periods)"
            )
    return window


# ----------------------------------------------------------------------------- defaults
def _capacities(arg: str, given: Sequence[float] | None, kind: str, S: int) -> np.ndarray:
    """Installed MW per site of one renewable ``kind``: the argument, or the paper template."""
    if given is None:
        if S > len(RENEWABLE_TEMPLATES):
            raise ScenarioError(
                f"{arg}: no default beyond {len(RENEWABLE_TEMPLATES)} sites; give one value per site"
            )
        return np.array([peak if k == kind else 0.0 for k, peak in RENEWABLE_TEMPLATES[:S]])
    caps = list(given)
    if len(caps) != S:
        raise ScenarioError(f"{arg}: {len(caps)} values given for {S} sites (need one per site)")
    for s, cap in enumerate(caps):
        _require_number(f"{arg}[{s}]", cap, minimum=0.0)
    return np.array(caps, dtype=np.float64)


def _workload(
    jobs: Sequence[TrainingJob] | None,
    classes: Sequence[InferenceClass] | None,
    demand_gpus: Any,
    series: SiteSeries,
    seed: int,
) -> tuple[tuple[TrainingJob, ...], tuple[InferenceClass, ...], Any]:
    """Jobs, classes and demand: as given, or the paper preset's (see :func:`scenario_from_csv`)."""
    S, T, dt_h = series.S, series.T, series.dt_h
    if jobs is None:
        if (S, T, dt_h) != (3, 24, 1.0):
            raise ScenarioError(
                f"jobs: the default (the paper preset's jobs) fits only 3 sites x 24 periods of 1 h, "
                f"not {S} x {T} of {dt_h:g} h; pass jobs=[...] (envs.presets.draw_jobs draws them for "
                f"any horizon), or jobs=() for none"
            )
        jobs = make_scenario("paper", seed).jobs
    if classes is None:
        classes = _paper_classes(S)
        if demand_gpus is None:
            hour = series.local_hour()
            k = np.arange(len(classes), dtype=np.float64)[:, None]
            demand_gpus = np.round(
                PAPER_DEMAND_BASE_GPUS
                + PAPER_DEMAND_AMPLITUDE_GPUS * np.sin(2.0 * np.pi * (hour - 14.0 + 3.0 * k) / 24.0)
            )
    elif demand_gpus is None:
        if len(classes):
            raise ScenarioError("demand_gpus: required (shape (K, T)) when classes are given")
        demand_gpus = np.zeros((0, T))
    return tuple(jobs), tuple(classes), demand_gpus


def _paper_classes(S: int) -> tuple[InferenceClass, ...]:
    """MODEL.md §8's inference classes for S sites: class k originates at site k."""
    out = []
    for k in range(S):
        latency = [80.0] * S
        latency[(k + 1) % S] = 35.0
        latency[k] = 10.0
        out.append(
            InferenceClass(
                name=f"inference{k}",
                revenue_usd_per_gpu_h=0.12,
                unserved_penalty_usd_per_gpu_h=0.24,
                latency_ms=tuple(latency),
                slo_ms=50.0,
            )
        )
    return tuple(out)


# ----------------------------------------------------------------------------- small helpers
def _rename(site: Site, name: str) -> Site:
    return dataclasses.replace(site, name=name)


def _require_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(float(value))
        and value >= minimum
        and (not integer or float(value) == int(value))
    )
    if not ok:
        kind = "a whole number" if integer else "a finite number"
        raise ScenarioError(f"{name}: must be {kind} >= {minimum} (got {value!r})")
