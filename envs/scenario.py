"""The scenario: one frozen, validated description of the whole problem (MODEL.md §1-§2).

A :class:`Scenario` is the single source of truth shared by the environment (``envs``), the MILP
oracle (``oracle``) and the agents (``agents``). It is built once, validated in ``__post_init__``
and never mutated: its exogenous arrays are read-only, and derived quantities (job power, routes,
start windows) are cached properties computed from the stored fields, never stored beside them.

Units: power MW, energy MWh, money USD, emissions tCO2, time in periods of ``dt_h`` hours,
latency ms. Every field name carries its unit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

SERIES_SITE = ("cooling", "renewable_mw", "price_import", "price_export", "carbon_intensity")
"""Exogenous series of shape (S, T), in JSON order."""
SERIES_CLASS = ("demand_gpus",)
"""Exogenous series of shape (K, T)."""
OBJECTIVE_TERMS = (
    "training_value_usd",
    "inference_revenue_usd",
    "unserved_penalty_usd",
    "export_revenue_usd",
    "import_cost_usd",
    "gen_cost_usd",
    "degradation_cost_usd",
    "carbon_cost_usd",
)
"""The terms of MODEL.md §5's objective, in USD, in the order the env, the oracle's KPIs and the
evaluation report them (the env's ``info["reward_terms"]`` and the oracle's ``kpis`` use these keys;
costs enter the objective with a minus sign)."""
NONNEGATIVE_SERIES = ("cooling", "renewable_mw", "carbon_intensity", "demand_gpus")
"""Series that must be >= 0 (prices may be negative, as in real grid data)."""


class ScenarioError(ValueError):
    """A scenario field is malformed; the message names the field and the offending value."""


def _fail(field_name: str, problem: str, value: Any) -> None:
    raise ScenarioError(f"{field_name}: {problem} (got {value!r})")


def _check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
    integer: bool = False,
) -> None:
    """Raise ScenarioError unless ``value`` is a finite number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        _fail(name, "must be a number", value)
    if not math.isfinite(float(value)):
        _fail(name, "must be finite", value)
    if integer and float(value) != int(value):
        _fail(name, "must be a whole number", value)
    if positive and not value > 0:
        _fail(name, "must be > 0", value)
    if minimum is not None and value < minimum:
        _fail(name, f"must be >= {minimum}", value)
    if maximum is not None and value > maximum:
        _fail(name, f"must be <= {maximum}", value)


@dataclass(frozen=True)
class Site:
    """One data center and its microgrid (MODEL.md §2, "Site s").

    GPUs draw ``gpu_power_kw`` kW each while busy; ``base_it_mw`` is always-on IT load. The battery
    state of charge is bounded by ``soc_min_frac``..``soc_max_frac`` of ``capacity_mwh`` and starts
    (and must end at least) at ``soc_init_frac``. Degradation is charged on throughput
    (charge + discharge energy).
    """

    name: str
    gpu_capacity: int
    gpu_power_kw: float
    base_it_mw: float
    gen_capacity_mw: float
    gen_cost_usd_per_mwh: float
    gen_emissions_t_per_mwh: float
    capacity_mwh: float
    charge_mw: float
    discharge_mw: float
    eta_charge: float
    eta_discharge: float
    soc_min_frac: float
    soc_max_frac: float
    soc_init_frac: float
    degradation_usd_per_mwh: float
    import_limit_mw: float
    export_limit_mw: float

    def validate(self, where: str) -> None:
        """Check signs, efficiencies in (0, 1] and ordered SoC bounds; ``where`` prefixes names."""
        _check_number(f"{where}.gpu_capacity", self.gpu_capacity, minimum=0, integer=True)
        for name in (
            "gpu_power_kw",
            "base_it_mw",
            "gen_capacity_mw",
            "gen_cost_usd_per_mwh",
            "gen_emissions_t_per_mwh",
            "capacity_mwh",
            "charge_mw",
            "discharge_mw",
            "degradation_usd_per_mwh",
            "import_limit_mw",
            "export_limit_mw",
        ):
            _check_number(f"{where}.{name}", getattr(self, name), minimum=0.0)
        for name in ("eta_charge", "eta_discharge"):
            value = getattr(self, name)
            _check_number(f"{where}.{name}", value, maximum=1.0)
            if not value > 0:
                _fail(f"{where}.{name}", "efficiency must be in (0, 1]", value)
        for name in ("soc_min_frac", "soc_max_frac", "soc_init_frac"):
            _check_number(f"{where}.{name}", getattr(self, name), minimum=0.0, maximum=1.0)
        if not self.soc_min_frac <= self.soc_init_frac <= self.soc_max_frac:
            _fail(
                f"{where}.soc_init_frac",
                "SoC bounds out of order: need soc_min_frac <= soc_init_frac <= soc_max_frac",
                (self.soc_min_frac, self.soc_init_frac, self.soc_max_frac),
            )

    @property
    def soc_min_mwh(self) -> float:
        return self.soc_min_frac * self.capacity_mwh

    @property
    def soc_max_mwh(self) -> float:
        return self.soc_max_frac * self.capacity_mwh

    @property
    def soc_init_mwh(self) -> float:
        return self.soc_init_frac * self.capacity_mwh


