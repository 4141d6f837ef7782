"""CSV loading: scenario_from_csv (issue 2, envs/data.py; schema in docs/data.md)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.replay import OracleReplayPolicy
from envs import CarbonAwareDCEnv
from envs.data import DataGapWarning, load_site_series, scenario_from_csv
from envs.presets import cooling_coefficient, draw_jobs, make_scenario
from envs.scenario import InferenceClass, Scenario, ScenarioError
from envs.weather import SiteWeather, solar_cf, wind_cf
from oracle import solve

KINDS = ("solar", "wind", "solar")  # the paper preset's installation: 5 MW solar, 8 MW wind, 12 MW solar
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "csv"


def grid_export(s: int, T: int = 24, start: str = "2024-03-10T00:00:00Z") -> pd.DataFrame:
    """One site's hourly UTC export shaped like real grid data (ENTSO-E / CAISO / Electricity Maps).

    Prices in USD/MWh with negative midday hours at solar sites and a scarcity spike above 1,000
    in the evening; carbon intensity in gCO2/kWh; ambient temperature in deg C; capacity factors.
    """
    ts = pd.date_range(start, periods=T, freq="h")
    h = ts.hour.to_numpy(dtype=float)
    sun = np.maximum(0.0, np.sin(np.pi * (h - 6.0) / 12.0))
    price = 60.0 + 10.0 * s + 60.0 * ((h >= 17) & (h < 21)) - 15.0 * ((h >= 1) & (h < 5))
    price = price - (95.0 * sun if KINDS[s] == "solar" else 0.0)
    price = np.round(price + 0.25 * np.arange(T) % 3, 2)
    if s == 1:
        price[h == 19] = 2150.75
    frame = pd.DataFrame(
        {
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "price_usd_per_mwh": price,
            "export_price_usd_per_mwh": np.round(0.8 * price, 2),
            "carbon_g_per_kwh": np.round((620.0 - 200.0 * s) * (1.0 - 0.35 * sun), 1),
            "temp_c": np.round(18.0 + 8.0 * np.sin(2.0 * np.pi * (h - 9.0) / 24.0) + 4.0 * (s - 1), 1),
        }
    )
    if KINDS[s] == "solar":
        frame["solar_cf"] = np.round(0.9 * sun, 3)
    else:
        frame["wind_cf"] = np.round(0.45 + 0.2 * np.sin(np.arange(T) / 5.0), 3)
    return frame


def write(tmp_path: Path, frames: list[pd.DataFrame]) -> list[Path]:
    paths = []
    for s, frame in enumerate(frames):
        path = tmp_path / f"dc{s}-{KINDS[s]}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture
def frames() -> list[pd.DataFrame]:
    return [grid_export(s) for s in range(3)]


def assert_error(paths: list[Path], match_file: Path, column: str, row: str, **kwargs) -> str:
    """scenario_from_csv raises ScenarioError naming the file, the column and the row."""
    with pytest.raises(ScenarioError) as info:
        scenario_from_csv(paths, **kwargs)
    msg = str(info.value)
    assert str(match_file) in msg, msg
    assert f"column {column!r}" in msg, msg
    assert row in msg, msg
    return msg


# ----------------------------------------------------------------------------- a realistic set
def test_realistic_csvs_convert_units(tmp_path, frames):
    sc = scenario_from_csv(write(tmp_path, frames), name="grid", carbon_price_usd_per_t=80.0)
    assert (sc.S, sc.T, sc.dt_h, sc.J, sc.K) == (3, 24, 1.0, 6, 3)
    assert [site.name for site in sc.sites] == ["dc0-solar", "dc1-wind", "dc2-solar"]
    # prices kept as is: negative hours and a 2,150.75 USD/MWh spike
    np.testing.assert_array_equal(sc.price_import[1], frames[1]["price_usd_per_mwh"].to_numpy())
    assert sc.price_import[0].min() < 0 and sc.price_import[2].min() < 0
    assert sc.price_import[1, 19] == 2150.75 and sc.price_export[1, 19] == round(0.8 * 2150.75, 2)
    # carbon: 620 gCO2/kWh at midnight = 0.62 tCO2/MWh; 220 -> 0.22
    assert sc.carbon_intensity[0, 0] == pytest.approx(0.62, abs=1e-12)
    assert sc.carbon_intensity[2, 0] == pytest.approx(0.22, abs=1e-12)
    np.testing.assert_allclose(sc.carbon_intensity, np.array([f["carbon_g_per_kwh"] for f in frames]) / 1000)
    # renewables: capacity factor x the paper installation (5 MW solar, 8 MW wind, 12 MW solar)
    assert sc.renewable_mw[0, 12] == pytest.approx(5.0 * 0.9)
    assert sc.renewable_mw[2, 12] == pytest.approx(12.0 * 0.9)
    assert sc.renewable_mw[1, 0] == pytest.approx(8.0 * 0.45)
    assert sc.renewable_mw[0, 0] == 0.0
    # cooling from temperature via the preset curve: 0.15 + 0.30 clip((temp - 12)/20, 0, 1)
    temp = np.array([f["temp_c"] for f in frames])
    np.testing.assert_allclose(sc.cooling, cooling_coefficient(temp))
    assert sc.cooling[2, 15] == pytest.approx(0.15 + 0.30 * (frames[2]["temp_c"][15] - 12.0) / 20.0)
    # the default workload is the paper preset's
    assert sc.jobs == make_scenario("paper", 0).jobs
    assert sc.classes == make_scenario("paper", 0).classes
    assert sc.demand_gpus[0, 14] == 7000.0 and sc.demand_gpus[0, 20] == 9000.0
    assert sc.carbon_price_usd_per_t == 80.0 and sc.carbon_budget_t is None


def test_realistic_csvs_round_trip_json(tmp_path, frames):
    sc = scenario_from_csv(write(tmp_path, frames), carbon_budget_t=123.45)
    path = tmp_path / "sc.json"
    sc.to_json(path)
    back = Scenario.from_json(path)
    assert back == sc
    np.testing.assert_array_equal(back.price_import, sc.price_import)
    assert back.carbon_budget_t == 123.45


def paper_sized(tmp_path: Path) -> Scenario:
    sc = scenario_from_csv(write(tmp_path, [grid_export(s) for s in range(3)]), carbon_price_usd_per_t=80.0)
    assert (sc.S, sc.T, sc.J, sc.K) == (3, 24, 6, 3)
    return sc


def test_csv_scenario_solves(tmp_path):
    sch = solve(paper_sized(tmp_path))
    assert sch.status == "optimal"


def test_csv_scenario_steps(tmp_path):
    sc = paper_sized(tmp_path)
    env = CarbonAwareDCEnv(scenario=sc, preset="paper")
    env.reset(seed=0)
    env.action_space.seed(0)
    for t in range(sc.T):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
        assert terminated == (t == sc.T - 1) and not truncated


def test_csv_scenario_replays_the_oracle_schedule(tmp_path):
    """A CSV-built scenario keeps the project's central identity: the env earns the oracle's objective."""
    sch = solve(paper_sized(tmp_path))
    env = CarbonAwareDCEnv(scenario=sch.scenario, preset="paper")
    policy = OracleReplayPolicy(sch)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, done, _, info = env.step(policy.predict(obs)[0])
        total += reward
        assert not info["repairs"]
    assert total == pytest.approx(sch.objective_usd, rel=1e-6)


def test_worked_example_of_the_docs_builds():
    sc = scenario_from_csv(
        [EXAMPLES / "dc0-solar.csv", EXAMPLES / "dc1-wind.csv", EXAMPLES / "dc2-solar.csv"],
        solar_mw=[5.0, 0.0, 12.0],
        wind_mw=[0.0, 8.0, 0.0],
        name="example-2024-07-01",
        carbon_price_usd_per_t=80.0,
    )
    assert (sc.S, sc.T, sc.dt_h) == (3, 24, 1.0)
    assert sc.carbon_intensity[0, 0] == pytest.approx(0.6208)  # 620.8 gCO2/kWh
    assert sc.price_import[1, 19] == 1450.0 and sc.price_import[2].min() < 0
    assert sc.cooling[0, 0] == 0.15  # 8.3 degC is below 12 degC
    assert sc.renewable_mw[0, 12] == pytest.approx(
        5.0 * pd.read_csv(EXAMPLES / "dc0-solar.csv")["solar_cf"][12]
    )


# ----------------------------------------------------------------------------- options
def test_timezones_naive_is_utc_and_offsets_convert(tmp_path, frames):
    frames[1]["timestamp"] = pd.date_range("2024-03-10", periods=24, freq="h").strftime("%Y-%m-%d %H:%M")
    frames[2]["timestamp"] = pd.date_range("2024-03-10T01:00+01:00", periods=24, freq="h").strftime(
        "%Y-%m-%dT%H:%M:%S+01:00"
    )
    sc = scenario_from_csv(write(tmp_path, frames))
    assert sc.T == 24


def test_export_price_factor_replaces_the_column(tmp_path, frames):
    for f in frames:
        del f["export_price_usd_per_mwh"]
    sc = scenario_from_csv(write(tmp_path, frames), export_price_factor=0.5)
    np.testing.assert_array_equal(sc.price_export, 0.5 * sc.price_import)


def test_export_price_factor_and_column_together_is_an_error(tmp_path, frames):
    paths = write(tmp_path, frames)
    with pytest.raises(ScenarioError, match=r"dc0-solar\.csv: column 'export_price_usd_per_mwh'"):
        scenario_from_csv(paths, export_price_factor=0.8)


def test_window_and_explicit_workload(tmp_path):
    frames = [grid_export(s, T=72, start="2024-03-09T00:00:00Z") for s in range(2)]
    frames[1] = frames[1].iloc[5:].reset_index(drop=True)  # different ranges: fine with a window
    cls = InferenceClass("chat", 0.2, 0.5, (10.0, 30.0), 40.0)
    sc = scenario_from_csv(
        write(tmp_path, frames),
        start="2024-03-10T00:00:00",
        periods=30,
        jobs=(),
        classes=[cls],
        demand_gpus=np.full((1, 30), 500.0),
        cooling_fn=lambda temp: np.full_like(temp, 0.2),
        columns={"wind_cf": "wind_cf"},
    )
    assert sc.T == 30 and sc.J == 0 and sc.K == 1
    np.testing.assert_array_equal(sc.price_import[0], frames[0]["price_usd_per_mwh"].to_numpy()[24:54])
    assert (sc.cooling == 0.2).all()


def test_column_rename_map(tmp_path, frames):
    frames[0] = frames[0].rename(columns={"price_usd_per_mwh": "LMP"})
    sc = scenario_from_csv(write(tmp_path, frames), columns={"LMP": "price_usd_per_mwh"})
    np.testing.assert_array_equal(sc.price_import[0], frames[0]["LMP"].to_numpy())


def test_default_jobs_need_the_paper_shape(tmp_path):
    paths = write(tmp_path, [grid_export(s, T=48) for s in range(3)])
    with pytest.raises(ScenarioError, match=r"jobs: .* 3 sites x 24 periods"):
        scenario_from_csv(paths)
    assert scenario_from_csv(paths, jobs=()).T == 48


def test_classes_without_demand_is_an_error(tmp_path, frames):
    cls = InferenceClass("chat", 0.2, 0.5, (10.0, 30.0, 80.0), 40.0)
    with pytest.raises(ScenarioError, match="demand_gpus: required"):
        scenario_from_csv(write(tmp_path, frames), classes=[cls])


def test_missing_renewable_column_for_installed_capacity(tmp_path, frames):
    paths = write(tmp_path, frames)
    assert_error(paths, paths[0], "wind_cf", "missing", wind_mw=[3.0, 8.0, 0.0])


def test_capacity_factor_without_capacity_is_not_dropped(tmp_path, frames):
    frames[0]["wind_cf"] = 0.3
    paths = write(tmp_path, frames)
    assert_error(paths, paths[0], "wind_cf", "data row 1 (2024-03-10T00:00:00Z)")


# ----------------------------------------------------------------------------- bad input
def test_missing_column(tmp_path, frames):
    del frames[1]["carbon_g_per_kwh"]
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[1], "carbon_g_per_kwh", "missing")
    assert "found" in msg


def test_missing_timestamp_column(tmp_path, frames):
    frames[0] = frames[0].rename(columns={"timestamp": "time"})
    paths = write(tmp_path, frames)
    assert_error(paths, paths[0], "timestamp", "missing")


def test_empty_cell(tmp_path, frames):
    frames[2]["temp_c"] = frames[2]["temp_c"].astype(object)
    frames[2].loc[6, "temp_c"] = ""
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[2], "temp_c", "data row 7 (2024-03-10T06:00:00Z)")
    assert "empty cell" in msg


def test_nan_cell(tmp_path, frames):
    frames[0].loc[3, "price_usd_per_mwh"] = np.nan
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[0], "price_usd_per_mwh", "data row 4 (2024-03-10T03:00:00Z)")
    assert "empty cell" in msg  # pandas writes NaN as an empty field


def test_nan_text(tmp_path, frames):
    frames[0]["price_usd_per_mwh"] = frames[0]["price_usd_per_mwh"].astype(object)
    frames[0].loc[3, "price_usd_per_mwh"] = "NaN"
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[0], "price_usd_per_mwh", "data row 4 (2024-03-10T03:00:00Z)")
    assert "missing value ('NaN')" in msg


def test_non_numeric_value(tmp_path, frames):
    frames[1]["carbon_g_per_kwh"] = frames[1]["carbon_g_per_kwh"].astype(object)
    frames[1].loc[10, "carbon_g_per_kwh"] = "12,5"
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[1], "carbon_g_per_kwh", "data row 11 (2024-03-10T10:00:00Z)")
    assert "not a number ('12,5')" in msg


def test_infinite_value(tmp_path, frames):
    frames[1]["price_usd_per_mwh"] = frames[1]["price_usd_per_mwh"].astype(object)
    frames[1].loc[2, "price_usd_per_mwh"] = "inf"
    paths = write(tmp_path, frames)
    assert_error(paths, paths[1], "price_usd_per_mwh", "data row 3 (2024-03-10T02:00:00Z)")


def test_bad_timestamp(tmp_path, frames):
    frames[0].loc[5, "timestamp"] = "10/03/2024 05:00"
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[0], "timestamp", "data row 6")
    assert "ISO 8601" in msg


def test_wrong_length(tmp_path, frames):
    frames[2] = frames[2].iloc[:20]
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[2], "timestamp", "data row 20 (2024-03-10T19:00:00Z)")
    assert "20 periods" in msg and "24 periods" in msg


def test_different_time_ranges(tmp_path, frames):
    frames[1] = grid_export(1, start="2024-03-10T02:00:00Z")
    paths = write(tmp_path, frames)
    assert_error(paths, paths[1], "timestamp", "data row 1 (2024-03-10T02:00:00Z)")


def test_window_not_covered(tmp_path, frames):
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[0], "timestamp", "window", start="2024-03-10T06:00Z", periods=24)
    assert "2024-03-11T05:00:00Z" in msg


def test_unsorted_timestamps(tmp_path, frames):
    frames[1] = frames[1].iloc[[0, 1, 2, 4, 3, *range(5, 24)]]
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[1], "timestamp", "data row 5 (2024-03-10T03:00:00Z)")
    assert "not sorted" in msg


def test_duplicated_timestamps(tmp_path, frames):
    frames[2].loc[9, "timestamp"] = frames[2].loc[8, "timestamp"]
    frames[2] = frames[2].iloc[:-1]  # keep the length, so only the duplicate is wrong
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[2], "timestamp", "data row 10 (2024-03-10T08:00:00Z)")
    assert "duplicated" in msg


def test_irregular_spacing(tmp_path, frames):
    frames[0].loc[3, "timestamp"] = "2024-03-10T03:30:00Z"
    paths = write(tmp_path, frames)
    assert_error(paths, paths[0], "timestamp", "data row 4 (2024-03-10T03:30:00Z)")


def test_different_period_lengths(tmp_path, frames):
    frames[1] = frames[1].copy()
    frames[1]["timestamp"] = pd.date_range("2024-03-10", periods=24, freq="30min").strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[1], "timestamp", "data row 2 (2024-03-10T00:30:00Z)")
    assert "0.5 h" in msg


def test_gap_is_an_error(tmp_path, frames):
    frames[0] = frames[0].drop(index=[7, 8]).reset_index(drop=True)
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[0], "timestamp", "data row 8 (2024-03-10T09:00:00Z)")
    assert "2 period(s) missing" in msg and "2024-03-10T07:00:00Z" in msg and "interpolate=True" in msg


def test_gap_is_interpolated_on_request(tmp_path, frames):
    full = frames[0].copy()
    frames[0] = frames[0].drop(index=[7, 8]).reset_index(drop=True)
    paths = write(tmp_path, frames)
    with pytest.warns(DataGapWarning, match=r"dc0-solar\.csv: filled 2 missing timestamp\(s\) \(10 values\)"):
        sc = scenario_from_csv(paths, interpolate=True)
    price = full["price_usd_per_mwh"].to_numpy()
    expected = price[6] + (price[9] - price[6]) * np.array([1.0, 2.0]) / 3.0
    np.testing.assert_allclose(sc.price_import[0, 7:9], expected)
    np.testing.assert_array_equal(sc.price_import[0, :7], price[:7])
    np.testing.assert_array_equal(sc.price_import[1], frames[1]["price_usd_per_mwh"].to_numpy())


def test_no_warning_without_gaps(tmp_path, frames):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scenario_from_csv(write(tmp_path, frames), interpolate=True)


def test_negative_carbon_intensity(tmp_path, frames):
    frames[1].loc[0, "carbon_g_per_kwh"] = -3.0
    paths = write(tmp_path, frames)
    assert_error(paths, paths[1], "carbon_g_per_kwh", "data row 1 (2024-03-10T00:00:00Z)")


def test_capacity_factor_out_of_range_is_not_clipped(tmp_path, frames):
    frames[2].loc[12, "solar_cf"] = 1.02
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[2], "solar_cf", "data row 13 (2024-03-10T12:00:00Z)")
    assert "[0, 1]" in msg


def test_negative_cooling_from_a_user_function(tmp_path, frames):
    paths = write(tmp_path, frames)
    msg = assert_error(
        paths, paths[0], "temp_c", "data row 1 (2024-03-10T00:00:00Z)", cooling_fn=lambda t: t - 15.0
    )
    assert "cooling_fn" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match=re.escape(str(tmp_path / "nope.csv"))):
        scenario_from_csv([tmp_path / "nope.csv"])


def test_wrong_number_of_sites_or_capacities(tmp_path, frames):
    paths = write(tmp_path, frames)
    with pytest.raises(ScenarioError, match="solar_mw: 2 values given for 3 sites"):
        scenario_from_csv(paths, solar_mw=[1.0, 2.0])
    with pytest.raises(ScenarioError, match="sites: 1 sites given for 3 CSV files"):
        scenario_from_csv(paths, sites=[make_scenario("paper").sites[0]])


# ----------------------------------------------------------------------------- property
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.floats(min_value=-500.0, max_value=15_000.0, allow_nan=False).map(lambda x: round(x, 2)),
        min_size=24,
        max_size=24,
    )
)
def test_any_finite_price_is_kept_exactly(tmp_path, prices):
    frames = [grid_export(s) for s in range(3)]
    frames[0]["price_usd_per_mwh"] = prices
    sc = scenario_from_csv(write(tmp_path, frames))
    np.testing.assert_array_equal(sc.price_import[0], np.array(prices))


# ----------------------------------------------------------------------------- units in column names
@pytest.mark.parametrize(
    ("header", "factor_to_g_per_kwh"),
    [("carbon_kg_per_mwh", 1.0), ("carbon_lb_per_mwh", 0.45359237), ("carbon_t_per_mwh", 1000.0)],
)
def test_carbon_units_convert(tmp_path, frames, header, factor_to_g_per_kwh):
    g = frames[1]["carbon_g_per_kwh"].to_numpy()
    frames[1] = frames[1].rename(columns={"carbon_g_per_kwh": header})
    frames[1][header] = g / factor_to_g_per_kwh
    sc = scenario_from_csv(write(tmp_path, frames))
    np.testing.assert_allclose(sc.carbon_intensity[1], g / 1000.0, rtol=1e-12)


def test_fahrenheit_converts(tmp_path, frames):
    temp_c = frames[2]["temp_c"].to_numpy()
    frames[2] = frames[2].rename(columns={"temp_c": "temp_f"})
    frames[2]["temp_f"] = temp_c * 9.0 / 5.0 + 32.0
    sc = scenario_from_csv(write(tmp_path, frames))
    np.testing.assert_allclose(sc.cooling[2], cooling_coefficient(temp_c), rtol=1e-12)


def test_wind_speed_in_kmh_equals_m_per_s(tmp_path, frames):
    site = SiteWeather(latitude=50.0, longitude=8.0)
    speed = np.round(4.0 + 6.0 * np.abs(np.sin(np.arange(24) / 4.0)), 2)
    for s, header, values in ((0, "wind_ms", speed), (2, "wind_kmh", speed * 3.6)):
        frames[s] = frames[s].drop(columns="solar_cf")
        frames[s][header] = values
    paths = write(tmp_path, frames)
    sc = scenario_from_csv(paths, solar_mw=[0, 0, 0], wind_mw=[4.2, 8.0, 4.2], weather=[site, None, site])
    np.testing.assert_allclose(sc.renewable_mw[0], sc.renewable_mw[2], rtol=1e-12)
    cf, _ = wind_cf(speed, site)
    np.testing.assert_allclose(sc.renewable_mw[0], 4.2 * cf)


def test_two_headers_for_one_quantity_is_an_error(tmp_path, frames):
    frames[0]["carbon_t_per_mwh"] = frames[0]["carbon_g_per_kwh"] / 1000.0
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[0], "carbon_t_per_mwh", "again")
    assert "carbon_g_per_kwh" in msg


# ----------------------------------------------------------------------------- plausibility
@pytest.mark.parametrize(
    ("column", "value", "row"),
    [
        ("carbon_g_per_kwh", 2500.0, 5),  # lb/MWh of a coal grid under the g/kWh header
        ("temp_c", 95.0, 16),  # deg F under the deg C header
        ("price_usd_per_mwh", -5000.0, 3),
        ("solar_cf", 1.5, 13),
    ],
)
def test_implausible_values_name_file_column_row(tmp_path, frames, column, value, row):
    frames[0].loc[row - 1, column] = value
    paths = write(tmp_path, frames)
    stamp = frames[0]["timestamp"][row - 1]
    msg = assert_error(paths, paths[0], column, f"data row {row} ({stamp})")
    assert "plausible range" in msg and "limits=" in msg


def test_carbon_in_tonnes_under_the_gram_header_is_caught(tmp_path, frames):
    frames[1]["carbon_g_per_kwh"] = frames[1]["carbon_g_per_kwh"] / 1000.0
    paths = write(tmp_path, frames)
    msg = assert_error(paths, paths[1], "carbon_g_per_kwh", "data row")
    assert "carbon_t_per_mwh" in msg


def test_limits_override_per_call(tmp_path, frames):
    frames[0].loc[4, "temp_c"] = -70.0
    paths = write(tmp_path, frames)
    with pytest.raises(ScenarioError, match="plausible range"):
        scenario_from_csv(paths)
    sc = scenario_from_csv(paths, limits={"temp_c": (-90.0, 60.0)})
    assert sc.cooling[0, 4] == pytest.approx(0.15)
    with pytest.raises(ScenarioError, match="limits: unknown quantity 'temp'"):
        scenario_from_csv(paths, limits={"temp": (0, 1)})


# ----------------------------------------------------------------------------- local time, DST
def local_file(tmp_path: Path, start_local: str, tz: str, hours: int = 24) -> tuple[Path, pd.DatetimeIndex]:
    """A one-site file with naive local wall-clock timestamps (as local exports write them)."""
    utc = pd.date_range(pd.Timestamp(start_local, tz=tz).tz_convert("UTC"), periods=hours, freq="h")
    frame = grid_export(0, T=hours, start=str(utc[0]))
    frame["timestamp"] = utc.tz_convert(tz).strftime("%Y-%m-%d %H:%M")
    path = tmp_path / "local.csv"
    frame.to_csv(path, index=False)
    return path, utc


def test_spring_dst_local_file_with_tz(tmp_path):
    path, utc = local_file(tmp_path, "2024-03-31 00:00", "Europe/Berlin")
    assert "02:00" not in path.read_text().split("2024-03-31 01:00")[1][:30]  # the skipped hour
    with pytest.raises(ScenarioError, match="tz='Region/City'"):
        scenario_from_csv(path, jobs=(), solar_mw=[5.0], wind_mw=[0.0])
    series = load_site_series(path, solar_mw=[5.0], wind_mw=[0.0], tz="Europe/Berlin")
    assert series.T == 24 and (series.index == utc).all()
    assert series.local_hour()[0] == 0.0 and series.local_hour()[2] == 3.0


def test_spring_dst_nonexistent_local_time_is_explained(tmp_path):
    path, _ = local_file(tmp_path, "2024-03-31 00:00", "Europe/Berlin")
    text = path.read_text().replace("2024-03-31 03:00", "2024-03-31 02:00", 1)
    path.write_text(text)
    with pytest.raises(
        ScenarioError, match=r"data row 3 \(2024-03-31 02:00\): this local time does not exist"
    ):
        load_site_series(path, solar_mw=[5.0], wind_mw=[0.0], tz="Europe/Berlin")


def test_autumn_dst_local_file_with_tz(tmp_path):
    path, utc = local_file(tmp_path, "2024-10-27 00:00", "Europe/Berlin")
    assert path.read_text().count("2024-10-27 02:00") == 2
    with pytest.raises(ScenarioError, match=r"duplicated timestamp .*tz='Region/City'"):
        load_site_series(path, solar_mw=[5.0], wind_mw=[0.0])
    series = load_site_series(path, solar_mw=[5.0], wind_mw=[0.0], tz="Europe/Berlin")
    assert (series.index == utc).all()
    # the repeated 02:00 rows are 00:00Z (daylight time) then 01:00Z (standard time), in order
    assert series.index[2] == pd.Timestamp("2024-10-27T00:00Z") and series.index[3] == pd.Timestamp(
        "2024-10-27T01:00Z"
    )


def test_autumn_ambiguous_time_given_once_is_explained(tmp_path):
    path, _ = local_file(tmp_path, "2024-10-27 00:00", "Europe/Berlin")
    lines = path.read_text().splitlines()
    dup = [i for i, line in enumerate(lines) if line.startswith("2024-10-27 02:00")]
    del lines[dup[1]]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ScenarioError, match=r"occurs twice in Europe/Berlin .* but once in the file"):
        load_site_series(path, solar_mw=[5.0], wind_mw=[0.0], tz="Europe/Berlin")


def test_default_demand_follows_local_hours_with_tz(tmp_path):
    path, _ = local_file(tmp_path, "2024-07-01 00:00", "America/New_York")
    sc = scenario_from_csv(path, jobs=(), solar_mw=[5.0], wind_mw=[0.0], tz="America/New_York")
    assert sc.demand_gpus[0, 14] == 7000.0 and sc.demand_gpus[0, 20] == 9000.0  # local 14:00, 20:00


# ----------------------------------------------------------------------------- weather files, weeks
def test_weather_site_from_cloud_cover_and_wind(tmp_path, frames):
    site = SiteWeather(latitude=52.52, longitude=13.40)
    hours = np.arange(24)
    frames[2] = frames[2].drop(columns="solar_cf")
    frames[2]["cloud_cover_pct"] = 0.0
    frames[2]["wind_kmh"] = 18.0
    paths = write(tmp_path, frames)
    series = load_site_series(paths, solar_mw=[5, 0, 12], wind_mw=[0, 8, 4.2], weather=[None, None, site])
    assert "pvlib from cloud_cover_pct" in series.renewable_source[2]
    assert "windpowerlib from wind_kmh" in series.renewable_source[2]
    ts = pd.date_range("2024-03-10T00:00Z", periods=24, freq="h")
    pv, _ = solar_cf(
        ts,
        site,
        temp_air_c=frames[2]["temp_c"].to_numpy(),
        wind_ms=np.full(24, 5.0),
        cloud_cover=np.zeros(24),
    )
    wind, _ = wind_cf(np.full(24, 5.0), site)
    np.testing.assert_allclose(series.renewable_mw[2], 12 * pv + 4.2 * wind)
    assert series.renewable_mw[2][hours == 0] == pytest.approx(4.2 * wind[0])  # night: wind only
    with pytest.raises(ScenarioError, match="needs the site's location"):
        load_site_series(paths, solar_mw=[5, 0, 12], wind_mw=[0, 8, 0])


def week_paths(tmp_path: Path, S: int = 5, T: int = 168) -> list[Path]:
    paths = []
    for s in range(S):
        frame = grid_export(s % 3, T=T)
        path = tmp_path / f"site{s}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def test_env_infers_the_shapes_of_a_five_site_week(tmp_path):
    kinds = [KINDS[s % 3] for s in range(5)]
    solar = [5.0 if k == "solar" else 0.0 for k in kinds]
    wind = [6.0 if k == "wind" else 0.0 for k in kinds]
    rng = np.random.default_rng(3)
    sc = scenario_from_csv(
        week_paths(tmp_path), solar_mw=solar, wind_mw=wind, jobs=draw_jobs(rng, 5, 168, 12)
    )
    assert (sc.S, sc.T, sc.J, sc.K) == (5, 168, 12, 5)
    env = CarbonAwareDCEnv(scenario=sc, preset=None)
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.scenario.T == 168 and env.observation_space.contains(obs)
    _, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(reward)


@pytest.mark.slow
def test_csv_week_scenario_replays_the_oracle_schedule(tmp_path):
    """The replay identity on a CSV-built 168-h scenario (3 sites, 8 jobs from the preset generator)."""
    rng = np.random.default_rng(11)
    sc = scenario_from_csv(
        week_paths(tmp_path, S=3), jobs=draw_jobs(rng, 3, 168, 8), carbon_price_usd_per_t=80.0
    )
    sch = solve(sc, time_limit_s=60.0)
    assert sch.status in ("optimal", "time_limit"), sch.diagnosis
    env = CarbonAwareDCEnv(scenario=sch.scenario, preset=None)
    policy = OracleReplayPolicy(sch)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, done, _, info = env.step(policy.predict(obs)[0])
        total += reward
        assert not info["repairs"]
    assert total == pytest.approx(sch.objective_usd, rel=1e-6)
