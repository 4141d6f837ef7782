"""Command line: solve one configuration, or compare all six (MODEL.md §6).

python -m oracle --preset paper --seed 0 --config joint --out schedule.json
python -m oracle --scenario my_scenario.json --config no_battery --time-limit 30 --gap 1e-3
python -m oracle --scenario examples/data_spec.yaml --out schedules/   # its held-out windows
python -m oracle compare --preset paper --seed 0 --out compare.csv
python -m oracle compare --preset week --backend ray --ray-address auto --cache runs/compare-week

Every input is checked before any solve (scenario file readable and valid, output folders writable,
numbers in range); a bad one exits with status 2 and one line on stderr. Ctrl-C exits with 130
(with ``--cache``, a rerun skips the configurations already finished).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from envs.atomic import atomic_write_text
from envs.presets import PRESETS, make_scenario
from envs.scenario import Scenario, ScenarioError
from oracle.executor import ItemResult, add_backend_args, backend_kwargs, run_sweep
from oracle.model import CONFIGS, ModelError
from oracle.solve import Schedule, check_options, solve, solve_item


class UsageError(Exception):
    """A command-line input that cannot work; reported as one line, exit status 2."""


def _check_out(path: Path | None, option: str) -> None:
    """``path``'s folder exists and is writable, and ``path`` is not a folder (checked before solving)."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a folder; give a file name")
    if not folder.is_dir():
        raise UsageError(f"{option}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: folder {folder} is not writable")


def _check_cache(path: Path | None) -> None:
    if path is None:
        return
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"--cache: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--cache: {existing} is not writable")


def _check_args(args: argparse.Namespace) -> None:
    """Every check that needs no solve: numbers in range, paths readable and writable."""
    try:
        check_options(args.time_limit, args.gap, args.threads, args.solver)
    except ModelError as exc:
        option = {"time_limit_s": "--time-limit", "mip_gap": "--gap", "threads": "--threads"}
        name, _, rest = str(exc).partition(":")
        raise UsageError(f"{option.get(name, '--' + name)}:{rest}") from None
    if args.seed < 0:
        raise UsageError(f"--seed: must be >= 0 (got {args.seed})")
    if args.scenario is not None and not args.scenario.exists():
        raise UsageError(
            f"--scenario: {args.scenario} does not exist (a scenario JSON, a folder or a data spec)"
        )
    if args.scenario is None and args.split is not None:
        raise UsageError("--split: only with --scenario FOLDER or a data spec")


COLUMNS = (
    ("config", "config", "{:<13}"),
    ("status", "status", "{:<10}"),
    ("benefit_usd", "benefit USD", "{:>13,.2f}"),
    ("emissions_t", "emissions t", "{:>12,.2f}"),
    ("energy_cost_usd", "energy cost USD", "{:>16,.2f}"),
    ("inference_served_pct", "served %", "{:>9.2f}"),
    ("jobs_run", "jobs", "{:>5.0f}"),
    ("solve_time_s", "solve s", "{:>8.2f}"),
    ("mip_gap", "gap %", "{:>7.4f}"),
    ("carbon_budget_relaxed", "budget relaxed", "{!s:>15}"),
)


def _common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset", default="paper", choices=sorted(PRESETS), help="built-in scenario (default: paper)"
    )
    source.add_argument(
        "--scenario",
        type=Path,
        help="a scenario JSON, a folder of them or a data spec .yaml (instead of --preset)",
    )
    parser.add_argument(
        "--split",
        choices=("train", "validation", "heldout"),
        default=None,
        help="with a folder or data spec: which split to solve (default heldout; an unsplit folder: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="preset seed (default: 0)")
    parser.add_argument(
        "--time-limit", type=float, default=60.0, help="MIP time limit per solve, s (default: 60)"
    )
    parser.add_argument("--gap", type=float, default=1e-4, help="relative MIP gap to stop at (default: 1e-4)")
    parser.add_argument("--threads", type=int, default=None, help="solver threads (default: solver's choice)")
    parser.add_argument(
        "--solver", default="highs", choices=("highs", "cbc"), help="MILP solver (default: highs)"
    )
    parser.add_argument(
        "--warm-start", action="store_true", help="start HiGHS from a rounded LP relaxation (helps on large)"
    )
    parser.add_argument("--msg", action="store_true", help="show the solver log")


def _scenarios(args: argparse.Namespace) -> list[tuple[str, Scenario]]:
    """``(name, scenario)`` pairs to solve: the preset seed, the JSON file, or the chosen split
    (default held-out) of a folder or data spec (:func:`envs.sources.load_scenarios`)."""
    if args.scenario is None:
        sc = make_scenario(args.preset, args.seed)
        return [(sc.name, sc)]
    if args.scenario.is_file() and args.scenario.suffix.lower() == ".json":
        return [(args.scenario.stem, Scenario.from_json(args.scenario))]
    from envs.sources import load_scenarios

    source = load_scenarios(args.scenario)
    chosen = list(source.split(args.split or "heldout"))
    if not chosen:
        raise UsageError(f"--scenario: {args.scenario} has no {args.split or 'heldout'} scenarios")
    return chosen


def _scenario(args: argparse.Namespace) -> Scenario:
    """The one scenario of ``compare`` (a folder or spec must come down to one)."""
    chosen = _scenarios(args)
    if len(chosen) > 1:
        names = ", ".join(name for name, _ in chosen[:3])
        raise UsageError(
            f"--scenario: compare takes one scenario, {args.scenario} gives {len(chosen)} ({names}, ...); "
            "write one with Scenario.to_json and pass that file"
        )
    return chosen[0][1]


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)


