"""The forecast error model: how wrong the forecasts an operator sees are (docs/env.md, "Forecasts").

For every exogenous series ``k`` (import and export price, carbon intensity, renewables, demand,
cooling) the forecast issued at period ``t`` for lead ``l`` (target period ``t + l``) is

- ``kind="relative"`` (series that cannot be negative; the ``sigma`` shorthand for every series):
  ``f = x · exp(s_l·z − s_l²/2)`` with ``s_l² = ln(1 + sd_l²)``, a mean-one lognormal factor whose
  relative standard deviation is exactly ``sd_l``: unbiased (``E[f] = x``), never negative, zero
  where the truth is zero (night-time solar stays known), sign kept for prices;
- ``kind="level"`` (prices, which can be negative): ``f = x + sd_l · level · z``, an additive
  Gaussian error scaled by the row's price level ``level = mean |x|`` (over the episode's windows),
  so that a zero- or negative-price hour is as uncertain as any other (a per-value relative error
  would make such hours perfectly known and could never flip a sign).

The spread grows with lead, ``sd_l = sd_24 · (l·period_h / 24)^growth`` (``sd_24``: the relative
error of a day-ahead forecast, the skill that is published), and lead 0 (the current period) is
exact. The standard normals ``z[t, row, l]`` (l = 1..H) are correlated as a separable AR(1) in lead
and in issue time, ``corr(z[t,r,l], z[t',r,l']) = rho_issue^|t−t'| · rho_lead^|l−l'|`` (per hour),
independent across rows and series, except that the export price reuses the import price's normals
(one market, one error). Named levels ``good``, ``typical``, ``poor`` use the published day-ahead
skill of docs/env.md's table; the scalar ``sigma`` keeps the env's old meaning (relative spread
``sigma·√l``, independent draws) as a mean-one lognormal.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

SERIES = ("price_import", "price_export", "carbon_intensity", "renewable_mw", "cooling", "demand_gpus")
"""The scenario series the model covers (its per-series fields, in draw order)."""
ALIASES = {"renewable": "renewable_mw", "demand": "demand_gpus"}
"""Observation keys (``envs.dc_env.FORECAST_KEYS``) that differ from the series names."""
NONNEGATIVE = frozenset({"carbon_intensity", "renewable_mw", "cooling", "demand_gpus"})
"""Series a forecast may never make negative (they must use ``kind="relative"``)."""
KINDS = ("relative", "level")
LEVELS = ("exact", "good", "typical", "poor")
"""The named levels, from no error to a poor day-ahead forecaster."""
REFERENCE_LEAD_H = 24.0
"""``sd_24`` is the relative error at this lead (a day-ahead forecast)."""


def _series_name(key: str) -> str:
    name = ALIASES.get(key, key)
    if name not in SERIES:
        raise KeyError(f"forecast key: unknown series {key!r}; expected one of {SERIES} or {tuple(ALIASES)}")
    return name


@dataclass(frozen=True)
class SeriesError:
    """The error of one series' forecasts (module docstring for the equations).

    ``sd_24``: relative standard deviation at a 24 h lead (fraction; of the value for
    ``relative``, of the row's mean |value| for ``level``); ``growth``: exponent of
    ``sd_l = sd_24·(l·period_h/24)^growth``; ``rho_lead``, ``rho_issue``: AR(1) correlation of
    the standard normals between adjacent leads and between successive issue times, per hour.
    """

    sd_24: float
    growth: float = 0.5
    rho_lead: float = 0.0
    rho_issue: float = 0.0
    kind: str = "relative"

    def __post_init__(self) -> None:
        for name in ("sd_24", "growth"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SeriesError.{name}: must be finite and >= 0 (got {value!r})")
        for name in ("rho_lead", "rho_issue"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ValueError(f"SeriesError.{name}: must be in [0, 1) (got {value!r})")
        if self.kind not in KINDS:
            raise ValueError(f"SeriesError.kind: must be one of {KINDS} (got {self.kind!r})")

    def sd(self, leads: np.ndarray, period_h: float = 1.0) -> np.ndarray:
        """Relative standard deviation ``sd_l`` at the given leads (periods of ``period_h`` hours)."""
        return self.sd_24 * (np.asarray(leads, dtype=np.float64) * period_h / REFERENCE_LEAD_H) ** self.growth


_EXACT = SeriesError(0.0)


@dataclass(frozen=True)
class ForecastModel:
    """Per-series forecast errors; ``draw`` makes the env's forecasts, ``sample_around`` the
    scenarios of a stochastic planner. ``name`` is recorded with results (``to_dict``)."""

    name: str = "exact"
    price_import: SeriesError = _EXACT
    price_export: SeriesError = _EXACT
    carbon_intensity: SeriesError = _EXACT
    renewable_mw: SeriesError = _EXACT
    cooling: SeriesError = _EXACT
    demand_gpus: SeriesError = _EXACT
    export_follows_import: bool = True
    sigma: float | None = None
    """The scalar shorthand this model was made from (None for the named levels)."""

    def __post_init__(self) -> None:
        for key in SERIES:
            err = getattr(self, key)
            if not isinstance(err, SeriesError):
                raise ValueError(f"ForecastModel.{key}: must be a SeriesError (got {type(err).__name__})")
            if key in NONNEGATIVE and err.kind != "relative":
                raise ValueError(f"ForecastModel.{key}: cannot be negative, so kind must be 'relative'")

    @property
    def is_exact(self) -> bool:
        """True when every forecast equals the truth."""
        return all(getattr(self, key).sd_24 == 0.0 for key in SERIES)

    @property
    def noise(self) -> float:
        """A scalar summary, 0 iff exact: the shorthand ``sigma``, else the mean ``sd_24/√24``."""
        if self.sigma is not None:
            return self.sigma
        return float(np.mean([getattr(self, key).sd_24 for key in SERIES]) / math.sqrt(REFERENCE_LEAD_H))

    def error(self, key: str) -> SeriesError:
        """The error of series ``key`` (a series name or an observation key)."""
        return getattr(self, _series_name(key))

    def scaled(self, factor: float) -> ForecastModel:
        """This model with every series' error ``sd_24`` (and ``sigma``) multiplied by ``factor``:
        the same structure (growth, correlations, kinds), a ``factor`` times wider spread. Named
        ``"<name>*<factor>"`` (``forecast_model("poor*2")`` builds it), for sensitivity sweeps
        beyond the named levels; ``factor = 0`` gives an exact model."""
        if isinstance(factor, bool) or not (
            isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0
        ):
            raise ValueError(f"forecast_level: scale factor must be a finite number >= 0 (got {factor!r})")
        series = {
            key: dataclasses.replace(getattr(self, key), sd_24=getattr(self, key).sd_24 * float(factor))
            for key in SERIES
        }
        return dataclasses.replace(
            self,
            name=f"{self.name}*{float(factor):g}",
            sigma=None if self.sigma is None else self.sigma * float(factor),
            **series,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the model (``forecast_model(d)`` rebuilds it)."""
        return {
            "name": self.name,
            "sigma": self.sigma,
            "export_follows_import": self.export_follows_import,
            "series": {key: dataclasses.asdict(getattr(self, key)) for key in SERIES},
        }

    # ------------------------------------------------------------------ draws
    def _normals(
        self, rng: np.random.Generator, key: str, shape: tuple[int, ...], period_h: float, issue_axis: bool
    ) -> np.ndarray:
        """Correlated standard normals of ``shape`` (..., H): AR(1) along the last axis (lead) and,
        if ``issue_axis``, along axis 0 (issue time)."""
        err = self.error(key)
        z = rng.standard_normal(shape, dtype=np.float32)  # float32: an error needs no more digits
        rho_l = err.rho_lead**period_h
        if rho_l > 0.0 and shape[-1] > 1:
            z = z @ _ar1_cholesky(shape[-1], rho_l).T
        rho_i = err.rho_issue**period_h
        if issue_axis and rho_i > 0.0 and shape[0] > 1:
            z = np.tensordot(_ar1_cholesky(shape[0], rho_i), z, axes=(1, 0))
        return z

    def _apply(
        self, key: str, truth: np.ndarray, z: np.ndarray, level: np.ndarray, period_h: float
    ) -> np.ndarray:
        """The forecast of ``truth`` (..., H+1) given normals ``z`` (..., H) for leads 1..H."""
        err = self.error(key)
        sd = err.sd(np.arange(1, truth.shape[-1]), period_h).astype(np.float32)
        out = np.array(truth, dtype=np.float64)
        if err.kind == "relative":
            s = np.sqrt(np.log1p(sd * sd))
            out[..., 1:] *= np.exp(s * z - 0.5 * s * s)
        else:
            out[..., 1:] += sd * z * level
        return out

    def draw(
        self, rng: np.random.Generator, windows: Mapping[str, np.ndarray], period_h: float = 1.0
    ) -> dict[str, np.ndarray]:
        """Noisy forecasts of exact windows: ``windows[key]`` is (T+1, rows, H+1), row = site or
        class, column ``l`` = lead ``l`` of issue period ``t``; the result has the same keys and
        shapes, column 0 exact. ``exact`` returns the same arrays and draws nothing."""
        if self.is_exact:
            return dict(windows)
        out: dict[str, np.ndarray] = {}
        shared: dict[tuple[int, ...], np.ndarray] = {}
        for key in sorted(windows, key=lambda k: SERIES.index(_series_name(k))):
            truth = windows[key]
            name = _series_name(key)
            if truth.ndim != 3:
                raise ValueError(f"windows[{key!r}]: expected (T+1, rows, H+1), got shape {truth.shape}")
            if self.error(key).sd_24 == 0.0 or truth.shape[-1] < 2:
                out[key] = truth
                continue
            shape = (*truth.shape[:-1], truth.shape[-1] - 1)
            if name == "price_export" and self.export_follows_import and shape in shared:
                z = shared[shape]
            else:
                z = self._normals(rng, key, shape, period_h, issue_axis=True)
                if name == "price_import":
                    shared[shape] = z
            level = np.abs(truth).mean(axis=(0, 2))[None, :, None]
            out[key] = self._apply(key, truth, z, level, period_h)
        return out

    def sample_around(
        self,
        rng: np.random.Generator,
        forecast: Mapping[str, np.ndarray],
        n: int,
        period_h: float = 1.0,
        antithetic: bool = False,
    ) -> list[dict[str, np.ndarray]]:
        """``n`` plausible true futures around an observed forecast, from the same error model
        read backwards (truth = forecast with an independent error of the same law):
        ``forecast[key]`` is (rows, H+1); column 0 (now) is kept; each sample's mean is the forecast
        (``E[sample] = forecast``); series that cannot be negative stay >= 0.

        ``antithetic``: the draws come in mirrored pairs (normals ``z`` and ``-z``; for odd ``n`` the
        last draw is unpaired), so the errors' normals average to exactly zero over a pair: the same
        law per draw, a smaller spread of the sample mean (variance reduction for a sample-average
        model with few scenarios)."""
        if int(n) < 1:
            raise ValueError(f"n: need at least one scenario (got {n!r})")
        n = int(n)
        cols: dict[str, np.ndarray] = {}
        shared: dict[tuple[int, ...], np.ndarray] = {}
        for key in sorted(forecast, key=lambda k: SERIES.index(_series_name(k))):
            fc = np.asarray(forecast[key], dtype=np.float64)
            name = _series_name(key)
            if fc.ndim != 2:
                raise ValueError(f"forecast[{key!r}]: expected (rows, H+1), got shape {fc.shape}")
            if self.error(key).sd_24 == 0.0 or fc.shape[-1] < 2:
                cols[key] = np.broadcast_to(fc, (n, *fc.shape)).copy()
                continue
            shape = (n, fc.shape[0], fc.shape[1] - 1)
            if name == "price_export" and self.export_follows_import and shape in shared:
                z = shared[shape]
            else:
                if antithetic:
                    half = self._normals(rng, key, ((n + 1) // 2, *shape[1:]), period_h, issue_axis=False)
                    z = np.concatenate([half, -half])[:n]
                else:
                    z = self._normals(rng, key, shape, period_h, issue_axis=False)
                if name == "price_import":
                    shared[shape] = z
            level = np.abs(fc).mean(axis=1)[None, :, None]
            cols[key] = self._apply(key, np.broadcast_to(fc, (n, *fc.shape)), z, level, period_h)
        return [{key: cols[key][i] for key in forecast} for i in range(n)]

    def posterior(
        self, forecast: Mapping[str, np.ndarray], period_h: float = 1.0, horizon: int | None = None
    ) -> ForecastPosterior:
        """What the truth may be, given one observed forecast: the Gaussian posterior of this error
        model under a vague empirical prior (:class:`ForecastPosterior`, where its limits are stated).

        ``forecast[key]`` is (rows, H+1) as ``env.forecast()`` returns it (column 0 = now, exact);
        ``horizon``: how many columns are real periods (the episode's ``T - t``; later columns repeat
        the last and are left as they are). Series without error are returned unchanged."""
        return ForecastPosterior(self, forecast, period_h, horizon)


class ForecastPosterior:
    """The truth given an observed forecast, per series and row (site or class), over the leads
    ``0 .. L-1`` (``L = min(H+1, horizon)``): a Gaussian posterior of the error model under a vague
    prior that knows nothing of the daily shape.

    The error model (module docstring) is linear-Gaussian in a transformed variable ``y``:

    - ``kind="level"``: ``y = f``, ``y = x + e``, ``e ~ N(0, Σ_e)``,
      ``Σ_e[l, l'] = sd_l·sd_l'·level²·rho_lead^|l−l'|`` (``level`` = the row's mean |f|);
    - ``kind="relative"``, on the leads where ``f > 0`` (a zero forecast is a known zero; a row
      with fewer than two such leads is left as forecast: nothing to estimate its prior from):
      ``y = ln f + s_l²/2``, ``y = ln x + e``, ``e ~ N(0, Σ_e)``,
      ``Σ_e[l, l'] = s_l·s_l'·rho_lead^|l−l'|``, ``s_l² = ln(1 + sd_l²)``.

    The prior is empirical, from the row itself: ``x ~ N(μ·1, v·I)`` with ``μ = mean(y)`` and
    ``v = max(var(y) − (mean(diag Σ_e) − mean(Σ_e)), 0.1·var(y))`` (the spread of the truth over the
    leads is the forecast's less the error's expected spread over the leads, which is small where the
    error is strongly correlated in lead). Then, with ``K = v·(v·I + Σ_e)⁻¹``,

        posterior mean  m = μ + K·(y − μ),      posterior covariance  C = v·(I − K).

    Lead 0 has no error, so ``m_0 = y_0`` (now is known, and kept bit for bit). :meth:`mean` is
    ``m`` (``exp(m + diag C/2)`` for relative series); :meth:`sample` draws ``y = m + C^½·z``
    (``exp(y)`` for relative series: never negative, zeros kept).

    What it is for, and what it is not: ``m`` shrinks each lead toward the row's mean by how
    unreliable that lead is, so a planner on it discounts the spreads between hours that the error
    creates (a far hour that looks cheap is partly noise: the optimizer's curse). It is *not* a
    better point forecast: the prior ignores the daily shape (evening peak, night trough), and on the
    presets' days its squared error against the truth is from 2 % smaller to 30 % larger than the
    forecast's (price, carbon, renewables; training seeds 1000-1039 at ``typical`` and ``poor``).
    Its value is in decisions: an MPC planning on ``m`` (``mpc_posterior``), or on draws around it
    (``mpc_stochastic``), loses less than one planning on the forecast (:mod:`agents.mpc`,
    docs/evaluation.md)."""

    def __init__(
        self,
        model: ForecastModel,
        forecast: Mapping[str, np.ndarray],
        period_h: float = 1.0,
        horizon: int | None = None,
    ) -> None:
        self.model = model
        self.forecast = {key: np.asarray(value, dtype=np.float64) for key, value in forecast.items()}
        # Per series: the posterior mean and diag C of each group of rows with the same leads
        # (rows, leads, means (rows, n), diag C (rows, n)), batched (see _gaussian_posterior_rows);
        # and per row (leads, y, error sd, rho), what sample() needs for the dense formulas.
        self._blocks: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        for key in sorted(self.forecast, key=lambda k: SERIES.index(_series_name(k))):
            fc = self.forecast[key]
            if fc.ndim != 2:
                raise ValueError(f"forecast[{key!r}]: expected (rows, H+1), got shape {fc.shape}")
            err = model.error(key)
            L = fc.shape[1] if horizon is None else max(1, min(fc.shape[1], int(horizon)))
            if err.sd_24 == 0.0 or L < 2:
                continue
            sd = np.concatenate([[0.0], err.sd(np.arange(1, L), period_h)])
            rho = err.rho_lead**period_h
            block = fc[:, :L]
            if err.kind == "level":
                groups = [(np.arange(len(block)), np.arange(L))]
            else:
                positive = block > 0
                positive[positive.sum(axis=1) < 2] = False  # no spread to estimate a prior from
                patterns: dict[bytes, list[int]] = {}
                for r, mask in enumerate(positive):
                    patterns.setdefault(mask.tobytes(), []).append(r)
                groups = [(np.array(rows), np.flatnonzero(positive[rows[0]])) for rows in patterns.values()]
            blocks, rows_info = [], [None] * len(block)
            for rows, idx in groups:
                if err.kind == "level":
                    Y, e, scales = block[rows], sd, np.abs(block[rows]).mean(axis=1)
                else:
                    e = np.sqrt(np.log1p(sd[idx] ** 2))
                    Y, scales = np.log(block[np.ix_(rows, idx)]) + 0.5 * e * e, np.ones(len(rows))
                means, Q, D = _gaussian_posterior_rows(Y, e, rho, idx, scales)
                blocks.append((rows, idx, means, D @ (Q * Q).T))
                for i, r in enumerate(rows.tolist()):
                    rows_info[r] = (idx, Y[i], e * scales[i], rho)
            self._blocks[key] = blocks
            self._rows[key] = rows_info

    def mean(self) -> dict[str, np.ndarray]:
        """The posterior mean forecast, same keys and shapes as the forecast."""
        out = {}
        for key, fc in self.forecast.items():
            arr = fc.copy()
            level = self.model.error(key).kind == "level"
            for rows, idx, means, diag in self._blocks.get(key, ()):
                arr[np.ix_(rows, idx)] = means if level else np.exp(means + 0.5 * diag)
            arr[:, 0] = fc[:, 0]  # now is known: exactly the observed value, not a rounding of it
            out[key] = arr
        return out

    def sample(
        self, rng: np.random.Generator, n: int, antithetic: bool = True
    ) -> list[dict[str, np.ndarray]]:
        """``n`` draws of the truth from the posterior (same keys and shapes as the forecast).

        ``antithetic``: mirrored pairs of normals (``z``, ``-z``; for odd ``n`` the last is
        unpaired), so a pair's mean is the posterior's centre. The export price reuses the import
        price's normals (one market, one error), as the env's draws do."""
        if int(n) < 1:
            raise ValueError(f"n: need at least one scenario (got {n!r})")
        n = int(n)
        out = [{key: fc.copy() for key, fc in self.forecast.items()} for _ in range(n)]
        shared: dict[int, np.ndarray] = {}
        for key, rows in self._rows.items():
            name = _series_name(key)
            follows = name == "price_export" and self.model.export_follows_import
            for r, (idx, y_obs, e, rho) in enumerate(rows):
                m, root = _posterior_root(y_obs, e, rho, idx)
                k = len(idx)
                if follows and r in shared and shared[r].shape[1] == k:
                    z = shared[r]
                else:
                    if antithetic:
                        half = rng.standard_normal(((n + 1) // 2, k))
                        z = np.concatenate([half, -half])[:n]
                    else:
                        z = rng.standard_normal((n, k))
                    if name == "price_import":
                        shared[r] = z
                y = m + z @ root.T
                if self.model.error(key).kind == "relative":
                    y = np.exp(y)
                for w in range(n):
                    out[w][key][r, idx] = y[w]
                    out[w][key][r, 0] = self.forecast[key][r, 0]
        return out


def _gaussian_posterior(
    y: np.ndarray, sd: np.ndarray, rho: float, leads: np.ndarray, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The posterior of ``x`` given ``y = x + e``, ``e ~ N(0, Σ_e)``,
    ``Σ_e = scale²·diag(sd)·rho^|lead distance|·diag(sd)``, prior ``x ~ N(μ, v·I)`` from ``y``
    itself (:class:`ForecastPosterior`): its mean ``m`` and its covariance as ``(Q, d)`` with
    ``C = Q·diag(d)·Qᵀ`` (``d >= 0``).

    With ``Σ_e = scale²·Q·diag(λ)·Qᵀ`` (the eigen-decomposition of the unscaled error covariance,
    cached: it depends only on the error model, the leads and the period length),
    ``K = v·(v·I + Σ_e)⁻¹ = Q·diag(w)·Qᵀ`` with ``w = v / (v + scale²·λ)``, so
    ``m = μ + Q·diag(w)·Qᵀ·(y − μ)`` and ``C = v·(I − K) = Q·diag(v·(1 − w))·Qᵀ``: no inverse
    per row (the mean of a planner on it costs a few matrix-vector products per row)."""
    means, Q, D = _gaussian_posterior_rows(
        np.asarray(y, dtype=np.float64)[None, :], sd, rho, leads, np.array([scale])
    )
    return means[0], Q, D[0]


def _gaussian_posterior_rows(
    Y: np.ndarray, sd: np.ndarray, rho: float, leads: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_gaussian_posterior` of several rows ``Y`` (rows, n) with the same leads and error
    shape, row ``r``'s error scaled by ``scales[r]``: means (rows, n), the shared ``Q`` and ``d`` per
    row (rows, n)."""
    n = Y.shape[1]
    if n < 2:  # no spread to estimate the prior from (callers pass no such row)
        return Y.copy(), np.eye(n), np.zeros_like(Y)
    lam, Q, mean_diag, mean_all = _error_eigen(
        np.ascontiguousarray(sd, dtype=np.float64).tobytes(),
        float(rho),
        np.ascontiguousarray(leads, dtype=np.int64).tobytes(),
    )
    a = np.asarray(scales, dtype=np.float64)[:, None] ** 2
    mu, var = Y.mean(axis=1, keepdims=True), Y.var(axis=1, keepdims=True)
    v = np.maximum(np.maximum(var - a * (mean_diag - mean_all), 0.1 * var), 1e-12)
    w = v / (v + a * lam[None, :])
    means = mu + ((Y - mu) @ Q * w) @ Q.T
    return means, Q, v * (1.0 - w)


def _posterior_root(
    y: np.ndarray, sd: np.ndarray, rho: float, leads: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_gaussian_posterior`'s mean and a square root ``R`` (``R·Rᵀ = C``) of its covariance,
    by the dense formulas (``K = v·(v·I + Σ_e)⁻¹``, ``C = v·(I − K)``, ``R`` from the eigen-
    decomposition of ``C``): the root the draws of :meth:`ForecastPosterior.sample` have always
    used, kept so that a seed makes the same draws."""
    if len(y) < 2:
        return y.copy(), np.zeros((len(y), len(y)))
    dist = np.abs(leads[:, None] - leads[None, :])
    cov_e = sd[:, None] * rho**dist * sd[None, :]
    mu, var = float(y.mean()), float(y.var())
    v = max(var - (float(np.mean(np.diag(cov_e))) - float(cov_e.mean())), 0.1 * var, 1e-12)
    gain = v * np.linalg.inv(v * np.eye(len(y)) + cov_e)
    cov = v * (np.eye(len(y)) - gain)
    w, vec = np.linalg.eigh(0.5 * (cov + cov.T))
    return mu + gain @ (y - mu), vec * np.sqrt(np.maximum(w, 0.0))


@lru_cache(maxsize=512)
def _error_eigen(sd: bytes, rho: float, leads: bytes) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Eigenvalues (clipped at 0) and vectors of ``diag(sd)·rho^|lead distance|·diag(sd)``, with the
    mean of its diagonal and of all its entries (arguments as bytes so that they can be cached)."""
    sd_a = np.frombuffer(sd, dtype=np.float64)
    lead = np.frombuffer(leads, dtype=np.int64)
    cov = sd_a[:, None] * rho ** np.abs(lead[:, None] - lead[None, :]) * sd_a[None, :]
    lam, vec = np.linalg.eigh(cov)
    for arr in (lam, vec):
        arr.flags.writeable = False
    return np.maximum(lam, 0.0), vec, float(np.mean(np.diag(cov))), float(cov.mean())


@lru_cache(maxsize=64)
def _ar1_cholesky(n: int, rho: float) -> np.ndarray:
    """Lower Cholesky factor of the AR(1) correlation matrix ``R[i, j] = rho^|i−j|`` (n × n), in
    closed form: ``L[i, 0] = rho^i``, ``L[i, j] = rho^(i−j)·√(1−rho²)`` for 1 <= j <= i."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    lower = np.where(j <= i, rho ** np.maximum(i - j, 0), 0.0)
    lower[:, 1:] *= math.sqrt(1.0 - rho * rho)
    lower = lower.astype(np.float32)
    lower.flags.writeable = False
    return lower


def _level(
    name: str, price: float, carbon: float, renewable: float, demand: float, cooling: float
) -> ForecastModel:
    """A named level from day-ahead relative errors (``sd_24``) per series; the structure (growth,
    correlation) is the same for every level, only the size of the error differs."""
    rho = {"rho_lead": 0.9, "rho_issue": 0.9}
    return ForecastModel(
        name=name,
        price_import=SeriesError(price, growth=0.3, kind="level", **rho),
        price_export=SeriesError(price, growth=0.3, kind="level", **rho),
        carbon_intensity=SeriesError(carbon, growth=0.5, **rho),
        renewable_mw=SeriesError(renewable, growth=0.5, **rho),
        cooling=SeriesError(cooling, growth=0.5, **rho),
        demand_gpus=SeriesError(demand, growth=0.3, **rho),
    )


# Fixed before any policy was measured on them; sources and reasoning in docs/env.md ("Forecasts").
# sd_24 is a standard deviation; for a Gaussian error MAPE ~ 0.8 sd.
NAMED: dict[str, ForecastModel] = {
    "exact": ForecastModel(name="exact"),
    "good": _level("good", price=0.08, carbon=0.05, renewable=0.20, demand=0.02, cooling=0.03),
    "typical": _level("typical", price=0.15, carbon=0.10, renewable=0.35, demand=0.04, cooling=0.05),
    "poor": _level("poor", price=0.30, carbon=0.20, renewable=0.60, demand=0.08, cooling=0.10),
}


def from_sigma(sigma: float, field: str = "forecast_level") -> ForecastModel:
    """The scalar shorthand: every series gets a mean-one lognormal factor with relative spread
    ``sigma·√l`` at lead ``l`` periods, drawn independently (the env's old ``forecast_noise``,
    which was ``max(0, 1 + sigma·√l·ε)``: same spread, now unbiased and never clipped)."""
    if isinstance(sigma, bool) or not (
        isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0
    ):
        raise ValueError(f"{field}: sigma must be a finite number >= 0 (got {sigma!r})")
    if sigma == 0.0:
        return NAMED["exact"]
    err = SeriesError(float(sigma) * math.sqrt(REFERENCE_LEAD_H), growth=0.5)
    fields = dict.fromkeys(SERIES, err)
    return ForecastModel(name=f"sigma={float(sigma):g}", sigma=float(sigma), **fields)


def forecast_model(spec: str | float | ForecastModel | Mapping[str, Any] | None) -> ForecastModel:
    """A :class:`ForecastModel` from a level name (``LEVELS``), a scaled level ``"LEVEL*FACTOR"``
    (:meth:`ForecastModel.scaled`, e.g. ``"poor*2"``), a scalar ``sigma`` (a float or a numeric
    string), a model (returned as is), a ``to_dict()`` record, or None (exact)."""
    if spec is None:
        return NAMED["exact"]
    if isinstance(spec, ForecastModel):
        return spec
    if isinstance(spec, Mapping):
        try:
            series = {key: SeriesError(**spec["series"][key]) for key in SERIES}
            return ForecastModel(
                name=str(spec["name"]),
                sigma=spec.get("sigma"),
                export_follows_import=bool(spec.get("export_follows_import", True)),
                **series,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"forecast_level: not a ForecastModel record ({exc!r})") from exc
    if isinstance(spec, str):
        if spec in NAMED:
            return NAMED[spec]
        if "*" in spec:
            name, _, factor = (part.strip() for part in spec.partition("*"))
            if name not in NAMED:
                raise ValueError(
                    f"forecast_level: {spec!r} scales an unknown level {name!r}; write LEVEL*FACTOR "
                    f"with LEVEL one of {LEVELS}, e.g. 'poor*2'"
                )
            try:
                value = float(factor)
            except ValueError:
                raise ValueError(
                    f"forecast_level: {spec!r}: the factor after '*' must be a number (got {factor!r})"
                ) from None
            return NAMED[name].scaled(value)
        try:
            value = float(spec)
        except ValueError:
            raise ValueError(
                f"forecast_level: unknown level {spec!r}; choose one of {LEVELS}, a level scaled "
                "as LEVEL*FACTOR (e.g. 'poor*2') or a number (sigma)"
            ) from None
        return from_sigma(value)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return from_sigma(float(spec))
    raise ValueError(f"forecast_level: expected a level name, a number or a ForecastModel (got {spec!r})")


def resolve_forecast(
    forecast_level: str | float | ForecastModel | None, forecast_noise: float | None = None
) -> ForecastModel:
    """The env's forecast model from its two arguments: ``forecast_level`` (:func:`forecast_model`)
    and the older shorthand ``forecast_noise=sigma`` (:func:`from_sigma`); both given and different
    is an error naming both."""
    model = forecast_model(forecast_level)
    if forecast_noise is None:
        return model
    from_noise = from_sigma(forecast_noise, field="forecast_noise")
    if forecast_level is not None and from_noise != model:
        raise ValueError(
            f"forecast_level={model.name!r} and forecast_noise={forecast_noise!r} disagree; "
            "pass only one (forecast_noise=sigma is shorthand for forecast_level=sigma)"
        )
    return from_noise
