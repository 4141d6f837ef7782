"""Oracle speed: build and solve time and final gap per preset and configuration, and scaling.

Build and solve seconds are read from the returned :class:`oracle.Schedule` (``build_time_s``,
``solve_time_s``); the gap is HiGHS's relative MIP gap at the stop.
"""

from __future__ import annotations

from bench.common import Stat, table
from envs import make_scenario
from envs.presets import draw_scenario
from oracle import CONFIGS, solve


def _row(label: str, runs: list, target: str = "") -> list[str]:
    build = Stat([r.build_time_s for r in runs])
    solve_s = Stat([r.solve_time_s for r in runs])
    total = Stat([r.build_time_s + r.solve_time_s for r in runs])
    last = runs[-1]
    gap = "-" if last.mip_gap != last.mip_gap else f"{100 * last.mip_gap:.3f}%"
    return [label, last.status, build.fmt(".3f"), solve_s.fmt(".2f"), total.fmt(".2f"), gap, target]


def presets_section(repeats: int = 3, week_limit_s: float = 60.0, large_limit_s: float = 120.0) -> str:
    rows = []
    paper = make_scenario("paper", 0)
    for config in CONFIGS:
        runs = [solve(paper, config) for _ in range(repeats)]
        worst = max(r.build_time_s + r.solve_time_s for r in runs)
        target = "< 2 s ✓" if worst < 2.0 else f"< 2 s ✗ ({worst:.2f} s)"
        rows.append(_row(f"paper / {config}", runs, target if config == "joint" else ""))
    week = solve(make_scenario("week", 0), "joint", time_limit_s=week_limit_s, mip_gap=1e-3)
    ok = week.status == "optimal" and week.build_time_s + week.solve_time_s < 60.0
    rows.append(_row("week / joint (gap 0.1%)", [week], "≤ 0.1% in < 60 s " + ("✓" if ok else "✗")))
    large = solve(make_scenario("large", 0), "joint", time_limit_s=large_limit_s, mip_gap=1e-2)
    rows.append(_row(f"large / joint (gap 1%, limit {large_limit_s:.0f} s)", [large], "report"))
    head = (
        "### Oracle\n\nSeed 0 of each preset; paper: median of "
        f"{repeats} solves (min–max), default gap 0.01%; week and large: one solve each.\n\n"
    )
    return head + table(["instance", "status", "build s", "solve s", "total s", "gap", "target"], rows)


SCALING = {
    "sites": [dict(S=s, T=72, J=20, K=s) for s in (3, 5, 10)],
    "periods": [dict(S=3, T=t, J=max(6, 6 * t // 24), K=3) for t in (24, 72, 168)],
    "jobs": [dict(S=5, T=168, J=j, K=6) for j in (6, 20, 40, 100)],
}


def scaling_section(time_limit_s: float = 60.0, plot_path: str = "bench/scaling.png") -> str:
    rows, results = [], {}
    for axis, sizes in SCALING.items():
        for size in sizes:
            sc = draw_scenario(**size, seed=0, name="scaling")
            r = solve(sc, "joint", time_limit_s=time_limit_s)
            results.setdefault(axis, []).append((size, r))
            gap = "-" if r.mip_gap != r.mip_gap else f"{100 * r.mip_gap:.3f}%"
            rows.append(
                [axis, f"{size['S']}×{size['T']}×{size['J']}×{size['K']}", r.status,
                 f"{r.build_time_s:.2f}", f"{r.solve_time_s:.2f}", gap]
            )  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.plots import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (axis, pairs) in zip(axes, results.items(), strict=True):
        key = {"sites": "S", "periods": "T", "jobs": "J"}[axis]
        xs = [size[key] for size, _ in pairs]
        ax.plot(xs, [r.build_time_s for _, r in pairs], "o-", label="build")
        ax.plot(xs, [r.solve_time_s for _, r in pairs], "s-", label="solve")
        ax.set_xlabel({"S": "sites", "T": "periods (h)", "J": "training jobs"}[key])
        ax.set_ylabel("seconds")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Oracle scaling (HiGHS, gap 0.01%, limit {time_limit_s:.0f} s)")
    fig.tight_layout()
    save_figure(fig, plot_path, dpi=110)
    head = (
        "### Oracle scaling\n\nOne solve per size (`envs.presets.draw_scenario`, seed 0), S×T×J×K; "
        f"time limit {time_limit_s:.0f} s, gap 0.01%. Plot: `{plot_path}`.\n\n"
    )
    return head + table(["axis", "size", "status", "build s", "solve s", "gap"], rows)


if __name__ == "__main__":
    print(presets_section(repeats=1, large_limit_s=30))
