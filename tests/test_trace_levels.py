"""Per-step traces (agents/trace.py), the table across forecast levels (agents/uncertainty.py) and
evaluate.py's inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import evaluate
from agents.baselines import make_policy
from agents.evaluation import rollout, table_cells
from envs import CarbonAwareDCEnv, make_scenario
from envs.dynamics import REWARD_KEYS
from envs.scenario import OBJECTIVE_TERMS


def test_oracle_trace_sums_to_the_objective_and_names_every_start() -> None:
    sc = make_scenario("paper", 2)
    env = CarbonAwareDCEnv(scenario=sc, preset="paper")
    policy = make_policy("oracle", env)
    result = rollout(policy, env, seed=2, trace=True)
    df = result.frame
    assert len(df) == sc.T * (sc.S + 1)
    for col in (
        "period",
        "site",
        "battery",
        "generator",
        "grid_export_mw",
        "curtailed_mw",
        "soc_mwh",
        "price_import_usd_per_mwh",
        "carbon_intensity_t_per_mwh",
        "starts",
        "repairs",
        *REWARD_KEYS,
    ):
        assert col in df.columns, col
    objective = df[list(OBJECTIVE_TERMS)].to_numpy().sum()
    assert objective == pytest.approx(policy.schedule.objective_usd, rel=1e-9)
    assert df[list(REWARD_KEYS)].to_numpy().sum() == pytest.approx(result.return_usd, rel=1e-9)
    traced = sorted(
        (int(tok[1:]), int(r.site), int(r.period))
        for r in df[df.site >= 0].itertuples()
        for tok in r.starts.split()
    )
    assert traced == sorted(tuple(x) for x in policy.schedule.job_start) and traced
    # the system row carries only the terms of no site
    system = df[df.site == -1]
    assert len(system) == sc.T and np.allclose(system["import_cost_usd"], 0.0)


def test_table_never_prints_minus_zero() -> None:
    row = {
        "policy": "oracle", "benefit_ci_high_usd": 1.0, "benefit_ci_low_usd": 1.0, "benefit_mean_usd": 1.0,
        "pct_of_oracle": 100.0, "gap_pct": -1e-12, "normalized_score": 1.0, "emissions_mean_t": 1.0,
        "energy_cost_mean_usd": 1.0, "inference_served_pct": 100.0, "jobs_completed_mean": 1.0,
        "violations_mean": 0.0, "penalty_mean_usd": 0.0, "decision_ms": 1.0,
    }  # fmt: skip
    cells = table_cells(row)
    assert "-0.00" not in cells and "0.00" in cells
    row["gap_pct"] = -0.5
    assert "-0.50" in table_cells(row)


def test_evaluate_across_levels_writes_one_table_with_the_value_of_information(tmp_path, capfd) -> None:
    out = tmp_path / "res"
    code = evaluate.main(
        ["--forecast-level", "exact,typical,typical*1", "--seeds", "0",
         "--policies", "oracle,mpc,carbon_greedy", "--out", str(out), "--no-plots", "--workers", "1"]
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "levels.json").read_text())
    assert data["levels"] == ["exact", "typical", "typical*1"]
    per = data["per_level"]
    pct = {lv: {s["policy"]: s["pct_of_oracle"] for s in per[lv]["summary"]} for lv in data["levels"]}
    assert pct["exact"]["oracle"] == pytest.approx(100.0) and pct["typical"]["oracle"] == pytest.approx(100.0)
    assert pct["exact"]["mpc"] == pytest.approx(100.0, abs=0.05)  # exact forecasts: MPC is the oracle
    best = max(pct["typical"]["mpc"], pct["typical"]["carbon_greedy"])
    assert per["typical"]["vpi"]["vpi_pct"] == pytest.approx(100.0 - best, abs=1e-6)
    assert (out / "levels" / "typical" / "results.json").exists()
    # typical scaled by 1 is typical under another name: the same draws, the same scores.
    assert pct["typical*1"] == pct["typical"]
    assert (out / "levels" / "typicalx1" / "results.json").exists()
    text = capfd.readouterr().out
    assert "VPI" in text and "typical" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--policies", "foo"], "policy 'foo'"),
        (["--forecast-level", "awful"], "unknown level 'awful'"),
        (["--forecast-level", "poor*x"], "the factor after '*' must be a number"),
        (["--forecast-level", "awful*2"], "scales an unknown level 'awful'"),
        (["--forecast-noise", "-1"], "forecast-noise"),
        (["--forecast-level", "typical", "--forecast-noise", "0.1"], "give one of them"),
        (["--model", "no/such/model.zip"], "no model file"),
        (["--mpc-scenarios", "1.5"], "--mpc-scenarios: must be an integer >= 1 (got '1.5')"),
        (["--time-limit", "abc"], "--time-limit: must be a finite number > 0 (got 'abc')"),
        (["--forecast-noise", "x"], "--forecast-noise: must be a finite number >= 0 (got 'x')"),
        (["--workers", "x"], "--workers: must be an integer >= 1, got 'x'"),
        (["--seeds", "abc"], "--seeds: seeds: 'abc' is not a seed >= 0"),
        (["--seeds", "5-2"], "--seeds: seeds: '5-2' is not a seed >= 0 or a range low-high with low <= high"),
        (["--seeds", "0-3,-1"], "seeds: '-1' is not a seed"),
    ],
)
def test_evaluate_rejects_bad_input_before_any_work(argv, message, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        evaluate.main([*argv, "--out", str(out)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_schedule_to_frame_matches_the_replayed_trace() -> None:
    sc = make_scenario("paper", 2)
    env = CarbonAwareDCEnv(scenario=sc, preset="paper")
    policy = make_policy("oracle", env)
    trace = rollout(policy, env, seed=2, trace=True).frame
    plan = policy.schedule.to_frame()
    assert len(plan) == sc.T * sc.S
    sites = trace[trace.site >= 0].reset_index(drop=True)
    for col in ("grid_import_mw", "grid_export_mw", "gen_mw", "soc_mwh", "serve_gpus"):
        np.testing.assert_allclose(plan[col], sites[col], rtol=1e-7, atol=1e-6, err_msg=col)
    assert list(plan["starts"]) == list(sites["starts"])


def test_levels_time_plot_draws_the_trade_off_and_names_what_it_leaves_out(tmp_path, monkeypatch) -> None:
    """One panel per level; a policy under 50 % of the oracle everywhere (greedy) is named in the
    title instead of squeezing the axis; the figure is written."""
    import matplotlib.pyplot as plt

    from agents import plots
    from agents.evaluation import Report
    from agents.uncertainty import LevelsReport

    def row(policy, pct, ms):
        return {"policy": policy, "pct_of_oracle": pct, "decision_ms": ms}

    summary = [
        row("oracle", 100.0, 9.0),
        row("mpc", 98.0, 27.0),
        row("agent_lp", 95.0, 1.2),
        row("greedy", 17.0, 0.0),
    ]
    report = LevelsReport(
        ["exact", "typical"], {lv: Report([], summary, [], {}) for lv in ("exact", "typical")}
    )
    titles = []
    monkeypatch.setattr(plt.Figure, "suptitle", lambda self, t, **kw: titles.append(t))
    path = plots.levels_time_plot(report, tmp_path / "levels_time.png")
    assert path.stat().st_size > 0
    assert "greedy" in titles[0] and "agent_lp" not in titles[0] and "mpc" not in titles[0]
