"""Scenario model, presets, data loading and the Gymnasium environment."""

from envs.presets import PRESETS, make_scenario
from envs.scenario import (
    InferenceClass,
    OperatingState,
    Scenario,
    ScenarioError,
    Site,
    TrainingJob,
)

__all__ = [
    "PRESETS",
    "InferenceClass",
    "OperatingState",
    "Scenario",
    "ScenarioError",
    "Site",
    "TrainingJob",
    "make_scenario",
]
