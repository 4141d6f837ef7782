"""Read one site's CSV file into a checked table on its regular UTC time grid (see :mod:`envs.data`).

The per-file half of :func:`envs.data.load_site_series`: the accepted headers and their unit
conversions (:data:`HEADERS`), the plausible range of every quantity (:data:`PLAUSIBLE`), every cell
checked, ISO 8601 timestamps (offsets honoured, naive times UTC or local in ``tz`` with explicit
daylight-saving rules), the period length and its gaps, and the table cut to a window with its gaps
raised or interpolated. Every problem is a :class:`~envs.scenario.ScenarioError` naming the file,
the column and the data row (1-based, with its timestamp as written).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from envs.scenario import ScenarioError

TIMESTAMP = "timestamp"
PRICE = "price_usd_per_mwh"
EXPORT_PRICE = "export_price_usd_per_mwh"
CARBON = "carbon_g_per_kwh"
TEMP = "temp_c"
SOLAR_CF = "solar_cf"
WIND_CF = "wind_cf"
WIND_SPEED = "wind_ms"
GHI = "ghi_w_per_m2"
DNI = "dni_w_per_m2"
DHI = "dhi_w_per_m2"
CLOUD = "cloud_cover"
NUMERIC_COLUMNS = (PRICE, EXPORT_PRICE, CARBON, TEMP, SOLAR_CF, WIND_CF, WIND_SPEED, GHI, DNI, DHI, CLOUD)
"""Every canonical numeric quantity (header in canonical units), in the order they are checked."""

G_PER_KWH_PER_T_PER_MWH = 1000.0
"""1 tCO2/MWh = 1000 gCO2/kWh, so x gCO2/kWh = x / 1000 tCO2/MWh (1 gCO2/kWh = 0.001 tCO2/MWh)."""
KG_PER_LB = 0.45359237
"""The international avoirdupois pound, kg (exact): x lbCO2/MWh = 0.45359237 x kgCO2/MWh = ... gCO2/kWh."""

HEADERS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    PRICE: (PRICE, lambda x: x),
    EXPORT_PRICE: (EXPORT_PRICE, lambda x: x),
    "carbon_g_per_kwh": (CARBON, lambda x: x),
    "carbon_kg_per_mwh": (CARBON, lambda x: x),  # 1 kg/MWh = 1 g/kWh
    "carbon_lb_per_mwh": (CARBON, lambda x: x * KG_PER_LB),
    "carbon_t_per_mwh": (CARBON, lambda x: x * G_PER_KWH_PER_T_PER_MWH),
    "temp_c": (TEMP, lambda x: x),
    "temp_f": (TEMP, lambda x: (x - 32.0) * 5.0 / 9.0),
    SOLAR_CF: (SOLAR_CF, lambda x: x),
    WIND_CF: (WIND_CF, lambda x: x),
    "wind_ms": (WIND_SPEED, lambda x: x),
    "wind_m_per_s": (WIND_SPEED, lambda x: x),
    "wind_kmh": (WIND_SPEED, lambda x: x / 3.6),
    GHI: (GHI, lambda x: x),
    DNI: (DNI, lambda x: x),
    DHI: (DHI, lambda x: x),
    "cloud_cover": (CLOUD, lambda x: x),  # fraction of the sky, 0..1
    "cloud_cover_pct": (CLOUD, lambda x: x / 100.0),  # percent (or oktas x 12.5)
}
"""Accepted header -> (canonical quantity, conversion to its canonical unit). One header per quantity."""

PLAUSIBLE: dict[str, tuple[float | None, float | None]] = {
    PRICE: (-1000.0, 20_000.0),  # AEMO's floor is -1000 AUD/MWh, its cap about 17,500 AUD/MWh
    EXPORT_PRICE: (-1000.0, 20_000.0),
    CARBON: (0.0, 1500.0),  # gCO2/kWh; lignite plants emit about 1,100-1,200, a grid mix less
    TEMP: (-60.0, 60.0),  # deg C ambient
    SOLAR_CF: (0.0, 1.0),
    WIND_CF: (0.0, 1.0),
    WIND_SPEED: (0.0, 60.0),  # m/s, hourly mean near the ground
    GHI: (0.0, 1500.0),  # W/m2; the solar constant is 1361
    DNI: (0.0, 1500.0),
    DHI: (0.0, 1000.0),
    CLOUD: (0.0, 1.0),
}
"""Plausible range of each quantity in its canonical unit (None = unbounded); ``limits=`` overrides."""

CARBON_TONNE_SUSPECT_G_PER_KWH = 2.0
"""A carbon column in g/kWh whose every value is below this is almost surely in tCO2/MWh."""


class DataGapWarning(UserWarning):
    """Gaps in a CSV's time index were filled by linear interpolation (``interpolate=True``)."""


