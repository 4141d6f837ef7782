"""The numbers and files of an evaluation: per-policy summary, bootstrap CIs, the table, results files.

:func:`agents.evaluation.evaluate` plays every (policy, scenario) pair and hands its rows to
:func:`summarize`; this module turns them into a :class:`Report`'s summary, prints it
(:func:`print_table`, :func:`format_table`) and writes it (:func:`write_report`: ``results.csv``,
``results.json`` and the PNG plots of :mod:`agents.plots`).

Every row names its scenario under ``"scenario"``: ``<preset>-<seed>`` for a preset's seed, the source
name (a file stem, or ``spec@2023-03-18T00`` for a data spec's window) for ``evaluate.py --scenario``.
The statistics pair rows of different policies by that name.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.scenario import Scenario

BOOTSTRAP_SEED = 20240601
"""Seed of the bootstrap resampling (recorded in results.json)."""
N_BOOTSTRAP = 10_000
REFERENCE = "oracle"
BASELINE = "greedy"

JSON_FIELDS = (
    "policy",
    "preset",
    "seed",
    "scenario",
    "benefit_usd",
    "oracle_benefit_usd",
    "gap_pct",
    "emissions_t",
    "energy_cost_usd",
    "inference_served_pct",
    "jobs_completed",
    "violations",
    "decision_ms",
)
"""Fields of one (policy, scenario) row of ``evaluate.py --json`` (``preset`` and ``seed`` are null for
a scenario of ``--scenario``)."""


@dataclasses.dataclass
class Report:
    """The outcome of :func:`agents.evaluation.evaluate`: per-(policy, scenario) rows, per-policy
    summary, failures, meta; ``scenarios`` keeps the user's scenarios by name (for the dispatch plot;
    not written)."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    meta: dict[str, Any]
    scenarios: dict[str, Scenario] = dataclasses.field(default_factory=dict, repr=False)

    def json_rows(self) -> list[dict[str, Any]]:
        """The rows restricted to :data:`JSON_FIELDS` (``evaluate.py --json``)."""
        return [{k: _clean(r.get(k)) for k in JSON_FIELDS} for r in self.rows]


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def describe(meta: dict[str, Any]) -> str:
    """What was evaluated, for titles: ``paper: 20 held-out seeds`` or ``data_spec.yaml: 4 held-out
    scenarios``."""
    source = meta.get("source")
    if source:
        n = len(meta.get("scenarios") or [])
        what = source.get("evaluated", "held-out")
        return f"{Path(source['path']).name}: {n} {what} scenario{'s' * (n != 1)}"
    seeds = meta["seeds"]
    # train.py draws its scenarios from seeds >= 1000 (agents.imitation.TRAIN_SEED_LOW)
    what = "held-out seeds" if all(int(s) < 1000 for s in seeds) else "seeds (some in the training range)"
    return f"{meta['preset']}: {len(seeds)} {what}"


# -------------------------------------------------------------------------------------- statistics
def bootstrap_ci(
    values: Sequence[float], conf: float = 0.95, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (resampling with replacement).

    ``n_boot`` resamples from ``numpy.random.default_rng(seed)``; returns ``(low, high)``. A single
    value (or none) gives ``(mean, mean)``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - conf) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def gap_pct(benefit: float, oracle: float) -> float:
    """Gap to the oracle in percent of the oracle's benefit: ``100 (oracle - benefit) / |oracle|``."""
    if oracle is None or not math.isfinite(oracle) or oracle == 0:
        return math.nan
    return 100.0 * (oracle - benefit) / abs(oracle)


def _name(row: dict[str, Any]) -> Any:
    return row["scenario"] if "scenario" in row else row["seed"]


