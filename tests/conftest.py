"""Tiny hand-built scenarios shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from envs.scenario import InferenceClass, Scenario, Site, TrainingJob


def make_site(name: str = "site0", **changes) -> Site:
    """A small site: 10 GPUs at 100 kW each (1 MW), a 10 MWh battery, 5 MW generator."""
    fields = dict(
        name=name,
        gpu_capacity=10,
        gpu_power_kw=100.0,
        base_it_mw=0.0,
        gen_capacity_mw=5.0,
        gen_cost_usd_per_mwh=90.0,
        gen_emissions_t_per_mwh=0.45,
        capacity_mwh=10.0,
        charge_mw=5.0,
        discharge_mw=5.0,
        eta_charge=1.0,
        eta_discharge=1.0,
        soc_min_frac=0.0,
        soc_max_frac=1.0,
        soc_init_frac=0.5,
        degradation_usd_per_mwh=0.0,
        import_limit_mw=20.0,
        export_limit_mw=5.0,
    )
    fields.update(changes)
    return Site(**fields)


def make_tiny(T: int = 3, S: int = 1, **changes) -> Scenario:
    """A T-period, S-site scenario with one job and one inference class; override any field."""
    fields = dict(
        name="tiny",
        T=T,
        dt_h=1.0,
        sites=tuple(make_site(f"site{s}") for s in range(S)),
        jobs=(
            TrainingJob(
                name="job0",
                gpus=4,
                duration=1,
                release=0,
                deadline=T,
                value_usd=100.0,
                eligible=(True,) * S,
            ),
        ),
        classes=(
            InferenceClass(
                name="cls0",
                revenue_usd_per_gpu_h=10.0,
                unserved_penalty_usd_per_gpu_h=20.0,
                latency_ms=(10.0,) * S,
                slo_ms=50.0,
            ),
        ),
        cooling=np.zeros((S, T)),
        renewable_mw=np.zeros((S, T)),
        price_import=np.full((S, T), 50.0),
        price_export=np.full((S, T), 40.0),
        carbon_intensity=np.full((S, T), 0.5),
        demand_gpus=np.full((1, T), 2.0),
        carbon_budget_t=None,
        carbon_price_usd_per_t=0.0,
    )
    fields.update(changes)
    return Scenario(**fields)


def make_cheap_hour(**changes) -> Scenario:
    """One site without battery, generator or export, no inference, one 0.4 MW job (4 GPUs × 100 kW,
    duration 1, value 100 USD, window 0..2); prices 50/10/30 USD/MWh and carbon 0.5/0.1/0.3 t/MWh
    at 100 USD/t: an hour of the job costs 40 / 8 / 24 USD, so it waits for t = 1 (92 USD)."""
    fields = dict(
        sites=(make_site(gen_capacity_mw=0.0, capacity_mwh=0.0, export_limit_mw=0.0),),
        demand_gpus=np.zeros((1, 3)),
        price_import=np.array([[50.0, 10.0, 30.0]]),
        carbon_intensity=np.array([[0.5, 0.1, 0.3]]),
        carbon_price_usd_per_t=100.0,
    )
    fields.update(changes)
    return make_tiny(**fields)


@pytest.fixture
def tiny() -> Scenario:
    return make_tiny()
