"""Weather -> renewable capacity factors with the field's libraries (pvlib, windpowerlib).

Solar (pvlib), per site and hourly period, from whichever the CSV gives:

1. **irradiance**: GHI (W/m²), optionally with DNI and DHI. GHI alone is split into DNI/DHI with the
   Erbs (1982) decomposition;
2. **cloud cover** (fraction in [0, 1]): the Ineichen/Perez clear-sky GHI of the site (pvlib's
   ``Location.get_clearsky``, Linke turbidity from pvlib's monthly climatology) times the
   Kasten & Czeplak (1980) cloud transmittance ``GHI = GHI_clear · (1 − 0.75 · cc^3.4)``, then Erbs.

Then a PVWatts-style system: isotropic-sky plane-of-array irradiance on a fixed ``tilt``/``azimuth``,
SAPM cell temperature (open rack, glass/polymer) from ambient temperature and wind speed,
``pvwatts_dc`` with temperature coefficient ``gamma_pdc`` (1/K), PVWatts' default system losses
(14.08 %) and the PVWatts inverter with ``dc_ac_ratio``. The capacity factor is AC output per unit
of **DC** nameplate (so ``renewable_mw = solar_mw · cf`` with ``solar_mw`` in MWp DC).

Wind (windpowerlib): wind speed measured at ``measurement_height_m`` (usually 10 m) is carried to
the hub height with the Hellman power law ``v_hub = v · (h_hub / h_meas)^α`` (α = 1/7 unless given),
then through the named turbine's power curve from windpowerlib's bundled OpenEnergy-Database
turbine library (read from the installed package, no network); cf = P / P_nominal.

Timestamps are the period starts (UTC); solar position is taken at the period's middle, as the
irradiance of an hourly row is that hour's mean.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pvlib
from windpowerlib import WindTurbine, power_output, wind_speed

from envs.scenario import ScenarioError

KASTEN_A = 0.75
KASTEN_B = 3.4
"""Kasten & Czeplak (1980): GHI / GHI_clear = 1 − KASTEN_A · cc^KASTEN_B (cc: cloud cover fraction)."""

PVWATTS_LOSSES_PCT = 14.08
"""PVWatts' default system losses (soiling, shading, mismatch, wiring, LID, availability), %."""

DEFAULT_TURBINE = "E-126/4200"
"""A 4.2 MW Enercon turbine from windpowerlib's bundled library (see ``wind_turbine_types()``)."""


@dataclass(frozen=True)
class SiteWeather:
    """Where a site is and what is installed there, for converting its weather to power.

    Args:
        latitude, longitude: degrees (north, east positive).
        altitude_m: site altitude, m (clear-sky model).
        tilt_deg: panel tilt from horizontal, degrees; default (None): the latitude's absolute value,
            capped at 40 (a common fixed-tilt rule of thumb).
        azimuth_deg: panel azimuth, degrees clockwise from north; default (None): 180 (south) in the
            northern hemisphere, 0 (north) in the southern.
        gamma_pdc: PV power temperature coefficient, 1/K (crystalline silicon about −0.0035..−0.0045).
        dc_ac_ratio: DC nameplate / inverter AC rating (clipping above 1 / ratio of DC capacity).
        losses_pct: system losses, % (PVWatts default 14.08).
        turbine: a windpowerlib turbine type, e.g. ``"E-126/4200"``.
        hub_height_m: turbine hub height, m.
        measurement_height_m: height of the wind-speed measurement, m (weather stations: 10 m).
        hellman_exponent: wind shear exponent α (1/7 for open terrain).
    """

    latitude: float
    longitude: float
    altitude_m: float = 0.0
    tilt_deg: float | None = None
    azimuth_deg: float | None = None
    gamma_pdc: float = -0.004
    dc_ac_ratio: float = 1.1
    losses_pct: float = PVWATTS_LOSSES_PCT
    turbine: str = DEFAULT_TURBINE
    hub_height_m: float = 100.0
    measurement_height_m: float = 10.0
    hellman_exponent: float = 1.0 / 7.0

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise ScenarioError(f"weather.latitude: must be in [-90, 90] degrees (got {self.latitude!r})")
        if not -180.0 <= self.longitude <= 180.0:
            raise ScenarioError(f"weather.longitude: must be in [-180, 180] degrees (got {self.longitude!r})")
        if self.dc_ac_ratio <= 0 or not 0 <= self.losses_pct < 100:
            raise ScenarioError("weather.dc_ac_ratio must be > 0 and weather.losses_pct in [0, 100)")
        if self.hub_height_m <= 0 or self.measurement_height_m <= 0:
            raise ScenarioError("weather.hub_height_m and weather.measurement_height_m: must be > 0 m")

    @property
    def tilt(self) -> float:
        return min(abs(self.latitude), 40.0) if self.tilt_deg is None else float(self.tilt_deg)

    @property
    def azimuth(self) -> float:
        if self.azimuth_deg is not None:
            return float(self.azimuth_deg)
        return 180.0 if self.latitude >= 0 else 0.0


def cloud_transmittance(cloud_cover: np.ndarray) -> np.ndarray:
    """Kasten & Czeplak (1980): GHI / GHI_clear = 1 − 0.75 · cc^3.4 for cloud cover cc in [0, 1]."""
    cc = np.asarray(cloud_cover, dtype=np.float64)
    return 1.0 - KASTEN_A * cc**KASTEN_B