@dataclass(frozen=True)
class TrainingJob:
    """A rigid, non-preemptive training job (MODEL.md §2, "Training job j").

    It may start in periods ``release .. deadline - duration`` at an eligible site, then holds
    ``gpus`` GPUs for ``duration`` consecutive periods. ``value_usd`` is earned once, at start.
    """

    name: str
    gpus: int
    duration: int
    release: int
    deadline: int
    value_usd: float
    eligible: tuple[bool, ...]
    mandatory: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "eligible", tuple(bool(e) for e in self.eligible))

    @property
    def latest_start(self) -> int:
        """Last period in which the job can start and still finish by the end of ``deadline-1``."""
        return self.deadline - self.duration

    def validate(self, where: str, n_sites: int, horizon: int) -> None:
        _check_number(f"{where}.gpus", self.gpus, positive=True, integer=True)
        _check_number(f"{where}.duration", self.duration, positive=True, integer=True)
        _check_number(f"{where}.release", self.release, minimum=0, integer=True)
        _check_number(f"{where}.deadline", self.deadline, minimum=0, integer=True)
        _check_number(f"{where}.value_usd", self.value_usd, minimum=0.0)
        if self.release >= self.deadline:
            _fail(f"{where}.release", f"release must be before deadline {self.deadline}", self.release)
        if self.deadline > horizon:
            _fail(f"{where}.deadline", f"deadline beyond the horizon T={horizon}", self.deadline)
        if self.release + self.duration > self.deadline:
            _fail(
                f"{where}.duration",
                f"longer than the window release={self.release}..deadline={self.deadline}",
                self.duration,
            )
        if len(self.eligible) != n_sites:
            _fail(f"{where}.eligible", f"needs one flag per site ({n_sites})", self.eligible)
        if not any(self.eligible):
            _fail(f"{where}.eligible", "no eligible site", self.eligible)


@dataclass(frozen=True)
class InferenceClass:
    """A latency-bound inference stream (MODEL.md §2, "Inference class k").

    Sites with ``latency_ms[s] > slo_ms`` are not routes (see :attr:`Scenario.routes`).
    """

    name: str
    revenue_usd_per_gpu_h: float
    unserved_penalty_usd_per_gpu_h: float
    latency_ms: tuple[float, ...]
    slo_ms: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_ms", tuple(float(x) for x in self.latency_ms))

    def validate(self, where: str, n_sites: int) -> None:
        _check_number(f"{where}.revenue_usd_per_gpu_h", self.revenue_usd_per_gpu_h, minimum=0.0)
        _check_number(
            f"{where}.unserved_penalty_usd_per_gpu_h",
            self.unserved_penalty_usd_per_gpu_h,
            minimum=0.0,
        )
        _check_number(f"{where}.slo_ms", self.slo_ms, positive=True)
        if len(self.latency_ms) != n_sites:
            _fail(f"{where}.latency_ms", f"needs one latency per site ({n_sites})", self.latency_ms)
        for s, lat in enumerate(self.latency_ms):
            _check_number(f"{where}.latency_ms[{s}]", lat, minimum=0.0)


