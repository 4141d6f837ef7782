"""Compare controllers on held-out scenarios: ``python evaluate.py`` (see docs/evaluation.md).

With no arguments: oracle, MPC, mpc_lp (MPC on the LP relaxation of its model: a planner at about
a tenth of MPC's decision time), agent_lp, greedy, carbon_greedy and the trained policy of
``runs/default/`` (``ensemble.json`` if train.py wrote one, else ``model.zip``; if present; else the
shipped agent; ``agent_lp`` is that policy with a one-period routing LP) on seeds 0-19 of
``paper`` (training only draws seeds >= 1000). Prints the table and writes ``results/results.csv``,
``results/results.json`` and PNG plots.

``--forecast-level exact,good,typical,poor`` evaluates at each forecast error level (envs/forecast.py)
and prints one table across levels with the value of perfect information; it writes
``results/levels.{json,csv,png}`` and ``results/levels_time.png`` (benefit vs decision time) beside
each level's own results in ``results/levels/<level>/``.

``--scenario PATH`` evaluates your own scenarios instead of preset seeds: a scenario JSON, a folder
of them (its ``heldout/`` sub-folder if it has train/validation/heldout splits) or a data spec YAML
(its held-out windows); results name each scenario by its file stem or ``spec@window``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from agents.baselines import PLAN_ON
from agents.evaluation import (
    default_model,
    evaluate,
    heldout_scenarios,
    interrupted_message,
    parse_level,
    parse_seeds,
    print_table,
    training_range_note,
    write_report,
)
from agents.loading import add_loading_args, check_loading_args, check_model_shapes, loading_kwargs
from agents.mpc import SAMPLERS
from envs import PRESETS
from envs.forecast import forecast_model
from oracle.executor import add_backend_args, backend_kwargs

DEFAULT_POLICIES = ("oracle", "mpc", "mpc_lp", "agent_lp", "greedy", "carbon_greedy")
LEVEL_POLICIES = (
    "oracle",
    "mpc",
    "mpc_posterior",
    "mpc_stochastic",
    "mpc_lp",
    "hybrid",
    "agent_lp",
    "greedy",
    "carbon_greedy",
)
"""The default policies of a run across forecast levels (plus the trained model if there is one)."""
PROPOSED = ("hybrid", "agent_lp")
"""Policies built around a trained model that proposes (``--hybrid-model``, default the agent row's)."""


def _levels(text: str) -> list[str]:
    from envs.forecast import LEVELS

    levels = [parse_level(p) for p in text.split(",") if p.strip()]
    if not levels:
        raise argparse.ArgumentTypeError(f"no forecast level in {text!r}; choose from {','.join(LEVELS)}")
    return list(dict.fromkeys(levels))


def _number(text: str, kind: type, message: str) -> Any:
    """``kind(text)``, or argparse's error ``message`` (naming the flag) when it is not one."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None


def _nonnegative(text: str) -> float:
    value = _number(text, float, f"must be a finite number >= 0 (got {text!r})")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (got {text!r})")
    return value


def _positive(text: str) -> float:
    value = _number(text, float, f"must be a finite number > 0 (got {text!r})")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (got {text!r})")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int, f"must be an integer >= 1 (got {text!r})")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {text!r})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="PATH",
        help="trained SB3 model .zip or ensemble .json (repeatable)",
    )
    parser.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help="preset whose seeds to score (default paper)"
    )
    parser.add_argument(
        "--seeds", type=parse_seeds, default=None, help="preset seeds, e.g. 0-19 or 0,3,5 (default 0-19)"
    )
    parser.add_argument(
        "--scenario",
        metavar="PATH",
        default=None,
        help="your scenarios instead of a preset: a scenario JSON, a folder of them (its heldout/ split "
        "if it has one) or a data spec .yaml (its held-out windows)",
    )
    parser.add_argument(
        "--policies",
        default=None,
        help="comma-separated names or model paths (default: the baselines, agent_lp and the default model)",
    )
    parser.add_argument("--out", default="results", help="output folder (results.csv/json, plots, cache)")
    parser.add_argument(
        "--json", action="store_true", help="print only a JSON list (one object per policy and seed)"
    )
    parser.add_argument(
        "--mpc-window",
        type=_positive_int,
        default=24,
        help="window of mpc, mpc_posterior and mpc_lp, periods (default 24)",
    )
    parser.add_argument(
        "--mpc-scenarios", type=_positive_int, default=4, help="mpc_stochastic: forecast scenarios per solve"
    )
    parser.add_argument(
        "--mpc-stochastic-window", type=_positive_int, default=24, help="mpc_stochastic: window, periods"
    )
    parser.add_argument(
        "--mpc-sampler",
        choices=SAMPLERS,
        default="posterior",
        help="mpc_stochastic: scenarios from the posterior of the truth given the forecast (default) or "
        "the forecast plus an independent error of the same law",
    )
    parser.add_argument(
        "--hybrid-model",
        metavar="PATH",
        default=None,
        help="hybrid and agent_lp: the trained model that proposes (default: the first --model, else "
        "the default model)",
    )
    parser.add_argument(
        "--hybrid-window",
        type=_positive_int,
        default=None,
        help="hybrid: window of the repair MILP, periods (default 24)",
    )
    parser.add_argument(
        "--hybrid-plan-on",
        choices=PLAN_ON,
        default=None,
        help="hybrid: the repair MILP plans on the forecast as observed (default) or its posterior mean",
    )
    parser.add_argument(
        "--time-limit", type=_positive, default=60.0, help="oracle MILP time limit per solve, s"
    )
    parser.add_argument(
        "--mpc-time-limit", type=_positive, default=10.0, help="MPC MILP time limit per solve, s"
    )
    parser.add_argument(
        "--forecast-level",
        type=_levels,
        default=None,
        metavar="LEVELS",
        help="forecast error level(s): exact, good, typical, poor, a level scaled as LEVEL*FACTOR "
        "(e.g. poor*2: every error twice as wide) or a number (sigma); several (comma-separated) "
        "give one table across levels",
    )
    parser.add_argument(
        "--forecast-noise",
        type=_nonnegative,
        default=0.0,
        help="shorthand: i.i.d. relative forecast noise sigma per sqrt(lead) (0 = exact forecasts)",
    )
    parser.add_argument(
        "--trace", metavar="DIR", default=None, help="write a per-step trace CSV per policy and seed"
    )
    parser.add_argument(
        "--wide", action="store_true", help="print the table on one line per row, whatever the terminal"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return add_backend_args(add_loading_args(parser))


def _check_policies(parser: argparse.ArgumentParser, policies: list[str]) -> None:
    """Fail before any work on an unknown policy name or a model path that does not exist."""
    from agents.baselines import POLICY_NAMES

    for spec in policies:
        if spec in POLICY_NAMES:
            continue
        if not Path(spec).is_file():
            parser.error(
                f"policy {spec!r}: not one of {', '.join(POLICY_NAMES)} and no model file at that path"
            )


def _fits(model: Path, args: argparse.Namespace, scenarios) -> bool:
    """Whether ``model`` was trained on the observation shape of the evaluated preset or scenarios."""
    from agents.evaluation import make_env
    from agents.loading import model_observation_shape
    from envs.presets import make_scenario
    from envs.wrappers import FlatObsActionWrapper

    shape = model_observation_shape(str(model))
    first = scenarios[0][1] if scenarios else make_scenario(args.preset, args.seeds[0])
    wanted = FlatObsActionWrapper(make_env(args.preset, first)).observation_space.shape
    return shape is None or shape == wanted


def _check_hybrid(
    parser: argparse.ArgumentParser, args: argparse.Namespace, policies: list[str]
) -> str | None:
    """The proposing model's path when ``hybrid`` or ``agent_lp`` is among ``policies``
    (``--hybrid-model``, else the agent row's model: the first ``--model``, else the default model),
    checked before any work; ``--hybrid-*`` flags without a policy that reads them fail."""
    if "hybrid" not in policies:
        flags = (("--hybrid-window", args.hybrid_window), ("--hybrid-plan-on", args.hybrid_plan_on))
        given = [flag for flag, value in flags if value is not None]
        if given:
            parser.error(f"{', '.join(given)}: only with the hybrid policy (add hybrid to --policies)")
    users = [p for p in PROPOSED if p in policies]
    if not users:
        if args.hybrid_model is not None:
            parser.error("--hybrid-model: only with the hybrid or agent_lp policy (add one to --policies)")
        return None
    if args.hybrid_model is not None:
        model, source = Path(args.hybrid_model), "--hybrid-model"
    elif args.model:  # the agent row's model: the (first) --model
        model, source = Path(args.model[0]), f"{users[0]}: --model"
    else:
        model, source = default_model(), f"{users[0]}: the default model"
    if not model.is_file():
        parser.error(f"{source} {model}: no model file there (train one, or give --hybrid-model PATH)")
    return str(model)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    scenarios = source = None
    if args.scenario is not None:
        if args.seeds is not None or args.preset is not None:
            parser.error("--scenario names its own scenarios: give it without --seeds and --preset")
        from envs.scenario import ScenarioError

        try:
            scenarios, source = heldout_scenarios(args.scenario)
        except (ScenarioError, OSError) as exc:
            parser.error(str(exc).splitlines()[0])
    else:
        args.preset = args.preset or "paper"
        args.seeds = list(range(20)) if args.seeds is None else args.seeds
        note = training_range_note(args.seeds)
        if note:
            print(note, file=sys.stderr)
    target = {"scenarios": scenarios, "source": source} if scenarios is not None else {}
    levels = args.forecast_level
    if levels is not None and args.forecast_noise:
        parser.error("--forecast-level and --forecast-noise: give one of them")
    several = levels is not None and len(levels) > 1
    defaults = LEVEL_POLICIES if several else DEFAULT_POLICIES
    policies = list(defaults) if args.policies is None else args.policies.split(",")
    policies = [p.strip() for p in policies if p.strip()]
    models = args.model or []
    missing_default = unfit_default = None
    if args.model is None and args.policies is None:
        model = default_model()
        if not model.exists():
            missing_default = model
        elif _fits(model, args, scenarios):
            models = [str(model)]
        else:
            unfit_default = model
        if models == [] and args.hybrid_model is None:  # default rows that need the missing/unfit model
            policies = [p for p in policies if p not in PROPOSED]
    policies += [m for m in models if m not in policies]
    _check_policies(parser, policies)
    from agents.baselines import POLICY_NAMES

    model_specs = [p for p in policies if p not in POLICY_NAMES]
    hybrid_model = _check_hybrid(parser, args, policies)
    loaded = model_specs if hybrid_model is None else list(dict.fromkeys([*model_specs, hybrid_model]))
    check_loading_args(parser, args, loaded)
    if loaded:
        from agents.evaluation import make_env
        from envs.presets import make_scenario

        first = scenarios[0][1] if scenarios else make_scenario(args.preset, args.seeds[0])
        where = f"scenario {scenarios[0][0]}" if scenarios else f"preset {args.preset}"
        check_model_shapes(parser, loaded, make_env(args.preset, first), where)

    # The solver prints a banner on stdout from every process (this one and the sweep's workers):
    # stdout is pointed at /dev/null while they run, and the report is written to the saved stdout.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    note = sys.stderr if args.json else out
    if missing_default is not None:
        print(f"note: no trained model at {missing_default} (run train.py first); skipping it", file=note)
    if unfit_default is not None:
        where = "these scenarios give" if scenarios else f"preset {args.preset} gives"
        print(
            f"note: the default model {unfit_default} was trained on another observation shape than "
            f"{where}; skipping it (and {', '.join(PROPOSED)})",
            file=note,
        )
    noise = args.forecast_noise
    policy_kwargs = {
        "oracle": {"time_limit_s": args.time_limit},
        "mpc": {"window": args.mpc_window, "time_limit_s": args.mpc_time_limit, "exact": noise == 0.0},
        "mpc_posterior": {"window": args.mpc_window, "time_limit_s": args.mpc_time_limit},
        "mpc_lp": {"window": args.mpc_window},
        "mpc_stochastic": {
            "window": args.mpc_stochastic_window,
            "n_scenarios": args.mpc_scenarios,
            "time_limit_s": args.mpc_time_limit,
            "sampler": args.mpc_sampler,
        },
    }
    for spec in model_specs:
        policy_kwargs[spec] = loading_kwargs(args)
    if hybrid_model is not None:
        policy_kwargs["hybrid"] = {
            "model": hybrid_model,
            "window": args.hybrid_window or 24,
            "plan_on": args.hybrid_plan_on or "forecast",
            "time_limit_s": args.mpc_time_limit,
            **loading_kwargs(args),
        }
        policy_kwargs["agent_lp"] = {"model": hybrid_model, **loading_kwargs(args)}
    if args.trust_pickle:
        print(
            "warning: --trust-pickle: SB3 .zip and VecNormalize files run code when loaded; use it only on "
            "your own files",
            file=note,
        )
    try:
        if several:
            return _across_levels(args, policies, levels, policy_kwargs, out, target)
        if levels is not None:
            env_kwargs = {"forecast_level": levels[0]}
            policy_kwargs["mpc"]["exact"] = forecast_model(levels[0]).is_exact
        else:
            env_kwargs = {"forecast_noise": noise} if noise else {}
        report = evaluate(
            policies,
            args.preset,
            args.seeds,
            out_dir=args.out,
            policy_kwargs=policy_kwargs,
            env_kwargs=env_kwargs,
            trace_dir=args.trace,
            **target,
            **backend_kwargs(args),
        )
        return _finish(args, report, out)
    except KeyboardInterrupt:
        print(interrupted_message(args.out), file=sys.stderr)
        return 130


def _finish(args: argparse.Namespace, report, out) -> int:
    """Print the failures and the table, write the results files."""
    for failure in report.failures:
        print(f"failed: {failure['key']}: {failure['status']} {failure['error']}", file=sys.stderr)
    paths = write_report(report, args.out, plots=not args.no_plots)
    if args.json:
        out.write(json.dumps(report.json_rows(), indent=1) + "\n")
    else:
        print_table(report, file=out, wide=args.wide)
        written = ", ".join(str(p) for p in paths.values())
        print(f"wrote {written} ({report.meta['wall_time_s']:.0f} s sweep)", file=out)
    out.flush()
    return 1 if report.failures else 0


def _across_levels(args: argparse.Namespace, policies, levels, policy_kwargs, out, target) -> int:
    """``--forecast-level A,B,...``: one sweep per level, then the table across levels."""
    from agents.uncertainty import evaluate_levels, format_levels_table, level_dir, write_levels

    report = evaluate_levels(
        policies,
        args.preset,
        args.seeds,
        levels,
        out_dir=args.out,
        policy_kwargs=policy_kwargs,
        trace_dir=args.trace,
        **target,
        **backend_kwargs(args),
    )
    failures = [f for level in levels for f in report.reports[level].failures]
    for failure in failures:
        print(f"failed: {failure['key']}: {failure['status']} {failure['error']}", file=sys.stderr)
    for level in levels:
        folder = Path(args.out) / "levels" / level_dir(level)
        write_report(report.reports[level], folder, plots=not args.no_plots)
    paths = write_levels(report, args.out, plots=not args.no_plots)
    if args.json:
        out.write(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    else:
        out.write(format_levels_table(report) + "\n")
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=out)
    out.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # while checking the inputs, before the sweep caught it
        print("interrupted before any work started; re-run the same command", file=sys.stderr)
        raise SystemExit(130) from None
