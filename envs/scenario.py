"""The scenario: one frozen, validated description of the whole problem (MODEL.md §1-§2).

A :class:`Scenario` is the single source of truth shared by the environment (``envs``), the MILP
oracle (``oracle``) and the agents (``agents``). It is built once, validated in ``__post_init__``
and never mutated: its exogenous arrays are read-only, and derived quantities (job power, routes,
start windows) are cached properties computed from the stored fields, never stored beside them.

Units: power MW, energy MWh, money USD, emissions tCO2, time in periods of ``dt_h`` hours,
latency ms. Every field name carries its unit.

The magnitude bounds (``MAX_*``, ``DT_H_RANGE``, ``SERIES_RANGE``), :class:`ScenarioError` and the
field checkers live in :mod:`envs.contract` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from envs.atomic import atomic_write_text
from envs.contract import (
    DT_H_RANGE,
    MAX_CARBON_BUDGET_T,
    MAX_CARBON_PRICE_USD_PER_T,
    MAX_COOLING,
    MAX_ENERGY_MWH,
    MAX_GPU_POWER_KW,
    MAX_GPUS,
    MAX_INTENSITY_T_PER_MWH,
    MAX_JOB_VALUE_USD,
    MAX_LATENCY_MS,
    MAX_POWER_MW,
    MAX_PRICE_USD_PER_MWH,
    MAX_T,
    MAX_USD_PER_GPU_H,
    REAL_TYPES,
    SERIES_RANGE,
    ScenarioError,
    check_flag,
    check_keys,
    check_list,
    check_name,
    check_number,
    fail,
    field_names,
    set_fields,
    type_name,
)

__all__ = [
    "DT_H_RANGE",
    "MAX_CARBON_BUDGET_T",
    "MAX_CARBON_PRICE_USD_PER_T",
    "MAX_COOLING",
    "MAX_ENERGY_MWH",
    "MAX_GPUS",
    "MAX_GPU_POWER_KW",
    "MAX_INTENSITY_T_PER_MWH",
    "MAX_JOB_VALUE_USD",
    "MAX_LATENCY_MS",
    "MAX_POWER_MW",
    "MAX_PRICE_USD_PER_MWH",
    "MAX_T",
    "MAX_USD_PER_GPU_H",
    "NONNEGATIVE_SERIES",
    "OBJECTIVE_TERMS",
    "SERIES_CLASS",
    "SERIES_RANGE",
    "SERIES_SITE",
    "TOP_LEVEL_KEYS",
    "InferenceClass",
    "OperatingState",
    "Scenario",
    "ScenarioError",
    "Site",
    "TrainingJob",
]

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
TOP_LEVEL_KEYS = ("name", "T", "dt_h", "sites", "jobs", "classes", "series")
"""Required keys of the scenario JSON object (``carbon_budget_t`` and ``carbon_price_usd_per_t``
are optional: no cap, price 0)."""


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
        """Check types, then signs, magnitudes (``MAX_*``), efficiencies in (0, 1] and ordered SoC
        bounds; ``where`` prefixes the field names. Numbers are stored as plain float/int."""
        set_fields(self, name=check_name(f"{where}.name", self.name))
        set_fields(
            self,
            gpu_capacity=check_number(
                f"{where}.gpu_capacity", self.gpu_capacity, minimum=0, maximum=MAX_GPUS, integer=True
            ),
        )
        limits = {
            "gpu_power_kw": MAX_GPU_POWER_KW,
            "base_it_mw": MAX_POWER_MW,
            "gen_capacity_mw": MAX_POWER_MW,
            "gen_cost_usd_per_mwh": MAX_PRICE_USD_PER_MWH,
            "gen_emissions_t_per_mwh": MAX_INTENSITY_T_PER_MWH,
            "capacity_mwh": MAX_ENERGY_MWH,
            "charge_mw": MAX_POWER_MW,
            "discharge_mw": MAX_POWER_MW,
            "degradation_usd_per_mwh": MAX_PRICE_USD_PER_MWH,
            "import_limit_mw": MAX_POWER_MW,
            "export_limit_mw": MAX_POWER_MW,
        }
        for name, top in limits.items():
            set_fields(
                self,
                **{name: check_number(f"{where}.{name}", getattr(self, name), minimum=0.0, maximum=top)},
            )
        for name in ("eta_charge", "eta_discharge"):
            value = check_number(f"{where}.{name}", getattr(self, name), maximum=1.0)
            if not value > 0:
                fail(f"{where}.{name}", "efficiency must be in (0, 1]", value)
            set_fields(self, **{name: value})
        for name in ("soc_min_frac", "soc_max_frac", "soc_init_frac"):
            set_fields(
                self,
                **{name: check_number(f"{where}.{name}", getattr(self, name), minimum=0.0, maximum=1.0)},
            )
        if not self.soc_min_frac <= self.soc_init_frac <= self.soc_max_frac:
            fail(
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
        # No truthiness here: "false" would become True. Flags are type-checked in validate().
        if isinstance(self.eligible, (list, np.ndarray)):
            object.__setattr__(self, "eligible", tuple(self.eligible))

    @property
    def latest_start(self) -> int:
        """Last period in which the job can start and still finish by the end of ``deadline-1``."""
        return self.deadline - self.duration

    def validate(self, where: str, n_sites: int, horizon: int) -> None:
        """Check types (whole numbers, JSON booleans), magnitudes and the window; ``where`` prefixes
        the field names. Whole-number floats (``12.0``) are stored as ints."""
        set_fields(self, name=check_name(f"{where}.name", self.name))
        set_fields(
            self,
            gpus=check_number(f"{where}.gpus", self.gpus, positive=True, maximum=MAX_GPUS, integer=True),
            duration=check_number(f"{where}.duration", self.duration, positive=True, integer=True),
            release=check_number(f"{where}.release", self.release, minimum=0, integer=True),
            deadline=check_number(f"{where}.deadline", self.deadline, minimum=0, integer=True),
            value_usd=check_number(
                f"{where}.value_usd", self.value_usd, minimum=0.0, maximum=MAX_JOB_VALUE_USD
            ),
            mandatory=check_flag(f"{where}.mandatory", self.mandatory),
        )
        flags = check_list(f"{where}.eligible", self.eligible)
        set_fields(self, eligible=tuple(check_flag(f"{where}.eligible[{s}]", e) for s, e in enumerate(flags)))
        if self.release >= self.deadline:
            fail(f"{where}.release", f"release must be before deadline {self.deadline}", self.release)
        if self.deadline > horizon:
            fail(f"{where}.deadline", f"deadline beyond the horizon T={horizon}", self.deadline)
        if self.release + self.duration > self.deadline:
            fail(
                f"{where}.duration",
                f"longer than the window release={self.release}..deadline={self.deadline}",
                self.duration,
            )
        if len(self.eligible) != n_sites:
            fail(f"{where}.eligible", f"needs one flag per site ({n_sites})", self.eligible)
        if not any(self.eligible):
            fail(f"{where}.eligible", "no eligible site", self.eligible)


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
        # Converted to floats in validate(), after the type check ("abc" must name its field).
        if isinstance(self.latency_ms, (list, np.ndarray)):
            object.__setattr__(self, "latency_ms", tuple(self.latency_ms))

    def validate(self, where: str, n_sites: int) -> None:
        """Check types and magnitudes; ``where`` prefixes the field names."""
        set_fields(self, name=check_name(f"{where}.name", self.name))
        for name in ("revenue_usd_per_gpu_h", "unserved_penalty_usd_per_gpu_h"):
            value = check_number(
                f"{where}.{name}", getattr(self, name), minimum=0.0, maximum=MAX_USD_PER_GPU_H
            )
            set_fields(self, **{name: value})
        set_fields(
            self, slo_ms=check_number(f"{where}.slo_ms", self.slo_ms, positive=True, maximum=MAX_LATENCY_MS)
        )
        latency = check_list(f"{where}.latency_ms", self.latency_ms)
        if len(latency) != n_sites:
            fail(f"{where}.latency_ms", f"needs one latency per site ({n_sites})", self.latency_ms)
        set_fields(
            self,
            latency_ms=tuple(
                check_number(f"{where}.latency_ms[{s}]", lat, minimum=0.0, maximum=MAX_LATENCY_MS)
                for s, lat in enumerate(latency)
            ),
        )


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
        """The scenario contract (docs/model.md, "Scenario contract"): container types, then each
        field's type, then its value and magnitude; the first violation raises a ScenarioError whose
        message starts with the field's path."""
        set_fields(self, name=check_name("name", self.name))
        for name in ("sites", "jobs", "classes"):
            set_fields(self, **{name: tuple(check_list(name, getattr(self, name)))})
        set_fields(self, T=check_number("T", self.T, positive=True, maximum=MAX_T, integer=True))
        set_fields(self, dt_h=check_number("dt_h", self.dt_h, minimum=DT_H_RANGE[0], maximum=DT_H_RANGE[1]))
        if not self.sites:
            fail("sites", "at least one site is needed", self.sites)
        for name in ("sites", "jobs", "classes"):
            for i, item in enumerate(getattr(self, name)):
                expected = {"sites": Site, "jobs": TrainingJob, "classes": InferenceClass}[name]
                if not isinstance(item, expected):
                    fail(f"{name}[{i}]", f"must be a {expected.__name__}", type(item).__name__)
        for s, site in enumerate(self.sites):
            site.validate(f"sites[{s}]")
        for j, job in enumerate(self.jobs):
            job.validate(f"jobs[{j}]", self.S, self.T)
        for k, cls in enumerate(self.classes):
            cls.validate(f"classes[{k}]", self.S)
        for attr in ("sites", "jobs", "classes"):
            names = [item.name for item in getattr(self, attr)]
            if len(set(names)) != len(names):
                fail(f"{attr}[].name", "names must be unique", names)
        for name in SERIES_SITE + SERIES_CLASS:
            rows = self.S if name in SERIES_SITE else self.K
            set_fields(self, **{name: self._validated_series(name, getattr(self, name), rows)})
        if self.carbon_budget_t is not None:
            budget = check_number(
                "carbon_budget_t", self.carbon_budget_t, minimum=0.0, maximum=MAX_CARBON_BUDGET_T
            )
            set_fields(self, carbon_budget_t=budget)
        price = check_number(
            "carbon_price_usd_per_t",
            self.carbon_price_usd_per_t,
            minimum=0.0,
            maximum=MAX_CARBON_PRICE_USD_PER_T,
        )
        set_fields(self, carbon_price_usd_per_t=price)

    def _validated_series(self, name: str, value: Any, rows: int) -> np.ndarray:
        """A read-only (rows, T) float64 copy of one series after type, shape and range checks.

        Arrays must have a real dtype (not bool, str or object); nested lists (JSON) are checked
        element by element, so a ``"12"`` or a ``true`` among numbers names its position instead of
        being converted.
        """
        if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
            arr = np.array(value, dtype=np.float64)
        elif isinstance(value, np.ndarray) and value.dtype.kind != "O":
            fail(name, f"must hold real numbers (got an array of dtype {value.dtype})", value.dtype)
        else:
            table = check_list(name, value)
            if len(table) != rows:
                fail(name, f"wrong shape, expected ({rows}, {self.T})", f"{len(table)} rows")
            for r, row in enumerate(table):
                cells = check_list(f"{name}[{r}]", row)
                if len(cells) != self.T:
                    fail(f"{name}[{r}]", f"wrong length, expected {self.T} periods", f"{len(cells)} values")
                for t, x in enumerate(cells):
                    if isinstance(x, (bool, np.bool_)) or not isinstance(x, REAL_TYPES):
                        fail(f"{name}[{r}][{t}]", f"must be a number, not {type_name(x)}", x)
            arr = np.array(table, dtype=np.float64)
        if arr.shape != (rows, self.T):
            fail(name, f"wrong shape, expected ({rows}, {self.T})", arr.shape)
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            r, t = bad[0]
            fail(f"{name}[{r}][{t}]", "must be finite (NaN or inf found)", float(arr[r, t]))
        lo, hi = SERIES_RANGE[name]
        out = np.argwhere((arr < lo) | (arr > hi))
        if out.size:
            r, t = out[0]
            fail(f"{name}[{r}][{t}]", f"must be in [{lo:g}, {hi:g}]", float(arr[r, t]))
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
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build (and validate) a scenario from its JSON interchange form.

        The structure is checked first (objects where objects belong, lists where lists belong, no
        missing and no unknown keys, with the closest valid name suggested), then the constructor
        checks every value; errors name JSON paths (``series.price_import[0][3]``).
        """
        site_keys, _ = field_names(Site)
        job_keys, job_optional = field_names(TrainingJob)
        class_keys, _ = field_names(InferenceClass)
        check_keys("", data, TOP_LEVEL_KEYS, ("carbon_budget_t", "carbon_price_usd_per_t"))
        sections = {}
        for section, keys, optional, kind in (
            ("sites", site_keys, (), Site),
            ("jobs", job_keys, job_optional, TrainingJob),
            ("classes", class_keys, (), InferenceClass),
        ):
            entries = check_list(section, data[section])
            for i, entry in enumerate(entries):
                check_keys(f"{section}[{i}]", entry, keys, optional)
            sections[section] = tuple(kind(**entry) for entry in entries)
        series = data["series"]
        check_keys("series", series, SERIES_SITE + SERIES_CLASS)
        try:
            return cls(
                name=data["name"],
                T=data["T"],
                dt_h=data["dt_h"],
                **sections,
                carbon_budget_t=data.get("carbon_budget_t"),
                carbon_price_usd_per_t=data.get("carbon_price_usd_per_t", 0.0),
                **{name: series[name] for name in SERIES_SITE + SERIES_CLASS},
            )
        except ScenarioError as exc:
            message = str(exc)
            if message.split("[", 1)[0].split(":", 1)[0] in SERIES_SITE + SERIES_CLASS:
                raise ScenarioError(f"series.{message}") from None
            raise

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; write it to ``path`` if given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Scenario:
        """Load from a JSON file path, or from JSON text (a string starting with ``{``)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text = source
        else:
            try:
                text = Path(source).read_text()
            except OSError as exc:
                raise ScenarioError(f"scenario: cannot read {source}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text, parse_constant=_no_constant)
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


def _no_constant(name: str) -> float:
    """JSON has no NaN or Infinity; Python's parser accepts them unless told otherwise."""
    raise ScenarioError(f"scenario JSON: {name} is not a JSON number (write a finite number)")


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
