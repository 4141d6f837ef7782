"""Train the default agent: behaviour cloning from the MILP oracle (with DAgger), then PPO fine-tuning.

    python train.py                         # paper preset, runs/default/
    python train.py --timesteps 20000 --out runs/quick --bc-scenarios 50 --dagger-rounds 0
    python train.py --resume                # continue an interrupted run from its last checkpoint
    python train.py --resume --bc-epochs 50 --resume-with-changes   # continue with a changed flag
    python train.py --hp clip_range=0.2 --hp n_epochs=10   # override agents/hyperparams/ppo.yml
    python train.py --scenario examples/data_spec.yaml --out runs/mydata   # train on your own data

The pipeline is :func:`agents.pipeline.train_agent`; this file only parses and checks the flags
(every value before any work: one line and exit 2 on bad input; Ctrl-C: one line saying what was
kept and how to resume, exit 130). See docs/training.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from agents.evaluation import parse_level
from agents.pipeline import (
    Interrupted,
    TrainConfig,
    config_changes,
    network_changes,
    saved_config,
    train_agent,
    writable_problem,
)
from agents.sb3 import ALGOS, ANCHOR_TARGETS, parse_hp
from envs.forecast import LEVELS
from envs.presets import PRESETS
from oracle.executor import add_backend_args

FIELD_OF = {
    "oracle_time_limit": "oracle_time_limit_s",
    "no_progress": "progress_bar",
    "hyperparams": "hyperparams_file",
}
"""``TrainConfig`` field of each flag whose name differs (the others: the flag's own name)."""
NOT_CONFIG = {"resume", "resume_with_changes", "stop_after_steps"}


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags (defaults from :class:`agents.pipeline.TrainConfig`)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=sorted(ALGOS), default=d.algo, help="RL algorithm (default ppo)")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=d.preset, help="scenario preset (default paper)"
    )
    p.add_argument(
        "--scenario",
        metavar="PATH",
        default=None,
        help="train on your own scenarios instead of a preset: a scenario JSON, a folder of them (with "
        "train/ validation/ heldout/ sub-folders) or a data spec YAML (docs/data.md); validation on its "
        "validation split, training scenarios drawn from its train split, held-out split never used",
    )
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
    p.add_argument(
        "--resume-with-changes",
        action="store_true",
        help="with --resume: continue although flags differ from the run's config.json, using the new "
        "values (finished stages keep their outputs)",
    )
    p.add_argument("--torch-threads", type=int, default=d.torch_threads, help="torch threads (default 1)")
    p.add_argument("--eval-freq", type=int, default=d.eval_freq, help="steps between validations")
    p.add_argument("--eval-scenarios", type=int, default=d.eval_scenarios)
    p.add_argument("--checkpoint-freq", type=int, default=d.checkpoint_freq)
    p.add_argument("--ft-log-std", type=float, default=d.ft_log_std, help="log_std when fine-tuning")
    p.add_argument(
        "--ft-bc-steps",
        type=int,
        default=d.ft_bc_steps,
        metavar="N",
        help="fine-tuning: N behaviour-cloning minibatch steps on the dataset after every RL update "
        "(an anchor toward the cloned policy; default 0 = off)",
    )
    p.add_argument(
        "--ft-bc-lr", type=float, default=d.ft_bc_lr, help="learning rate of those steps (default 1e-4)"
    )
    p.add_argument(
        "--ft-bc-target",
        choices=ANCHOR_TARGETS,
        default=d.ft_bc_target,
        help="the anchor pulls toward the demonstrated actions (data, default) or the cloned policy (policy)",
    )
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
        type=parse_level,
        default=d.forecast_level or "exact",
        metavar="LEVEL",
        help=f"forecast errors the agent is trained with: one of {', '.join(LEVELS)} or a level scaled as "
        "LEVEL*FACTOR, e.g. poor*2, or a number sigma (envs/forecast.py; default typical)",
    )
    p.add_argument(
        "--noise-draws",
        type=int,
        default=d.noise_draws,
        help=f"forecast-error draws per oracle schedule (default {d.noise_draws}; 1 when exact)",
    )
    p.add_argument(
        "--exact-draws",
        type=int,
        default=d.exact_draws,
        help=f"of those draws, how many replay with exact forecasts (default {d.exact_draws})",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also write TensorBoard event files to DIR/<run folder name>/ (SB3's fine-tuning metrics, "
        "validation scores, BC/DAgger losses; the same rows always go to <out>/train_log.csv)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Testing aid: behave as if interrupted (Ctrl-C) after N fine-tuning steps.
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    add_backend_args(p)
    return p


def flag_of(parser: argparse.ArgumentParser, name: str) -> str:
    """The flag that sets config field (or destination) ``name``, e.g. ``--n-envs``."""
    dests = {FIELD_OF.get(a.dest, a.dest): a for a in parser._actions if a.option_strings}
    action = dests.get(name)
    return action.option_strings[0] if action is not None else name


def given_fields(argv: list[str] | None) -> set[str]:
    """The config fields whose flags appear on the command line (not left at their defaults)."""
    quiet = build_parser()
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    given = vars(quiet.parse_args(argv))
    return {FIELD_OF.get(dest, dest) for dest in given if dest not in NOT_CONFIG}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check every flag before any work: a bad value, an unwritable ``--out``, a
    ``--resume`` without a run, or flags that differ from the resumed run's ``config.json``
    (without ``--resume-with-changes``) exit with one line (status 2)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.scenario is not None and "preset" in given_fields(argv):
        p.error("--scenario replaces --preset: give one of them")
    try:
        args.hp = parse_hp(args.hp)
        cfg = config_from_args(args)
        cfg.check()
    except FileNotFoundError as exc:
        p.error(str(exc))
    except ValueError as exc:
        name, sep, rest = str(exc).partition(": ")
        p.error(f"{flag_of(p, name)}: {rest}" if sep and name.isidentifier() else str(exc))
    for flag, folder in (("--out", args.out), ("--tensorboard", args.tensorboard)):
        problem = writable_problem(Path(folder)) if folder is not None else None
        if problem:
            p.error(f"{flag}: {problem}")
    if args.resume_with_changes and not args.resume:
        p.error("--resume-with-changes: only with --resume")
    args.apply = set()
    if args.resume:
        try:
            saved, _ = saved_config(args.out)
        except FileNotFoundError as exc:
            p.error(str(exc))
        changes = config_changes(saved, cfg, given_fields(argv))
        if changes and not args.resume_with_changes:
            listed = ", ".join(f"{flag_of(p, name)} {old!r} -> {new!r}" for name, old, new in changes)
            p.error(
                f"--resume: flags differ from {Path(args.out) / 'config.json'}: {listed}; drop them to "
                "continue the run as it was, or add --resume-with-changes to continue with the new values"
            )
        fixed = network_changes(saved, changes)
        if fixed:
            p.error(
                f"--resume: {', '.join(fixed)} would reshape the saved networks, which a resumed run "
                "loads as they are; start a new run (another --out) to change them"
            )
        args.apply = {name for name, _, _ in changes}
    return args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the parsed flags."""
    return TrainConfig(
        algo=args.algo,
        preset=None if args.scenario is not None else args.preset,
        scenario=args.scenario,
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
        ft_bc_steps=args.ft_bc_steps,
        ft_bc_lr=args.ft_bc_lr,
        ft_bc_target=args.ft_bc_target,
        learning_rate=args.learning_rate,
        forecast_level=None if args.forecast_level == "exact" else args.forecast_level,
        noise_draws=args.noise_draws,
        exact_draws=args.exact_draws,
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
        tensorboard=args.tensorboard,
    )


def resume_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """The exact command that continues an interrupted run (or starts it again, if it had not begun)."""
    if not (Path(args.out) / "config.json").is_file():
        return "start it again with: " + shlex.join(["python", "train.py", *argv])
    logs = ["--tensorboard", str(args.tensorboard)] if args.tensorboard is not None else []
    return "resume with: " + shlex.join(["python", "train.py", "--resume", "--out", str(args.out), *logs])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        train_agent(
            config_from_args(args),
            resume=args.resume,
            stop_after_steps=args.stop_after_steps,
            apply=args.apply,
        )
    except Interrupted as exc:
        print(f"train.py: {exc}; {resume_hint(args, argv)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the pipeline started: nothing to keep
        print("train.py: interrupted before the run started; nothing kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
