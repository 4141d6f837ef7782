"""The env's ``rgb_array`` frame: a 1280×720 dashboard of one episode so far (matplotlib, Agg).

Six panels, all over the episode's periods with a marker at the current one:

- grid import price per site (USD/MWh) and grid carbon intensity per site (gCO2/kWh), the
  scenario's true series (what the env settles with);
- the power stack summed over sites (MW): renewables used, generator, battery discharge and grid
  import above zero, battery charging, grid export and curtailed renewables below zero, and the
  facility load as a line;
- the state of charge per site (% of capacity);
- the training jobs as a Gantt chart: each job's start window (grey) and, once started, its run at the
  site it runs on (coloured by site);
- a text line with the period, the step's reward, the episode's emissions against the carbon budget.

Speed: the figure, its axes, the static series and one rectangle per (component, period) are built
once per scenario (:meth:`FrameRenderer.__init__`); a frame only updates the rectangles, lines and
texts of the periods stepped since the last frame, then draws the canvas once. ``bench`` measures the
time per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.scenario import Scenario

WIDTH_PX, HEIGHT_PX, DPI = 1280, 720, 100
POSITIVE = (
    ("renewable_used_mw", "renewables used", "#2ca02c"),
    ("gen_mw", "generator", "#8c564b"),
    ("discharge_mw", "battery discharge", "#9467bd"),
    ("grid_import_mw", "grid import", "#7f7f7f"),
)
NEGATIVE = (
    ("charge_mw", "battery charging", "#c5b0d5"),
    ("grid_export_mw", "grid export", "#17becf"),
    ("curtailed_mw", "curtailed", "#bcbd22"),
)


class FrameRenderer:
    """Draws frames of one scenario's episode; build a new one when the scenario changes."""

    def __init__(self, sc: Scenario) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.scenario = sc
        T, S = sc.T, sc.S
        self.fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
        self.canvas = FigureCanvasAgg(self.fig)
        grid = self.fig.add_gridspec(
            2, 3, left=0.05, right=0.99, top=0.9, bottom=0.08, hspace=0.38, wspace=0.22
        )
        ax_price = self.fig.add_subplot(grid[0, 0])
        ax_ci = self.fig.add_subplot(grid[0, 1])
        ax_jobs = self.fig.add_subplot(grid[0, 2])
        ax_power = self.fig.add_subplot(grid[1, 0:2])
        ax_soc = self.fig.add_subplot(grid[1, 2])
        periods = np.arange(T)
        colors = [f"C{s % 10}" for s in range(S)]
        for s in range(S):
            ax_price.step(
                periods, sc.price_import[s], where="post", color=colors[s], lw=1.5, label=sc.sites[s].name
            )
            ax_ci.step(periods, 1000.0 * sc.carbon_intensity[s], where="post", color=colors[s], lw=1.5)
        ax_price.set_title("grid import price (USD/MWh)")
        ax_ci.set_title("grid carbon intensity (gCO2/kWh)")
        ax_price.legend(fontsize=8, loc="upper left", ncol=min(S, 3))

        # Power stack: one polygon collection per component (a quad per period), filled in as
        # periods are stepped; quads of periods not yet stepped have zero height.
        from matplotlib.collections import PolyCollection

        quads = np.zeros((T, 4, 2))
        quads[:, :, 0] = periods[:, None] + np.array([0.0, 1.0, 1.0, 0.0])
        self._stack: dict[str, Any] = {}
        self._verts: dict[str, np.ndarray] = {}
        for key, label, color in POSITIVE + NEGATIVE:
            self._verts[key] = quads.copy()
            coll = PolyCollection(list(quads), facecolors=color, edgecolors="none", label=label)
            ax_power.add_collection(coll)
            self._stack[key] = coll
        (self._load_line,) = ax_power.step([], [], where="post", color="k", lw=1.8, label="facility load")
        peak = float(
            sum(site.import_limit_mw + site.gen_capacity_mw + site.discharge_mw for site in sc.sites)
            + sc.renewable_mw.sum(axis=0).max()
        )
        low = float(
            sum(site.charge_mw + site.export_limit_mw for site in sc.sites)
            + sc.renewable_mw.sum(axis=0).max()
        )
        ax_power.set_ylim(-max(low, 1.0) * 0.6, max(peak, 1.0) * 0.75)
        ax_power.axhline(0.0, color="k", lw=0.6)
        ax_power.set_title("power, all sites (MW): supply above zero, charging / export / curtailment below")
        ax_power.legend(fontsize=8, loc="upper left", ncol=4)

        self._soc_lines = []
        for s in range(S):
            (line,) = ax_soc.plot([], [], color=colors[s], lw=1.8)
            self._soc_lines.append(line)
        ax_soc.set_ylim(0.0, 100.0)
        ax_soc.set_title("battery state of charge (%)")

        # Jobs: start windows in grey, runs coloured by site once started.
        J = sc.J
        self._job_runs = []
        for j, job in enumerate(sc.jobs):
            ax_jobs.barh(
                j, job.latest_start + job.duration - job.release, left=job.release, height=0.8, color="0.88"
            )
            (run,) = ax_jobs.barh(j, 0.0, left=0.0, height=0.55, color="C0", visible=False)
            self._job_runs.append(run)
        ax_jobs.set_ylim(-0.6, max(J, 1) - 0.4)
        ax_jobs.invert_yaxis()
        ax_jobs.set_title("jobs: start window (grey), run (site colour)")
        if J <= 12:
            ax_jobs.set_yticks(range(J), [f"job {j}" for j in range(J)], fontsize=8)

        self._now = []
        for ax in (ax_price, ax_ci, ax_jobs, ax_power, ax_soc):
            ax.set_xlim(0, T)
            ax.tick_params(labelsize=8)
            self._now.append(ax.axvline(0.0, color="r", lw=1.0, alpha=0.7))
        ax_power.set_xlabel(f"period ({sc.dt_h:g} h)", fontsize=9)
        self._title = self.fig.suptitle("", fontsize=13)
        self._colors = colors
        self._drawn = 0
        self._cap = np.array([max(site.capacity_mwh, 1e-9) for site in sc.sites])
        # Blitting: everything static is drawn once into a background; a frame restores it and
        # draws only the artists that change.
        self._animated = [
            *self._stack.values(),
            self._load_line,
            *self._soc_lines,
            *self._job_runs,
            *self._now,
            self._title,
        ]
        for artist in self._animated:
            artist.set_animated(True)
        self.canvas.draw()
        self._background = self.canvas.copy_from_bbox(self.fig.bbox)

    def frame(
        self,
        history: Sequence[dict[str, Any]],
        start_period: np.ndarray,
        start_site: np.ndarray,
        emissions_t: float,
        period: int,
    ) -> np.ndarray:
        """The RGB frame (720, 1280, 3) uint8 after ``history`` (one dict per stepped period with
        ``flows`` and ``reward``); ``start_period``/``start_site`` per job slot (-1: not started)."""
        sc = self.scenario
        if len(history) < self._drawn:  # a new episode of the same scenario
            self._drawn = 0
            for verts in self._verts.values():
                verts[:, :, 1] = 0.0
        new = range(self._drawn, len(history))
        for t in new:
            flows = history[t]["flows"]
            for group, sign in ((POSITIVE, 1.0), (NEGATIVE, -1.0)):
                bottom = 0.0
                for key, _, _ in group:
                    top = bottom + sign * float(np.sum(flows[key]))
                    self._verts[key][t, :, 1] = (bottom, bottom, top, top)
                    bottom = top
        if len(new):
            for key, coll in self._stack.items():
                coll.set_verts(self._verts[key])
        self._drawn = len(history)
        n = len(history)
        if n:
            x = np.arange(n + 1)
            load = [float(np.sum(h["flows"]["load_mw"])) for h in history]
            self._load_line.set_data(x, [*load, load[-1]])
            soc = np.array([h["flows"]["soc_mwh"] for h in history]) / self._cap * 100.0
            for s, line in enumerate(self._soc_lines):
                line.set_data(np.arange(1, n + 1), soc[:, s])
        else:
            self._load_line.set_data([], [])
            for line in self._soc_lines:
                line.set_data([], [])
        for j, run in enumerate(self._job_runs):
            t0 = int(start_period[j])
            run.set_visible(t0 >= 0)
            if t0 >= 0:
                run.set_x(t0)
                run.set_width(sc.jobs[j].duration)
                run.set_facecolor(self._colors[int(start_site[j])])
        for line in self._now:
            line.set_xdata([period, period])
        reward = f"reward {history[-1]['reward']:,.0f} USD" if n else "no step yet"
        budget = "no budget" if sc.carbon_budget_t is None else f"budget {sc.carbon_budget_t:,.1f} t"
        self._title.set_text(
            f"{sc.name}   period {period}/{sc.T}   {reward}   emissions {emissions_t:,.1f} t ({budget})"
        )
        self.canvas.restore_region(self._background)
        for artist in self._animated:
            self.fig.draw_artist(artist)
        return np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
