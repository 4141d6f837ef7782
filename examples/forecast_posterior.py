"""The posterior plot of docs/env.md ("Forecasts"): one noisy forecast, what the planners make of it.

Run from the repository root:
``.venv/bin/python -m examples.forecast_posterior docs/img/forecast_posterior.png``.
For the import price of every site and the renewables of site 0 of ``make_scenario(preset, seed)``
at level ``level`` it plots one forecast issued at period 0 (the env's draw for reset seed
``seed``), the posterior mean :meth:`envs.forecast.ForecastModel.posterior` makes of it (what
``mpc_posterior`` plans on), the 5-95 % band of 400 posterior draws (what ``mpc_stochastic``
samples its scenarios from) and the truth.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from envs.atomic import atomic_write_bytes
from envs.dc_env import CarbonAwareDCEnv
from envs.presets import make_scenario


def plot_posterior(
    path: Path, preset: str = "paper", seed: int = 0, level: str = "poor", draws: int = 400
) -> Path:
    """Write the PNG (atomically) and return its path."""
    sc = make_scenario(preset, seed)
    env = CarbonAwareDCEnv(scenario=sc, preset=preset, forecast_level=level)
    env.reset(seed=seed)
    fc = env.forecast()
    post = env.forecast_model.posterior(fc, sc.dt_h, horizon=sc.T)
    mean = post.mean()
    samples = post.sample(np.random.default_rng(seed), draws, antithetic=False)
    panels = [("price_import", s, f"import price (USD/MWh), site {s}") for s in range(sc.S)]
    panels.append(("renewable_mw", 0, "renewables (MW), site 0"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), constrained_layout=True)
    hours = np.arange(sc.T)
    for ax, (key, row, title) in zip(axes, panels, strict=True):
        band = np.percentile(np.stack([d[key][row, : sc.T] for d in samples]), [5, 95], axis=0)
        ax.fill_between(hours, band[0], band[1], color="tab:blue", alpha=0.18, label="posterior 5-95 %")
        ax.plot(hours, fc[key][row, : sc.T], color="tab:red", lw=1.2, label=f"forecast ({level})")
        ax.plot(hours, mean[key][row, : sc.T], color="tab:blue", lw=1.6, label="posterior mean")
        ax.plot(hours, np.asarray(getattr(sc, key))[row], color="black", lw=1.6, label="truth")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("hour (lead from period 0)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"One {level} forecast issued at period 0 of {sc.name} and its posterior: each lead shrunk toward "
        "the row's mean by how unreliable it is"
    )
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.forecast_posterior", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/img/forecast_posterior.png"))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", default="poor", choices=("good", "typical", "poor"))
    parser.add_argument("--draws", type=int, default=400)
    args = parser.parse_args(argv)
    print(plot_posterior(args.out, preset=args.preset, seed=args.seed, level=args.level, draws=args.draws))


if __name__ == "__main__":
    main()
