"""The findings of MODEL.md §6 on the ``paper`` preset (issue 3).

Margins: every solve uses a 1e-5 relative gap, so two objectives that differ by more than 1e-4 of the
joint benefit (about 2 USD on ~2e4 USD) differ for real, not by solver tolerance. "Clearly more"
emissions is taken as at least 10 % more; "close" as within 2 % of the joint benefit.
"""

from __future__ import annotations

from functools import cache

import pytest

from envs.presets import make_scenario
from oracle import CONFIGS, Schedule, solve

GAP = 1e-5
MARGIN = 1e-4


@cache
def schedule(preset: str, seed: int, config: str) -> Schedule:
    r = solve(make_scenario(preset, seed), config, mip_gap=GAP)
    assert r.status == "optimal", r.diagnosis
    return r


def findings(seed: int) -> dict[str, bool]:
    r = {config: schedule("paper", seed, config) for config in CONFIGS}
    benefit = {config: s.objective_usd for config, s in r.items()}
    emissions = {config: s.kpis["emissions_t"] for config, s in r.items()}
    joint = benefit["joint"]
    rich = schedule("paper-genrich", seed, "joint")
    return {
        "joint beats compute_only": joint - benefit["compute_only"] > MARGIN * joint,
        "joint beats energy_only": joint - benefit["energy_only"] > MARGIN * joint,
        "energy_only emits clearly more": emissions["energy_only"] >= 1.10 * emissions["joint"],
        "routing matters more than the battery": benefit["no_battery"] - benefit["no_routing"]
        > MARGIN * joint,
        "no_carbon close to joint": -MARGIN * joint <= benefit["no_carbon"] - joint <= 0.02 * joint,
        "genrich raises benefit": rich.objective_usd - joint > MARGIN * joint,
        "genrich lowers emissions": rich.kpis["emissions_t"] < emissions["joint"],
    }


def test_findings_hold_on_seed_0():
    failed = [name for name, ok in findings(0).items() if not ok]
    assert not failed


def test_relaxations_never_lose_to_restrictions():
    """Exact orderings that follow from the model (up to the gap): joint's feasible set contains
    compute_only's, no_battery's and no_routing's; no_carbon's contains joint's."""
    for seed in range(3):
        b = {config: schedule("paper", seed, config).objective_usd for config in CONFIGS}
        tol = 2 * GAP * abs(b["joint"])
        for restricted in ("compute_only", "no_battery", "no_routing"):
            assert b[restricted] <= b["joint"] + tol
        assert b["joint"] <= b["no_carbon"] + tol


def test_findings_hold_on_most_seeds():
    """Counted over seeds 0-9; the exact count is reported in the docs (docs/model.md)."""
    results = {seed: findings(seed) for seed in range(10)}
    passing = [seed for seed, f in results.items() if all(f.values())]
    per_finding = {name: sum(f[name] for f in results.values()) for name in results[0]}
    print(f"\nseeds with every finding: {len(passing)}/10 {passing}; per finding: {per_finding}")
    assert len(passing) >= 6, per_finding


@pytest.mark.parametrize("seed", [0])
def test_energy_only_budget_relaxation_is_reported(seed):
    r = schedule("paper", seed, "energy_only")
    budget = make_scenario("paper", seed).carbon_budget_t
    if r.carbon_budget_relaxed:
        assert r.scenario.carbon_budget_t is None  # the scenario as solved
        assert r.kpis["emissions_t"] > budget and "overrun" in r.diagnosis
        assert f"overrun {r.kpis['emissions_t'] - budget:.2f} t" in r.diagnosis
    else:
        assert r.kpis["emissions_t"] <= r.scenario.carbon_budget_t + 1e-6
