"""Compare controllers on held-out scenarios: ``python evaluate.py`` (see docs/evaluation.md).

With no arguments: oracle, MPC, greedy, carbon_greedy and the trained policy of ``runs/default/``
(``ensemble.json`` if train.py wrote one, else ``model.zip``; if present) on seeds 0-19 of
``paper`` (training only draws seeds >= 1000). Prints the table and writes ``results/results.csv``,
``results/results.json`` and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from agents.evaluation import default_model, evaluate, parse_seeds, print_table, write_report
from envs import PRESETS
from oracle.executor import add_backend_args, backend_kwargs

DEFAULT_POLICIES = ("oracle", "mpc", "greedy", "carbon_greedy")


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
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(20)), help="e.g. 0-19 or 0,3,5")
    parser.add_argument(
        "--policies",
        default=None,
        help="comma-separated names or model paths (default: the four baselines and the default model)",
    )
    parser.add_argument("--out", default="results", help="output folder (results.csv/json, plots, cache)")
    parser.add_argument(
        "--json", action="store_true", help="print only a JSON list (one object per policy and seed)"
    )
    parser.add_argument("--mpc-window", type=int, default=24, help="MPC window, periods (default 24)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="oracle MILP time limit per solve, s")
    parser.add_argument("--mpc-time-limit", type=float, default=10.0, help="MPC MILP time limit per solve, s")
    parser.add_argument(
        "--forecast-noise", type=float, default=0.0, help="relative forecast noise (0 = exact forecasts)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return add_backend_args(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The solver prints a banner on stdout from every process (this one and the sweep's workers):
    # stdout is pointed at /dev/null while they run, and the report is written to the saved stdout.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    note = sys.stderr if args.json else out
    policies = list(DEFAULT_POLICIES) if args.policies is None else args.policies.split(",")
    policies = [p.strip() for p in policies if p.strip()]
    models = args.model or []
    if args.model is None and args.policies is None:
        model = default_model()
        if model.exists():
            models = [str(model)]
        else:
            print(f"note: no trained model at {model} (run train.py first); skipping it", file=note)
    policies += [m for m in models if m not in policies]
    noise = args.forecast_noise
    policy_kwargs = {
        "oracle": {"time_limit_s": args.time_limit},
        "mpc": {"window": args.mpc_window, "time_limit_s": args.mpc_time_limit, "exact": noise == 0.0},
    }
    report = evaluate(
        policies,
        args.preset,
        args.seeds,
        out_dir=args.out,
        policy_kwargs=policy_kwargs,
        env_kwargs={"forecast_noise": noise} if noise else {},
        **backend_kwargs(args),
    )
    for failure in report.failures:
        print(f"failed: {failure['key']}: {failure['status']} {failure['error']}", file=sys.stderr)
    paths = write_report(report, args.out, plots=not args.no_plots)
    if args.json:
        out.write(json.dumps(report.json_rows(), indent=1) + "\n")
    else:
        print_table(report, file=out)
        written = ", ".join(str(p) for p in paths.values())
        print(f"wrote {written} ({report.meta['wall_time_s']:.0f} s sweep)", file=out)
    out.flush()
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
