"""agents/evaluation.py and evaluate.py: metrics, bootstrap, the sweep and the --json CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.baselines import GreedyPolicy, OraclePolicy
from agents.evaluation import (
    JSON_FIELDS,
    bootstrap_ci,
    evaluate,
    gap_pct,
    make_env,
    rollout,
    summarize,
)
from envs.presets import make_scenario

ROOT = Path(__file__).resolve().parents[1]


def test_bootstrap_ci_hand_checked() -> None:
    # constant values: every resample has the same mean
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_ci([7.5]) == (7.5, 7.5)
    # two values {0, 1}: resample means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % percentiles are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    # the same seed gives the same interval; the interval contains the mean
    x = np.arange(20.0)
    lo, hi = bootstrap_ci(x)
    assert bootstrap_ci(x) == (lo, hi)
    assert lo < x.mean() < hi
    # the half-width is close to 1.96 standard errors for a symmetric sample
    se = x.std(ddof=0) / np.sqrt(x.size)
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.1)


def test_gap_and_summary() -> None:
    assert gap_pct(90.0, 100.0) == pytest.approx(10.0)
    assert np.isnan(gap_pct(1.0, 0.0))
    rows = []
    for seed, (o, g, a) in enumerate([(100.0, 0.0, 50.0), (200.0, 100.0, 150.0)]):
        for pol, b in (("oracle", o), ("greedy", g), ("mpc", a)):
            rows.append(
                {
                    "policy": pol,
                    "seed": seed,
                    "benefit_usd": b,
                    "oracle_benefit_usd": o,
                    "gap_pct": gap_pct(b, o),
                    "return_usd": b,
                    "emissions_t": 1.0,
                    "energy_cost_usd": 0.0,
                    "inference_served_pct": 100.0,
                    "jobs_completed": 1,
                    "violations": 0,
                    "penalty_usd": 0.0,
                    "decision_ms": 1.0,
                }
            )
    summary = {s["policy"]: s for s in summarize(rows, ["oracle", "greedy", "mpc"])}
    assert summary["mpc"]["normalized_score"] == pytest.approx(0.5)
    assert summary["greedy"]["normalized_score"] == pytest.approx(0.0)
    assert summary["oracle"]["normalized_score"] == pytest.approx(1.0)
    assert summary["mpc"]["pct_of_oracle"] == pytest.approx(100 * 100 / 150)
    assert summary["mpc"]["gap_pct"] == pytest.approx((50.0 + 25.0) / 2)


def test_rollout_metrics_match_the_oracle_kpis() -> None:
    sc = make_scenario("paper", 0)
    env = make_env("paper", sc)
    oracle = OraclePolicy(env)
    result = rollout(oracle, env, seed=0, preset="paper", record=True)
    kpis = oracle.schedule.kpis
    assert result.benefit_usd == pytest.approx(kpis["benefit_usd"], abs=1e-6)
    assert result.emissions_t == pytest.approx(kpis["emissions_t"], abs=1e-9)
    assert result.energy_cost_usd == pytest.approx(kpis["energy_cost_usd"], abs=1e-6)
    assert result.inference_served_pct == pytest.approx(kpis["inference_served_pct"], abs=1e-9)
    assert result.jobs_completed == kpis["jobs_run"]
    assert result.violations == 0 and result.penalty_usd == 0.0
    assert len(result.trace["flows"]) == sc.T


def test_rollout_counts_penalties_as_violations() -> None:
    sc = make_scenario("paper", 0)
    env = make_env("paper", sc)
    result = rollout(GreedyPolicy(env), env, seed=0)
    # the carbon-agnostic rule breaks the preset's budget: charged, not part of the benefit
    assert result.penalty_usd > 0
    assert result.violations > 0
    assert result.return_usd == pytest.approx(result.benefit_usd - result.penalty_usd)


def test_evaluate_sweep_caches_and_resumes(tmp_path: Path) -> None:
    report = evaluate(["greedy"], "paper", [0, 1], out_dir=tmp_path, max_workers=1, progress=False)
    assert [(r["policy"], r["seed"]) for r in report.rows] == [("greedy", 0), ("greedy", 1)]
    assert all(r["oracle_benefit_usd"] > r["benefit_usd"] for r in report.rows)
    cached = sorted(p.name for p in (tmp_path / "items").iterdir())
    assert cached == [f"{p}-paper-{s}.json" for p in ("greedy", "oracle") for s in (0, 1)]
    again = evaluate(["greedy"], "paper", [0, 1], out_dir=tmp_path, max_workers=1, progress=False)
    assert [r["benefit_usd"] for r in again.rows] == [r["benefit_usd"] for r in report.rows]


def test_cached_results_go_stale_when_the_code_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.evaluation as ev

    before = {i["key"]: i["fingerprint"] for i in ev.make_items(["greedy"], "paper", [0, 1])}
    assert before == {i["key"]: i["fingerprint"] for i in ev.make_items(["greedy"], "paper", [0, 1])}
    monkeypatch.setattr(ev, "code_digest", lambda: "another-version")
    after = {i["key"]: i["fingerprint"] for i in ev.make_items(["greedy"], "paper", [0, 1])}
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in before)


@pytest.mark.slow
def test_evaluate_cli_json_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "--json",
            "--seeds",
            "0-1",
            "--policies",
            "greedy,oracle",
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["policy"], r["seed"]) for r in rows] == [
        ("greedy", 0),
        ("greedy", 1),
        ("oracle", 0),
        ("oracle", 1),
    ]
    for r in rows:
        assert tuple(r) == JSON_FIELDS
        assert r["preset"] == "paper"
    for r in rows[2:]:
        assert r["benefit_usd"] == pytest.approx(r["oracle_benefit_usd"], abs=1e-4)
        assert r["gap_pct"] == pytest.approx(0.0, abs=1e-6)
        assert r["violations"] == 0
    assert all(r["gap_pct"] > 0 for r in rows[:2])
    for name in ("results.csv", "results.json", "benefit_emissions.png", "dispatch.png"):
        assert (out / name).stat().st_size > 0
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["seeds"] == [0, 1] and meta["preset"] == "paper" and "bootstrap_seed" in meta


def test_default_model_is_skipped_where_its_shape_does_not_fit() -> None:
    """evaluate.py adds the default model (and hybrid) to the default rows only where the model's
    observation shape fits the evaluated preset: the shipped paper agent does not fit ``week``."""
    import argparse

    import evaluate as cli
    from agents.evaluation import PRETRAINED

    assert cli._fits(PRETRAINED, argparse.Namespace(preset="paper", seeds=[0]), None)
    assert not cli._fits(PRETRAINED, argparse.Namespace(preset="week", seeds=[0]), None)


def test_titles_call_seeds_held_out_only_below_the_training_range() -> None:
    from agents.evaluation import training_range_note
    from agents.imitation import TRAIN_SEED_LOW
    from agents.report import describe

    below, inside = [0, TRAIN_SEED_LOW - 1], [0, TRAIN_SEED_LOW]
    assert describe({"preset": "paper", "seeds": below}) == "paper: 2 held-out seeds"
    assert "held-out" not in describe({"preset": "paper", "seeds": inside})
    assert training_range_note(below) is None and str(TRAIN_SEED_LOW) in training_range_note(inside)
