"""The period LP and the ``agent_lp`` policy (agents/period_lp.py, issue 13).

The hand-checked cases use two sites of :func:`tests.conftest.make_site` (100 kW per GPU, 5 MW
generator at 90 USD/MWh and 0.45 t/MWh) and one class worth 10 USD per GPU-hour served, 20 USD
per GPU-hour unserved, routable to both sites.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.baselines import POLICY_NAMES, make_policy
from agents.evaluation import PRETRAINED, make_env, rollout
from agents.period_lp import AgentLPPolicy, PeriodLP
from envs.presets import make_scenario
from tests.conftest import make_tiny

torch.set_num_threads(1)

SEED = 1000  # a training seed (never the held-out 0-19)
ZERO = np.zeros(2)


def two_sites():
    return make_tiny(S=2)


def solve(lp: PeriodLP, **given):
    args = dict(
        demand_gpus=np.array([10.0]),
        free_gpus=np.array([6.0, 10.0]),
        it_fixed_mw=ZERO,
        charge_mw=ZERO,
        discharge_mw=ZERO,
        gen_mw=ZERO,
        cooling=ZERO,
        renewable_mw=ZERO,
        price_import=np.array([50.0, 100.0]),
        price_export=ZERO,
        carbon_intensity=ZERO,
        budget_left_t_per_h=np.inf,
    )
    args.update(given)
    return lp.solve(**args)


def test_routes_to_the_cheapest_site_within_its_free_gpus() -> None:
    # 10 GPUs = 1 MW. A GPU-hour costs 0.1 MW * 50 = 5 USD at site 0 (6 GPUs free), 10 USD at site 1
    # by import, 9 USD by its generator (90 USD/MWh): serve 6 + 4, site 1's 0.4 MW from the generator.
    serve, gen = solve(PeriodLP(two_sites(), 10_000.0, 1_000.0))
    np.testing.assert_allclose(serve, [[6.0, 4.0]], atol=1e-9)
    np.testing.assert_allclose(gen, [0.0, 0.4], atol=1e-9)
    # Without the generator decision the caller's output is kept (and site 1 imports).
    serve, gen = solve(PeriodLP(two_sites(), 10_000.0, 1_000.0, generator=False), gen_mw=np.array([0.0, 0.1]))
    np.testing.assert_allclose(serve, [[6.0, 4.0]], atol=1e-9)
    np.testing.assert_allclose(gen, [0.0, 0.1], atol=1e-12)


def test_unprofitable_inference_is_left_unserved_only_when_that_pays() -> None:
    # At 400 USD/MWh a GPU-hour costs 40 USD by import, 9 USD by a generator (90 USD/MWh): with
    # revenue 10 + penalty 20 = 30 USD per GPU-hour at stake, the generator (9 USD) still pays.
    lp = PeriodLP(two_sites(), 10_000.0, 1_000.0)
    serve, gen = solve(lp, price_import=np.array([400.0, 400.0]), free_gpus=np.array([10.0, 10.0]))
    assert serve.sum() == pytest.approx(10.0)
    assert gen.sum() == pytest.approx(1.0)
    # Without the generator, 40 USD per GPU-hour exceeds the 30 at stake: nothing is served.
    lp = PeriodLP(two_sites(), 10_000.0, 1_000.0, generator=False)
    serve, _ = solve(lp, price_import=np.array([400.0, 400.0]), free_gpus=np.array([10.0, 10.0]))
    assert serve.sum() == pytest.approx(0.0, abs=1e-9)


def test_carbon_budget_left_is_priced_at_the_overrun_penalty() -> None:
    # Grid at 1 t/MWh, generator at 0.45: 0.3 t left this hour. A GPU on the generator emits
    # 0.045 t; beyond the budget that costs 45 USD (1,000 USD/t) > 30 at stake: serve exactly the
    # 0.3 / 0.045 = 6.67 GPUs the budget allows, all on generators (the grid would emit more).
    lp = PeriodLP(two_sites(), 10_000.0, 1_000.0)
    serve, gen = solve(
        lp,
        free_gpus=np.array([10.0, 10.0]),
        price_import=np.array([50.0, 50.0]),
        carbon_intensity=np.array([1.0, 1.0]),
        budget_left_t_per_h=0.3,
    )
    assert serve.sum() == pytest.approx(0.3 / 0.045)
    assert gen.sum() == pytest.approx(0.3 / 0.45)


def test_cooling_renewables_and_battery_enter_the_balance() -> None:
    # Site 0 has 0.5 MW of renewables and cooling 0.25 (a GPU draws 0.125 MW): its first 4 GPUs are
    # free; discharging 0.25 MW there frees 2 more. Site 1 (cheap import) takes the rest.
    lp = PeriodLP(two_sites(), 10_000.0, 1_000.0, generator=False)
    serve, _ = solve(
        lp,
        free_gpus=np.array([10.0, 10.0]),
        price_import=np.array([100.0, 60.0]),
        renewable_mw=np.array([0.5, 0.0]),
        cooling=np.array([0.25, 0.0]),
        discharge_mw=np.array([0.25, 0.0]),
    )
    np.testing.assert_allclose(serve, [[6.0, 4.0]], atol=1e-9)


def period_reward(env, action) -> float:
    twin = copy.deepcopy(env)
    _, reward, *_ = twin.step(action)
    return reward


@pytest.mark.parametrize("level", ["exact", "typical"])
def test_agent_lp_never_does_worse_than_the_agents_own_routing_in_a_period(level: str) -> None:
    """The LP maximises the period's reward given the starts and battery: on every period of an
    episode, the env's reward of its action is >= the agent's own action's and >= that of random
    routings with the same starts and battery (stepped on copies of the env)."""
    sc = make_scenario("paper", SEED)
    env = make_env("paper", sc, forecast_level=level)
    policy = AgentLPPolicy(env, model=PRETRAINED)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=SEED)
    gains = []
    done = False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        best = period_reward(env, action)
        own = period_reward(env, policy.last_proposal)
        assert best >= own - 1e-6 * max(1.0, abs(own))
        gains.append(best - own)
        for _ in range(3):
            other = {key: np.array(value, copy=True) for key, value in action.items()}
            other["route"] = rng.uniform(0, 1, size=action["route"].shape) * sc.routes
            other["generator"] = rng.uniform(0, 1, size=sc.S)
            reward = period_reward(env, other)
            assert best >= reward - 1e-6 * max(1.0, abs(reward))
        np.testing.assert_array_equal(action["start"], policy.last_proposal["start"])
        np.testing.assert_array_equal(action["battery"], policy.last_proposal["battery"])
        obs, _, done, _, info = env.step(action)
        assert "serve_cut_gpus" not in info["repairs"] and "route_scaled" not in info["repairs"]
    assert sum(gains) > 0.0  # the agent's own routing is not already optimal


def test_agent_lp_is_a_policy_name_and_runs_an_episode_at_every_level() -> None:
    assert "agent_lp" in POLICY_NAMES
    sc = make_scenario("paper", SEED)
    for level in ("exact", "good", "typical", "poor"):
        env = make_env("paper", sc, forecast_level=level)
        result = rollout(make_policy("agent_lp", env, model=str(PRETRAINED)), env, seed=SEED, preset="paper")
        assert np.isfinite(result.benefit_usd) and result.violations == 0
    with pytest.raises(FileNotFoundError, match="agent_lp: no trained model"):
        make_policy("agent_lp", env, model="no/such/model.json")


def test_evaluate_needs_a_proposing_policy_for_hybrid_model(capsys: pytest.CaptureFixture[str]) -> None:
    import evaluate

    for argv, message in (
        (["--policies", "mpc", "--hybrid-model", str(PRETRAINED)], "only with the hybrid or agent_lp"),
        (["--policies", "agent_lp", "--hybrid-model", "no/such/model.json"], "no model file there"),
    ):
        with pytest.raises(SystemExit) as exc:
            evaluate.main([*argv, "--seeds", str(SEED)])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_period_lp_and_oracle_solves_share_one_process() -> None:
    """HiGHS's thread scheduler is process-wide, made by the first solve: in a fresh process an
    oracle solve with ``threads=1`` after a period LP still finds its schedule (it failed with status
    "Not Set" when the period LP had made the scheduler with HiGHS's default count), and period LPs
    after oracle solves with other counts still solve."""
    code = """
import numpy as np
from agents.period_lp import PeriodLP
from oracle.solve import solve
from tests.test_period_lp import solve as lp_solve
from tests.conftest import make_tiny
sc = make_tiny(S=2)
lp = PeriodLP(sc, 10_000.0, 1_000.0)
for threads in (1, 2, None, 1):
    serve, _ = lp_solve(lp)
    assert np.allclose(serve, [[6.0, 4.0]]), serve
    status = solve(sc, threads=threads).status
    assert status == "optimal", (threads, status)
print("ok")
"""
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]


def test_the_proposer_defaults_to_the_agent_rows_model(tmp_path) -> None:
    """``agent_lp`` / ``hybrid`` propose with ``--hybrid-model``, else the first ``--model`` (the agent
    row's model), else the default model; ``agent_lp`` is a default row of a one-level run."""
    import argparse

    import evaluate

    parser = evaluate.build_parser()
    given = tmp_path / "mine.json"
    given.write_text("{}")
    for hybrid_model, model, expected in (
        (None, [str(given)], str(given)),
        (str(PRETRAINED), [str(given)], str(PRETRAINED)),
    ):
        args = argparse.Namespace(
            hybrid_model=hybrid_model, model=model, hybrid_window=None, hybrid_plan_on=None
        )
        assert evaluate._check_hybrid(parser, args, ["agent_lp"]) == expected
    args = argparse.Namespace(hybrid_model=None, model=None, hybrid_window=None, hybrid_plan_on=None)
    assert evaluate._check_hybrid(parser, args, ["mpc"]) is None
    assert "agent_lp" in evaluate.DEFAULT_POLICIES and "agent_lp" in evaluate.LEVEL_POLICIES
