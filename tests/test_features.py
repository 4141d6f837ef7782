"""Start-window features (agents/features.py): shape, layout and a hand-computed value."""

import numpy as np
import torch as th

from agents.features import DIFF_SCALE, SERIES, WindowFeatures, window_features_kwargs
from agents.imitation import flat_env
from envs.dc_env import JOB_FEATURES
from envs.presets import make_scenario


def _extractor():
    flat = flat_env("paper")
    T = make_scenario("paper", 1000).T
    kwargs = window_features_kwargs(flat, T)["features_extractor_kwargs"]
    return flat, WindowFeatures(flat.observation_space, **kwargs), kwargs


def test_passes_the_observation_through_and_appends_features():
    flat, ex, kw = _extractor()
    obs, _ = flat.reset(seed=3)
    out = ex(th.as_tensor(obs[None]))
    n_feat = kw["slots"] * kw["S"] * 3 * len(SERIES)
    assert out.shape == (1, obs.shape[0] + n_feat)
    assert ex.features_dim == obs.shape[0] + n_feat
    np.testing.assert_allclose(out[0, : obs.shape[0]].numpy(), obs)
    assert th.isfinite(out).all()


def test_price_difference_matches_a_direct_computation():
    flat, ex, kw = _extractor()
    obs, _ = flat.reset(seed=5)
    S, slots, H1, T = kw["S"], kw["slots"], kw["H1"], kw["T"]
    feats = ex(th.as_tensor(obs[None]))[0, obs.shape[0] :].numpy()
    price_diff = feats[: S * slots].reshape(S, slots)
    price_level = feats[2 * S * slots : 3 * S * slots].reshape(S, slots)
    o = ex.offsets
    jobs = obs[o["jobs"] : o["jobs"] + slots * (len(JOB_FEATURES) + S)].reshape(slots, -1)
    price = obs[o["price_import"] : o["price_import"] + S * H1].reshape(S, H1)
    checked = 0
    for j in range(slots):
        waiting = jobs[j, JOB_FEATURES.index("waiting")] > 0.5
        dur = max(1, round(jobs[j, JOB_FEATURES.index("remaining")] * T))
        slack = round(jobs[j, JOB_FEATURES.index("slack")] * T)
        rel = round(jobs[j, JOB_FEATURES.index("until_release")] * T)
        offsets = [k for k in range(H1) if rel <= k <= slack]
        for s in range(S):
            if not waiting or not offsets:
                assert price_diff[s, j] == 0.0 and price_level[s, j] == 0.0
                continue
            means = [price[s, k : min(k + dur, H1)].mean() for k in range(H1)]
            expected = DIFF_SCALE * (means[0] - min(means[k] for k in offsets))
            assert abs(price_diff[s, j] - expected) < 1e-4
            assert abs(price_level[s, j] - means[0]) < 1e-5
            checked += 1
    assert checked > 0


def test_layout_without_levels_is_the_earlier_one():
    """Models saved before the levels were added carry no ``levels`` kwarg: two features per series."""
    flat, ex, kw = _extractor()
    old = WindowFeatures(flat.observation_space, **{k: v for k, v in kw.items() if k != "levels"})
    obs, _ = flat.reset(seed=5)
    n = obs.shape[0]
    new_out, old_out = ex(th.as_tensor(obs[None]))[0, n:], old(th.as_tensor(obs[None]))[0, n:]
    block = kw["S"] * kw["slots"]
    assert old_out.shape[0] == 2 * len(SERIES) * block
    for i in range(len(SERIES)):  # per series: diff and offset match, the new layout adds the level
        np.testing.assert_allclose(
            old_out[2 * i * block : (2 * i + 2) * block], new_out[3 * i * block : (3 * i + 2) * block]
        )
