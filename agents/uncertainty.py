"""Evaluation across forecast error levels: one sweep per level, one table, the value of information.

``python evaluate.py --forecast-level exact,good,typical,poor`` runs :func:`agents.evaluation.evaluate`
once per level (the env built with ``forecast_level=level``; :mod:`envs.forecast` defines the levels),
each into its own cache folder ``<out>/levels/<level>/``. Every policy of a (seed, level) pair sees the
same forecast draws: the env is reset with the scenario seed, and the forecast errors come from the
env's RNG (docs/env.md, "Forecasts").

Per level the table gives each policy's % of the clairvoyant oracle (``100 · mean benefit / mean oracle
benefit`` over the seeds), its mean per-seed gap % and its decision time per step, and the **value of
perfect information** ``VPI = mean oracle benefit − mean benefit of the best non-clairvoyant policy``
(USD per episode and % of the oracle): what knowing the future exactly would be worth to the best
planner available at that level. The oracle is clairvoyant at every level (it solves the true
scenario), so its benefit does not depend on the level.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.evaluation import REFERENCE, Report, evaluate
from envs.forecast import forecast_model

CLAIRVOYANT = (REFERENCE,)
"""Policies that see the true scenario (excluded from the VPI's "best non-clairvoyant")."""


@dataclasses.dataclass
class LevelsReport:
    """One :class:`~agents.evaluation.Report` per forecast level, in the order evaluated."""

    levels: list[str]
    reports: dict[str, Report]

    @property
    def policies(self) -> list[str]:
        """Every policy that has a summary row at some level, in first-seen order."""
        names: list[str] = []
        for level in self.levels:
            for s in self.reports[level].summary:
                if s["policy"] not in names:
                    names.append(s["policy"])
        return names

    def row(self, level: str, policy: str) -> dict[str, Any] | None:
        """The summary row of ``policy`` at ``level`` (None if it did not run there)."""
        return next((s for s in self.reports[level].summary if s["policy"] == policy), None)

    def vpi(self, level: str) -> dict[str, Any]:
        """The value of perfect information at ``level``: ``oracle − best non-clairvoyant`` (USD and % of
        the oracle), and which policy was the best."""
        summary = self.reports[level].summary
        oracle = next(
            (s["oracle_mean_usd"] for s in summary if math.isfinite(s["oracle_mean_usd"])), math.nan
        )
        others = [s for s in summary if s["policy"] not in CLAIRVOYANT]
        if not others or not math.isfinite(oracle):
            return {"best": None, "vpi_usd": math.nan, "vpi_pct": math.nan}
        best = max(others, key=lambda s: s["benefit_mean_usd"])
        vpi = oracle - best["benefit_mean_usd"]
        return {
            "best": best["policy"],
            "vpi_usd": vpi,
            "vpi_pct": 100.0 * vpi / abs(oracle) if oracle else math.nan,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per level the meta, summary and VPI (rows are in each level's results.json)."""
        return {
            "levels": self.levels,
            "per_level": {
                level: {
                    "meta": self.reports[level].meta,
                    "summary": [{k: _clean(v) for k, v in s.items()} for s in self.reports[level].summary],
                    "vpi": {k: _clean(v) for k, v in self.vpi(level).items()},
                    "failures": self.reports[level].failures,
                }
                for level in self.levels
            },
        }


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def level_dir(level: str) -> str:
    """The folder name of ``level`` under ``<out>/levels/``: a scaled level's ``*`` becomes ``x``
    (``poor*2`` -> ``poorx2``), which every file system and shell takes as is."""
    return level.replace("*", "x")


def level_policy_kwargs(policy_kwargs: dict[str, dict[str, Any]], level: str) -> dict[str, dict[str, Any]]:
    """The policies' constructor arguments at ``level``: MPC is told whether its forecasts are exact."""
    out = {name: dict(kw) for name, kw in policy_kwargs.items()}
    out.setdefault("mpc", {})["exact"] = forecast_model(level).is_exact
    return out


def evaluate_levels(
    policies: Sequence[str],
    preset: str,
    seeds: Sequence[int],
    levels: Sequence[str],
    *,
    out_dir: str | Path | None = None,
    policy_kwargs: dict[str, dict[str, Any]] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **sweep_kwargs: Any,
) -> LevelsReport:
    """Evaluate ``policies`` on ``seeds`` at every forecast level (see the module docstring).

    ``env_kwargs`` are shared by all levels (``forecast_horizon``, ...); ``forecast_level`` is set per
    level. ``sweep_kwargs`` go to :func:`agents.evaluation.evaluate` (backend, workers, ...); a
    ``trace_dir`` gets one sub-folder per level."""
    if not levels:
        raise ValueError("levels: need at least one forecast level")
    reports: dict[str, Report] = {}
    trace_dir = sweep_kwargs.pop("trace_dir", None)
    for level in levels:
        reports[level] = evaluate(
            policies,
            preset,
            seeds,
            out_dir=None if out_dir is None else Path(out_dir) / "levels" / level_dir(level),
            policy_kwargs=level_policy_kwargs(policy_kwargs or {}, level),
            env_kwargs={**(env_kwargs or {}), "forecast_level": level},
            trace_dir=None if trace_dir is None else Path(trace_dir) / level_dir(level),
            **sweep_kwargs,
        )
    return LevelsReport(levels=list(levels), reports=reports)


def _num(x: float | None, fmt: str) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    text = format(x, fmt)
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text  # no "-0.0"


def levels_table_rows(report: LevelsReport) -> tuple[list[str], list[list[str]]]:
    """Header and body of the across-levels table: one row per policy, then the VPI row; per level the
    cell ``% of oracle / gap % / ms per step``."""
    header = ["policy", *[f"{level}: % oracle · gap % · ms" for level in report.levels]]
    body = []
    for policy in report.policies:
        cells = [policy]
        for level in report.levels:
            s = report.row(level, policy)
            if s is None:
                cells.append("-")
                continue
            pct, gap, ms = (
                _num(s["pct_of_oracle"], ".1f"),
                _num(s["gap_pct"], ".2f"),
                _num(s["decision_ms"], ".1f"),
            )
            cells.append(f"{pct} · {gap} · {ms}")
        body.append(cells)
    vpi_cells = ["VPI (oracle − best)"]
    for level in report.levels:
        v = report.vpi(level)
        vpi_cells.append(
            f"{_num(v['vpi_usd'], ',.0f')} USD ({_num(v['vpi_pct'], '.1f')} %, {v['best'] or '-'})"
        )
    body.append(vpi_cells)
    return header, body


def format_levels_table(report: LevelsReport) -> str:
    """The across-levels table as plain text (``evaluate.py --forecast-level``)."""
    header, body = levels_table_rows(report)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append(
            "  ".join(
                [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            )
        )
    first = report.reports[report.levels[0]].meta
    from agents.report import describe

    lines.append(
        f"{describe(first)} per level; same forecast draws for every policy on a (scenario, level); "
        "the oracle is clairvoyant at every level"
    )
    return "\n".join(lines)


def write_levels(report: LevelsReport, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``levels.json`` (meta, summaries, VPI per level), ``levels.csv`` (one row per policy and
    level) and, with ``plots``, ``levels.png`` (% of oracle vs forecast level per policy) and
    ``levels_time.png`` (% of oracle vs decision time, one panel per level)."""
    from envs.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"levels_json": out / "levels.json", "levels_csv": out / "levels.csv"}
    atomic_write_text(paths["levels_json"], json.dumps(report.to_dict(), indent=1))
    cols = (
        "pct_of_oracle",
        "gap_pct",
        "benefit_mean_usd",
        "oracle_mean_usd",
        "emissions_mean_t",
        "decision_ms",
    )
    lines = [",".join(("level", "policy", *cols))]
    for level in report.levels:
        for s in report.reports[level].summary:
            lines.append(
                ",".join(
                    [level, s["policy"], *("" if _clean(s[c]) is None else repr(float(s[c])) for c in cols)]
                )
            )
    atomic_write_text(paths["levels_csv"], "\n".join(lines) + "\n")
    if plots:
        from agents.plots import levels_plot, levels_time_plot

        paths["levels_png"] = levels_plot(report, out / "levels.png")
        paths["levels_time_png"] = levels_time_plot(report, out / "levels_time.png")
    return paths
