"""Weather -> renewables (envs/weather.py) against hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from envs.scenario import ScenarioError
from envs.weather import SiteWeather, clear_sky_ghi, cloud_transmittance, hub_height_wind, solar_cf, wind_cf

BERLIN = SiteWeather(latitude=52.52, longitude=13.40, altitude_m=34.0)


def test_clear_sky_noon_at_berlin_midsummer_by_hand():
    """Solar noon in Berlin on 21 June is about 11:07 UTC: zenith = 52.52 - 23.44 = 29.08 deg.

    Extraterrestrial horizontal irradiance there: 1361 (1 + 0.033 cos(2 pi 172 / 365)) cos(29.08 deg)
    = 1316 x 0.874 = 1150 W/m2; a clear sky passes 65-85 % (clearness index). The simple Haurwitz
    clear-sky formula 1098 cos z exp(-0.057 / cos z) gives 899 W/m2; Ineichen agrees within 10 %.
    """
    times = pd.date_range("2024-06-21T10:37:00Z", periods=1, freq="h")  # mid-period 11:07 UTC
    ghi = clear_sky_ghi(times, BERLIN)[0]
    cos_z = math.cos(math.radians(52.52 - 23.44))
    extraterrestrial = 1361.0 * (1 + 0.033 * math.cos(2 * math.pi * 172 / 365)) * cos_z
    assert 0.65 * extraterrestrial < ghi < 0.85 * extraterrestrial
    haurwitz = 1098.0 * cos_z * math.exp(-0.057 / cos_z)
    assert ghi == pytest.approx(haurwitz, rel=0.10)


def test_kasten_czeplak_transmittance():
    np.testing.assert_allclose(cloud_transmittance([0.0, 0.5, 1.0]), [1.0, 1 - 0.75 * 0.5**3.4, 0.25])


def test_pv_cf_clear_noon_cloudy_and_night():
    times = pd.date_range("2024-06-21T00:00:00Z", periods=24, freq="h")
    temp = np.full(24, 20.0)
    clear, path = solar_cf(times, BERLIN, temp_air_c=temp, cloud_cover=np.zeros(24))
    cloudy, _ = solar_cf(times, BERLIN, temp_air_c=temp, cloud_cover=np.ones(24))
    assert "cloud cover" in path and "PVWatts" in path
    assert clear[0] == 0.0 and clear[22] == 0.0  # night in Berlin
    # midday: losses 14 %, inverter 96 %, clipping at 1 / 1.1, warm cells: between 0.55 and 1/1.1
    assert 0.55 < clear[11] <= 1.0 / 1.1 + 1e-12
    assert np.all(cloudy <= clear + 1e-12) and cloudy[11] < 0.4 * clear[11]
    # the same GHI given directly takes the irradiance path and gives the same result
    ghi = clear_sky_ghi(times, BERLIN)
    direct, path = solar_cf(times, BERLIN, temp_air_c=temp, ghi=ghi)
    assert "irradiance" in path
    np.testing.assert_allclose(direct, clear, atol=1e-9)


def test_pv_southern_hemisphere_faces_north():
    site = SiteWeather(latitude=-37.81, longitude=144.96)  # Melbourne
    assert site.azimuth == 0.0 and site.tilt == pytest.approx(37.81)


def test_turbine_at_rated_speed_gives_rated_power():
    """E-126/4200 reaches its 4.2 MW from 15 m/s at hub height; cut-out above 25 m/s."""
    site = SiteWeather(latitude=0.0, longitude=0.0, hub_height_m=100.0, measurement_height_m=100.0)
    cf, path = wind_cf(np.array([0.0, 15.0, 20.0, 26.0]), site)
    assert "E-126/4200" in path
    np.testing.assert_allclose(cf, [0.0, 1.0, 1.0, 0.0])


def test_hellman_hub_height_correction_by_hand():
    site = SiteWeather(latitude=0.0, longitude=0.0, hub_height_m=100.0, measurement_height_m=10.0)
    assert hub_height_wind(np.array([5.0]), site)[0] == pytest.approx(5.0 * 10.0 ** (1 / 7))
    # 10 m/s at 10 m = 13.9 m/s at 100 m: just below rated, so cf is high but < 1
    cf, _ = wind_cf(np.array([10.0]), site)
    assert 0.9 < cf[0] < 1.0


def test_unknown_turbine_is_a_clear_error():
    site = SiteWeather(latitude=0.0, longitude=0.0, turbine="NoSuch/1")
    with pytest.raises(ScenarioError, match=r"weather\.turbine: 'NoSuch/1'"):
        wind_cf(np.array([5.0]), site)


def test_bad_location_is_an_error():
    with pytest.raises(ScenarioError, match=r"weather\.latitude"):
        SiteWeather(latitude=95.0, longitude=0.0)
