"""Build a scenario's exogenous series from CSV files a user brings, one per site.

The schema, units and defaults are documented in ``docs/data.md``; in short, every file has a
``timestamp`` column (ISO 8601, UTC) and one row per period with

=============================  ==============  ============================================
column                         unit            becomes
=============================  ==============  ============================================
``price_usd_per_mwh``          USD/MWh         ``price_import`` (as is; negative is legal)
``export_price_usd_per_mwh``   USD/MWh         ``price_export`` (or ``export_price_factor``)
``carbon_g_per_kwh``           gCO2/kWh        ``carbon_intensity`` / 1000 -> tCO2/MWh
``temp_c``                     deg C           ``cooling`` via ``cooling_fn`` (MW per IT MW)
``solar_cf`` / ``wind_cf``     fraction [0,1]  ``renewable_mw`` = cf x installed MW
=============================  ==============  ============================================

Nothing is clipped, zeroed or dropped: a value outside its domain, an empty or non-numeric cell, an
unsorted, duplicated or irregular timestamp, or files that disagree on their time range raise
:class:`~envs.scenario.ScenarioError` naming the file, the column and the data row (1-based, with
its timestamp). Gaps in the time index are an error unless ``interpolate=True``, which fills them
linearly and warns (:class:`DataGapWarning`) with the number of values filled.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.presets import RENEWABLE_TEMPLATES, cooling_coefficient, make_scenario, paper_site
from envs.scenario import InferenceClass, Scenario, ScenarioError, Site, TrainingJob

TIMESTAMP = "timestamp"
PRICE = "price_usd_per_mwh"
EXPORT_PRICE = "export_price_usd_per_mwh"
CARBON = "carbon_g_per_kwh"
TEMP = "temp_c"
SOLAR_CF = "solar_cf"
WIND_CF = "wind_cf"
NUMERIC_COLUMNS = (PRICE, EXPORT_PRICE, CARBON, TEMP, SOLAR_CF, WIND_CF)
"""Every numeric column of the schema, in the order they are checked."""

G_PER_KWH_PER_T_PER_MWH = 1000.0
"""1 tCO2/MWh = 1000 gCO2/kWh, so x gCO2/kWh = x / 1000 tCO2/MWh (1 gCO2/kWh = 0.001 tCO2/MWh)."""

PAPER_DEMAND_BASE_GPUS = 7000.0
PAPER_DEMAND_AMPLITUDE_GPUS = 2000.0


class DataGapWarning(UserWarning):
    """Gaps in a CSV's time index were filled by linear interpolation (``interpolate=True``)."""


