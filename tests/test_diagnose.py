"""The gap breakdown (agents/diagnose.py): pinned jobs, exact parts for the oracle, monotone steps."""

import numpy as np
import pytest

from agents.diagnose import PARTS, gap_breakdown, pinned_jobs, summarize
from envs.presets import make_scenario
from oracle.model import ModelError
from oracle.solve import solve


def test_pinned_jobs_make_the_oracle_start_exactly_those_jobs() -> None:
    sc = make_scenario("paper", 1007)
    ref = solve(sc, "joint", threads=1)
    chosen = sorted(ref.job_start)[:2]  # two of the oracle's own (job, site, period) starts
    pinned = pinned_jobs(sc, chosen)
    for j, job in enumerate(pinned.jobs):
        if j in {c[0] for c in chosen}:
            _, s, t = next(c for c in chosen if c[0] == j)
            assert (job.release, job.latest_start, job.mandatory) == (t, t, True)
            assert job.eligible == tuple(i == s for i in range(sc.S))
            assert job.value_usd == sc.jobs[j].value_usd
        else:
            assert job.value_usd == 0.0 and not job.mandatory
    sched = solve(pinned, "joint", threads=1)
    assert sorted(sched.job_start) == chosen


def test_the_oracle_itself_loses_nothing_anywhere() -> None:
    from agents.replay import OracleReplayPolicy
    from envs.dc_env import CarbonAwareDCEnv

    sc = make_scenario("paper", 1008)
    out = gap_breakdown(OracleReplayPolicy(solve(sc, "joint", threads=1)), CarbonAwareDCEnv(scenario=sc), sc)
    tol = 1e-3 * abs(out["benefit_usd"]["oracle"])
    assert all(abs(v) <= tol for v in out["parts_usd"].values()), out
    assert out["carbon_budget_relaxed"] == []


def test_a_worse_policy_loses_in_steps_that_add_up() -> None:
    from agents.baselines import make_policy
    from envs.dc_env import CarbonAwareDCEnv

    sc = make_scenario("paper", 1009).replace(carbon_budget_t=None)  # greedy would break a budget
    env = CarbonAwareDCEnv(scenario=sc)
    out = gap_breakdown(make_policy("greedy", env), env, sc)
    b = out["benefit_usd"]
    tol = 1e-3 * abs(b["oracle"])
    assert b["oracle"] >= b["jobs_fixed"] - tol >= b["workload_fixed"] - 2 * tol >= b["policy"] - 3 * tol
    assert sum(out["parts_usd"].values()) == pytest.approx(b["oracle"] - b["policy"])
    assert out["parts_usd"]["job_choice"] > 0  # starts every job at once, wherever it fits first
    summary = summarize([out, out])
    assert summary["parts_usd"] == pytest.approx(out["parts_usd"])
    assert sum(summary["parts_points"].values()) == pytest.approx(100 - summary["pct_of_oracle"]["policy"])
    assert set(summary["parts_usd"]) == set(PARTS)


def test_energy_only_workload_is_checked() -> None:
    sc = make_scenario("paper", 1007)
    serve = np.zeros((sc.K, sc.S, sc.T))
    with pytest.raises(ModelError, match="workload"):
        solve(sc, "joint", workload=([], serve))
    with pytest.raises(ModelError, match="workload"):
        solve(sc, "energy_only", workload=([], serve[:, :, :3]))
    with pytest.raises(ModelError, match="workload"):
        solve(sc, "energy_only", workload=([(99, 0, 0)], serve))


