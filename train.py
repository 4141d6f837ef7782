"""Train the default agent: behaviour cloning from the MILP oracle (with DAgger), then PPO fine-tuning.

    python train.py                         # paper preset, runs/default/
    python train.py --timesteps 20000 --out runs/quick --bc-scenarios 50 --dagger-rounds 0
    python train.py --resume                # continue an interrupted run from its last checkpoint
    python train.py --hp clip_range=0.2 --hp n_epochs=10   # override agents/hyperparams/ppo.yml

The pipeline is :func:`agents.pipeline.train_agent`; this file only parses the flags. See docs/training.md.
"""

from __future__ import annotations

import argparse
import sys

from agents.pipeline import Interrupted, TrainConfig, train_agent
from agents.sb3 import ALGOS, parse_hp
from envs.forecast import LEVELS
from envs.presets import PRESETS
from oracle.executor import add_backend_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags (defaults from :class:`agents.pipeline.TrainConfig`)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=sorted(ALGOS), default=d.algo, help="RL algorithm (default ppo)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d.preset)
    p.add_argument(
        "--timesteps",
        type=int,
        default=d.timesteps,
        help="RL fine-tuning steps (default 0: off, see docs/training.md)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="base seed of every scenario seed and the model")
    p.add_argument("--bc", action=argparse.BooleanOptionalAction, default=d.bc, help="clone the oracle first")
    p.add_argument("--bc-scenarios", type=int, default=d.bc_scenarios, help="oracle-solved scenarios for BC")
    p.add_argument("--bc-epochs", type=int, default=d.bc_epochs)
    p.add_argument("--dagger-rounds", type=int, default=d.dagger_rounds)
    p.add_argument("--dagger-scenarios", type=int, default=d.dagger_scenarios, help="scenarios per round")
    p.add_argument("--dagger-epochs", type=int, default=d.dagger_epochs)
    p.add_argument("--value-pretrain-scenarios", type=int, default=d.value_pretrain_scenarios)
    p.add_argument("--n-envs", type=int, default=d.n_envs)
    p.add_argument("--out", default=d.out, help="output folder (default runs/default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--torch-threads", type=int, default=d.torch_threads, help="torch threads (default 1)")
    p.add_argument("--eval-freq", type=int, default=d.eval_freq, help="steps between validations")
    p.add_argument("--eval-scenarios", type=int, default=d.eval_scenarios)
    p.add_argument("--checkpoint-freq", type=int, default=d.checkpoint_freq)
    p.add_argument("--ft-log-std", type=float, default=d.ft_log_std, help="log_std when fine-tuning")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument(
        "--hyperparams",
        metavar="FILE",
        default=d.hyperparams_file,
        help="hyperparameter YAML in the shape of agents/hyperparams/<algo>.yml (default that file)",
    )
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one hyperparameter (repeatable; the value is read as YAML, e.g. --hp clip_range=0.2)",
    )
    p.add_argument("--oracle-time-limit", type=float, default=d.oracle_time_limit_s, help="s per solve")
    p.add_argument("--demo-mip-gap", type=float, default=d.demo_mip_gap, help="MIP gap of demonstrations")
    p.add_argument(
        "--window-features",
        action=argparse.BooleanOptionalAction,
        default=d.window_features,
        help="start-window features computed from the forecast inside the network (agents/features.py)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=d.ensemble,
        metavar="N",
        help=f"models in the deployed policy: the main one + N-1 cloned in parallel (default {d.ensemble})",
    )
    p.add_argument(
        "--forecast-level",
        choices=LEVELS,
        default=d.forecast_level or "exact",
        help="forecast errors the agent is trained with (envs/forecast.py; default typical)",
    )
    p.add_argument(
        "--noise-draws",
        type=int,
        default=d.noise_draws,
        help=f"forecast-error draws per oracle schedule (default {d.noise_draws}; 1 when exact)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Testing aid: behave as if interrupted (Ctrl-C) after N fine-tuning steps.
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    add_backend_args(p)
    args = p.parse_args(argv)
    if args.ensemble < 1:
        p.error(f"--ensemble must be at least 1 (got {args.ensemble})")
    if args.timesteps < 0:
        p.error(f"--timesteps must be >= 0 (got {args.timesteps})")
    if not args.bc and args.timesteps == 0:
        p.error("--no-bc learns only by RL: give --timesteps > 0 (e.g. --timesteps 200000)")
    if args.noise_draws < 1:
        p.error(f"--noise-draws must be at least 1 (got {args.noise_draws})")
    try:  # an unknown key or a bad file fails here, before any work
        args.hp = parse_hp(args.hp)
        config_from_args(args).hyperparams()
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    return args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the parsed flags."""
    return TrainConfig(
        algo=args.algo,
        preset=args.preset,
        timesteps=args.timesteps,
        seed=args.seed,
        bc=args.bc,
        bc_scenarios=args.bc_scenarios,
        bc_epochs=args.bc_epochs,
        dagger_rounds=args.dagger_rounds,
        dagger_scenarios=args.dagger_scenarios,
        dagger_epochs=args.dagger_epochs,
        value_pretrain_scenarios=args.value_pretrain_scenarios,
        n_envs=args.n_envs,
        out=args.out,
        torch_threads=args.torch_threads,
        eval_freq=args.eval_freq,
        eval_scenarios=args.eval_scenarios,
        checkpoint_freq=args.checkpoint_freq,
        ft_log_std=args.ft_log_std,
        learning_rate=args.learning_rate,
        forecast_level=None if args.forecast_level == "exact" else args.forecast_level,
        noise_draws=args.noise_draws,
        oracle_time_limit_s=args.oracle_time_limit,
        demo_mip_gap=args.demo_mip_gap,
        window_features=args.window_features,
        ensemble=args.ensemble,
        progress_bar=not args.no_progress,
        backend=args.backend,
        ray_address=args.ray_address,
        workers=args.workers,
        hyperparams_file=args.hyperparams,
        hp=dict(args.hp),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train_agent(config_from_args(args), resume=args.resume, stop_after_steps=args.stop_after_steps)
    except Interrupted as exc:
        print(f"{exc}; continue with: python train.py --resume --out {args.out}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