@dataclass(frozen=True)
class _SiteTable:
    """One parsed, checked site file on its regular time grid (gaps NaN until interpolated)."""

    path: Path
    frame: pd.DataFrame  # index: regular UTC DatetimeIndex; columns: the numeric columns present
    raw_ts: dict[pd.Timestamp, tuple[int, str]]  # timestamp -> (data row, text as in the file)
    step: pd.Timedelta


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
        solar_mw, wind_mw: installed solar / wind capacity per site, MW; ``renewable_mw[s, t] =
            solar_mw[s] * solar_cf + wind_mw[s] * wind_cf``. Default: the paper preset's
            installation for site index s (5 MW solar, 8 MW wind, 12 MW solar, ...; defined for up
            to 10 sites). A site whose capacity of a kind is > 0 needs that kind's column.
        export_price_factor: if given, ``price_export = factor * price_import`` and the files must
            not have an ``export_price_usd_per_mwh`` column; if None, that column is required.
        cooling_fn: ambient temperature (deg C, array) -> cooling MW per IT MW (PUE - 1), >= 0;
            default :func:`envs.presets.cooling_coefficient`.
        jobs: training jobs; default (None): the ``paper`` preset's jobs for ``seed``, which fit only
            3 sites x 24 hourly periods; pass ``jobs=()`` for none.
        classes: inference classes; default (None): the paper rule for S sites (class k originates
            at site k at 10 ms, site k+1 at 35 ms, others 80 ms; SLO 50 ms; 0.12 / 0.24 USD/GPU-h).
        demand_gpus: (K, T) GPUs of inference demand; default (None, only with default classes):
            the paper curve ``round(7000 + 2000 sin(2 pi (h - 14 + 3k) / 24))`` at each period's
            UTC hour of day h.
        start: first period's timestamp (naive = UTC); default: the first file's first timestamp.
        periods: number of periods T; default: up to the first file's last timestamp. If neither
            ``start`` nor ``periods`` is given, every file must cover exactly the same time range;
            otherwise each file must cover the window and rows outside it are not used.
        interpolate: fill gaps in a file's time index linearly (warns with the count) instead of
            raising.
        columns: rename map applied to each file's header first, e.g. ``{"LMP": "price_usd_per_mwh"}``.
        name: scenario name.
        carbon_budget_t: emission cap, tCO2 (None = no cap).
        carbon_price_usd_per_t: USD per tCO2 emitted.
        seed: which ``paper`` preset draw supplies the default jobs.

    Returns:
        The validated scenario; ``dt_h`` is the files' common period length in hours.

    Raises:
        ScenarioError: a file is unreadable or malformed (the message names file, column and row),
            or an argument does not fit the files.
    """
    paths = [Path(site_csvs)] if isinstance(site_csvs, (str, Path)) else [Path(p) for p in site_csvs]
    if not paths:
        raise ScenarioError("site_csvs: at least one CSV file (one per site) is needed")
    S = len(paths)
    if sites is not None and len(sites) != S:
        raise ScenarioError(f"sites: {len(sites)} sites given for {S} CSV files (need one per file)")
    solar_cap = _capacities("solar_mw", solar_mw, "solar", S)
    wind_cap = _capacities("wind_mw", wind_mw, "wind", S)
    if export_price_factor is not None:
        _require_number("export_price_factor", export_price_factor, minimum=0.0)

    required_by_site = []
    for s in range(S):
        need = [PRICE, CARBON, TEMP]
        if export_price_factor is None:
            need.append(EXPORT_PRICE)
        if solar_cap[s] > 0:
            need.append(SOLAR_CF)
        if wind_cap[s] > 0:
            need.append(WIND_CF)
        required_by_site.append(need)

    tables = [
        _read_site_csv(path, need, dict(columns or {}))
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
                        f"{table.path}: column {column!r}, {_row(table, ts)}: capacity factor "
                        f"{table.frame[column].iloc[nonzero[0]]!r} but {arg}[{s}] = 0 MW; give the "
                        f"site's installed capacity in {arg}=... or remove the column"
                    )

    first = tables[0]
    for table in tables[1:]:
        if table.step != first.step:
            raise ScenarioError(
                f"{table.path}: column {TIMESTAMP!r}, {_row(table, table.frame.index[1])}: period "
                f"length {_hours(table.step):g} h, but {first.path} has {_hours(first.step):g} h"
            )
    step = first.step
    window = _window(tables, start, periods)
    T = len(window)

    series: dict[str, np.ndarray] = {}
    for column in NUMERIC_COLUMNS:
        series[column] = np.zeros((S, T))
    for s, table in enumerate(tables):
        frame = table.frame.loc[window]
        missing = frame.index[frame[PRICE].isna()]
        if len(missing):
            if not interpolate:
                ts = missing[0]
                after = next(t for t in table.raw_ts if t > ts)
                raise ScenarioError(
                    f"{table.path}: column {TIMESTAMP!r}, {_row(table, after)}: gap in the time "
                    f"index, {len(missing)} period(s) missing in the window (first missing "
                    f"{_iso(ts)}); pass interpolate=True to fill gaps linearly"
                )
            filled = table.frame.interpolate(method="linear", limit_area="inside").loc[window]
            n_values = int(frame.isna().sum().sum())
            warnings.warn(
                f"{table.path}: filled {len(missing)} missing timestamp(s) ({n_values} values) by "
                f"linear interpolation, first {_iso(missing[0])}",
                DataGapWarning,
                stacklevel=2,
            )
            frame = filled
        for column in frame.columns:
            series[column][s] = frame[column].to_numpy(dtype=np.float64)

    cooling = np.asarray(cooling_fn(series[TEMP]), dtype=np.float64)
    if cooling.shape != (S, T):
        raise ScenarioError(f"cooling_fn: returned shape {cooling.shape} for temperatures of shape {(S, T)}")
    bad = np.argwhere(~np.isfinite(cooling) | (cooling < 0))
    if bad.size:
        s, t = bad[0]
        raise ScenarioError(
            f"{tables[s].path}: column {TEMP!r}, {_row(tables[s], window[t])}: cooling_fn gave "
            f"{cooling[s, t]!r} for {series[TEMP][s, t]} degC (must be finite and >= 0)"
        )
    price_export = (
        export_price_factor * series[PRICE] if export_price_factor is not None else series[EXPORT_PRICE]
    )
    renewable = solar_cap[:, None] * series[SOLAR_CF] + wind_cap[:, None] * series[WIND_CF]

    site_list = (
        tuple(sites) if sites is not None else tuple(_rename(paper_site(0), path.stem) for path in paths)
    )
    dt_h = _hours(step)
    job_list, class_list, demand = _workload(jobs, classes, demand_gpus, S, window, dt_h, seed)
    return Scenario(
        name=name,
        T=T,
        dt_h=dt_h,
        sites=site_list,
        jobs=job_list,
        classes=class_list,
        cooling=cooling,
        renewable_mw=renewable,
        price_import=series[PRICE],
        price_export=price_export,
        carbon_intensity=series[CARBON] / G_PER_KWH_PER_T_PER_MWH,
        demand_gpus=demand,
        carbon_budget_t=carbon_budget_t,
        carbon_price_usd_per_t=carbon_price_usd_per_t,
    )


# ----------------------------------------------------------------------------- reading one file
def _read_site_csv(path: Path, required: list[str], rename: dict[str, str]) -> _SiteTable:
    """Parse one site file, check every cell and its time index, and put it on a regular grid."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise ScenarioError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not a readable CSV file ({exc})") from exc
    raw = raw.rename(columns=lambda c: str(c).strip()).rename(columns=rename)
    missing = [c for c in [TIMESTAMP, *required] if c not in raw.columns]
    if missing:
        raise ScenarioError(
            f"{path}: column {missing[0]!r}: missing (missing columns: {missing}; found {list(raw.columns)})"
        )
    if len(raw) < 2:
        raise ScenarioError(f"{path}: column {TIMESTAMP!r}: need at least 2 data rows, found {len(raw)}")

    text = raw[TIMESTAMP].fillna("").astype(str).str.strip()
    ts = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    for i in np.flatnonzero(ts.isna().to_numpy()):
        problem = "empty cell" if text.iloc[i] == "" else f"not an ISO 8601 timestamp ({text.iloc[i]!r})"
        raise ScenarioError(f"{path}: column {TIMESTAMP!r}, data row {i + 1}: {problem}")
    index = pd.DatetimeIndex(ts).as_unit("ns")

    def row(i: int) -> str:
        return f"data row {i + 1} ({text.iloc[i]})"

    values: dict[str, np.ndarray] = {}
    for column in NUMERIC_COLUMNS:
        if column not in raw.columns:
            continue
        cells = raw[column].fillna("").astype(str).str.strip()
        numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64)
        for i in np.flatnonzero(~np.isfinite(numbers)):
            cell = cells.iloc[i]
            if cell == "":
                problem = "empty cell"
            elif cell.lower() in ("nan", "na", "n/a", "null", "none", "-"):
                problem = f"missing value ({cell!r})"
            elif math.isnan(numbers[i]):
                problem = f"not a number ({cell!r})"
            else:
                problem = f"must be finite ({cell!r})"
            raise ScenarioError(f"{path}: column {column!r}, {row(i)}: {problem}")
        if column == CARBON and (numbers < 0).any():
            i = int(np.flatnonzero(numbers < 0)[0])
            raise ScenarioError(
                f"{path}: column {column!r}, {row(i)}: must be >= 0 gCO2/kWh ({cells.iloc[i]!r})"
            )
        if column in (SOLAR_CF, WIND_CF):
            out = np.flatnonzero((numbers < 0) | (numbers > 1))
            if out.size:
                i = int(out[0])
                raise ScenarioError(
                    f"{path}: column {column!r}, {row(i)}: capacity factor must be in [0, 1] "
                    f"({cells.iloc[i]!r})"
                )
        values[column] = numbers

    deltas = np.diff(index.asi8)
    for i in np.flatnonzero(deltas < 0):
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, {row(i + 1)}: timestamps not sorted (earlier than {row(i)})"
        )
    for i in np.flatnonzero(deltas == 0):
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, {row(i + 1)}: duplicated timestamp (same as {row(i)})"
        )
    # The period length is the most common spacing (ties: the shortest); every other spacing must be
    # a whole multiple of it (a gap), otherwise the index is irregular.
    spacings, counts = np.unique(deltas, return_counts=True)
    step_ns = int(spacings[np.argmax(counts)])
    for i in np.flatnonzero(deltas % step_ns != 0):
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, {row(i + 1)}: irregular spacing, "
            f"{deltas[i] / 3.6e12:g} h after the previous row is not a multiple of the period "
            f"length {step_ns / 3.6e12:g} h"
        )
    step = pd.Timedelta(step_ns, unit="ns")
    frame = pd.DataFrame(values, index=index)
    grid = pd.date_range(index[0], index[-1], freq=step)
    raw_ts = {t: (i + 1, text.iloc[i]) for i, t in enumerate(index)}
    return _SiteTable(path=path, frame=frame.reindex(grid), raw_ts=raw_ts, step=step)


