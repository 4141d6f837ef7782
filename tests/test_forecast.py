"""The forecast error model (envs/forecast.py) and its use by the env.

Statistical tests use fixed seeds; each tolerance is stated next to it as a multiple of the
estimate's standard error (with the effective sample size of independent rows x draws).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs import CarbonAwareDCEnv, make_scenario
from envs.dc_env import FORECAST_KEYS
from envs.forecast import (
    LEVELS,
    NAMED,
    SERIES,
    ForecastModel,
    SeriesError,
    forecast_model,
    from_sigma,
)

ROWS, ISSUES, H = 400, 4, 24


def truth_windows(value: float = 50.0) -> dict[str, np.ndarray]:
    """Constant exact windows (ISSUES, ROWS, H+1) for every observation key."""
    return {key: np.full((ISSUES, ROWS, H + 1), value) for key in FORECAST_KEYS}


def stack_draws(
    model: ForecastModel, key: str, n_draws: int, seed: int = 0, value: float = 50.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = truth_windows(value)
    return np.stack([model.draw(rng, w)[key] for _ in range(n_draws)])  # (n, ISSUES, ROWS, H+1)


@pytest.mark.parametrize("level", ["good", "typical", "poor"])
@pytest.mark.parametrize("key", ["price_import", "carbon_intensity", "renewable", "demand"])
def test_unbiased_and_spread_grows_with_lead_as_specified(level: str, key: str) -> None:
    model = NAMED[level]
    err = model.error(key)
    n_draws = 10
    fc = stack_draws(model, key, n_draws, seed=1)
    rel = fc / 50.0 - 1.0  # relative error (for "level" prices the level is 50 too)
    np.testing.assert_array_equal(rel[..., 0], 0.0)  # the current period is exact
    n_eff = n_draws * ROWS  # issue times are correlated: count each (draw, row) once
    sd_spec = err.sd(np.arange(1, H + 1))
    mean = rel[..., 1:].reshape(-1, H).mean(axis=0)
    sd = rel[..., 1:].reshape(-1, H).std(axis=0)
    # Unbiased: |mean| within 5 standard errors at every lead.
    assert np.all(np.abs(mean) < 5 * sd_spec / math.sqrt(n_eff)), (mean, sd_spec)
    # Spread as specified within 10 % (lognormal tails make the sd estimate noisier than a normal's).
    np.testing.assert_allclose(sd, sd_spec, rtol=0.10)
    assert sd[23] > sd[11] > sd[5] > sd[0] > 0  # grows with lead


def test_sigma_shorthand_keeps_the_old_spread_and_is_independent() -> None:
    sigma = 0.05
    model = forecast_model(sigma)
    assert model is not NAMED["exact"] and model.sigma == sigma and model.noise == sigma
    for key in SERIES:
        np.testing.assert_allclose(model.error(key).sd(np.array([1, 4, 9])), sigma * np.array([1, 2, 3]))
    fc = stack_draws(model, "cooling", 10, seed=2)
    log = np.log(fc[..., 1:] / 50.0).reshape(-1, ISSUES, H)
    r_lead = np.corrcoef(log[:, :, 5].ravel(), log[:, :, 6].ravel())[0, 1]
    r_issue = np.corrcoef(log[:, 0, 5].ravel(), log[:, 1, 5].ravel())[0, 1]
    assert abs(r_lead) < 0.05 and abs(r_issue) < 0.05  # 0 +- ~3 standard errors (n >= 4000)
    assert forecast_model(0.0) is NAMED["exact"] and forecast_model("0.05") == model


def test_correlation_across_leads_and_issue_times() -> None:
    model = NAMED["typical"]
    err = model.error("renewable")
    fc = stack_draws(model, "renewable", 10, seed=3)
    log = np.log(fc[..., 1:] / 50.0)  # s_l z - s_l^2/2: corr(log f) = corr(z)
    log = np.moveaxis(log, 1, -2).reshape(-1, ISSUES, H)  # (draw*row, issue, lead)
    lead = np.corrcoef(log[:, 0, 9], log[:, 0, 10])[0, 1]
    lead2 = np.corrcoef(log[:, 0, 9], log[:, 0, 11])[0, 1]
    issue = np.corrcoef(log[:, 0, 9], log[:, 1, 9])[0, 1]
    # Standard error of a correlation near 0.9 with n = 4000 is (1 - r^2)/sqrt(n) ~ 0.003; allow 0.02.
    assert abs(lead - err.rho_lead) < 0.02
    assert abs(lead2 - err.rho_lead**2) < 0.02
    assert abs(issue - err.rho_issue) < 0.02


def test_export_price_shares_the_import_error() -> None:
    rng = np.random.default_rng(4)
    w = truth_windows()
    w["price_export"] = 0.8 * w["price_import"]
    out = NAMED["typical"].draw(rng, w)
    np.testing.assert_allclose(out["price_export"], 0.8 * out["price_import"], rtol=1e-12)


def test_never_negative_where_the_series_cannot_be() -> None:
    rng = np.random.default_rng(5)
    truth = np.abs(rng.standard_normal((30, 5, H + 1))) * 10.0
    truth[:, :, ::3] = 0.0
    w = {key: truth for key in FORECAST_KEYS}
    for level in ("poor", 0.3):
        out = forecast_model(level).draw(rng, w)
        for key in ("carbon_intensity", "renewable", "cooling", "demand"):
            assert out[key].min() >= 0.0
            np.testing.assert_array_equal(out[key][truth == 0.0], 0.0)  # zero stays known (night solar)
        for s in forecast_model(level).sample_around(rng, {k: v[0] for k, v in out.items()}, 50):
            assert all(s[key].min() >= 0.0 for key in ("carbon_intensity", "renewable", "cooling", "demand"))
    with pytest.raises(ValueError, match="renewable_mw"):
        ForecastModel(renewable_mw=SeriesError(0.1, kind="level"))


def test_prices_can_go_negative_with_a_level_error() -> None:
    """A zero-price hour is uncertain under the level error (the sign can flip); truth at 0."""
    rng = np.random.default_rng(6)
    w = truth_windows()
    w["price_import"][:, :, 12] = 0.0
    out = NAMED["typical"].draw(rng, w)["price_import"][:, :, 12]
    assert out.min() < 0.0 < out.max()


def test_sample_around_is_unbiased_and_keeps_now() -> None:
    env = CarbonAwareDCEnv(preset="paper", forecast_level="typical")
    env.reset(seed=0)
    fc = env.forecast()
    n = 4000
    samples = NAMED["typical"].sample_around(np.random.default_rng(7), fc, n)
    assert len(samples) == n and samples[0].keys() == fc.keys()
    for key, value in fc.items():
        arr = np.stack([s[key] for s in samples])
        assert arr.shape == (n, *value.shape)
        np.testing.assert_array_equal(arr[:, :, 0], np.broadcast_to(value[:, 0], arr[:, :, 0].shape))
        err = NAMED["typical"].error(key)
        level = np.abs(value).mean(axis=1, keepdims=True) + 0 * value
        scale = np.abs(value) if err.kind == "relative" else level
        se = scale[:, 1:] * err.sd(np.arange(1, value.shape[1])) / math.sqrt(n)
        assert np.all(np.abs(arr.mean(axis=0)[:, 1:] - value[:, 1:]) <= 5 * se + 1e-12), key
        if err.sd_24 > 0 and np.abs(value[:, 1:]).max() > 0:
            assert arr.std(axis=0)[:, 1:].max() > 0
    exact = NAMED["exact"].sample_around(np.random.default_rng(7), fc, 2)
    assert all(np.array_equal(s[k], fc[k]) for s in exact for k in fc)
    with pytest.raises(ValueError, match="n"):
        NAMED["typical"].sample_around(np.random.default_rng(7), fc, 0)


def test_antithetic_samples_come_in_mirrored_pairs() -> None:
    """``antithetic=True``: draw i and draw i + n/2 use mirrored normals, so for additive errors
    (prices) a pair averages to the forecast exactly; relative errors stay positive and unbiased
    (the spread test above covers the law); the default path is unchanged."""
    env = CarbonAwareDCEnv(preset="paper", forecast_level="typical")
    env.reset(seed=1)
    fc = env.forecast()
    model = NAMED["typical"]
    plain = model.sample_around(np.random.default_rng(3), fc, 4)
    again = model.sample_around(np.random.default_rng(3), fc, 4, antithetic=False)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(plain, again, strict=True) for k in fc)
    pairs = model.sample_around(np.random.default_rng(3), fc, 4, antithetic=True)
    assert not np.array_equal(pairs[0]["price_import"], pairs[1]["price_import"])
    for i in (0, 1):
        mean = (pairs[i]["price_import"] + pairs[i + 2]["price_import"]) / 2
        np.testing.assert_allclose(mean, fc["price_import"], rtol=1e-6, atol=1e-6)
        assert not np.allclose(pairs[i]["price_import"], fc["price_import"])
    odd = model.sample_around(np.random.default_rng(3), fc, 3, antithetic=True)
    assert len(odd) == 3 and all((s["renewable_mw"] >= 0).all() for s in odd)


def rollout(env: CarbonAwareDCEnv, seed: int, steps: int = 8) -> list:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs, env.forecast()]
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
        out += [obs, env.forecast()]
    return out


def padded(series: np.ndarray) -> np.ndarray:
    """The exact window issued at period 0 (H = 24): the series, its last value repeated."""
    return np.concatenate([series, np.repeat(series[:, -1:], H + 1, axis=1)], axis=1)[:, : H + 1]


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_exact_reproduces_the_exact_observations_bit_for_bit() -> None:
    sc = make_scenario("paper", 2)
    a = rollout(CarbonAwareDCEnv(scenario=sc, forecast_level="exact"), 0)
    b = rollout(CarbonAwareDCEnv(scenario=sc, forecast_noise=0.0), 0)
    c = rollout(CarbonAwareDCEnv(scenario=sc), 0)
    assert all(same(x, y) and same(x, z) for x, y, z in zip(a, b, c, strict=True))
    # ... and they are the scaled truth: window t of the series, lead l = period t + l.
    obs = a[0]
    np.testing.assert_array_equal(obs["price_import"], (padded(sc.price_import) / 200.0).astype(np.float32))
    np.testing.assert_array_equal(a[1]["renewable_mw"], padded(sc.renewable_mw))
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    w = truth_windows()
    out = NAMED["exact"].draw(rng, w)
    assert all(out[k] is w[k] for k in w) and rng.bit_generator.state == state  # no RNG use


def test_same_seed_same_forecasts_and_recorded() -> None:
    sc = make_scenario("paper", 0)
    a = rollout(CarbonAwareDCEnv(scenario=sc, forecast_level="typical"), 3)
    b = rollout(CarbonAwareDCEnv(scenario=sc, forecast_level="typical"), 3)
    c = rollout(CarbonAwareDCEnv(scenario=sc, forecast_level="typical"), 4)
    assert all(same(x, y) for x, y in zip(a, b, strict=True))
    assert not same(a[1], c[1])
    env = CarbonAwareDCEnv(scenario=sc, forecast_level="typical")
    _, info = env.reset(seed=3)
    assert info["forecast_level"] == "typical"
    assert forecast_model(env.forecast_model.to_dict()) == NAMED["typical"]
    fc = env.forecast()
    np.testing.assert_array_equal(fc["price_import"][:, 0], sc.price_import[:, 0])
    assert not np.allclose(fc["price_import"][:, 1:], padded(sc.price_import)[:, 1:])


def test_gym_make_takes_forecast_level() -> None:
    env = gym.make("CarbonAwareDC-v0", forecast_level="poor")
    obs, info = env.reset(seed=0)
    assert info["forecast_level"] == "poor" and env.unwrapped.forecast_model is NAMED["poor"]
    assert env.observation_space.contains(obs)
    for _ in range(24):
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    flat = gym.make("CarbonAwareDC-Flat-v0", forecast_level=0.1)
    assert flat.unwrapped.forecast_model.sigma == 0.1
    assert flat.observation_space.contains(flat.reset(seed=0)[0])


def test_bad_forecast_arguments_fail_early_and_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"forecast_level.*forecast_noise"):
        CarbonAwareDCEnv(forecast_level="typical", forecast_noise=0.1)
    assert CarbonAwareDCEnv(forecast_level=0.1, forecast_noise=0.1).forecast_model.sigma == 0.1
    with pytest.raises(ValueError, match="forecast_level: unknown level 'typcal'"):
        CarbonAwareDCEnv(forecast_level="typcal")
    with pytest.raises(ValueError, match="forecast_noise"):
        CarbonAwareDCEnv(forecast_noise=-0.1)
    with pytest.raises(ValueError, match="forecast_noise"):
        CarbonAwareDCEnv(forecast_noise=float("nan"))
    with pytest.raises(ValueError, match="my_sigma"):
        from_sigma(-1.0, field="my_sigma")
    with pytest.raises(ValueError, match="rho_lead"):
        SeriesError(0.1, rho_lead=1.0)
    assert LEVELS == ("exact", "good", "typical", "poor") and set(LEVELS) <= set(NAMED)
    sds = [[NAMED[lvl].error(k).sd_24 for k in SERIES] for lvl in LEVELS]
    assert np.all(np.diff(np.array(sds), axis=0) > 0)  # each level is worse on every series


def test_a_scaled_level_widens_every_error_by_its_factor() -> None:
    poor, twice = NAMED["poor"], forecast_model("poor*2")
    assert twice == poor.scaled(2) and twice.name == "poor*2" and forecast_model(" poor * 2 ") == twice
    for key in SERIES:
        a, b = poor.error(key), twice.error(key)
        assert b.sd_24 == pytest.approx(2 * a.sd_24)
        assert (b.growth, b.rho_lead, b.rho_issue, b.kind) == (a.growth, a.rho_lead, a.rho_issue, a.kind)
    assert forecast_model(twice.to_dict()) == twice
    assert forecast_model("typical*0").is_exact and not forecast_model("good*0.5").is_exact
    assert from_sigma(0.1).scaled(3).sigma == pytest.approx(0.3)
    # A level (additive) error is linear in sd_24: the same normals give exactly twice the error.
    w = truth_windows()
    err = [m.draw(np.random.default_rng(7), w)["price_import"] - w["price_import"] for m in (poor, twice)]
    np.testing.assert_allclose(err[1], 2 * err[0], rtol=1e-12, atol=1e-9)
    # Scaled by 1 it is the level itself under another name: the same draws bit for bit.
    once = forecast_model("poor*1")
    a, b = (m.draw(np.random.default_rng(3), w) for m in (poor, once))
    assert all(np.array_equal(a[k], b[k]) for k in FORECAST_KEYS)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("awful*2", "scales an unknown level 'awful'"),
        ("poor*x", "the factor after '\\*' must be a number"),
        ("poor*-1", "scale factor must be a finite number >= 0"),
        ("poor*nan", "scale factor must be a finite number >= 0"),
        ("poor*2*2", "must be a number"),
    ],
)
def test_bad_scaled_levels_name_the_cause(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"forecast_level: .*{message}"):
        forecast_model(spec)
    with pytest.raises(ValueError, match=message):
        CarbonAwareDCEnv(forecast_level=spec)


def test_level_and_noise_shorthand_resolve_alike_in_both_envs():
    from envs.forecast import resolve_forecast
    from envs.vector import CarbonAwareDCVectorEnv

    assert resolve_forecast(None, 0.1) == resolve_forecast(0.1) == resolve_forecast(0.1, 0.1)
    for build in (
        lambda **kw: CarbonAwareDCEnv(preset="paper", **kw),
        lambda **kw: CarbonAwareDCVectorEnv(2, preset="paper", **kw),
    ):
        with pytest.raises(ValueError, match="disagree"):
            build(forecast_level="typical", forecast_noise=0.1)


def _poor_forecast(seed: int) -> tuple[dict[str, np.ndarray], object]:
    sc = make_scenario("paper", seed)
    env = CarbonAwareDCEnv(scenario=sc, preset="paper", forecast_level="poor")
    env.reset(seed=seed)
    return env.forecast(), sc


def test_posterior_of_exact_forecasts_is_the_forecast() -> None:
    env = CarbonAwareDCEnv(preset="paper")
    env.reset(seed=0)
    fc = env.forecast()
    post = NAMED["exact"].posterior(fc, horizon=24)
    assert all(np.array_equal(post.mean()[k], fc[k]) for k in fc)
    assert all(np.array_equal(s[k], fc[k]) for s in post.sample(np.random.default_rng(0), 3) for k in fc)


def test_posterior_keeps_now_zeros_and_the_columns_past_the_horizon() -> None:
    fc, _ = _poor_forecast(1000)
    post = NAMED["poor"].posterior(fc, horizon=10)
    draws = post.sample(np.random.default_rng(1), 6)
    for arr in [post.mean(), *draws]:
        for key, value in fc.items():
            np.testing.assert_array_equal(arr[key][:, 0], value[:, 0])  # now is known, bit for bit
            np.testing.assert_array_equal(arr[key][:, 10:], value[:, 10:])  # beyond the horizon
            if key != "price_import" and key != "price_export":
                assert (arr[key] >= 0).all(), key
        zero = fc["renewable_mw"] == 0  # night-time solar: a known zero stays zero
        assert zero.any() and (arr["renewable_mw"][zero] == 0).all()
    assert not np.allclose(post.mean()["price_import"][:, 1:10], fc["price_import"][:, 1:10])
    with pytest.raises(ValueError, match="n"):
        post.sample(np.random.default_rng(1), 0)


def test_posterior_leaves_a_row_with_one_positive_lead_as_forecast() -> None:
    """A relative row with a single nonzero lead (the last daylight hour of a solar window) has no
    spread to estimate its prior from: mean and draws are the forecast itself."""
    fc = {"renewable_mw": np.array([[0.0, 0.0, 3.0, 0.0], [0.0, 2.0, 4.0, 1.0]])}
    post = NAMED["poor"].posterior(fc)
    np.testing.assert_array_equal(post.mean()["renewable_mw"][0], fc["renewable_mw"][0])
    draws = post.sample(np.random.default_rng(0), 4)
    assert all(np.array_equal(d["renewable_mw"][0], fc["renewable_mw"][0]) for d in draws)
    assert not all(np.array_equal(d["renewable_mw"][1], fc["renewable_mw"][1]) for d in draws)


def test_posterior_samples_centre_on_the_posterior_mean() -> None:
    """Many plain draws average to ``mean()`` (for relative series that is the lognormal mean
    ``exp(m + C/2)``, a formula the draws check): within 5 standard errors of the sample mean.
    Antithetic pairs of prices average to it exactly; export moves with import (shared normals)."""
    fc, _ = _poor_forecast(1001)
    post = NAMED["poor"].posterior(fc, horizon=24)
    mean = post.mean()
    n = 4000
    draws = post.sample(np.random.default_rng(2), n, antithetic=False)
    for key in fc:
        arr = np.stack([d[key] for d in draws])[:, :, :24]
        se = arr.std(axis=0) / math.sqrt(n)
        assert np.all(np.abs(arr.mean(axis=0) - mean[key][:, :24]) <= 5 * se + 1e-9), key
    imp = np.stack([d["price_import"][:, 12] for d in draws])
    exp_ = np.stack([d["price_export"][:, 12] for d in draws])
    for r in range(imp.shape[1]):
        assert np.corrcoef(imp[:, r], exp_[:, r])[0, 1] > 0.9
    pairs = post.sample(np.random.default_rng(2), 4, antithetic=True)
    for i in (0, 1):
        np.testing.assert_allclose(
            (pairs[i]["price_import"] + pairs[i + 2]["price_import"]) / 2, mean["price_import"], rtol=1e-9
        )


def test_posterior_by_hand() -> None:
    """Two leads, no lead correlation: y = (40, 60), error sd at lead 1 = 0.2 * level 50 = 10, so
    Σ_e = diag(0, 100); var(y) = 100, mean(diag Σ_e) - mean(Σ_e) = 50 - 25, v = 75; K = diag(1, 75/175);
    m = 50 + K (y - 50) = (40, 50 + 30/7); C = v (I - K) = diag(0, 300/7)."""
    err = SeriesError(0.2, growth=0.0, kind="level")
    model = ForecastModel(name="hand", price_import=err, price_export=err)
    post = model.posterior({"price_import": np.array([[40.0, 60.0]])})
    np.testing.assert_allclose(post.mean()["price_import"], [[40.0, 50.0 + 30.0 / 7.0]], rtol=1e-12)
    n = 20000
    draws = np.array([d["price_import"][0, 1] for d in post.sample(np.random.default_rng(5), n)])
    assert np.all(
        np.array([d["price_import"][0, 0] for d in post.sample(np.random.default_rng(5), 3)]) == 40.0
    )
    # antithetic pairs: the mean is exact; the spread within 3 % (sd of a sample sd ~ 1/sqrt(2n) = 0.5 %)
    assert abs(draws.mean() - (50.0 + 30.0 / 7.0)) < 1e-9
    assert abs(draws.std() / math.sqrt(300.0 / 7.0) - 1.0) < 0.03


def test_posterior_mean_damps_the_spread_between_hours() -> None:
    """What a planner uses it for: every price row of the posterior mean varies less over the leads
    than the forecast row it came from (K has eigenvalues in (0, 1]), and more so at ``poor`` than at
    ``good``."""
    sc = make_scenario("paper", 1002)
    spread = {}
    for level in ("good", "poor"):
        env = CarbonAwareDCEnv(scenario=sc, preset="paper", forecast_level=level)
        env.reset(seed=3)
        fc = env.forecast()
        mean = NAMED[level].posterior(fc, horizon=24).mean()
        for key in ("price_import", "price_export"):
            assert np.all(mean[key][:, :24].std(axis=1) < fc[key][:, :24].std(axis=1)), (level, key)
        spread[level] = (
            mean["price_import"][:, :24].std(axis=1) / fc["price_import"][:, :24].std(axis=1)
        ).mean()
    assert spread["poor"] < spread["good"] < 1.0


def test_posterior_mean_by_the_cached_eigenbasis_equals_the_dense_formulas() -> None:
    # ForecastPosterior.mean() uses _gaussian_posterior (cached eigen-decomposition, no inverse per
    # row); sample() the dense formulas of _posterior_root. Same posterior: same mean and covariance.
    from envs.forecast import _gaussian_posterior, _posterior_root

    rng = np.random.default_rng(5)
    for n, scale in ((24, 1.0), (9, 37.5), (2, 0.3)):
        leads = np.sort(rng.choice(np.arange(30), size=n, replace=False))
        sd = np.where(leads == 0, 0.0, 0.1 + 0.02 * leads)
        y = rng.normal(3.0, 1.0, size=n)
        mean, Q, d = _gaussian_posterior(y, sd, 0.9, leads, scale)
        dense_mean, root = _posterior_root(y, sd * scale, 0.9, leads)
        np.testing.assert_allclose(mean, dense_mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(Q @ np.diag(d) @ Q.T, root @ root.T, rtol=1e-8, atol=1e-10)
        assert (d >= 0).all()