def _mid_period(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(hours=1)
    return times + step / 2


def clear_sky_ghi(times: pd.DatetimeIndex, site: SiteWeather) -> np.ndarray:
    """Ineichen/Perez clear-sky GHI, W/m², at the middle of each period starting at ``times`` (UTC)."""
    location = pvlib.location.Location(site.latitude, site.longitude, tz="UTC", altitude=site.altitude_m)
    return location.get_clearsky(_mid_period(times), model="ineichen")["ghi"].to_numpy(dtype=np.float64)


def solar_cf(
    times: pd.DatetimeIndex,
    site: SiteWeather,
    *,
    temp_air_c: np.ndarray,
    wind_ms: np.ndarray | None = None,
    ghi: np.ndarray | None = None,
    dni: np.ndarray | None = None,
    dhi: np.ndarray | None = None,
    cloud_cover: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """PV capacity factor (AC per DC nameplate, in [0, 1]) per period, and which path was taken.

    Give ``ghi`` (optionally with both ``dni`` and ``dhi``), or ``cloud_cover`` (fraction); see the
    module docstring for the models. ``wind_ms`` (10 m wind, m/s) cools the cells; default 1 m/s.
    """
    mid = _mid_period(times)
    solpos = pvlib.solarposition.get_solarposition(
        mid, site.latitude, site.longitude, altitude=site.altitude_m
    )
    zenith = solpos["apparent_zenith"].to_numpy()
    if ghi is not None:
        path = (
            "irradiance (GHI, DNI, DHI)" if dni is not None and dhi is not None else "irradiance (GHI, Erbs)"
        )
        ghi = np.asarray(ghi, dtype=np.float64)
    elif cloud_cover is not None:
        ghi = clear_sky_ghi(times, site) * cloud_transmittance(cloud_cover)
        path = "cloud cover (Ineichen clear sky x Kasten-Czeplak)"
    else:
        raise ScenarioError("solar: needs irradiance (ghi) or cloud_cover")
    if dni is None or dhi is None:
        parts = pvlib.irradiance.erbs(ghi, zenith, mid)
        dni, dhi = np.asarray(parts["dni"]), np.asarray(parts["dhi"])
    poa = pvlib.irradiance.get_total_irradiance(
        site.tilt, site.azimuth, zenith, solpos["azimuth"].to_numpy(), dni, ghi, dhi, model="isotropic"
    )["poa_global"]
    poa = np.nan_to_num(np.asarray(poa, dtype=np.float64), nan=0.0).clip(min=0.0)
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
    wind = np.ones_like(poa) if wind_ms is None else np.asarray(wind_ms, dtype=np.float64)
    temp_cell = pvlib.temperature.sapm_cell(poa, np.asarray(temp_air_c, dtype=np.float64), wind, **params)
    pdc = pvlib.pvsystem.pvwatts_dc(poa, temp_cell, pdc0=1.0, gamma_pdc=site.gamma_pdc)
    pdc = np.asarray(pdc) * (1.0 - site.losses_pct / 100.0)
    pac_rating = 1.0 / site.dc_ac_ratio
    pac = pvlib.inverter.pvwatts(pdc, pdc0=pac_rating / 0.96)
    cf = np.clip(np.nan_to_num(np.asarray(pac, dtype=np.float64), nan=0.0), 0.0, pac_rating)
    return cf, f"{path}; PVWatts {site.tilt:g} deg tilt, {site.azimuth:g} deg azimuth"


@functools.lru_cache(maxsize=16)
def _turbine(turbine_type: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(wind speeds m/s, power W, nominal power W) of a turbine from windpowerlib's bundled library."""
    try:
        with warnings.catch_warnings():  # windpowerlib's own pandas deprecations and "no curve" notes
            warnings.simplefilter("ignore")
            turbine = WindTurbine(hub_height=100.0, turbine_type=turbine_type)
    except (KeyError, ValueError) as exc:
        raise ScenarioError(
            f"weather.turbine: {turbine_type!r} is not in windpowerlib's turbine library; "
            f"see envs.weather.wind_turbine_types()"
        ) from exc
    if turbine.power_curve is None:
        raise ScenarioError(f"weather.turbine: {turbine_type!r} has no power curve in windpowerlib's library")
    curve = turbine.power_curve
    return (
        curve["wind_speed"].to_numpy(dtype=np.float64),
        curve["value"].to_numpy(dtype=np.float64),
        float(turbine.nominal_power),
    )


def wind_turbine_types() -> list[str]:
    """Turbine types with a power curve in windpowerlib's bundled (offline) library."""
    from windpowerlib.data import get_turbine_types

    types = get_turbine_types(turbine_library="local", print_out=False)
    return sorted(types.loc[types["has_power_curve"], "turbine_type"])


def hub_height_wind(wind_ms: np.ndarray, site: SiteWeather) -> np.ndarray:
    """Hellman power law: v_hub = v · (hub_height / measurement_height)^α, m/s."""
    v = pd.Series(np.asarray(wind_ms, dtype=np.float64))
    out = wind_speed.hellman(
        v, site.measurement_height_m, site.hub_height_m, hellman_exponent=site.hellman_exponent
    )
    return np.asarray(out, dtype=np.float64)


def wind_cf(wind_ms: np.ndarray, site: SiteWeather) -> tuple[np.ndarray, str]:
    """Wind capacity factor in [0, 1] from wind speed at the measurement height, and the path taken."""
    speeds, power, nominal = _turbine(site.turbine)
    v_hub = hub_height_wind(wind_ms, site)
    p = power_output.power_curve(pd.Series(v_hub), speeds, power)
    cf = np.clip(np.asarray(p, dtype=np.float64) / nominal, 0.0, 1.0)
    path = (
        f"wind speed at {site.measurement_height_m:g} m -> {site.hub_height_m:g} m hub "
        f"(Hellman alpha {site.hellman_exponent:.3g}), windpowerlib {site.turbine} power curve"
    )
    return cf, path
