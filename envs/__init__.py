"""Scenario model, presets, data loading and the Gymnasium environment.

``import envs`` registers two Gymnasium ids, both taking the env's keyword arguments (``preset``,
``scenario``, ``forecast_horizon``, ...):

- ``CarbonAwareDC-v0``: :class:`CarbonAwareDCEnv`, the Dict action/observation API;
- ``CarbonAwareDC-Flat-v0``: the same env behind :class:`envs.wrappers.FlatObsActionWrapper`
  (flat float32 observation, one ``Box[-1, 1]`` action; SB3-ready), plus ``reward_scale``.

Both have a ``vector_entry_point``: ``gym.make_vec(id, num_envs=N, vectorization_mode=
"vector_entry_point")`` builds the batched numpy env of ``envs/vector.py`` (``envs/vector_flat.py``)
instead of N copies.
"""

import gymnasium as gym

from envs.dc_env import CarbonAwareDCEnv
from envs.presets import PRESETS, make_scenario
from envs.scenario import (
    InferenceClass,
    OperatingState,
    Scenario,
    ScenarioError,
    Site,
    TrainingJob,
)

ENV_ID = "CarbonAwareDC-v0"
FLAT_ENV_ID = "CarbonAwareDC-Flat-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="envs.dc_env:CarbonAwareDCEnv",
        vector_entry_point="envs.vector:CarbonAwareDCVectorEnv",
    )
if FLAT_ENV_ID not in gym.registry:
    gym.register(
        id=FLAT_ENV_ID,
        entry_point="envs.wrappers:make_flat_env",
        vector_entry_point="envs.vector_flat:make_flat_vector_env",
    )

__all__ = [
    "ENV_ID",
    "FLAT_ENV_ID",
    "PRESETS",
    "CarbonAwareDCEnv",
    "DataGapWarning",
    "InferenceClass",
    "OperatingState",
    "Scenario",
    "ScenarioError",
    "Site",
    "TrainingJob",
    "make_scenario",
    "scenario_from_csv",
]


def __getattr__(name: str) -> object:
    """``DataGapWarning`` and ``scenario_from_csv`` load ``envs.data`` (pandas, pvlib: about 1 s) on
    first use, so that ``import envs`` stays fast for CLIs that fail on bad input before any work."""
    if name in ("DataGapWarning", "scenario_from_csv"):
        from envs import data

        return getattr(data, name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
