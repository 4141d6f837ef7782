"""PPO from scratch on ``CarbonAwareDC-Flat-v0`` with plain SB3, scored against the oracle two ways.

Run from the repository root (docs/agents.md says what to expect)::

    .venv/bin/python -m examples.sb3_ppo_scratch --timesteps 500000 --out runs/sb3_scratch
    .venv/bin/python -m examples.sb3_ppo_scratch --timesteps 500000 --vecnormalize --out runs/sb3_vn

What it does, with nothing from the project's training pipeline:

1. ``make_vec_env("CarbonAwareDC-Flat-v0", ...)``: the flat env (one ``Box`` observation, one
   ``Box[-1, 1]`` action) with its default reward scale, 1e-4 per USD (rewards of order 0.1-1;
   raw USD would give PPO value losses around 1e9). Training draws ``paper`` scenarios from the
   training seeds (1000 and up); seeds 0-999 are held out.
2. Optionally ``VecNormalize`` (``--vecnormalize``): running statistics of the observations and
   returns. The env already scales its observations to O(1), so this is a choice, not a need; the
   statistics are saved beside the model and must be given to the evaluation.
3. ``PPO("MlpPolicy", ...)`` with the ``scratch`` setting of ``agents/hyperparams/ppo.yml``
   (SB3's usual PPO settings; ``net_arch`` and ``log_std_init`` go to the policy), then
   ``model.save(out/model.zip)``.
4. SB3's ``evaluate_policy`` on held-out seeds ``0..n-1`` in order
   (``scenario_seeds=range(n), scenario_order="cycle"``) with the env wrapped in
   :class:`agents.OracleScore`: at each episode's end ``info["oracle_score"]`` holds the episode's
   benefit, the oracle's and the normalized score.
5. ``python evaluate.py --model out/model.zip --trust-pickle [--vecnormalize ...]`` on the same
   seeds: the project's table. Both score the same deterministic episodes, so the benefits agree
   (printed side by side).

``--timesteps 64 --n-steps 32 --eval-seeds 2`` is a smoke run (tests/test_own_agent.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.sb3_ppo_scratch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--timesteps", type=int, default=500_000, help="PPO env steps (500k: ~17 min)")
    parser.add_argument("--out", default="runs/sb3_scratch", help="folder for model.zip and results")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--n-envs", type=int, default=1, help="parallel envs (DummyVecEnv)")
    parser.add_argument("--seed", type=int, default=0, help="seed of PPO and of the training envs")
    parser.add_argument("--vecnormalize", action="store_true", help="train with VecNormalize statistics")
    parser.add_argument("--n-steps", type=int, default=None, help="override the YAML's n_steps (smoke runs)")
    parser.add_argument("--eval-seeds", type=int, default=20, help="held-out seeds 0..n-1 to score on")
    parser.add_argument("--workers", type=int, default=2, help="evaluate.py workers")
    parser.add_argument("--verbose", type=int, default=0, help="SB3's training log (1: every rollout)")
    parser.add_argument(
        "--reward-scale",
        type=float,
        default=None,
        help="reward per USD in training (default: the Flat id's, 1e-4; 1 = raw USD, to see why not)",
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (small MLPs: 1)")
    return parser


def train(args: argparse.Namespace) -> Path:
    """Steps 1-3: train PPO from scratch and save ``model.zip`` (and ``vecnormalize.pkl``)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import envs
    from agents.sb3 import load_hyperparams, set_torch_threads

    set_torch_threads(args.torch_threads)
    params = load_hyperparams("ppo", args.preset, "scratch")
    policy_kwargs = {"net_arch": params.pop("net_arch", [64, 64])}
    if "log_std_init" in params:
        policy_kwargs["log_std_init"] = params.pop("log_std_init")
    if args.n_steps is not None:
        params["n_steps"] = args.n_steps
        params["batch_size"] = min(params.get("batch_size", 64), args.n_steps * args.n_envs)
    env_kwargs: dict[str, Any] = {"preset": args.preset}
    if args.reward_scale is not None:
        env_kwargs["reward_scale"] = args.reward_scale
    venv = make_vec_env(envs.FLAT_ENV_ID, args.n_envs, seed=args.seed, env_kwargs=env_kwargs)
    if args.vecnormalize:
        venv = VecNormalize(venv, gamma=params.get("gamma", 0.99))
    model = PPO(
        "MlpPolicy",
        venv,
        seed=args.seed,
        device="cpu",
        policy_kwargs=policy_kwargs,
        verbose=args.verbose,
        **params,
    )
    model.learn(total_timesteps=args.timesteps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.zip")
    if args.vecnormalize:
        venv.save(str(out / "vecnormalize.pkl"))
    return out / "model.zip"


def score_with_evaluate_policy(args: argparse.Namespace, model_path: Path) -> list[dict[str, Any]]:
    """Step 4: SB3's ``evaluate_policy`` through :class:`agents.OracleScore`, one row per held-out seed."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    import envs
    from agents import OracleScore

    seeds = list(range(args.eval_seeds))

    def make() -> gym.Env:
        flat = gym.make(envs.FLAT_ENV_ID, preset=args.preset, scenario_seeds=seeds, scenario_order="cycle")
        return Monitor(OracleScore(flat))

    venv = DummyVecEnv([make])
    stats = model_path.with_name("vecnormalize.pkl")
    if args.vecnormalize:
        venv = VecNormalize.load(str(stats), venv)
        venv.training, venv.norm_reward = False, False
    model = PPO.load(str(model_path), device="cpu")
    scores: list[dict[str, Any]] = []

    def collect(local: dict[str, Any], _globals: dict[str, Any]) -> None:
        if local["done"] and "oracle_score" in local["info"]:
            scores.append(local["info"]["oracle_score"])

    venv.seed(0)  # reset(seed=0) starts the cycle at seeds[0]
    evaluate_policy(model, venv, n_eval_episodes=len(seeds), deterministic=True, callback=collect)
    return scores


def score_with_evaluate_py(args: argparse.Namespace, model_path: Path) -> dict[str, Any]:
    """Step 5: ``python evaluate.py --model ... --trust-pickle`` on the same seeds; its results.json."""
    out = Path(args.out) / "evaluate"
    cmd = [
        sys.executable, "evaluate.py", "--model", str(model_path.resolve()), "--trust-pickle",
        "--policies", "greedy", "--preset", args.preset, "--seeds", f"0-{args.eval_seeds - 1}",
        "--out", str(out.resolve()), "--workers", str(args.workers), "--no-plots",
    ]  # fmt: skip
    if args.vecnormalize:
        cmd += ["--vecnormalize", str(model_path.with_name("vecnormalize.pkl").resolve())]
    print("$", " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise RuntimeError(f"evaluate.py failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads((out / "results.json").read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timesteps < 1 or args.n_envs < 1 or args.eval_seeds < 1 or args.torch_threads < 1:
        parser.error("--timesteps, --n-envs, --eval-seeds and --torch-threads must be >= 1")
    if args.reward_scale is not None and not args.reward_scale > 0:
        parser.error(f"--reward-scale must be > 0 (got {args.reward_scale})")
    model_path = train(args)
    scores = score_with_evaluate_policy(args, model_path)
    results = score_with_evaluate_py(args, model_path)
    agent = [r for r in results["rows"] if r["policy"] != "greedy"]
    print(f"\n{'seed':>4} {'evaluate_policy + OracleScore':>30} {'evaluate.py':>14} {'oracle':>10}")
    for seed, (s, r) in enumerate(zip(scores, agent, strict=True)):
        b, e, o = s["benefit_usd"], r["benefit_usd"], s["oracle_benefit_usd"]
        print(f"{seed:>4} {b:>30,.0f} {e:>14,.0f} {o:>10,.0f}")
    mean = {k: float(np.mean([s[k] for s in scores])) for k in ("benefit_usd", "oracle_benefit_usd")}
    greedy = float(np.mean([s["greedy_benefit_usd"] for s in scores]))
    norm = (mean["benefit_usd"] - greedy) / (mean["oracle_benefit_usd"] - greedy)
    summary = next(s for s in results["summary"] if s["policy"] != "greedy")
    print(
        f"PPO from scratch, {args.timesteps:,} steps, {len(scores)} held-out seeds: "
        f"{100.0 * mean['benefit_usd'] / mean['oracle_benefit_usd']:.1f} % of the oracle, normalized score "
        f"{norm:.3f} (evaluate_policy + OracleScore); {summary['pct_of_oracle']:.1f} %, "
        f"{summary['normalized_score']:.3f} (evaluate.py)"
    )
    return {"oracle_score": scores, "evaluate": results, "model": str(model_path)}


if __name__ == "__main__":
    main()