def summarize(rows: Sequence[dict[str, Any]], policies: Sequence[str]) -> list[dict[str, Any]]:
    """One summary row per policy over the scenarios both it and the reference finished.

    ``benefit_*``: mean and bootstrap CI; ``pct_of_oracle``: ``100 * mean / mean(oracle)``;
    ``gap_pct``: mean of per-scenario gaps; ``normalized_score``: ``(mean - mean(greedy)) /
    (mean(oracle) - mean(greedy))`` on the scenarios where greedy ran too. Rows are paired by their
    ``scenario`` name (rows without one: by ``seed``); ``n_seeds`` counts the policy's scenarios."""
    by = {(r["policy"], _name(r)): r for r in rows}
    oracle = {_name(r): r["oracle_benefit_usd"] for r in rows if r.get("oracle_benefit_usd") is not None}
    out = []
    for pol in policies:
        mine = [r for r in rows if r["policy"] == pol]
        if not mine:
            continue
        names = [_name(r) for r in mine]
        b = np.array([r["benefit_usd"] for r in mine])
        lo, hi = bootstrap_ci(b)
        ref = np.array([oracle.get(s, math.nan) for s in names], dtype=np.float64)
        gaps = np.array([r["gap_pct"] for r in mine], dtype=np.float64)
        both = np.isfinite(ref)
        greedy = np.array(
            [by[(BASELINE, s)]["benefit_usd"] if (BASELINE, s) in by else math.nan for s in names]
        )
        ok = both & np.isfinite(greedy)
        denom = ref[ok].mean() - greedy[ok].mean() if ok.any() else math.nan
        score = (b[ok].mean() - greedy[ok].mean()) / denom if ok.any() and denom != 0 else math.nan
        out.append(
            {
                "policy": pol,
                "n_seeds": len(mine),
                "benefit_mean_usd": float(b.mean()),
                "benefit_ci_low_usd": lo,
                "benefit_ci_high_usd": hi,
                "oracle_mean_usd": float(ref[both].mean()) if both.any() else math.nan,
                "pct_of_oracle": float(100.0 * b[both].mean() / ref[both].mean()) if both.any() else math.nan,
                "gap_pct": float(np.nanmean(gaps)) if np.isfinite(gaps).any() else math.nan,
                "normalized_score": float(score),
                "return_mean_usd": float(np.mean([r["return_usd"] for r in mine])),
                "emissions_mean_t": float(np.mean([r["emissions_t"] for r in mine])),
                "emissions_ci_low_t": bootstrap_ci([r["emissions_t"] for r in mine])[0],
                "emissions_ci_high_t": bootstrap_ci([r["emissions_t"] for r in mine])[1],
                "energy_cost_mean_usd": float(np.mean([r["energy_cost_usd"] for r in mine])),
                "inference_served_pct": float(np.mean([r["inference_served_pct"] for r in mine])),
                "jobs_completed_mean": float(np.mean([r["jobs_completed"] for r in mine])),
                "violations_mean": float(np.mean([r["violations"] for r in mine])),
                "penalty_mean_usd": float(np.mean([r["penalty_usd"] for r in mine])),
                "decision_ms": float(np.mean([r["decision_ms"] for r in mine])),
                "fallbacks": int(sum(r.get("fallbacks", 0) for r in mine)),
            }
        )
    return out


# ------------------------------------------------------------------------------------------ output
TABLE_COLUMNS = (
    ("policy", "policy"),
    ("benefit (USD) mean ± 95% CI", None),
    ("% of oracle", "pct_of_oracle"),
    ("gap %", "gap_pct"),
    ("norm. score", "normalized_score"),
    ("emissions (t)", "emissions_mean_t"),
    ("energy cost (USD)", "energy_cost_mean_usd"),
    ("inference served %", "inference_served_pct"),
    ("jobs completed", "jobs_completed_mean"),
    ("violations", "violations_mean"),
    ("decision ms/step", "decision_ms"),
)


def table_cells(s: dict[str, Any]) -> list[str]:
    """The formatted cells of one summary row, in :data:`TABLE_COLUMNS` order."""
    half = (s["benefit_ci_high_usd"] - s["benefit_ci_low_usd"]) / 2.0

    def num(x: float, fmt: str) -> str:
        if x is None or not math.isfinite(x):
            return "-"
        text = format(x, fmt)
        # a value that rounds to zero prints as 0, not -0.00
        return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text

    viol = num(s["violations_mean"], ".1f")
    if s["penalty_mean_usd"] >= 0.5:
        viol += f" ({s['penalty_mean_usd']:,.0f} USD)"
    return [
        s["policy"],
        f"{s['benefit_mean_usd']:,.0f} ± {half:,.0f}",
        num(s["pct_of_oracle"], ".1f"),
        num(s["gap_pct"], ".2f"),
        num(s["normalized_score"], ".3f"),
        num(s["emissions_mean_t"], ",.1f"),
        num(s["energy_cost_mean_usd"], ",.0f"),
        num(s["inference_served_pct"], ".2f"),
        num(s["jobs_completed_mean"], ".2f"),
        viol,
        num(s["decision_ms"], ".2f"),
    ]


