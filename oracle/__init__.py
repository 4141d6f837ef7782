"""The MILP oracle (MODEL.md §3-§6): ``solve(scenario, config) -> Schedule``.

Only this package imports PuLP. It reads nothing but the :class:`~envs.scenario.Scenario`.
"""

from oracle.model import CONFIGS, Model, ModelError, build_model, transform_scenario
from oracle.solve import KPI_KEYS, Schedule, complete_grid, facility_load_mw, kpis_from_decisions, solve

__all__ = [
    "CONFIGS",
    "KPI_KEYS",
    "Model",
    "ModelError",
    "Schedule",
    "build_model",
    "complete_grid",
    "facility_load_mw",
    "kpis_from_decisions",
    "solve",
    "transform_scenario",
]
