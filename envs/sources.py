"""Scenario sources: a user's scenarios as one object every entry point and the trainer can take.

Contract (the CLIs' ``--scenario PATH`` and the training pipeline call exactly this):

``load_scenarios(path) -> ScenarioSource`` accepts

- a **scenario JSON** file (``Scenario.to_json``): one scenario named after the file;
- a **folder** of them: every ``*.json`` in it, sorted by name. If the folder has sub-folders
  ``train/``, ``validation/`` and/or ``heldout/``, their files form those splits; otherwise the
  source is *unsplit* and every split is the whole set (stated in ``to_dict()["split"]``);
- a **data spec** YAML file (``.yaml``/``.yml``; see ``examples/data_spec.yaml`` and docs/data.md):
  CSV files per site (read once through :func:`envs.data.load_site_series`), how to cut windows
  (``length_h``, ``step_h``), how to draw jobs and inference (the presets' generators, or given),
  and a train/validation/held-out split by date.

A :class:`ScenarioSource` then

- iterates as ``(name, Scenario)`` pairs: ``name`` is the file stem, or ``"spec@2023-03-05T00"`` for
  a window (its first period, UTC, in the spec's name) — results name scenarios by this;
- ``split("train" | "validation" | "heldout")`` returns the source restricted to one split;
- ``draw(rng)`` returns a random *training* scenario (spec: a window starting at any period of the
  train range, with a job set drawn from ``rng``; files: a uniformly drawn train scenario);
- ``heldout()`` lists the held-out ``(name, Scenario)`` pairs (fixed, reproducible);
- ``to_dict()`` records what it is: the path, the kind, the split dates and the window names.

Windows of one split lie entirely inside that split's date range and the ranges may not overlap,
so windows of different splits never share a period. Every random draw comes from the ``rng``
passed to ``draw`` or from the spec's ``seed`` (the fixed windows' jobs), never from global state.
Scenarios are built on demand and cached per name; a spec's CSVs are read once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from envs.data import SiteSeries, load_site_series, scenario_from_series
from envs.presets import draw_demand, draw_jobs, inference_classes
from envs.rules import greedy_workload, grid_only_emissions_t
from envs.scenario import Scenario, ScenarioError, TrainingJob
from envs.weather import SiteWeather

SPLITS = ("train", "validation", "heldout")
SPEC_KEYS = {"name", "sites", "windows", "workload", "split", "export_price_factor", "carbon", "tz", "seed"}


def load_scenarios(path: str | Path) -> ScenarioSource:
    """A scenario JSON, a folder of them, or a data spec YAML file -> :class:`ScenarioSource`."""
    path = Path(path)
    if path.is_dir():
        return _folder_source(path)
    if not path.exists():
        raise ScenarioError(
            f"scenario: {path} does not exist (give a scenario JSON, a folder, or a data spec)"
        )
    if path.suffix.lower() in (".yaml", ".yml"):
        return SpecSource.from_file(path)
    if path.suffix.lower() == ".json":
        return FileSource(
            path=path, files={"train": [path], "validation": [path], "heldout": [path]}, split_kind=None
        )
    raise ScenarioError(f"scenario: {path}: expected a .json scenario, a folder, or a .yaml data spec")


def week_jobs(rng: np.random.Generator, S: int, T: int = 168, J: int = 40) -> tuple[TrainingJob, ...]:
    """J jobs over a T-period horizon (default a week of 168 h) from the presets' job generator."""
    return draw_jobs(rng, S, T, J)


class ScenarioSource:
    """Named scenarios with train/validation/held-out splits (see the module docstring)."""

    kind: str = ""
    current: str | None = None  # the split this view is restricted to (None: the whole source)

    def names(self) -> list[str]:
        raise NotImplementedError

    def get(self, name: str) -> Scenario:
        raise NotImplementedError

    def split(self, which: str) -> ScenarioSource:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator) -> Scenario:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[str, Scenario]]:
        for name in self.names():
            yield name, self.get(name)

    def __len__(self) -> int:
        return len(self.names())

    def heldout(self) -> list[tuple[str, Scenario]]:
        """The held-out scenarios, in order."""
        return list(self.split("heldout"))


def _check_split(which: str) -> None:
    if which not in SPLITS:
        raise ScenarioError(f"split: {which!r} is not one of {SPLITS}")


