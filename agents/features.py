"""Start-window features computed inside the network from the flat observation (no env change).

:class:`WindowFeatures` is an SB3 features extractor: it passes the flat observation through and
appends, for every job slot and site, how the current start period compares with the best start
period still open in the forecast (the job's start window: released, within its slack, the run
inside the forecast horizon). For each of the import price and the carbon intensity series it
gives the mean over the job's run if started now, minus the lowest such mean over the open start
offsets, and the offset of that lowest mean (in periods / T); with ``levels`` (the default of
:func:`window_features_kwargs`) also the mean itself if started now, the level that, beside the
job's value per GPU-hour, says whether the job is worth running at all. Jobs not waiting get zeros.

The behaviour-cloned policy has to learn "start now or later" from 24-period forecasts by itself;
these are the numbers a scheduler would compute first.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from envs.dc_env import JOB_FEATURES

SERIES = ("price_import", "carbon_intensity")
"""Forecast series the window features are computed on."""
DIFF_SCALE = 10.0
"""The mean differences (scaled prices and intensities, about 0.01-0.1) are multiplied by this."""


def flat_offsets(obs_keys: list[str], S: int, K: int, slots: int, H1: int) -> dict[str, int]:
    """Offset of each key in the flat observation (keys in ``obs_keys`` order)."""
    sizes = {"time": 3, "soc": S, "free_gpus": S, "jobs": slots * (len(JOB_FEATURES) + S), "carbon": 3}
    sizes["demand"] = K * H1
    out, off = {}, 0
    for key in obs_keys:
        out[key] = off
        off += sizes.get(key, S * H1)
    out["_total"] = off
    return out


class WindowFeatures(BaseFeaturesExtractor):
    """Flat observation + ``slots * S * (3 if levels else 2) * len(SERIES)`` start-window features
    (see module doc). ``levels=False`` is the layout of models saved before the levels were added."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        obs_keys: list[str],
        S: int,
        K: int,
        slots: int,
        H1: int,
        T: int,
        levels: bool = False,
    ) -> None:
        n_feat = slots * S * (3 if levels else 2) * len(SERIES)
        obs_dim = int(observation_space.shape[0])
        super().__init__(observation_space, obs_dim + n_feat)
        self.offsets = flat_offsets(list(obs_keys), S, K, slots, H1)
        if self.offsets["_total"] != obs_dim:
            raise ValueError(f"layout adds up to {self.offsets['_total']}, observation has {obs_dim}")
        self.S, self.slots, self.H1, self.T = S, slots, H1, T
        self.levels = bool(levels)
        self.width = len(JOB_FEATURES) + S

    def forward(self, obs: th.Tensor) -> th.Tensor:
        feats = self.window(obs)
        return th.cat([obs, *(f.reshape(obs.shape[0], -1) for f in feats)], dim=1)

    def window(self, obs: th.Tensor) -> list[th.Tensor]:
        """The window features as a list of (B, S, slots) tensors (per series: difference, offset,
        and with ``levels`` the level)."""
        B, S, H1, T = obs.shape[0], self.S, self.H1, self.T
        o = self.offsets["jobs"]
        jobs = obs[:, o : o + self.slots * self.width].reshape(B, self.slots, self.width)
        waiting = jobs[:, :, JOB_FEATURES.index("waiting")] > 0.5
        dur = th.round(jobs[:, :, JOB_FEATURES.index("remaining")] * T).clamp(min=1)  # (B, J)
        slack = th.round(jobs[:, :, JOB_FEATURES.index("slack")] * T)
        release = th.round(jobs[:, :, JOB_FEATURES.index("until_release")] * T)
        d = th.arange(H1, dtype=obs.dtype, device=obs.device)  # start offsets
        end = th.minimum(d[None, None, :] + dur[:, :, None], th.tensor(float(H1)))  # (B, J, H1)
        open_ = (d[None, None, :] >= release[:, :, None]) & (d[None, None, :] <= slack[:, :, None])
        open_ = open_ & (end > d[None, None, :])
        feats = []
        for key in SERIES:
            o = self.offsets[key]
            x = obs[:, o : o + S * H1].reshape(B, S, H1)
            c = th.cat([th.zeros(B, S, 1, dtype=obs.dtype, device=obs.device), x.cumsum(dim=2)], dim=2)
            idx_end = end.long()[:, None, :, :].expand(B, S, self.slots, H1)
            idx_start = d.long()[None, None, None, :].expand(B, S, self.slots, H1)
            cc = c[:, :, None, :].expand(B, S, self.slots, H1 + 1)
            total = cc.gather(3, idx_end) - cc.gather(3, idx_start)
            mean = total / (end - d[None, None, :]).clamp(min=1)[:, None, :, :]  # (B, S, J, H1)
            masked = th.where(open_[:, None, :, :], mean, th.full_like(mean, 1e6))
            best, arg = masked.min(dim=3)
            now = mean[..., 0]
            ok = (waiting & open_.any(dim=2))[:, None, :]
            feats.append(th.where(ok, DIFF_SCALE * (now - best), th.zeros_like(now)))
            feats.append(th.where(ok, arg.to(obs.dtype) / T, th.zeros_like(now)))
            if self.levels:
                feats.append(th.where(ok, now, th.zeros_like(now)))
        return feats


def window_features_kwargs(flat_env: Any, T: int) -> dict[str, Any]:
    """``policy_kwargs`` entries for :class:`WindowFeatures` on a ``FlatObsActionWrapper``."""
    H1 = int(flat_env.unwrapped.observation_space["price_import"].shape[1])
    return {
        "features_extractor_class": WindowFeatures,
        "features_extractor_kwargs": {
            "obs_keys": list(flat_env.obs_keys),
            "S": int(flat_env.S),
            "K": int(flat_env.K),
            "slots": int(flat_env.n_slots),
            "H1": H1,
            "T": int(T),
            "levels": True,
        },
    }
