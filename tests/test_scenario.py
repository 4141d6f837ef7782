"""Scenario validation and JSON interchange (issue 2)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from envs import PRESETS, Scenario, ScenarioError, make_scenario
from envs.scenario import SERIES_CLASS, SERIES_SITE, TrainingJob
from tests.conftest import make_site, make_tiny


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_json_round_trip_is_exact(preset, seed, tmp_path):
    sc = make_scenario(preset, seed)
    path = tmp_path / "sc.json"
    sc.to_json(path)
    back = Scenario.from_json(path)
    assert back == sc
    for name in SERIES_SITE + SERIES_CLASS:
        np.testing.assert_array_equal(getattr(back, name), getattr(sc, name))
    assert back.sites == sc.sites and back.jobs == sc.jobs and back.classes == sc.classes
    assert back.carbon_budget_t == sc.carbon_budget_t


def test_json_has_the_documented_shape(tiny):
    data = json.loads(tiny.to_json())
    assert set(data) == {
        "name", "T", "dt_h", "carbon_budget_t", "carbon_price_usd_per_t",
        "sites", "jobs", "classes", "series",
    }  # fmt: skip
    assert set(data["series"]) == set(SERIES_SITE + SERIES_CLASS)
    assert data["carbon_budget_t"] is None
    assert data["jobs"][0]["eligible"] == [True]
    assert len(data["series"]["cooling"]) == 1 and len(data["series"]["cooling"][0]) == 3
    assert set(data["jobs"][0]) == {
        "name", "gpus", "duration", "release", "deadline", "value_usd", "eligible", "mandatory",
    }  # fmt: skip


def test_scenario_is_immutable(tiny):
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.T = 5
    with pytest.raises(ValueError):
        tiny.price_import[0, 0] = 1.0


def test_inputs_are_copied_not_aliased():
    prices = np.full((1, 3), 50.0)
    sc = make_tiny(price_import=prices)
    prices[0, 0] = 999.0
    assert sc.price_import[0, 0] == 50.0


def test_derived_values(tiny):
    assert tiny.job_power_mw.shape == (1, 1)
    assert tiny.job_power_mw[0, 0] == pytest.approx(0.4)  # 4 GPUs x 100 kW
    assert list(tiny.start_window(0)) == [0, 1, 2]
    sc = make_tiny(
        S=2,
        classes=(dataclasses.replace(make_tiny().classes[0], latency_ms=(10.0, 80.0)),),
    )
    assert sc.routes.tolist() == [[True, False]]


# --------------------------------------------------------------------------- bad input
def _bad_site(**changes):
    return make_tiny(sites=(make_site(**changes),))


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: make_tiny(price_import=np.zeros((2, 3))), "price_import"),
        (lambda: make_tiny(demand_gpus=np.zeros((1, 4))), "demand_gpus"),
        (lambda: _bad_site(capacity_mwh=-1.0), "sites[0].capacity_mwh"),
        (lambda: _bad_site(gpu_capacity=-5), "sites[0].gpu_capacity"),
        (lambda: _bad_site(import_limit_mw=-0.1), "sites[0].import_limit_mw"),
        (lambda: _bad_site(eta_charge=1.2), "sites[0].eta_charge"),
        (lambda: _bad_site(eta_discharge=0.0), "sites[0].eta_discharge"),
        (lambda: _bad_site(soc_min_frac=0.6, soc_init_frac=0.5), "sites[0].soc_init_frac"),
        (lambda: _bad_site(soc_max_frac=0.4, soc_init_frac=0.5), "sites[0].soc_init_frac"),
        (lambda: _bad_site(soc_max_frac=1.5), "sites[0].soc_max_frac"),
        (lambda: _bad_site(gpu_power_kw=float("nan")), "sites[0].gpu_power_kw"),
        (lambda: make_tiny(renewable_mw=np.array([[1.0, np.nan, 1.0]])), "renewable_mw[0][1]"),
        (lambda: make_tiny(price_export=np.array([[1.0, 2.0, np.inf]])), "price_export[0][2]"),
        (lambda: make_tiny(cooling=np.array([[0.1, -0.2, 0.1]])), "cooling[0][1]"),
        (lambda: make_tiny(carbon_intensity=np.full((1, 3), -1.0)), "carbon_intensity[0][0]"),
        (lambda: make_tiny(demand_gpus=np.array([[1.0, -1.0, 0.0]])), "demand_gpus[0][1]"),
        (lambda: make_tiny(dt_h=0.0), "dt_h"),
        (lambda: make_tiny(T=0), "T"),
        (lambda: make_tiny(carbon_budget_t=-1.0), "carbon_budget_t"),
        (lambda: make_tiny(carbon_price_usd_per_t=float("nan")), "carbon_price_usd_per_t"),
        (lambda: make_tiny(sites=()), "sites"),
    ],
)
def test_bad_input_names_the_field(build, field):
    with pytest.raises(ScenarioError) as err:
        build()
    assert str(err.value).startswith(field + ":"), str(err.value)


def _job(**changes):
    fields = dict(name="j", gpus=4, duration=2, release=0, deadline=3, value_usd=1.0, eligible=(True,))
    fields.update(changes)
    return TrainingJob(**fields)


@pytest.mark.parametrize(
    ("job", "field", "snippet"),
    [
        (_job(release=3, deadline=3), "jobs[0].release", "before deadline"),
        (_job(release=2, deadline=1), "jobs[0].release", "before deadline"),
        (_job(duration=3, release=1, deadline=3), "jobs[0].duration", "longer than the window"),
        (_job(deadline=4), "jobs[0].deadline", "beyond the horizon"),
        (_job(gpus=0), "jobs[0].gpus", "> 0"),
        (_job(gpus=2.5), "jobs[0].gpus", "whole number"),
        (_job(eligible=(False,)), "jobs[0].eligible", "no eligible site"),
        (_job(eligible=(True, True)), "jobs[0].eligible", "one flag per site"),
        (_job(value_usd=float("nan")), "jobs[0].value_usd", "finite"),
    ],
)
def test_bad_job_names_the_field(job, field, snippet):
    with pytest.raises(ScenarioError) as err:
        make_tiny(jobs=(job,))
    assert str(err.value).startswith(field + ":") and snippet in str(err.value), str(err.value)


def test_bad_class_latency_length():
    cls = dataclasses.replace(make_tiny().classes[0], latency_ms=(1.0, 2.0))
    with pytest.raises(ScenarioError, match=r"classes\[0\].latency_ms"):
        make_tiny(classes=(cls,))


def test_duplicate_site_names_rejected():
    with pytest.raises(ScenarioError, match="names must be unique"):
        make_tiny(S=2, sites=(make_site("a"), make_site("a")))


def test_from_json_missing_field(tiny):
    data = json.loads(tiny.to_json())
    del data["series"]["cooling"]
    with pytest.raises(ScenarioError, match="cooling"):
        Scenario.from_dict(data)
    data = json.loads(tiny.to_json())
    data["sites"][0]["typo_mw"] = 1.0
    with pytest.raises(ScenarioError, match="typo_mw"):
        Scenario.from_dict(data)


def test_from_json_bad_value_names_field(tiny):
    data = json.loads(tiny.to_json())
    data["sites"][0]["eta_charge"] = 1.5
    with pytest.raises(ScenarioError, match=r"sites\[0\]\.eta_charge"):
        Scenario.from_dict(data)


def test_replace_revalidates(tiny):
    with pytest.raises(ScenarioError, match="capacity_mwh"):
        tiny.replace_sites(capacity_mwh=-1.0)
    assert tiny.replace_sites(capacity_mwh=0.0).sites[0].capacity_mwh == 0.0
    assert tiny.sites[0].capacity_mwh == 10.0