def _solve(args: argparse.Namespace, sc: Scenario, config: str) -> Schedule:
    return solve(
        sc,
        config,
        time_limit_s=args.time_limit,
        mip_gap=args.gap,
        threads=args.threads,
        solver=args.solver,
        msg=args.msg,
        warm_start=args.warm_start,
    )


def _failed_row(config: str, res: ItemResult) -> dict[str, object]:
    """A table row for a configuration whose solve did not come back (it is never dropped)."""
    row: dict[str, object] = {key: math.nan for key, _, _ in COLUMNS}
    row.update(config=config, status=res.status, carbon_budget_relaxed=False)
    return row


def _row(r: Schedule) -> dict[str, object]:
    gap = r.mip_gap * 100.0 if not math.isnan(r.mip_gap) else math.nan
    return {
        "config": r.config,
        "status": r.status,
        **{key: r.kpis.get(key, math.nan) for key in ("benefit_usd", "emissions_t", "energy_cost_usd")},
        "inference_served_pct": r.kpis.get("inference_served_pct", math.nan),
        "jobs_run": r.kpis.get("jobs_run", math.nan),
        "solve_time_s": r.build_time_s + r.solve_time_s,
        "mip_gap": gap,
        "carbon_budget_relaxed": r.carbon_budget_relaxed,
    }


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """One line per configuration, aligned; ``solve s`` is build + solve time."""
    widths = [len(fmt.format(rows[0][key])) if rows else len(title) for key, title, fmt in COLUMNS]
    header = "  ".join(
        title.rjust(max(w, len(title))) for (_, title, _), w in zip(COLUMNS, widths, strict=True)
    )
    lines = [header]
    for row in rows:
        cells = [
            fmt.format(row[key]).rjust(max(w, len(title)))
            for (key, title, fmt), w in zip(COLUMNS, widths, strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main_solve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oracle",
        description="Solve one configuration of the carbon-aware compute-power MILP (MODEL.md) and write "
        "the schedule as JSON. Use 'python -m oracle compare --help' to compare all configurations.",
    )
    _common(parser)
    parser.add_argument("--config", default="joint", choices=CONFIGS, help="configuration (MODEL.md §6)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the schedule JSON here (several scenarios: a folder, one <name>.json each)",
    )
    args = parser.parse_args(argv)
    _check_args(args)
    several = args.scenario is not None and not (
        args.scenario.is_file() and args.scenario.suffix.lower() == ".json"
    )
    if several and args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out: {args.out} is a file; with a folder or data spec give a folder")
        _check_out(args.out / "x.json" if args.out.is_dir() else args.out, "--out")
    else:
        _check_out(args.out, "--out")
    chosen = _scenarios(args)
    status = 0
    for name, sc in chosen:
        r = _solve(args, sc, args.config)
        print(sc.summary() if len(chosen) == 1 else f"{name}: {sc.S} sites, {sc.T} periods, {sc.J} jobs")
        print(
            f"{args.config}: {r.status}, benefit {r.objective_usd:,.2f} USD, bound {r.bound_usd:,.2f} USD, "
            f"gap {r.mip_gap:.3%}, build {r.build_time_s:.2f} s, solve {r.solve_time_s:.2f} s"
        )
        if r.kpis:
            print("  " + ", ".join(f"{key} {value:,.2f}" for key, value in r.kpis.items()))
        if r.diagnosis:
            print(f"  {r.diagnosis}")
        if args.out is not None:
            target = args.out
            if several:
                args.out.mkdir(parents=True, exist_ok=True)
                target = args.out / f"{_safe_name(name)}.json"
            r.to_json(target)
            print(f"wrote {target}")
        status = status or (0 if r.has_solution else 1)
    return status


def main_compare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oracle compare",
        description="Solve all six configurations of MODEL.md §6 on one scenario, print one table "
        "(benefit, emissions, energy cost, inference served, jobs run, build+solve time, gap) and "
        "write it as CSV.",
    )
    _common(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the table as CSV here")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep each finished solve here as JSON; a rerun skips finished configurations",
    )
    add_backend_args(parser)
    args = parser.parse_args(argv)
    _check_args(args)
    _check_out(args.out, "--out")
    _check_cache(args.cache)
    sc = _scenario(args)
    items = [
        {
            "key": f"{sc.name}-{config}",
            "scenario": sc.to_dict(),
            "config": config,
            "time_limit_s": args.time_limit,
            "mip_gap": args.gap,
            "threads": args.threads,
            "solver": args.solver,
            "warm_start": args.warm_start,
        }
        for config in CONFIGS
    ]
    results = run_sweep(solve_item, items, out_dir=args.cache, desc="configurations", **backend_kwargs(args))
    rows = [
        _row(Schedule.from_dict(res.result)) if res.ok else _failed_row(config, res)
        for config, res in zip(CONFIGS, results, strict=True)
    ]
    print(sc.summary())
    print(format_table(rows))
    for config, res in zip(CONFIGS, results, strict=True):
        if not res.ok:
            print(f"  {config}: {res.status}: {res.error}")
    if args.out is not None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=[key for key, _, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(args.out, buffer.getvalue())
        print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``compare`` / ``solve``; bad input -> one line and exit 2, Ctrl-C -> one line and 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    compare = bool(argv) and argv[0] == "compare"
    if argv and argv[0] in ("compare", "solve"):
        argv = argv[1:]
    try:
        return main_compare(argv) if compare else main_solve(argv)
    except (UsageError, ScenarioError, ModelError) as exc:
        print(f"python -m oracle: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (rerun with the same --cache to skip finished configurations)" if compare else ""
        print(f"python -m oracle: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
