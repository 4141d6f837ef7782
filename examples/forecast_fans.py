"""The forecast-fan plot of docs/env.md ("Forecasts"): what each forecast level looks like.

Run from the repository root: ``.venv/bin/python -m examples.forecast_fans docs/img/forecast_fans.png``.
For site 0 (class 0 for demand) of ``make_scenario(preset, seed)`` it draws ``n`` forecasts issued at
period 0 per level through the env (one reset per draw, the env's own RNG) and plots the 5-95 %
band of each level, one sample path per level (the same seed, so the same normals, scaled by the
level) and the truth.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from envs.dc_env import CarbonAwareDCEnv
from envs.forecast import SERIES
from envs.presets import make_scenario

TITLES = {
    "price_import": "import price (USD/MWh), site 0",
    "price_export": "export price (USD/MWh), site 0",
    "carbon_intensity": "carbon intensity (t/MWh), site 0",
    "renewable_mw": "renewables (MW), site 0",
    "cooling": "cooling (MW per IT MW), site 0",
    "demand_gpus": "inference demand, class 0 (GPUs)",
}
COLORS = {"good": "tab:green", "typical": "tab:blue", "poor": "tab:red"}


def plot_fans(path: Path, preset: str = "paper", seed: int = 0, n: int = 200, horizon: int = 24) -> Path:
    """Write the PNG (atomically) and return its path."""
    sc = make_scenario(preset, seed)
    leads = np.arange(horizon + 1)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for level, color in COLORS.items():
        env = CarbonAwareDCEnv(scenario=sc, forecast_horizon=horizon, forecast_level=level)
        draws = []
        for i in range(n):
            env.reset(seed=i)
            draws.append(env.forecast())
        for ax, key in zip(axes.flat, SERIES, strict=True):
            fans = np.stack([d[key][0] for d in draws])
            lo, hi = np.percentile(fans, [5, 95], axis=0)
            ax.fill_between(leads, lo, hi, color=color, alpha=0.18, label=f"{level} 5-95 %")
            ax.plot(leads, fans[0], color=color, lw=0.9)
    for ax, key in zip(axes.flat, SERIES, strict=True):
        truth = getattr(sc, key)[0]
        window = np.concatenate([truth, np.repeat(truth[-1:], horizon + 1)])[: horizon + 1]
        ax.plot(leads, window, color="black", lw=1.8, label="truth")
        ax.set_title(TITLES[key], fontsize=10)
        ax.set_xlabel("lead (h)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"Forecasts issued at period 0 of {sc.name}: 5-95 % bands of {n} draws per level, "
        "one sample path per level (same seed), truth in black"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.forecast_fans", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/img/forecast_fans.png"))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args(argv)
    print(plot_fans(args.out, preset=args.preset, seed=args.seed, n=args.draws))


if __name__ == "__main__":
    main()
