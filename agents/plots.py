"""PNG figures of an evaluation (matplotlib, Agg backend; no display needed).

- :func:`bar_plot`: per-policy mean benefit and emissions with their 95 % bootstrap CIs;
- :func:`dispatch_plot`: one episode's dispatch: per-site power stack (renewables used, generator,
  battery discharge, grid import) against load, battery charging and grid export below zero; state of
  charge; carbon intensity;
- :func:`plot_learning_curve`: a training run's imitation losses per epoch and validation score per
  fine-tuning step (``learning_curve.png`` of :mod:`agents.pipeline`);
- :func:`levels_plot` and :func:`levels_time_plot`: a run across forecast levels, % of the oracle
  per level, and % of the oracle against decision time per level (the speed / quality trade-off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from envs.atomic import atomic_path


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` atomically (:mod:`envs.atomic`: a reader sees the old figure or the
    new one, never half a PNG) in the format of its suffix (PNG without one), and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def bar_plot(summary: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Two panels of bars, one per policy: benefit (USD) and emissions (t), with CI error bars."""
    names = [s["policy"] for s in summary]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(names) + 4), 4.0))
    for ax, key, unit in (
        (axes[0], "benefit", "benefit (USD)"),
        (axes[1], "emissions", "emissions (tCO2)"),
    ):
        suffix = "usd" if key == "benefit" else "t"
        mean = np.array([s[f"{key}_mean_{suffix}"] for s in summary])
        lo = np.array([s[f"{key}_ci_low_{suffix}"] for s in summary])
        hi = np.array([s[f"{key}_ci_high_{suffix}"] for s in summary])
        err = np.vstack([np.maximum(mean - lo, 0.0), np.maximum(hi - mean, 0.0)])
        ax.bar(x, mean, yerr=err, capsize=4, color=plt.cm.tab10(np.arange(len(names)) % 10))
        ax.set_xticks(x, names, rotation=20, ha="right")
        ax.set_ylabel(unit)
        ax.set_title(f"{unit}: mean ± 95% CI")
        ax.axhline(0.0, color="k", lw=0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def dispatch_plot(trace: dict[str, list], path: str | Path, title: str = "") -> Path:
    """One episode's dispatch from :func:`agents.evaluation.rollout`'s ``trace`` (``record=True``)."""
    flows = trace["flows"]
    T = len(flows)
    S = len(flows[0]["load_mw"])
    t = np.arange(T)

    def series(key: str) -> np.ndarray:
        return np.array([f[key] for f in flows], dtype=np.float64).T  # (S, T)

    ren, gen, dis = series("renewable_used_mw"), series("gen_mw"), series("discharge_mw")
    imp, exp, chg = series("grid_import_mw"), series("grid_export_mw"), series("charge_mw")
    load, soc = series("load_mw"), series("soc_mwh")
    ci = np.array(trace["carbon_intensity"], dtype=np.float64).T
    fig, axes = plt.subplots(3, S, figsize=(4.2 * S, 8.0), squeeze=False, sharex=True)
    colors = ["#7fbf3f", "#b05f3c", "#3f7fbf", "#8c8c8c"]
    for s in range(S):
        ax = axes[0, s]
        ax.stackplot(
            t,
            [ren[s], gen[s], dis[s], imp[s]],
            labels=["renewables used", "generator", "battery discharge", "grid import"],
            colors=colors,
            step="post",
            alpha=0.85,
        )
        ax.stackplot(
            t,
            [-chg[s], -exp[s]],
            labels=["battery charge", "grid export"],
            colors=["#9fc5e8", "#f6b26b"],
            step="post",
            alpha=0.85,
        )
        ax.step(t, load[s], where="post", color="k", lw=1.2, label="load")
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_title(f"site {s}: power (MW)", fontsize=9)
        axes[1, s].step(t, soc[s], where="post", color="#3f7fbf")
        axes[1, s].set_title(f"site {s}: state of charge (MWh)", fontsize=9)
        axes[1, s].set_ylim(bottom=0.0)
        axes[2, s].step(t, ci[s], where="post", color="#b05f3c")
        axes[2, s].set_title(f"site {s}: carbon intensity (t/MWh)", fontsize=9)
        axes[2, s].set_xlabel("period")
    axes[0, 0].legend(fontsize=7, loc="upper left", ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def summary_plots(report: Any, out_dir: str | Path) -> dict[str, Path]:
    """The bar plot of a :class:`agents.evaluation.Report` (``benefit_emissions.png``)."""
    m = report.meta
    title = f"{m['preset']}, {len(m['seeds'])} held-out seeds"
    return {"bars": bar_plot(report.summary, Path(out_dir) / "benefit_emissions.png", title)}


def plot_learning_curve(
    path: str | Path, bc_info: dict[str, Any] | None, history: list[dict[str, Any]]
) -> Path:
    """Two panels: BC losses per epoch (all rounds), validation % of oracle per training step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if bc_info:
        offset = 0
        for rnd in bc_info["rounds"]:
            epochs = rnd["epochs"]
            x = [offset + e["epoch"] + 1 for e in epochs]
            label = "BC" if rnd["round"] == 0 else f"DAgger {rnd['round']}"
            ax.plot(x, [e["train_loss"] for e in epochs], lw=1, label=f"{label} train")
            ax.plot(x, [e["val_loss"] for e in epochs], lw=1, ls="--", label=f"{label} validation")
            offset = x[-1] if x else offset
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("imitation loss")
    ax = axes[1]
    if history:
        ax.plot([h["timesteps"] for h in history], [h["pct_of_oracle"] for h in history], "o-")
    ax.axhline(100.0, color="k", lw=0.5)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("% of oracle benefit (validation)")
    ax.set_title("fine-tuning")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def levels_plot(report: Any, path: str | Path) -> Path:
    """% of the clairvoyant oracle vs forecast error level, one line per policy (an
    :class:`agents.uncertainty.LevelsReport`); the oracle's 100 % line for reference."""
    levels = list(report.levels)
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    for i, policy in enumerate(report.policies):
        rows = [report.row(level, policy) for level in levels]
        y = [np.nan if r is None else r["pct_of_oracle"] for r in rows]
        style = (
            {"color": "k", "ls": "--", "lw": 1.0} if policy == "oracle" else {"color": plt.cm.tab10(i % 10)}
        )
        ax.plot(x, y, marker="o", label=policy, **style)
    ax.set_xticks(x, levels)
    ax.set_xlabel("forecast error level")
    ax.set_ylabel("% of the clairvoyant oracle's benefit")
    ax.set_title("benefit vs forecast error (mean over held-out seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


LEVELS_TIME_FLOOR_PCT = 50.0
""":func:`levels_time_plot` leaves out policies below this % of the oracle at every level (named in
the figure), so that the planners and agents near the top are not squeezed into a sliver."""


def levels_time_plot(report: Any, path: str | Path) -> Path:
    """% of the clairvoyant oracle against mean decision time (ms, log scale), one panel per forecast
    level, one marker per non-clairvoyant policy (colours as :func:`levels_plot`): the further up and
    left, the better. Policies under :data:`LEVELS_TIME_FLOOR_PCT` (or without a positive decision
    time, which a log axis cannot place) at every level are named in the title, not drawn."""
    from agents.uncertainty import CLAIRVOYANT

    levels = list(report.levels)
    policies = list(report.policies)
    rows = {(lv, p): report.row(lv, p) for lv in levels for p in policies}

    def shown(policy: str) -> bool:
        points = [
            (r["pct_of_oracle"], r["decision_ms"]) for lv in levels if (r := rows[(lv, policy)]) is not None
        ]
        return policy not in CLAIRVOYANT and any(
            np.isfinite(pct) and pct >= LEVELS_TIME_FLOOR_PCT and ms > 0 for pct, ms in points
        )

    drawn = [p for p in policies if shown(p)]
    left_out = [p for p in policies if p not in drawn and p not in CLAIRVOYANT]
    fig, axes = plt.subplots(
        1, len(levels), figsize=(3.6 * len(levels) + 1.0, 4.2), sharey=True, squeeze=False
    )
    for ax, level in zip(axes[0], levels, strict=True):
        for policy in drawn:
            r = rows[(level, policy)]
            if r is None or not np.isfinite(r["pct_of_oracle"]) or not r["decision_ms"] > 0:
                continue
            color = plt.cm.tab10(policies.index(policy) % 10)
            ax.scatter(r["decision_ms"], r["pct_of_oracle"], color=color, s=36, label=policy, zorder=3)
        ax.axhline(100.0, color="k", ls="--", lw=1.0)
        ax.set_xscale("log")
        ax.set_title(level)
        ax.set_xlabel("decision time per step, ms (log)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("% of the clairvoyant oracle's benefit")
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, fontsize=8, loc="lower right")
    title = "benefit vs decision time per forecast level (up and left is better; dashed: the oracle)"
    if left_out:
        title += (
            f"\nnot drawn (below {LEVELS_TIME_FLOOR_PCT:.0f} % of the oracle or no decision time at every "
            f"level): {', '.join(left_out)}"
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
