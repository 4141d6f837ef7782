"""Stochastic MPC (``mpc_stochastic``): a sample-average rolling MILP over forecast scenarios.

At each period ``t`` the policy reads the observed forecast ``env.unwrapped.forecast()``, draws N
plausible futures from the env's own forecast error model given that forecast (default: the
posterior of the truth, :meth:`envs.forecast.ForecastModel.posterior`; column 0, the current
period, is kept) and solves one MILP with a scenario dimension
(:func:`oracle.model.build_model` with ``scenarios``): every constraint family per scenario, the
carbon budget in every scenario, objective ``(1/N)·Σ_w benefit_w`` and the period-``t`` decisions
(job starts, routing, battery, generator) shared by all scenarios (non-anticipativity). The shared
decisions are applied; the rest of the plan is discarded, as in :class:`~agents.baselines.MPCPolicy`.

With exact forecasts every draw equals the forecast, so one scenario is solved (whatever N) and
the policy acts exactly as ``MPCPolicy`` with the same window.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from agents.baselines import MPCPolicy, forecast_scenario
from envs.forecast import forecast_model
from envs.scenario import Scenario

SAMPLERS = ("posterior", "forecast")
"""Where :class:`MPCStochasticPolicy` draws its scenarios from (its ``sampler``)."""


class MPCStochasticPolicy(MPCPolicy):
    """Scenario-based MPC: N forecast draws per period, first-period decisions shared.

    Args:
        env: the Dict env (its ``forecast_model`` is the error model the draws come from).
        n_scenarios: N >= 1 scenarios per solve (default 4).
        window: periods per solve (default 24, as ``mpc``: a 12-period window lost about 14 points
            of the oracle even with exact forecasts).
        seed: seed of the policy's own draws; episode ``e`` (counted at each period-0 decision)
            draws from ``SeedSequence([seed, e])``, so a rerun makes the same draws.
        shared_starts: share the window's later job starts too (:func:`oracle.model.build_model`'s
            two-stage variant: N times fewer binaries; default True: the per-scenario starts made
            a 24-period window cost ~1.4 s per decision).
        antithetic: draw the scenarios in mirrored pairs, so that with few scenarios their average
            stays close to the centre of the law they are drawn from (default True).
        sampler: where the scenarios come from. ``"posterior"`` (default): the truth given the
            forecast (:meth:`~envs.forecast.ForecastModel.posterior`: Gaussian in the error model's
            own variables with an empirical prior; centred on the posterior mean, which shrinks the
            leads the forecast is least sure of toward the row's mean). ``"forecast"``: the forecast
            with an independent error of the env's law added
            (:meth:`~envs.forecast.ForecastModel.sample_around`; centred on the forecast, spread as
            wide as the forecast's own error: the sampler of stop 20's table below).

    The defaults were chosen on training seeds 1000-1017 (paper, never the held-out 0-19):
    % of the oracle at typical / poor, against ``mpc`` on the same seeds and draws --

    ========================================  ====================  ==================
    variant                                   typical (1000-1005)   poor (1000-1005)
    ========================================  ====================  ==================
    mpc                                       97.47                 91.92
    N=4, window 24, shared starts             97.30                 92.70
    N=8, window 24, shared starts             96.25                 92.61
    N=4, window 24, shared, antithetic        97.50                 92.67
    N=2, window 24, shared, antithetic        97.52                 92.77
    ========================================  ====================  ==================

    On seeds 1006-1017: typical mpc 97.67, N=4 antithetic 97.71, N=2 antithetic 97.44; poor mpc
    94.98, N=4 antithetic 94.03, N=2 antithetic 94.25. Over all 18 seeds that sampler ties ``mpc`` at
    typical (97.64 vs 97.60) and loses at poor (93.58 vs 93.96).

    Why it tied, and the posterior sampler (the default since 2026-12-07; training seeds
    1000-1019, paper): ``mpc``'s loss at ``poor`` is almost all the price forecast's (93.34 % with
    every series noisy, 93.92 % with only the prices noisy, >= 99.28 % with any other one series
    noisy). Scenarios drawn *around the forecast* are the forecast plus a second error of the same
    size, so they chase the same noisy price spreads, only more widely. Drawn from the posterior
    (:meth:`~envs.forecast.ForecastModel.posterior`), % of the oracle at typical / poor:

    ========================================  ====================  ==================
    variant (window 24, shared starts)        typical (1000-1019)   poor (1000-1019)
    ========================================  ====================  ==================
    mpc (plans on the forecast)               97.32                 93.34
    mpc_posterior (plans on its mean)         97.60                 95.05
    N=4 antithetic, sampler="forecast"        97.32                 93.09
    N=4 antithetic, sampler="posterior"       97.72                 94.93
    N=8 antithetic, sampler="posterior"       97.84                 95.35
    ========================================  ====================  ==================

    Most of the gain is the posterior's centre (the deterministic MPC on the posterior mean gets it
    too); the scenarios add 0.1 / -0.1 points at N=4 and 0.2 / 0.3 at N=8, at 155-190 ms (N=4) and
    370-410 ms (N=8) per decision against ~35 ms. N=4 stays the default for its decision time.
    (Measured before a relative-series row with a single nonzero lead was left as forecast; that
    fix moved the held-out numbers by at most 0.01 point.)
        **kw: :class:`~agents.baselines.MPCPolicy` options (``time_limit_s``, ``mip_gap``,
            ``threads``, ``warm``).
    """

    name = "mpc_stochastic"

    def __init__(
        self,
        env: gym.Env,
        n_scenarios: int = 4,
        window: int = 24,
        seed: int = 0,
        shared_starts: bool = True,
        antithetic: bool = True,
        sampler: str = "posterior",
        **kw: object,
    ) -> None:
        if int(n_scenarios) < 1:
            raise ValueError(f"n_scenarios: must be >= 1 (got {n_scenarios})")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: must be one of {SAMPLERS} (got {sampler!r})")
        self.sampler = sampler
        super().__init__(env, window=window, exact=False, **kw)  # type: ignore[arg-type]
        self.n_scenarios = int(n_scenarios)
        self.seed = int(seed)
        self.shared_starts = bool(shared_starts)
        self.antithetic = bool(antithetic)
        self.episodes = 0
        self.rng = np.random.default_rng([self.seed, 0])
        self.error_model = forecast_model(getattr(self.base, "forecast_model", None))

    def model_scenarios(self, sc: Scenario, forecast: dict[str, np.ndarray], period: int) -> list[Scenario]:
        """N scenarios drawn by ``sampler`` given the forecast (the forecast alone when exact)."""
        if period == 0:
            self.rng = np.random.default_rng([self.seed, self.episodes])
            self.episodes += 1
        # exact forecasts: every draw is the forecast, and N copies of one scenario only make the
        # MILP N times larger (and symmetric) for the same optimum
        if self.error_model.is_exact:
            draws = [forecast]
        elif self.sampler == "posterior":
            post = self.error_model.posterior(forecast, sc.dt_h, horizon=sc.T - period)
            draws = post.sample(self.rng, self.n_scenarios, antithetic=self.antithetic)
        else:
            draws = self.error_model.sample_around(
                self.rng, forecast, self.n_scenarios, sc.dt_h, antithetic=self.antithetic
            )
        return [forecast_scenario(sc, draw, period) for draw in draws]
