"""The hybrid policy (agents/hybrid.py) and the oracle's opt-in fixed-starts option (issue 13).

The fixed-starts cases are a tiny scenario without battery, generator or export, so every objective
is hand-checkable: one 4-GPU job (0.4 MW for one period, worth 100 USD) and 2 GPUs of inference
(0.2 MW, 10 USD per GPU-hour) in each of 3 one-hour periods, import prices 50 / 10 / 80 USD/MWh.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.baselines import POLICY_NAMES, make_policy
from agents.evaluation import PRETRAINED, make_env, rollout
from agents.hybrid import HybridPolicy, accepted_starts
from envs.presets import make_scenario
from envs.scenario import TrainingJob
from oracle.model import ModelError, build_model
from oracle.solve import solve
from tests.conftest import make_site, make_tiny

torch.set_num_threads(1)

SEED = 1000  # a training seed (never the held-out 0-19)
PRICES = np.array([[50.0, 10.0, 80.0]])


def plain_tiny(**changes):
    """The hand-checkable tiny case of the module docstring."""
    site = make_site(capacity_mwh=0.0, gen_capacity_mw=0.0, export_limit_mw=0.0)
    return make_tiny(T=3, sites=(site,), price_import=PRICES, **changes)


# Hand-computed: inference earns 2 GPUs * 10 USD * 3 h = 60 and costs 0.2 MW * (50 + 10 + 80) = 28;
# the job earns 100 and costs 0.4 MW times its period's price.
NO_JOB = 60.0 - 28.0
JOB_AT = {t: NO_JOB + 100.0 - 0.4 * PRICES[0, t] for t in range(3)}  # 112, 128, 100


def lp_text(m) -> str:
    with tempfile.NamedTemporaryFile(suffix=".lp", delete=False) as f:
        name = f.name
    try:
        m.prob.writeLP(name)
        return Path(name).read_text()
    finally:
        os.unlink(name)


# ------------------------------------------------------------------------- oracle: fixed starts
def test_fixed_oracle_starts_return_the_oracle_objective() -> None:
    sc = plain_tiny()
    oracle = solve(sc, threads=1)
    assert oracle.status == "optimal"
    assert oracle.job_start == [(0, 0, 1)]
    assert oracle.objective_usd == pytest.approx(JOB_AT[1], abs=1e-6)
    # all three periods fixed to the oracle's starts, or only period 0 (the oracle starts nothing
    # then) with the later starts free: both are the oracle's problem restricted to its optimum
    for starts, periods in ((oracle.job_start, 3), ([], 1)):
        fixed = solve(sc, threads=1, fixed_starts=starts, fixed_start_periods=periods)
        assert fixed.status == "optimal"
        assert fixed.job_start == oracle.job_start
        assert fixed.objective_usd == pytest.approx(oracle.objective_usd, abs=1e-6)


def test_fixed_starts_are_imposed() -> None:
    sc = plain_tiny()
    at0 = solve(sc, threads=1, fixed_starts=[(0, 0, 0)])
    assert at0.job_start == [(0, 0, 0)]
    assert at0.objective_usd == pytest.approx(JOB_AT[0], abs=1e-6)
    never = solve(sc, threads=1, fixed_starts=[], fixed_start_periods=3)
    assert never.job_start == []
    assert never.objective_usd == pytest.approx(NO_JOB, abs=1e-6)


def test_later_starts_none_and_relaxed() -> None:
    sc = plain_tiny()
    none = solve(sc, threads=1, fixed_starts=[], later_starts="none")
    assert none.job_start == []
    assert none.objective_usd == pytest.approx(NO_JOB, abs=1e-6)
    m = build_model(sc, fixed_starts=[], later_starts="relaxed")
    assert all(t == 0 for _, _, t in m.start)  # the later starts left Model.start ...
    relaxed = [v for v in m.prob.variables() if v.name.startswith("start_") and v.name.endswith(("1", "2"))]
    assert len(relaxed) == 2 and all(v.cat == "Continuous" for v in relaxed)  # ... as continuous columns
    sched = solve(sc, threads=1, fixed_starts=[], later_starts="relaxed")
    assert sched.status == "optimal" and sched.job_start == []
    assert sched.bound_usd == pytest.approx(JOB_AT[1], abs=1e-6)  # the LP still plans the job at t=1
    # a mandatory job that must start in the window keeps binary starts under "none"
    job = TrainingJob(
        name="job0",
        gpus=4,
        duration=1,
        release=0,
        deadline=3,
        value_usd=100.0,
        eligible=(True,),
        mandatory=True,
    )
    must = solve(plain_tiny(jobs=(job,)), threads=1, fixed_starts=[], later_starts="none")
    assert must.status == "optimal" and must.job_start == [(0, 0, 1)]


def test_relaxed_later_jobs_powered_by_the_generator() -> None:
    """A relaxed later job that the LP powers with the generator (no export, import capped): its
    power is in the completed balance (``extract(lp_load=True)``), so the solve returns a schedule
    (without it the generator's surplus could not be absorbed and the extraction raised)."""
    site = make_site(capacity_mwh=0.0, gen_capacity_mw=5.0, export_limit_mw=0.0, import_limit_mw=0.25)
    sc = make_tiny(T=3, sites=(site,), price_import=PRICES)
    sched = solve(sc, threads=1, fixed_starts=[], later_starts="relaxed")
    assert sched.status == "optimal" and sched.job_start == []
    assert sched.gen_mw[0, 1] > 0.0  # the later job's generator output is part of the plan
    np.testing.assert_allclose(sched.serve_gpus[0, 0], [2.0, 2.0, 2.0])


def test_fixed_starts_checked() -> None:
    sc = plain_tiny()
    with pytest.raises(ModelError, match="later_starts"):
        build_model(sc, later_starts="none")
    with pytest.raises(ModelError, match="later_starts"):
        build_model(sc, fixed_starts=[], later_starts="maybe")
    with pytest.raises(ModelError, match="outside the fixed periods"):
        build_model(sc, fixed_starts=[(0, 0, 1)])
    with pytest.raises(ModelError, match="not a possible start"):
        late = TrainingJob(
            name="late", gpus=4, duration=1, release=1, deadline=3, value_usd=1.0, eligible=(True,)
        )
        build_model(plain_tiny(jobs=(late,)), fixed_starts=[(0, 0, 0)])  # not released at t = 0


def test_model_without_the_option_unchanged() -> None:
    for sc in (plain_tiny(), make_tiny(T=4), make_scenario("paper", SEED)):
        default = build_model(sc)
        explicit = build_model(sc, fixed_starts=None, fixed_start_periods=1, later_starts="binary")
        assert lp_text(default) == lp_text(explicit)
        assert all(v.cat == "Integer" and (v.lowBound, v.upBound) == (0, 1) for v in default.start.values())
        a, b = solve(sc, threads=1), solve(sc, threads=1, fixed_starts=None)
        assert a.objective_usd == b.objective_usd and a.job_start == b.job_start


# ------------------------------------------------------------------------------ the hybrid policy
def test_hybrid_is_a_policy_name() -> None:
    assert "hybrid" in POLICY_NAMES
    env = make_env("paper", make_scenario("paper", SEED))
    policy = make_policy("hybrid", env, model=str(PRETRAINED), window=6)
    assert isinstance(policy, HybridPolicy) and policy.window == 6
    with pytest.raises(ValueError, match="later_starts"):
        make_policy("hybrid", env, model=str(PRETRAINED), later_starts="sometimes")


def test_accepted_starts_are_what_the_env_places() -> None:
    """Random start requests: the starts ``accepted_starts`` keeps are the env's own placements."""
    rng = np.random.default_rng(0)
    env = make_env("paper", make_scenario("paper", SEED))
    obs, _ = env.reset(seed=SEED)
    n_slots, S = env.action_space["start"].shape[0], env.unwrapped.scenario.S
    dropped = 0
    for t in range(env.unwrapped.scenario.T):
        request = rng.integers(0, S + 1, size=n_slots)
        mine = accepted_starts(obs, request, env)
        probe = copy.deepcopy(env)
        probe.step({**make_policy("greedy", env).act(t), "start": request})
        placed = [entry for entry in probe.unwrapped.state_snapshot().job_starts if entry[2] == t]
        assert sorted(mine) == sorted(placed)
        dropped += int(np.count_nonzero(request[: env.unwrapped.scenario.J])) - len(mine)
        obs, *_ = env.step(make_policy("greedy", env).act(t))
    assert dropped > 0  # the check saw requests the env refuses


@pytest.mark.parametrize(
    ("level", "plan_on"), [("exact", "forecast"), ("typical", "forecast"), ("poor", "posterior_mean")]
)
def test_hybrid_episode_keeps_the_agents_starts(level: str, plan_on: str) -> None:
    sc = make_scenario("paper", SEED)
    env = make_env("paper", sc, forecast_level=level)
    hybrid = HybridPolicy(env, model=PRETRAINED, window=6, plan_on=plan_on)
    with pytest.raises(ValueError, match="plan_on"):
        HybridPolicy(env, model=PRETRAINED, plan_on="bogus")
    agent = make_policy(str(PRETRAINED), env)  # the same model, loaded on its own
    obs, _ = env.reset(seed=SEED)
    done, steps, kept = False, 0, 0
    while not done:
        t = env.unwrapped.state_snapshot().period
        own, _ = agent.predict(obs, deterministic=True)
        probe = copy.deepcopy(env)  # the env's own verdict on the agent's starts
        probe.step(own)
        expected = sorted(e for e in probe.unwrapped.state_snapshot().job_starts if e[2] == t)
        action, _ = hybrid.predict(obs, deterministic=True)
        np.testing.assert_array_equal(hybrid.last_proposal["start"], own["start"])
        obs, _, done, _, info = env.step(action)
        applied = sorted(e for e in env.unwrapped.state_snapshot().job_starts if e[2] == t)
        assert applied == expected
        assert "start_ignored" not in info["repairs"]
        kept += len(applied)
        steps += 1
    assert steps == sc.T and hybrid.fallbacks == 0 and hybrid.kept == kept > 0
    # a whole episode through the evaluation loop too
    result = rollout(HybridPolicy(env, model=PRETRAINED, window=6), env, seed=SEED, preset="paper")
    assert np.isfinite(result.benefit_usd) and result.violations == 0


def test_evaluate_flags_checked_early(capsys: pytest.CaptureFixture[str]) -> None:
    import evaluate

    for argv, message in (
        (["--policies", "mpc", "--hybrid-window", "6"], "only with the hybrid policy"),
        (["--policies", "hybrid", "--hybrid-model", "no/such/model.json"], "no model file there"),
        (["--policies", "hybrid", "--hybrid-window", "0"], "must be an integer >= 1"),
        (
            ["--policies", "mpc", "--hybrid-plan-on", "posterior_mean"],
            "--hybrid-plan-on: only with the hybrid",
        ),
        (["--policies", "hybrid", "--hybrid-plan-on", "mean"], "invalid choice"),
        (["--policies", "mpc_stochastic", "--mpc-sampler", "around"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exc:
            evaluate.main([*argv, "--seeds", str(SEED)])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_hybrid_items_are_keyed_by_the_proposers_contents(tmp_path):
    """A retrained proposer at the same path must not reuse cached hybrid results: the item
    fingerprint holds the model file's digest, not only its path."""
    from agents.evaluation import make_items

    model = tmp_path / "proposer.zip"
    model.write_bytes(b"first")
    kw = {"hybrid": {"model": str(model)}}
    first = make_items(["hybrid"], "paper", [1000], kw)[0]["fingerprint"]
    assert make_items(["hybrid"], "paper", [1000], kw)[0]["fingerprint"] == first
    model.write_bytes(b"second")
    assert make_items(["hybrid"], "paper", [1000], kw)[0]["fingerprint"] != first
