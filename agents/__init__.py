"""Controllers, training and evaluation on the env (see the README's layout section).

``agents.OracleScore`` is :class:`agents.oracle_score.OracleScore`, loaded on first use so that
``import agents`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OracleScore"]


def __getattr__(name: str) -> Any:
    if name == "OracleScore":
        from agents.oracle_score import OracleScore

        return OracleScore
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