# ----------------------------------------------------------------------------- the common window
def _window(tables: list[_SiteTable], start: Any, periods: int | None) -> pd.DatetimeIndex:
    """The T period timestamps every file must cover (see ``start`` / ``periods``)."""
    first = tables[0]
    step = first.step
    grid = first.frame.index
    if start is None and periods is None:
        for table in tables[1:]:
            idx = table.frame.index
            if idx[0] != grid[0] or idx[-1] != grid[-1]:
                where = _row(table, idx[0] if idx[0] != grid[0] else idx[-1])
                raise ScenarioError(
                    f"{table.path}: column {TIMESTAMP!r}, {where}: "
                    f"covers {_iso(idx[0])} .. {_iso(idx[-1])} ({len(idx)} periods), but "
                    f"{first.path} covers {_iso(grid[0])} .. {_iso(grid[-1])} ({len(grid)} periods); "
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
            raise ScenarioError(f"start: {_iso(t0)} is after the end of {first.path} ({_iso(grid[-1])})")
    else:
        _require_number("periods", periods, minimum=1, integer=True)
        n = int(periods)
    window = pd.date_range(t0, periods=n, freq=step)
    for table in tables:
        idx = table.frame.index
        if (window[0] - idx[0]) % step != pd.Timedelta(0):
            raise ScenarioError(
                f"{table.path}: column {TIMESTAMP!r}: start {_iso(window[0])} is not on the file's "
                f"{_hours(step):g} h grid (first row {_iso(idx[0])})"
            )
        if window[0] < idx[0] or window[-1] > idx[-1]:
            raise ScenarioError(
                f"{table.path}: column {TIMESTAMP!r}: covers {_iso(idx[0])} .. {_iso(idx[-1])}, which "
                f"does not contain the window {_iso(window[0])} .. {_iso(window[-1])} ({n} periods)"
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
    S: int,
    window: pd.DatetimeIndex,
    dt_h: float,
    seed: int,
) -> tuple[tuple[TrainingJob, ...], tuple[InferenceClass, ...], Any]:
    """Jobs, classes and demand: as given, or the paper preset's (see :func:`scenario_from_csv`)."""
    T = len(window)
    if jobs is None:
        if (S, T, dt_h) != (3, 24, 1.0):
            raise ScenarioError(
                f"jobs: the default (the paper preset's jobs) fits only 3 sites x 24 periods of 1 h, "
                f"not {S} x {T} of {dt_h:g} h; pass jobs=[...] (or jobs=() for none)"
            )
        jobs = make_scenario("paper", seed).jobs
    if classes is None:
        classes = _paper_classes(S)
        if demand_gpus is None:
            hour = (window.hour + window.minute / 60.0).to_numpy(dtype=np.float64)
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


def _row(table: _SiteTable, ts: pd.Timestamp) -> str:
    """``data row N (timestamp as in the file)``, or the ISO timestamp of a gap period."""
    if ts in table.raw_ts:
        i, text = table.raw_ts[ts]
        return f"data row {i} ({text})"
    return f"missing period {_iso(ts)}"


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(step: pd.Timedelta) -> float:
    return step / pd.Timedelta(hours=1)
