"""The result of one oracle solve: :class:`Schedule` (status, bound, timings, decision arrays, KPIs).

Kept apart from the solver so that a schedule can be loaded, tabulated and replayed (``to_json`` /
``from_json``, ``to_frame``) without running anything; its arrays follow the conventions of
:mod:`oracle.recompute`, which recomputes its KPIs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.atomic import atomic_write_text
from envs.scenario import Scenario

STATUSES = ("optimal", "time_limit", "infeasible", "error")
"""Values of :attr:`Schedule.status` (``infeasible`` and ``error`` come without arrays)."""

DECISION_ARRAYS = (
    "serve_gpus",
    "unserved_gpus",
    "gen_mw",
    "charge_mw",
    "discharge_mw",
    "grid_import_mw",
    "grid_export_mw",
    "renewable_used_mw",
    "soc_mwh",
)
"""The decision arrays of a :class:`Schedule`, in JSON order (``job_start`` is kept as a list)."""


@dataclass
class Schedule:
    """The result of one oracle solve.

    ``scenario`` is the scenario as solved (after the configuration's transformation), so the
    schedule replays in an env built from it. Decision arrays have periods last and cover periods
    ``t0 .. t0 + n_periods - 1``: ``serve_gpus`` (K, S, n), ``unserved_gpus`` (K, n), and (S, n) for
    ``gen_mw``, ``charge_mw``, ``discharge_mw``, ``grid_import_mw``, ``grid_export_mw``,
    ``renewable_used_mw``, ``soc_mwh`` (end of period). ``job_start`` lists ``(job, site, period)``
    started in those periods. When there is no solution (``infeasible``/``error``) the arrays are
    ``None`` and the objective is NaN — never zeros.

    ``objective_usd`` is the benefit of the returned arrays (recomputed, MODEL.md §5); ``bound_usd``
    and ``mip_gap`` are HiGHS's dual bound and relative gap of the MIP (NaN with CBC, which does not
    report them through PuLP). ``carbon_budget_relaxed`` is True when ``energy_only``'s fixed
    workload could not meet the budget and was solved without it (overrun in ``diagnosis``).
    """

    scenario: Scenario
    config: str
    status: str
    objective_usd: float = math.nan
    bound_usd: float = math.nan
    mip_gap: float = math.nan
    build_time_s: float = 0.0
    solve_time_s: float = 0.0
    carbon_budget_relaxed: bool = False
    diagnosis: str = ""
    kpis: dict[str, float] = field(default_factory=dict)
    job_start: list[tuple[int, int, int]] | None = None
    serve_gpus: np.ndarray | None = None
    unserved_gpus: np.ndarray | None = None
    gen_mw: np.ndarray | None = None
    charge_mw: np.ndarray | None = None
    discharge_mw: np.ndarray | None = None
    grid_import_mw: np.ndarray | None = None
    grid_export_mw: np.ndarray | None = None
    renewable_used_mw: np.ndarray | None = None
    soc_mwh: np.ndarray | None = None
    t0: int = 0

    @property
    def has_solution(self) -> bool:
        return self.status in ("optimal", "time_limit") and self.gen_mw is not None

    @property
    def n_periods(self) -> int:
        return 0 if self.gen_mw is None else int(self.gen_mw.shape[1])

    @property
    def periods(self) -> range:
        return range(self.t0, self.t0 + self.n_periods)

    def to_frame(self) -> Any:
        """The plan as a :class:`pandas.DataFrame`, one row per (period, site): the (S, n) decision
        arrays (MW, MWh), ``serve_gpus`` summed over classes at the site, and ``starts`` (the jobs
        started there in that period, ``"j0 j3"``). Raises ``ValueError`` without a solution."""
        import pandas as pd

        if not self.has_solution:
            raise ValueError(f"schedule: no solution to tabulate (status {self.status!r})")
        starts: dict[tuple[int, int], list[str]] = {}
        for j, s, t in self.job_start or ():
            starts.setdefault((t, s), []).append(f"j{j}")
        rows = []
        for i, t in enumerate(self.periods):
            for s, site in enumerate(self.scenario.sites):
                row: dict[str, Any] = {"period": t, "site": s, "site_name": site.name}
                row["starts"] = " ".join(starts.get((t, s), []))
                for name in DECISION_ARRAYS:
                    if name == "serve_gpus":
                        row[name] = float(self.serve_gpus[:, s, i].sum())
                    elif name != "unserved_gpus":
                        row[name] = float(getattr(self, name)[s, i])
                rows.append(row)
        return pd.DataFrame(rows)

    def decisions(self) -> dict[str, Any]:
        """The decision arrays as keyword arguments of :func:`kpis_from_decisions`."""
        return {"job_start": self.job_start, **{name: getattr(self, name) for name in DECISION_ARRAYS}}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of issue 3, plus ``diagnosis`` and ``t0`` (0 unless solved in a window)."""
        decisions = None
        if self.has_solution:
            decisions = {"job_start": [{"job": j, "site": s, "period": t} for j, s, t in self.job_start]}
            decisions.update({name: getattr(self, name).tolist() for name in DECISION_ARRAYS})
        return {
            "scenario": self.scenario.to_dict(),
            "config": self.config,
            "status": self.status,
            "objective_usd": _num(self.objective_usd),
            "bound_usd": _num(self.bound_usd),
            "mip_gap": _num(self.mip_gap),
            "build_time_s": self.build_time_s,
            "solve_time_s": self.solve_time_s,
            "carbon_budget_relaxed": self.carbon_budget_relaxed,
            "diagnosis": self.diagnosis,
            "t0": self.t0,
            "kpis": {key: _num(value) for key, value in self.kpis.items()},
            "decisions": decisions,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise (NaN as ``null``); write to ``path`` atomically if given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        decisions = data.get("decisions")
        arrays: dict[str, Any] = {}
        if decisions:
            arrays["job_start"] = [
                (int(d["job"]), int(d["site"]), int(d["period"])) for d in decisions["job_start"]
            ]
            arrays.update({name: np.array(decisions[name], dtype=np.float64) for name in DECISION_ARRAYS})
        return cls(
            scenario=Scenario.from_dict(data["scenario"]),
            config=data["config"],
            status=data["status"],
            objective_usd=_nan(data.get("objective_usd")),
            bound_usd=_nan(data.get("bound_usd")),
            mip_gap=_nan(data.get("mip_gap")),
            build_time_s=float(data.get("build_time_s", 0.0)),
            solve_time_s=float(data.get("solve_time_s", 0.0)),
            carbon_budget_relaxed=bool(data.get("carbon_budget_relaxed", False)),
            diagnosis=data.get("diagnosis", ""),
            kpis={key: _nan(value) for key, value in data.get("kpis", {}).items()},
            t0=int(data.get("t0", 0)),
            **arrays,
        )

    @classmethod
    def from_json(cls, source: str | Path) -> Schedule:
        """Load from a file path or from JSON text (a string starting with ``{``)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            return cls.from_dict(json.loads(source))
        return cls.from_dict(json.loads(Path(source).read_text()))


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)
