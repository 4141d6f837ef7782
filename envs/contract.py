"""The scenario contract: magnitude bounds and the checkers whose errors name the field's JSON path.

Every value the env and the MILP read lies in the closed ranges here (docs/model.md, "Scenario
contract"). The checkers are what :class:`~envs.scenario.Scenario` and its parts call in their
validation: type first (a real number, never a bool or a numeric string; a JSON boolean; a list;
an object with exactly the known keys), then range, each failure a :class:`ScenarioError` whose
message starts with the field's path (``sites[0].eta_charge: must be <= 1 (got 1.2)``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import numpy as np


class ScenarioError(ValueError):
    """A scenario field is malformed; the message starts with the field's full path.

    Paths are JSON paths: ``T``, ``sites[0].eta_charge``, ``jobs[3].duration``,
    ``classes[1].latency_ms[0]``, ``series.price_import[2][17]`` (``price_import[2][17]`` when the
    scenario is built in Python rather than loaded from JSON).
    """

    # Defined here for the checkers below, but public as envs.scenario.ScenarioError: tracebacks,
    # pickles and the docs name it there (envs.scenario re-exports it).
    __module__ = "envs.scenario"


# Magnitude bounds (docs/model.md, "Scenario contract"): every value the env and the MILP read lies in
# these closed ranges, so that no coefficient, bound or product reaches HiGHS's infinity (1e20) or
# its large-matrix-value limit (1e15), and the env's float64 arithmetic stays exact to the cent.
MAX_POWER_MW = 1e5
"""Any power field or series, MW (100 GW: ten times the largest power plant)."""
MAX_ENERGY_MWH = 1e6
"""Battery energy capacity, MWh (``MAX_POWER_MW`` for 10 h)."""
MAX_PRICE_USD_PER_MWH = 1e5
"""|price| of grid energy and generation/degradation cost, USD/MWh (market caps are <= 2e4)."""
MAX_INTENSITY_T_PER_MWH = 10.0
"""Carbon intensity of imports and generators, tCO2/MWh (lignite is about 1.2)."""
MAX_COOLING = 10.0
"""Cooling MW per IT MW, i.e. PUE <= 11 (real PUEs are 1.05-2)."""
MAX_GPUS = 10_000_000
"""GPU counts: a site's capacity, a job's GPUs, an inference class's demand."""
MAX_GPU_POWER_KW = 100.0
"""kW per busy GPU (an H100 server draws about 1.4 kW per GPU including its share of the host)."""
MAX_USD_PER_GPU_H = 1e3
"""Inference revenue and unserved penalty, USD per GPU-hour (cloud list prices are 1-10)."""
MAX_JOB_VALUE_USD = 1e9
"""A training job's value, USD."""
MAX_LATENCY_MS = 1e6
"""Latencies and SLOs, ms."""
MAX_T = 100_000
"""Periods (more than a year of 15-minute periods)."""
DT_H_RANGE = (1.0 / 60.0, 24.0)
"""Period length, h: one minute to one day."""
MAX_CARBON_BUDGET_T = 1e9
"""Carbon budget, tCO2."""
MAX_CARBON_PRICE_USD_PER_T = 1e4
"""Carbon price, USD/tCO2."""

SERIES_RANGE = {
    "cooling": (0.0, MAX_COOLING),
    "renewable_mw": (0.0, MAX_POWER_MW),
    "price_import": (-MAX_PRICE_USD_PER_MWH, MAX_PRICE_USD_PER_MWH),
    "price_export": (-MAX_PRICE_USD_PER_MWH, MAX_PRICE_USD_PER_MWH),
    "carbon_intensity": (0.0, MAX_INTENSITY_T_PER_MWH),
    "demand_gpus": (0.0, float(MAX_GPUS)),
}
"""Closed range of every value of each series."""

REAL_TYPES = (int, float, np.integer, np.floating)


def fail(field_name: str, problem: str, value: Any) -> NoReturn:
    raise ScenarioError(f"{field_name}: {problem} (got {_show(value)})")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def type_name(value: Any) -> str:
    """JSON's name for a Python value's type (what a JSON author wrote)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, REAL_TYPES):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    return f"a {type(value).__name__}"


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
    integer: bool = False,
) -> float | int:
    """Return ``value`` as a plain float (an int if ``integer``) after checking type, then range.

    Type first: a real number, never a bool or a numeric string. ``integer`` fields accept whole
    numbers of either JSON kind (``12`` and ``12.0`` both mean 12; ``12.5`` is refused). Then: finite,
    ``> 0`` if ``positive``, within ``minimum``..``maximum`` (closed).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, REAL_TYPES):
        fail(name, f"must be a number, not {type_name(value)}", value)
    x = float(value)
    if not math.isfinite(x):
        fail(name, "must be finite", value)
    if integer and x != math.floor(x):
        fail(name, "must be a whole number", value)
    if positive and not x > 0:
        fail(name, "must be > 0", value)
    if minimum is not None and x < minimum:
        fail(name, f"must be >= {minimum:g}", value)
    if maximum is not None and x > maximum:
        fail(name, f"must be <= {maximum:g}", value)
    return int(x) if integer else x


def check_flag(name: str, value: Any) -> bool:
    """A JSON boolean (``true``/``false``); strings such as ``"false"``, numbers and lists are refused."""
    if not isinstance(value, (bool, np.bool_)):
        fail(name, f"must be true or false (a JSON boolean), not {type_name(value)}", value)
    return bool(value)


def check_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        fail(name, f"must be a non-empty string, not {type_name(value)}", value)
    return value


def check_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, np.ndarray)):
        fail(name, f"must be a list, not {type_name(value)}", value)
    return list(value)


def check_keys(where: str, data: Any, required: Iterable[str], optional: Iterable[str] = ()) -> None:
    """``data`` is a JSON object with every ``required`` key and no key outside ``required | optional``.

    An unknown key names the closest valid one (``difflib``), so a typo such as ``carbon_budget`` for
    ``carbon_budget_t`` is an error instead of a silently ignored field.
    """
    label = where or "scenario"
    if not isinstance(data, Mapping):
        fail(label, f"must be a JSON object, not {type_name(data)}", data)
    required = list(required)
    valid = required + list(optional)
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid fields: {', '.join(valid)}"
            raise ScenarioError(f"{prefix}{key}: unknown field{hint}")
    for key in required:
        if key not in data:
            raise ScenarioError(f"{prefix}{key}: missing field")


def field_names(cls: type) -> tuple[list[str], list[str]]:
    """(required, optional) dataclass field names of ``cls``."""
    required, optional = [], []
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default else required).append(f.name)
    return required, optional


def set_fields(obj: Any, **values: Any) -> None:
    """Store normalised values on a frozen instance (only during validation)."""
    for key, value in values.items():
        object.__setattr__(obj, key, value)