@dataclass(frozen=True)
class SiteTable:
    """One parsed, checked site file on its regular time grid (gaps NaN until interpolated)."""

    path: Path
    frame: pd.DataFrame  # index: regular UTC DatetimeIndex; columns: canonical quantities present
    raw_ts: dict[pd.Timestamp, tuple[int, str]]  # timestamp -> (data row, text as in the file)
    step: pd.Timedelta
    headers: dict[str, str]  # canonical quantity -> the header it came from


def read_site_csv(
    path: Path,
    required: list[tuple[str, ...]],
    rename: dict[str, str],
    tz: str | None,
    ranges: Mapping[str, tuple[float | None, float | None]],
    custom: set[str],
) -> SiteTable:
    """Parse one site file, convert units, check every cell and its time index, regular grid."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise ScenarioError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not a readable CSV file ({exc})") from exc
    raw = raw.rename(columns=lambda c: str(c).strip()).rename(columns=rename)
    headers: dict[str, str] = {}
    for header in raw.columns:
        if header in HEADERS:
            quantity = HEADERS[header][0]
            if quantity in headers:
                raise ScenarioError(
                    f"{path}: column {header!r}: gives {quantity} again (already from "
                    f"{headers[quantity]!r}); keep one column per quantity"
                )
            headers[quantity] = header
    if TIMESTAMP not in raw.columns:
        raise ScenarioError(f"{path}: column {TIMESTAMP!r}: missing (found {list(raw.columns)})")
    missing = [alts for alts in required if not any(a in headers for a in alts)]
    if missing:
        alts = missing[0]
        accepted = [h for h, (q, _) in HEADERS.items() if q in alts]
        raise ScenarioError(
            f"{path}: column {alts[0]!r}: missing (accepted headers: {accepted}; missing columns: "
            f"{[m[0] for m in missing]}; found {list(raw.columns)})"
        )
    if len(raw) < 2:
        raise ScenarioError(f"{path}: column {TIMESTAMP!r}: need at least 2 data rows, found {len(raw)}")

    text = raw[TIMESTAMP].fillna("").astype(str).str.strip()
    index = _parse_timestamps(path, text, tz)

    def row(i: int) -> str:
        return f"data row {i + 1} ({text.iloc[i]})"

    values: dict[str, np.ndarray] = {}
    for quantity in NUMERIC_COLUMNS:
        if quantity not in headers:
            continue
        header = headers[quantity]
        cells = raw[header].fillna("").astype(str).str.strip()
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
            raise ScenarioError(f"{path}: column {header!r}, {row(i)}: {problem}")
        converted = HEADERS[header][1](numbers)
        lo, hi = ranges[quantity]
        out = np.flatnonzero(
            (converted < (-np.inf if lo is None else lo)) | (converted > (np.inf if hi is None else hi))
        )
        if out.size:
            i = int(out[0])
            unit = _canonical_unit(quantity)
            shown = f"{converted[i]:g} {unit}" + (f" (from {cells.iloc[i]!r})" if header != quantity else "")
            what = "capacity factor" if quantity in (SOLAR_CF, WIND_CF) else "value"
            raise ScenarioError(
                f"{path}: column {header!r}, {row(i)}: {what} {shown} outside the plausible range "
                f"[{_bound(lo)}, {_bound(hi)}] {unit}; check the unit in the header (accepted: "
                f"{[h for h, (q, _) in HEADERS.items() if q == quantity]}) or pass "
                f"limits={{{quantity!r}: (low, high)}}"
            )
        if (
            quantity == CARBON
            and header in ("carbon_g_per_kwh", "carbon_kg_per_mwh")
            and CARBON not in custom
            and converted.max() < CARBON_TONNE_SUSPECT_G_PER_KWH
        ):
            i = int(np.argmax(converted))
            raise ScenarioError(
                f"{path}: column {header!r}, {row(i)}: every value is below "
                f"{CARBON_TONNE_SUSPECT_G_PER_KWH:g} gCO2/kWh (largest {cells.iloc[i]!r}), which looks "
                f"like tCO2/MWh; name the column 'carbon_t_per_mwh', or pass "
                f"limits={{{CARBON!r}: (0, 1500)}} if the grid really is that clean"
            )
        values[quantity] = converted

    deltas = np.diff(index.asi8)
    for i in np.flatnonzero(deltas < 0):
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, {row(i + 1)}: timestamps not sorted (earlier than {row(i)})"
        )
    for i in np.flatnonzero(deltas == 0):
        hint = (
            "; if the file is in local time with daylight-saving time (an autumn hour repeats), "
            "pass tz='Region/City' (the IANA zone)"
            if tz is None
            else ""
        )
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, {row(i + 1)}: duplicated timestamp (same as {row(i)}){hint}"
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
    return SiteTable(path=path, frame=frame.reindex(grid), raw_ts=raw_ts, step=step, headers=headers)


_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def _parse_timestamps(path: Path, text: pd.Series, tz: str | None) -> pd.DatetimeIndex:
    """UTC period starts from ISO 8601 text: offsets honoured; naive text is UTC, or local in ``tz``.

    Local wall times are localized with explicit rules, never shifted silently: a wall time skipped
    by a spring-forward change is an error; one repeated by an autumn change is resolved by order
    (its first row is daylight time, the second standard time); one that should repeat but occurs
    once is an error, since either reading is a guess.
    """
    has_offset = text.str.contains(_OFFSET, regex=True).to_numpy()
    naive_local = tz is not None and not has_offset.all()
    if naive_local and has_offset.any():
        i = int(np.flatnonzero(has_offset != has_offset[0])[0])
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, data row {i + 1} ({text.iloc[i]}): mixes timestamps with "
            f"and without UTC offsets; use one form"
        )
    parsed = pd.to_datetime(text, errors="coerce", utc=not naive_local, format="ISO8601")
    for i in np.flatnonzero(parsed.isna().to_numpy()):
        problem = "empty cell" if text.iloc[i] == "" else f"not an ISO 8601 timestamp ({text.iloc[i]!r})"
        raise ScenarioError(f"{path}: column {TIMESTAMP!r}, data row {i + 1}: {problem}")
    index = pd.DatetimeIndex(parsed).as_unit("ns")
    if not naive_local:
        return index
    # first occurrence of a wall time = daylight time (True), a repeat = standard time (False)
    first = ~pd.Series(index).duplicated(keep="first").to_numpy()
    local = index.tz_localize(tz, ambiguous=first, nonexistent="NaT")
    for i in np.flatnonzero(local.isna()):
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, data row {i + 1} ({text.iloc[i]}): this local time does "
            f"not exist in {tz} (clocks jump forward at the spring daylight-saving change); a "
            f"local-time export skips it: remove the row, or give timestamps with UTC offsets"
        )
    single = index.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").isna()
    counts = pd.Series(index).map(pd.Series(index).value_counts()).to_numpy()
    for i in np.flatnonzero(single & (counts == 1)):
        raise ScenarioError(
            f"{path}: column {TIMESTAMP!r}, data row {i + 1} ({text.iloc[i]}): this local time occurs "
            f"twice in {tz} (clocks go back at the autumn daylight-saving change) but once in the "
            f"file, so which one is meant is unknown; give both rows, or UTC offsets"
        )
    return local.tz_convert("UTC")


def _canonical_unit(quantity: str) -> str:
    return {
        PRICE: "USD/MWh",
        EXPORT_PRICE: "USD/MWh",
        CARBON: "gCO2/kWh",
        TEMP: "degC",
        WIND_SPEED: "m/s",
        GHI: "W/m2",
        DNI: "W/m2",
        DHI: "W/m2",
        CLOUD: "(fraction)",
    }.get(quantity, "")


def _bound(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def fill_gaps(table: SiteTable, window: pd.DatetimeIndex, interpolate: bool, tz: str | None) -> pd.DataFrame:
    """The table on the window; gaps raise, or are filled linearly with a warning."""
    frame = table.frame.loc[window]
    missing = frame.index[frame[PRICE].isna()]
    if not len(missing):
        return frame
    if not interpolate:
        ts = missing[0]
        after = next(t for t in table.raw_ts if t > ts)
        dst = (
            "; if the file is in local time without UTC offsets and this is a spring daylight-saving "
            "change, pass tz='Region/City' (interpolating would invent an hour)"
            if tz is None
            else ""
        )
        raise ScenarioError(
            f"{table.path}: column {TIMESTAMP!r}, {row_label(table, after)}: gap in the time "
            f"index, {len(missing)} period(s) missing in the window (first missing "
            f"{iso_utc(ts)}){dst}; pass interpolate=True to fill gaps linearly"
        )
    filled = table.frame.interpolate(method="linear", limit_area="inside").loc[window]
    n_values = int(frame.isna().sum().sum())
    warnings.warn(
        f"{table.path}: filled {len(missing)} missing timestamp(s) ({n_values} values) by "
        f"linear interpolation, first {iso_utc(missing[0])}",
        DataGapWarning,
        stacklevel=4,
    )
    return filled


def row_label(table: SiteTable, ts: pd.Timestamp) -> str:
    """``data row N (timestamp as in the file)``, or the ISO timestamp of a gap period."""
    if ts in table.raw_ts:
        i, text = table.raw_ts[ts]
        return f"data row {i} ({text})"
    return f"missing period {iso_utc(ts)}"


def iso_utc(ts: pd.Timestamp) -> str:
    """``ts`` (UTC) as ``YYYY-MM-DDTHH:MM:SSZ``, the form error messages use."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def step_hours(step: pd.Timedelta) -> float:
    """A period length in hours."""
    return step / pd.Timedelta(hours=1)