def test_cli_prints_the_split(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import json

    from agents.diagnose import main

    out_dir = ["--out", str(tmp_path / "diagnose")]  # not the working tree's results/
    assert main(["--model", "carbon_greedy", "--seeds", "3", "--workers", "1", "--json", *out_dir]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["rows"]
    assert row["seed"] == 3 and out["summary"]["scenarios"] == 1
    assert sum(row["parts_usd"].values()) == pytest.approx(
        row["benefit_usd"]["oracle"] - row["benefit_usd"]["policy"]
    )
    assert main(["--model", "carbon_greedy", "--seeds", "3", "--workers", "1", *out_dir]) == 0
    text = capsys.readouterr().out
    assert "job_choice" in text and "routing" in text and "energy" in text


def test_cli_splits_the_gap_under_forecast_errors(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import json

    from agents.baselines import make_policy
    from agents.diagnose import main
    from agents.evaluation import make_env
    from agents.rollout import rollout

    out_dir = ["--out", str(tmp_path / "diagnose")]
    argv = ["--model", "mpc", "--seeds", "3", "--workers", "1", "--json", "--forecast-level", "poor"]
    argv += out_dir
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["rows"]
    assert out["forecast_level"] == "poor"
    # The policy step is MPC played on poor forecasts (the same draws as evaluate.py's), the oracle
    # steps see the truth, and the parts still add up to the whole gap.
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc, forecast_level="poor")
    played = rollout(make_policy("mpc", env, exact=False), env, seed=3, preset="paper")
    assert row["benefit_usd"]["policy"] == pytest.approx(played.benefit_usd, rel=1e-9)
    assert row["benefit_usd"]["oracle"] == pytest.approx(solve(sc, "joint").objective_usd, rel=1e-3)
    assert sum(row["parts_usd"].values()) == pytest.approx(
        row["benefit_usd"]["oracle"] - row["benefit_usd"]["policy"]
    )
    with pytest.raises(SystemExit) as exc:
        main(["--model", "mpc", "--forecast-level", "poor*x", *out_dir])
    assert exc.value.code == 2 and "the factor after '*' must be a number" in capsys.readouterr().err


def test_cli_rejects_a_missing_model_or_an_untrusted_zip_before_any_work(tmp_path, capsys) -> None:
    from agents.diagnose import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", str(tmp_path / "nope.json")])
    assert exc.value.code == 2 and "no model file" in capsys.readouterr().err
    zipped = tmp_path / "m.zip"
    zipped.write_bytes(b"PK")
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(zipped)])
    assert exc.value.code == 2 and "--trust-pickle" in capsys.readouterr().err


def test_items_keep_each_level_apart_and_follow_the_proposer(tmp_path) -> None:
    """Cached items of one scenario at two forecast levels have their own keys (a run at ``poor`` no
    longer replaces the cached ``typical`` ones), and an ``agent_lp`` / ``hybrid`` item's fingerprint
    follows its proposing model's contents (a retrained model at the same path is not reused)."""
    from agents.diagnose import make_items

    keys = {
        lv: make_items("mpc", "paper", [3], 60.0, forecast_level=lv)[0]["key"] for lv in ("typical", "poor*2")
    }
    assert keys == {"typical": "paper-3-typical", "poor*2": "paper-3-poorx2"}
    assert make_items("mpc", "paper", [3], 60.0)[0]["key"] == "paper-3"
    model = tmp_path / "m.zip"
    for spec in ("agent_lp", "hybrid"):
        model.write_bytes(b"one")
        first = make_items(spec, "paper", [3], 60.0, {"model": str(model)})[0]["fingerprint"]
        assert make_items(spec, "paper", [3], 60.0, {"model": str(model)})[0]["fingerprint"] == first
        model.write_bytes(b"two")
        assert make_items(spec, "paper", [3], 60.0, {"model": str(model)})[0]["fingerprint"] != first


def test_cli_agent_lp_with_its_proposer(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """``--model agent_lp --hybrid-model PATH`` splits the gap of agent_lp proposing with PATH: the
    policy step equals an evaluate-style rollout of that policy (and, after a period LP in the same
    process, the oracle re-solves still solve); ``--hybrid-model`` is checked before any work."""
    import json

    from agents.baselines import make_policy
    from agents.diagnose import main
    from agents.evaluation import PRETRAINED, make_env
    from agents.rollout import rollout

    out_dir = ["--out", str(tmp_path / "diagnose")]
    argv = ["--model", "agent_lp", "--hybrid-model", str(PRETRAINED), "--seeds", "1000", "--workers", "1"]
    assert main([*argv, "--json", "--forecast-level", "typical", *out_dir]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    sc = make_scenario("paper", 1000)
    env = make_env("paper", sc, forecast_level="typical")
    played = rollout(make_policy("agent_lp", env, model=str(PRETRAINED)), env, seed=1000, preset="paper")
    assert row["benefit_usd"]["policy"] == pytest.approx(played.benefit_usd, rel=1e-9)
    assert row["parts_usd"]["routing"] < 0.02 * row["benefit_usd"]["oracle"]  # the LP routes
    for bad, message in (
        (["--model", "agent_lp", "--hybrid-model", str(tmp_path / "none.json")], "no model file there"),
        (["--model", "mpc", "--hybrid-model", str(PRETRAINED)], "only with --model hybrid or"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*bad, *out_dir])
        assert exc.value.code == 2 and message in capsys.readouterr().err
