"""The pure per-period functions of envs.dynamics, on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from envs import dynamics as dyn


def flows(**kw):
    """complete_power with a 1-site default: no load, no renewables, limits 20 import / 5 export."""
    args = dict(
        fixed_it_mw=0.0,
        inference_gpus=0.0,
        gpu_mw=0.1,
        cooling=0.0,
        renewable_mw=0.0,
        charge_mw=0.0,
        discharge_mw=0.0,
        gen_mw=0.0,
        gen_capacity_mw=5.0,
        import_limit_mw=20.0,
        export_cap_mw=5.0,
    )
    args.update(kw)
    return dyn.complete_power(**args)


def balance_gap(f):
    supply = f.renewable_used_mw + f.gen_mw + f.discharge_mw + f.grid_import_mw + f.lost_load_mw
    return f.load_mw + f.charge_mw + f.grid_export_mw - supply


def test_deficit_is_imported_after_renewables_and_cooling():
    f = flows(fixed_it_mw=2.0, inference_gpus=10, cooling=0.5, renewable_mw=1.0, gen_mw=0.5)
    assert f.load_mw == pytest.approx(1.5 * 3.0)  # (1 + cooling) * (2 + 10 * 0.1)
    assert f.grid_import_mw == pytest.approx(4.5 - 1.0 - 0.5)
    assert f.renewable_used_mw == 1.0 and f.curtailed_mw == 0.0 and f.grid_export_mw == 0.0
    assert balance_gap(f) == pytest.approx(0.0, abs=1e-12)


def test_surplus_exported_to_the_limit_then_curtailed():
    f = flows(fixed_it_mw=1.0, renewable_mw=8.0)
    assert (f.grid_export_mw, f.curtailed_mw, f.renewable_used_mw) == (5.0, 2.0, 6.0)
    assert f.grid_import_mw == 0.0


def test_no_export_at_a_non_positive_price():
    f = flows(fixed_it_mw=1.0, renewable_mw=8.0, export_cap_mw=0.0)
    assert (f.grid_export_mw, f.curtailed_mw, f.renewable_used_mw) == (0.0, 7.0, 1.0)


def test_surplus_cascade_lowers_discharge_then_generator():
    # load 1, renewables 2, discharge 4, gen 3, export cap 1: surplus 8, export 1, curtail 2,
    # 5 left: discharge 4 -> 0, then gen 3 -> 2.
    f = flows(fixed_it_mw=1.0, renewable_mw=2.0, discharge_mw=4.0, gen_mw=3.0, export_cap_mw=1.0)
    assert (f.grid_export_mw, f.curtailed_mw, f.discharge_mw, f.gen_mw) == (1.0, 2.0, 0.0, 2.0)
    assert (f.discharge_cut_mw, f.gen_cut_mw) == (4.0, 1.0)
    assert balance_gap(f) == pytest.approx(0.0, abs=1e-12)


def test_import_cascade_charge_then_generator_then_shedding_then_lost_load():
    # load 0.6 MW (0.4 fixed + 2 GPUs), charge 5, limit 1: excess 4.6 absorbed by charging alone.
    f = flows(fixed_it_mw=0.4, inference_gpus=2, charge_mw=5.0, import_limit_mw=1.0)
    assert f.charge_mw == pytest.approx(0.4) and f.charge_cut_mw == pytest.approx(4.6)
    assert f.grid_import_mw == 1.0 and f.keep == 1.0
    # limit 0.3, generator 0.1 MW of room: gen raised 0.1, then 0.2 MW of inference shed (all 2 GPUs).
    f = flows(fixed_it_mw=0.4, inference_gpus=2, gen_capacity_mw=0.1, import_limit_mw=0.3)
    assert f.gen_raised_mw == pytest.approx(0.1) and f.gen_mw == pytest.approx(0.1)
    assert f.shed_gpus == pytest.approx(2.0) and f.keep == pytest.approx(0.0, abs=1e-12)
    assert f.lost_load_mw == pytest.approx(0.0, abs=1e-12)
    # limit 0.1, no generator: shed 0.2 MW, 0.3 MW lost.
    f = flows(fixed_it_mw=0.4, inference_gpus=2, gen_capacity_mw=0.0, import_limit_mw=0.1)
    assert f.lost_load_mw == pytest.approx(0.3) and f.grid_import_mw == 0.1
    assert f.load_mw == pytest.approx(0.4)
    assert balance_gap(f) == pytest.approx(0.0, abs=1e-12)


def test_battery_power_is_clipped_by_state_of_charge():
    # 10 MWh battery at 9 MWh, eta 0.9: charging room (10 - 9) / 0.9 MW for one hour.
    c, d, clip = dyn.battery_power(1.0, 9.0, 5.0, 5.0, 0.0, 10.0, 0.9, 0.8, 1.0)
    assert (c, d) == (pytest.approx(1.0 / 0.9), 0.0) and clip == pytest.approx(5.0 - 1.0 / 0.9)
    c, d, clip = dyn.battery_power(-0.5, 1.0, 5.0, 5.0, 0.0, 10.0, 0.9, 0.8, 1.0)
    assert (c, d) == (0.0, pytest.approx(0.8)) and clip == pytest.approx(2.5 - 0.8)
    assert dyn.battery_power(-7.0, 5.0, 5.0, 4.0, 0.0, 10.0, 1.0, 1.0, 1.0)[:2] == (0.0, 4.0)
    soc = dyn.soc_next(9.0, 1.0 / 0.9, 0.0, 0.9, 0.8, 0.0, 10.0, 1.0)
    assert soc == pytest.approx(10.0)
    assert dyn.soc_next(5.0, 0.0, 0.8, 0.9, 0.8, 0.0, 10.0, 1.0) == pytest.approx(4.0)


def test_generator_power_clips_to_capacity():
    assert dyn.generator_power(0.25, 4.0) == 1.0
    assert dyn.generator_power(3.0, 4.0) == 4.0 and dyn.generator_power(-1.0, 4.0) == 0.0


def test_place_starts_in_slot_order_against_free_gpus():
    allowed = np.ones((3, 3), dtype=bool)
    allowed[2, 2] = False
    placed, ignored, free = dyn.place_starts(
        np.array([1, 1, 2]), allowed, np.array([6.0, 6.0, 1.0]), np.array([10.0, 10.0])
    )
    assert placed == [(0, 0)] and ignored == [1, 2]
    np.testing.assert_array_equal(free, [4.0, 10.0])
    placed, ignored, _ = dyn.place_starts(np.array([5, -1, 0]), allowed, np.ones(3), np.full(2, 9.0))
    assert placed == [] and ignored == [0, 1]


def test_repair_routes_clips_zeroes_and_scales():
    routes = np.array([[1.0, 0.0], [1.0, 1.0]])
    frac, clipped, removed, scaled = dyn.repair_routes(np.array([[1.5, 0.5], [0.9, 0.6]]), routes)
    np.testing.assert_allclose(frac, [[1.0, 0.0], [0.6, 0.4]])
    assert clipped == pytest.approx(0.5) and removed == pytest.approx(0.5) and scaled == pytest.approx(0.5)


def test_serve_within_capacity_cuts_proportionally():
    serve, site, cut = dyn.serve_within_capacity(
        np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([10.0, 10.0]), np.array([12.0, 100.0])
    )
    np.testing.assert_allclose(serve, [[4.0, 5.0], [8.0, 0.0]])
    np.testing.assert_allclose(site, [12.0, 5.0])
    assert cut == pytest.approx(3.0)


def test_energy_and_inference_terms():
    f = flows(fixed_it_mw=2.0, gen_mw=0.5, charge_mw=1.0)  # import 2.5
    exp, imp, gen, degr, em = dyn.site_energy_terms(f, 50.0, 40.0, 90.0, 5.0, 0.4, 0.45, 1.0)
    assert (exp, imp, gen, degr) == (0.0, -125.0, -45.0, -5.0)
    assert em == pytest.approx(2.5 * 0.4 + 0.5 * 0.45)
    rev, pen, unserved = dyn.inference_terms([3.0, 1.0], [4.0, 1.0], [0.1, 0.2], [1.0, 2.0], 2.0)
    assert rev == pytest.approx(1.0) and pen == pytest.approx(-2.0) and unserved == [1.0, 0.0]


def test_carbon_overrun_counts_each_ton_once():
    assert dyn.carbon_overrun_t(0.0, 5.0, None) == 0.0
    assert dyn.carbon_overrun_t(8.0, 5.0, 10.0) == 3.0
    assert dyn.carbon_overrun_t(13.0, 2.0, 10.0) == 2.0
    assert dyn.carbon_overrun_t(1.0, 2.0, 10.0) == 0.0