@dataclass(frozen=True)
class OperatingState:
    """Where a running system stands at the start of ``period`` (for MPC and DAgger).

    ``soc_mwh`` is each battery's state of charge at the end of ``period - 1``; ``job_starts`` lists
    every job already started as ``(job, site, start_period)``; ``emissions_t`` is the carbon
    emitted in periods ``0 .. period-1``.
    """

    period: int
    soc_mwh: tuple[float, ...]
    job_starts: tuple[tuple[int, int, int], ...] = ()
    emissions_t: float = 0.0


@dataclass(frozen=True, eq=False)
class Scenario:
    """Sites, jobs, inference classes and the exogenous series over ``T`` periods of ``dt_h`` h.

    Series (read-only float64 arrays, periods last):

    - ``cooling`` (S, T): cooling MW per IT MW (PUE - 1), >= 0
    - ``renewable_mw`` (S, T): available on-site renewable output, MW, >= 0
    - ``price_import`` / ``price_export`` (S, T): USD/MWh, may be negative
    - ``carbon_intensity`` (S, T): tCO2/MWh of imported energy, >= 0
    - ``demand_gpus`` (K, T): GPUs needed to serve class k in period t, >= 0

    ``carbon_budget_t`` caps total emissions (None = no cap); ``carbon_price_usd_per_t`` prices them.
    """

    name: str
    T: int
    dt_h: float
    sites: tuple[Site, ...]
    jobs: tuple[TrainingJob, ...]
    classes: tuple[InferenceClass, ...]
    cooling: np.ndarray
    renewable_mw: np.ndarray
    price_import: np.ndarray
    price_export: np.ndarray
    carbon_intensity: np.ndarray
    demand_gpus: np.ndarray
    carbon_budget_t: float | None = None
    carbon_price_usd_per_t: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "jobs", tuple(self.jobs))
        object.__setattr__(self, "classes", tuple(self.classes))
        _check_number("T", self.T, positive=True, integer=True)
        object.__setattr__(self, "T", int(self.T))
        _check_number("dt_h", self.dt_h, positive=True)
        if not self.sites:
            _fail("sites", "at least one site is needed", self.sites)
        for name in ("sites", "jobs", "classes"):
            for i, item in enumerate(getattr(self, name)):
                expected = {"sites": Site, "jobs": TrainingJob, "classes": InferenceClass}[name]
                if not isinstance(item, expected):
                    _fail(f"{name}[{i}]", f"must be a {expected.__name__}", type(item).__name__)
        for s, site in enumerate(self.sites):
            site.validate(f"sites[{s}]")
        for j, job in enumerate(self.jobs):
            job.validate(f"jobs[{j}]", self.S, self.T)
        for k, cls in enumerate(self.classes):
            cls.validate(f"classes[{k}]", self.S)
        for attr in ("sites", "jobs", "classes"):
            names = [item.name for item in getattr(self, attr)]
            if len(set(names)) != len(names):
                _fail(f"{attr}[].name", "names must be unique", names)
        for name in SERIES_SITE + SERIES_CLASS:
            rows = self.S if name in SERIES_SITE else self.K
            object.__setattr__(self, name, self._validated_series(name, getattr(self, name), rows))
        if self.carbon_budget_t is not None:
            _check_number("carbon_budget_t", self.carbon_budget_t, minimum=0.0)
        _check_number("carbon_price_usd_per_t", self.carbon_price_usd_per_t, minimum=0.0)

    def _validated_series(self, name: str, value: Any, rows: int) -> np.ndarray:
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"{name}: not a numeric array ({exc})") from exc
        if arr.shape != (rows, self.T):
            _fail(name, f"wrong shape, expected ({rows}, {self.T})", arr.shape)
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            r, t = bad[0]
            _fail(f"{name}[{r}][{t}]", "must be finite (NaN or inf found)", float(arr[r, t]))
        if name in NONNEGATIVE_SERIES:
            neg = np.argwhere(arr < 0)
            if neg.size:
                r, t = neg[0]
                _fail(f"{name}[{r}][{t}]", "must be >= 0", float(arr[r, t]))
        arr.flags.writeable = False
        return arr

    # ----------------------------------------------------------------- sizes and derived values
    @property
    def S(self) -> int:
        return len(self.sites)

    @property
    def J(self) -> int:
        return len(self.jobs)

    @property
    def K(self) -> int:
        return len(self.classes)

    @cached_property
    def job_power_mw(self) -> np.ndarray:
        """(J, S) IT power of job j at site s: ``gpus[j] * gpu_power_kw[s] / 1000`` MW."""
        gpus = np.array([job.gpus for job in self.jobs], dtype=np.float64).reshape(-1, 1)
        kw = np.array([site.gpu_power_kw for site in self.sites], dtype=np.float64)
        arr = gpus * kw / 1000.0
        arr.flags.writeable = False
        return arr

    @cached_property
    def gpu_mw(self) -> np.ndarray:
        """(S,) IT power of one busy GPU at each site, MW."""
        arr = np.array([site.gpu_power_kw / 1000.0 for site in self.sites])
        arr.flags.writeable = False
        return arr

    @cached_property
    def routes(self) -> np.ndarray:
        """(K, S) bool: class k may be served at site s (``latency_ms[k][s] <= slo_ms[k]``)."""
        arr = np.array(
            [[lat <= cls.slo_ms for lat in cls.latency_ms] for cls in self.classes], dtype=bool
        ).reshape(self.K, self.S)
        arr.flags.writeable = False
        return arr

    @cached_property
    def eligible(self) -> np.ndarray:
        """(J, S) bool: job j may run at site s."""
        arr = np.array([job.eligible for job in self.jobs], dtype=bool).reshape(self.J, self.S)
        arr.flags.writeable = False
        return arr

    def site_array(self, attr: str) -> np.ndarray:
        """(S,) float array of one :class:`Site` field, e.g. ``site_array("capacity_mwh")``."""
        return np.array([getattr(site, attr) for site in self.sites], dtype=np.float64)

    def job_array(self, attr: str) -> np.ndarray:
        """(J,) array of one :class:`TrainingJob` field (``latest_start`` included)."""
        return np.array([getattr(job, attr) for job in self.jobs])

    def class_array(self, attr: str) -> np.ndarray:
        """(K,) float array of one :class:`InferenceClass` scalar field."""
        return np.array([getattr(cls, attr) for cls in self.classes], dtype=np.float64)

    def start_window(self, j: int) -> range:
        """Periods in which job j may start: ``release .. deadline - duration`` (inclusive)."""
        job = self.jobs[j]
        return range(job.release, job.latest_start + 1)

    def initial_state(self) -> OperatingState:
        """The state at period 0: batteries at ``soc_init_frac``, nothing started, nothing emitted."""
        return OperatingState(0, tuple(site.soc_init_mwh for site in self.sites))

    # ----------------------------------------------------------------------- transformations
    def replace(self, **changes: Any) -> Scenario:
        """A validated copy with some fields changed (the original is never mutated)."""
        return dataclasses.replace(self, **changes)

    def replace_sites(self, **site_changes: Any) -> Scenario:
        """A copy with the same field changes applied to every site (e.g. ``capacity_mwh=0``)."""
        return self.replace(sites=tuple(dataclasses.replace(s, **site_changes) for s in self.sites))

    # ----------------------------------------------------------------------- equality and JSON
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scenario):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The JSON interchange form (see README, "Scenario JSON")."""
        return {
            "name": self.name,
            "T": self.T,
            "dt_h": float(self.dt_h),
            "carbon_budget_t": None if self.carbon_budget_t is None else float(self.carbon_budget_t),
            "carbon_price_usd_per_t": float(self.carbon_price_usd_per_t),
            "sites": [_plain(dataclasses.asdict(site)) for site in self.sites],
            "jobs": [
                {**_plain(dataclasses.asdict(job)), "eligible": list(job.eligible)} for job in self.jobs
            ],
            "classes": [
                {**_plain(dataclasses.asdict(cls)), "latency_ms": list(cls.latency_ms)}
                for cls in self.classes
            ],
            "series": {name: getattr(self, name).tolist() for name in SERIES_SITE + SERIES_CLASS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """Build (and validate) a scenario from its JSON interchange form."""
        try:
            series = data["series"]
            return cls(
                name=data["name"],
                T=data["T"],
                dt_h=data["dt_h"],
                sites=tuple(Site(**site) for site in data["sites"]),
                jobs=tuple(
                    TrainingJob(**{**job, "eligible": tuple(job["eligible"])}) for job in data["jobs"]
                ),
                classes=tuple(
                    InferenceClass(**{**c, "latency_ms": tuple(c["latency_ms"])}) for c in data["classes"]
                ),
                carbon_budget_t=data.get("carbon_budget_t"),
                carbon_price_usd_per_t=data.get("carbon_price_usd_per_t", 0.0),
                **{name: series[name] for name in SERIES_SITE + SERIES_CLASS},
            )
        except KeyError as exc:
            raise ScenarioError(f"{exc.args[0]}: missing field in scenario JSON") from exc
        except TypeError as exc:
            raise ScenarioError(f"scenario JSON has an unknown or missing field: {exc}") from exc

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; write it to ``path`` if given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Scenario:
        """Load from a JSON file path, or from JSON text (a string starting with ``{``)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text = source
        else:
            text = Path(source).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"scenario JSON is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def summary(self) -> str:
        """A few human-readable lines describing the scenario."""
        budget = "none" if self.carbon_budget_t is None else f"{self.carbon_budget_t:,.1f} t"
        lines = [
            f"Scenario {self.name!r}: {self.S} sites, {self.T} periods of {self.dt_h:g} h, "
            f"{self.J} training jobs, {self.K} inference classes",
            f"  carbon budget {budget}, carbon price {self.carbon_price_usd_per_t:g} USD/t",
        ]
        for s, site in enumerate(self.sites):
            lines.append(
                f"  site {s} {site.name!r}: {site.gpu_capacity:,} GPUs, renewables mean "
                f"{self.renewable_mw[s].mean():.1f} MW (peak {self.renewable_mw[s].max():.1f}), "
                f"import price mean {self.price_import[s].mean():.1f} USD/MWh, "
                f"carbon {self.carbon_intensity[s].mean():.2f} t/MWh, "
                f"PUE {1 + self.cooling[s].min():.2f}-{1 + self.cooling[s].max():.2f}"
            )
        gpu_h = sum(job.gpus * job.duration for job in self.jobs)
        lines.append(
            f"  jobs: {gpu_h:,.0f} GPU-h in total; inference demand "
            f"{self.demand_gpus.sum() * self.dt_h:,.0f} GPU-h"
        )
        return "\n".join(lines)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Convert numpy scalars to plain Python numbers so JSON round-trips exactly."""
    out = {}
    for key, value in d.items():
        if isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            value = float(value)
        elif isinstance(value, np.bool_):
            value = bool(value)
        out[key] = value
    return out
