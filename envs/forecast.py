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
    """A :class:`ForecastModel` from a level name (``LEVELS``), a scalar ``sigma`` (a float or a
    numeric string), a model (returned as is), a ``to_dict()`` record, or None (exact)."""
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
        try:
            value = float(spec)
        except ValueError:
            raise ValueError(
                f"forecast_level: unknown level {spec!r}; choose one of {LEVELS} or a number"
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