# ----------------------------------------------------------------------------- JSON files
@dataclass
class FileSource(ScenarioSource):
    """Scenario JSON files; ``files`` maps each split to its files (unsplit: the same list thrice)."""

    path: Path
    files: dict[str, list[Path]]
    split_kind: str | None  # "folders" (train/ validation/ heldout/ sub-folders) or None (unsplit)
    current: str | None = None
    kind: str = "json"
    _cache: dict[str, Scenario] = field(default_factory=dict, repr=False)

    def _paths(self) -> list[Path]:
        if self.current is not None:
            return self.files[self.current]
        seen: dict[str, Path] = {}
        for which in SPLITS:
            for p in self.files[which]:
                seen.setdefault(p.stem, p)
        return list(seen.values())

    def names(self) -> list[str]:
        return [p.stem for p in self._paths()]

    def get(self, name: str) -> Scenario:
        if name not in self._cache:
            match = [p for which in SPLITS for p in self.files[which] if p.stem == name]
            if not match:
                raise ScenarioError(f"scenario: no scenario named {name!r} in {self.path}")
            try:
                self._cache[name] = Scenario.from_json(match[0])
            except (OSError, ValueError) as exc:
                raise ScenarioError(f"{match[0]}: not a scenario JSON ({exc})") from exc
        return self._cache[name]

    def split(self, which: str) -> FileSource:
        _check_split(which)
        return FileSource(self.path, self.files, self.split_kind, which, self.kind, self._cache)

    def draw(self, rng: np.random.Generator) -> Scenario:
        names = self.split("train").names() if self.current is None else self.names()
        if not names:
            raise ScenarioError(f"scenario: {self.path} has no training scenarios to draw from")
        return self.get(names[int(rng.integers(len(names)))])

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": "json-folder" if self.path.is_dir() else "json",
            "split": self.split_kind or "none (every split is the whole set)",
            "scenarios": {which: [p.stem for p in self.files[which]] for which in SPLITS},
        }


def _folder_source(folder: Path) -> FileSource:
    subs = {which: sorted((folder / which).glob("*.json")) for which in SPLITS if (folder / which).is_dir()}
    if subs:
        files = {which: subs.get(which, []) for which in SPLITS}
        return FileSource(path=folder, files=files, split_kind="folders")
    found = sorted(folder.glob("*.json"))
    if not found:
        raise ScenarioError(f"scenario: folder {folder} holds no *.json scenario files")
    return FileSource(path=folder, files={which: found for which in SPLITS}, split_kind=None)