def format_table(report: Report) -> str:
    """The summary as a plain-text table (one line per policy)."""
    header = [c for c, _ in TABLE_COLUMNS]
    body = [table_cells(s) for s in report.summary]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    m = report.meta
    lines.append(
        f"{describe(m)}, 95% bootstrap CI over scenarios (seed {m['bootstrap_seed']}); "
        "gap and % of oracle vs the oracle's objective per scenario"
    )
    return "\n".join(lines)


def print_table(report: Report, file: Any = None, wide: bool = False) -> None:
    """Print the summary with rich when it is installed, else as plain text (to ``file``).

    On a terminal the table fits its width (rich wraps cells inside their columns); ``wide=True``,
    or output to a pipe or file, prints every row on one line."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        print(format_table(report), file=file)
        return
    m = report.meta
    table = Table(
        title=describe(m),
        caption=f"95% bootstrap CI over scenarios (bootstrap seed {m['bootstrap_seed']})",
    )
    for name, _ in TABLE_COLUMNS:
        table.add_column(name, justify="left" if name == "policy" else "right")
    for s in report.summary:
        table.add_row(*table_cells(s))
    import shutil

    try:
        tty = os.isatty((file or sys.stdout).fileno())
    except (AttributeError, OSError, ValueError):
        tty = False
    # a terminal: fit its width; a pipe or file: one line per row
    width = shutil.get_terminal_size((100, 24)).columns if tty and not wide else 250
    Console(file=file, width=width).print(table)


CSV_FIELDS = (
    *JSON_FIELDS,
    "return_usd",
    "penalty_usd",
    "oracle_bound_usd",
    "oracle_mip_gap",
    "carbon_cost_usd",
    "jobs_total",
    "fallbacks",
    "decision_ms_max",
)
"""Columns of ``results.csv``."""


def write_report(report: Report, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``results.csv`` (one row per policy and scenario), ``results.json`` (meta, summary, rows,
    failures) and, with ``plots``, the PNG figures, each atomically. Returns the written paths by name."""
    import io

    from envs.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "json": out / "results.json"}
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), extrasaction="ignore")
    writer.writeheader()
    for r in report.rows:
        writer.writerow({k: _clean(r.get(k)) for k in CSV_FIELDS})
    atomic_write_text(paths["csv"], buf.getvalue())
    payload = {
        "meta": report.meta,
        "summary": [{k: _clean(v) for k, v in s.items()} for s in report.summary],
        "rows": [{k: _clean(v) for k, v in r.items()} for r in report.rows],
        "failures": report.failures,
    }
    atomic_write_text(paths["json"], json.dumps(payload, indent=1))
    if plots and report.summary:
        from agents import plots as plotting

        paths["bars"] = plotting.bar_plot(
            report.summary, out / "benefit_emissions.png", describe(report.meta)
        )
        episode = dispatch_episode(report)
        if episode is not None:
            title = f"{episode.policy} on {episode.scenario}"
            paths["dispatch"] = plotting.dispatch_plot(episode.trace, out / "dispatch.png", title)
    return paths


def dispatch_episode(report: Report) -> Any:
    """Replay, recording the flows, the first scenario of the best non-oracle policy (the oracle if
    it is the only one), for the dispatch figure; an :class:`agents.evaluation.EpisodeResult`."""
    from agents.baselines import make_policy
    from agents.evaluation import kwargs_for, make_env, rollout, target_scenario

    m = report.meta
    if not report.summary or not m["scenarios"]:
        return None
    ranked = sorted(report.summary, key=lambda s: -s["benefit_mean_usd"])
    others = [s for s in ranked if s["policy"] != REFERENCE]
    choice = others[0]["policy"] if others else ranked[0]["policy"]
    spec = m["specs"].get(choice, choice)
    name, seed = m["scenarios"][0], int(m["seeds"][0])
    env = make_env(m["preset"], target_scenario(m, report.scenarios, 0), **m["env_kwargs"])
    policy = make_policy(spec, env, **kwargs_for(m["policy_kwargs"], choice, spec))
    result = rollout(policy, env, seed=seed, preset=m["preset"], record=True)
    result.policy = choice
    result.scenario = name
    return result
