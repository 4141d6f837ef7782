"""Presets: sizes, reproducibility and the calibration of MODEL.md §8 (issue 2)."""

from __future__ import annotations

import numpy as np
import pytest

from envs import PRESETS, ScenarioError, make_scenario
from envs.presets import cooling_coefficient
from envs.rules import greedy_workload, job_gpus_held


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sizes(preset):
    sc = make_scenario(preset, 0)
    size = PRESETS[preset]
    assert (sc.S, sc.T, sc.J, sc.K) == (size["S"], size["T"], size["J"], size["K"])
    assert sc.renewable_mw.shape == (sc.S, sc.T) and sc.demand_gpus.shape == (sc.K, sc.T)


def test_same_seed_same_scenario_other_seed_differs():
    assert make_scenario("paper", 3) == make_scenario("paper", 3)
    a, b = make_scenario("paper", 0), make_scenario("paper", 1)
    assert a != b
    assert a.sites == b.sites  # hardware is fixed; jobs, weather, prices, demand vary
    assert not np.array_equal(a.price_import, b.price_import)
    assert a.jobs != b.jobs


def test_unknown_preset_and_bad_seed():
    with pytest.raises(ScenarioError, match="unknown preset"):
        make_scenario("nope")
    with pytest.raises(ScenarioError, match="seed"):
        make_scenario("paper", -1)


def test_paper_calibration():
    sc = make_scenario("paper", 0)
    hour = np.arange(24)
    # evening peak +60 and night -15 around the site levels 80/60/70 (+- a few USD noise)
    evening = sc.price_import[:, (hour >= 17) & (hour < 21)].mean(axis=1)
    night = sc.price_import[:, (hour >= 1) & (hour < 5)].mean(axis=1)
    np.testing.assert_allclose(evening, [140, 120, 130], atol=5)
    np.testing.assert_allclose(night, [65, 45, 55], atol=5)
    np.testing.assert_allclose(sc.price_export, np.round(0.8 * sc.price_import, 2), atol=0.011)
    # carbon intensity differs strongly between sites and dips at solar noon by up to 35 %
    assert sc.carbon_intensity[0, 0] == pytest.approx(0.62)
    assert sc.carbon_intensity[2, 12] == pytest.approx(0.22 * 0.65, abs=1e-4)
    # PUE between 1.15 and 1.45
    assert 0.15 - 1e-12 <= sc.cooling.min() and sc.cooling.max() <= 0.45 + 1e-12
    # solar at sites 0 and 2: zero at night, at most the peak; wind at site 1 about half of 8 MW
    assert sc.renewable_mw[[0, 2]][:, :6].max() == 0.0
    assert sc.renewable_mw[0].max() <= 5.0 and sc.renewable_mw[2].max() <= 12.0
    assert 2.0 <= sc.renewable_mw[1].mean() <= 6.0
    # each class has exactly two sites within its SLO, its origin first
    assert sc.routes.sum(axis=1).tolist() == [2, 2, 2]
    assert all(sc.routes[k, k] for k in range(3))
    for job in sc.jobs:
        assert 4 <= job.duration <= 12 and job.gpus % 1000 == 0 and 3000 <= job.gpus <= 8000
        assert job.value_usd == pytest.approx(0.15 * job.gpus * job.duration)
    assert sc.carbon_price_usd_per_t == 80.0 and sc.carbon_budget_t > 0


def test_genrich_doubles_local_generation_and_keeps_budget():
    base, rich = make_scenario("paper", 2), make_scenario("paper-genrich", 2)
    np.testing.assert_allclose(rich.renewable_mw, 2 * base.renewable_mw)
    assert [s.gen_capacity_mw for s in rich.sites] == [2 * s.gen_capacity_mw for s in base.sites]
    assert rich.carbon_budget_t == base.carbon_budget_t
    np.testing.assert_array_equal(rich.price_import, base.price_import)


def test_cooling_coefficient_formula():
    np.testing.assert_allclose(
        cooling_coefficient(np.array([0.0, 12.0, 22.0, 40.0])), [0.15, 0.15, 0.30, 0.45]
    )


@pytest.mark.parametrize("preset", ["paper", "week"])
def test_greedy_rule_respects_capacity_windows_and_eligibility(preset):
    sc = make_scenario(preset, 4)
    starts, serve = greedy_workload(sc)
    cap = sc.site_array("gpu_capacity")[:, None]
    used = job_gpus_held(sc, starts) + serve.sum(axis=0)
    assert (used <= cap + 1e-9).all()
    assert len({j for j, _, _ in starts}) == len(starts)
    for j, s, t in starts:
        assert t in sc.start_window(j) and sc.eligible[j, s]
    assert (serve.sum(axis=1) <= sc.demand_gpus + 1e-9).all()
    assert (serve[~np.broadcast_to(sc.routes[:, :, None], serve.shape)] == 0).all()