# ----------------------------------------------------------------------------- a data spec
@dataclass
class SpecSource(ScenarioSource):
    """Windows cut from a data spec's long CSV series (see ``examples/data_spec.yaml``)."""

    path: Path
    spec: dict[str, Any]
    series: SiteSeries
    ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]]  # split -> [start, end) UTC
    current: str | None = None
    kind: str = "spec"
    _cache: dict[str, Scenario] = field(default_factory=dict, repr=False)

    @classmethod
    def from_file(cls, path: Path) -> SpecSource:
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(spec, dict):
            raise ScenarioError(f"{path}: a data spec is a mapping (name, sites, windows, workload, split)")
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise ScenarioError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
        sites = spec.get("sites")
        if not isinstance(sites, list) or not sites:
            raise ScenarioError(f"{path}: sites: a list of sites, each with a csv path")
        csvs, solar, wind, weather = [], [], [], []
        for s, site in enumerate(sites):
            if not isinstance(site, dict) or "csv" not in site:
                raise ScenarioError(f"{path}: sites[{s}].csv: missing")
            csvs.append((path.parent / site["csv"]).resolve())
            solar.append(float(site.get("solar_mw", 0.0)))
            wind.append(float(site.get("wind_mw", 0.0)))
            w = site.get("weather")
            try:
                weather.append(SiteWeather(**w) if w is not None else None)
            except TypeError as exc:
                raise ScenarioError(f"{path}: sites[{s}].weather: {exc}") from exc
        series = load_site_series(
            csvs,
            solar_mw=solar,
            wind_mw=wind,
            export_price_factor=spec.get("export_price_factor"),
            tz=spec.get("tz"),
            weather=weather,
        )
        ranges = _split_ranges(path, spec.get("split"), series)
        out = cls(path=path, spec=spec, series=series, ranges=ranges)
        out._check_windows()
        return out

    # -- the spec's settings
    @property
    def name(self) -> str:
        return str(self.spec.get("name", self.path.stem))

    @property
    def length(self) -> int:
        return self._hours_to_periods("length_h", 24)

    @property
    def step(self) -> int:
        return self._hours_to_periods("step_h", self.length * self.series.dt_h)

    def _hours_to_periods(self, key: str, default: float) -> int:
        hours = (self.spec.get("windows") or {}).get(key, default)
        n = hours / self.series.dt_h
        if not (isinstance(hours, (int, float)) and hours > 0 and n == int(n)):
            raise ScenarioError(
                f"{self.path}: windows.{key}: a positive whole number of periods (got {hours!r})"
            )
        return int(n)

    def _check_windows(self) -> None:
        if self.length < 13:
            raise ScenarioError(f"{self.path}: windows.length_h: at least 13 periods so that job windows fit")
        for which in SPLITS:
            if which in self.ranges and not self._starts(which):
                lo, hi = self.ranges[which]
                raise ScenarioError(
                    f"{self.path}: split.{which}: {lo} .. {hi} holds no whole {self.length}-period window"
                )

    # -- windows
    def _starts(self, which: str) -> list[int]:
        """Window starts of a split: every ``step`` periods from the range start, whole windows only."""
        if which not in self.ranges:
            return []
        lo, hi = self.ranges[which]
        idx = self.series.index
        first = int(idx.searchsorted(lo))
        end = int(idx.searchsorted(hi))  # exclusive
        return list(range(first, end - self.length + 1, self.step))

    def window_name(self, start: int) -> str:
        return f"{self.name}@{self.series.index[start].strftime('%Y-%m-%dT%H')}"

    def names(self) -> list[str]:
        which = [self.current] if self.current is not None else list(SPLITS)
        return [self.window_name(i) for w in which for i in self._starts(w)]

    def _start_of(self, name: str) -> int:
        for which in SPLITS:
            for i in self._starts(which):
                if self.window_name(i) == name:
                    return i
        raise ScenarioError(f"scenario: no window named {name!r} in {self.path}")

    def get(self, name: str) -> Scenario:
        if name not in self._cache:
            start = self._start_of(name)
            # fixed windows draw their workload from the spec's seed and the window's position
            rng = np.random.default_rng(
                np.random.SeedSequence(int(self.spec.get("seed", 0)), spawn_key=(start,))
            )
            self._cache[name] = self.build(start, rng, name)
        return self._cache[name]

    def build(self, start: int, rng: np.random.Generator, name: str | None = None) -> Scenario:
        """The scenario of the window starting at period ``start``, its workload drawn from ``rng``."""
        series = self.series.window(start, self.length)
        workload = self.spec.get("workload") or {}
        S, T = series.S, series.T
        given = workload.get("jobs")
        if isinstance(given, list):
            jobs = tuple(TrainingJob(**{**j, "eligible": tuple(j["eligible"])}) for j in given)
        else:
            n = int(workload.get("n_jobs", round(6 * T / 24)))
            jobs = draw_jobs(rng, S, T, n)
        K = int(workload.get("n_classes", S))
        classes = inference_classes(S, K)
        demand = draw_demand(rng, series.local_hour(), K)
        carbon = self.spec.get("carbon") or {}
        sc = scenario_from_series(
            series,
            jobs=jobs,
            classes=classes,
            demand_gpus=demand,
            name=name or self.window_name(start),
            carbon_price_usd_per_t=float(carbon.get("price_usd_per_t", 0.0)),
        )
        factor = carbon.get("budget_factor")
        if factor is not None:
            reference = grid_only_emissions_t(sc, *greedy_workload(sc))
            sc = sc.replace(carbon_budget_t=float(math.floor(float(factor) * reference * 100.0) / 100.0))
        return sc

    def split(self, which: str) -> SpecSource:
        _check_split(which)
        return SpecSource(self.path, self.spec, self.series, self.ranges, which, self.kind, self._cache)

    def draw(self, rng: np.random.Generator) -> Scenario:
        """A training window starting at any period of the train range (not only on the ``step`` grid)."""
        if "train" not in self.ranges:
            raise ScenarioError(f"{self.path}: split.train: missing, nothing to draw training windows from")
        starts = self._starts("train")
        first, last = starts[0], self._last_start("train")
        start = int(rng.integers(first, last + 1))
        return self.build(start, rng, f"{self.window_name(start)}~draw")

    def _last_start(self, which: str) -> int:
        hi = self.ranges[which][1]
        return int(self.series.index.searchsorted(hi)) - self.length

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": "spec",
            "name": self.name,
            "sites": [str(p) for p in self.series.paths],
            "renewable_source": list(self.series.renewable_source),
            "window_h": self.length * self.series.dt_h,
            "step_h": self.step * self.series.dt_h,
            "split": {w: [_iso(lo), _iso(hi)] for w, (lo, hi) in self.ranges.items()},
            "windows": {w: [self.window_name(i) for i in self._starts(w)] for w in SPLITS},
            "seed": int(self.spec.get("seed", 0)),
        }


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_ranges(path: Path, split: Any, series: SiteSeries) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Each split's [start, end) in UTC from the spec (naive dates = UTC); ranges must not overlap."""
    if not isinstance(split, dict) or not split:
        raise ScenarioError(f"{path}: split: give train/validation/heldout as [start, end) date pairs")
    ranges = {}
    for which, bounds in split.items():
        _check_split(which)
        if not (isinstance(bounds, Sequence) and len(bounds) == 2):
            raise ScenarioError(f"{path}: split.{which}: a [start, end) pair of dates (got {bounds!r})")
        lo, hi = (_utc(path, which, b) for b in bounds)
        if not lo < hi:
            raise ScenarioError(f"{path}: split.{which}: start {lo} is not before end {hi}")
        ranges[which] = (lo, hi)
    ordered = sorted(ranges.items(), key=lambda kv: kv[1][0])
    for (a, (_, a_hi)), (b, (b_lo, _)) in itertools.pairwise(ordered):
        if b_lo < a_hi:
            raise ScenarioError(
                f"{path}: split.{b}: starts {b_lo} before split.{a} ends {a_hi}; splits may not overlap"
            )
    return ranges


def _utc(path: Path, which: str, value: Any) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{path}: split.{which}: not a date ({value!r})") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
