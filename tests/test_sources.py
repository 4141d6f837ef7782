"""Scenario sources (envs/sources.py): JSON files, folders and data specs; disjoint date splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from envs import make_scenario
from envs.scenario import ScenarioError
from envs.sources import load_scenarios

SPEC = Path(__file__).resolve().parents[1] / "examples" / "data_spec.yaml"


@pytest.fixture(scope="module")
def spec_source():
    return load_scenarios(SPEC)


def test_spec_windows_of_different_splits_never_overlap(spec_source):
    periods = {}
    for which in ("train", "validation", "heldout"):
        part = spec_source.split(which)
        assert len(part) > 0
        stamps = set()
        for _, sc in part:
            assert sc.T == 24
        for name in part.names():
            start = pd.Timestamp(name.split("@")[1] + ":00", tz="UTC")
            stamps |= set(pd.date_range(start, periods=24, freq="h"))
        periods[which] = stamps
    assert not periods["train"] & periods["validation"]
    assert not periods["train"] & periods["heldout"]
    assert not periods["validation"] & periods["heldout"]
    recorded = spec_source.to_dict()["split"]
    assert recorded["heldout"] == ["2023-03-18T00:00:00Z", "2023-03-22T00:00:00Z"]


def test_spec_draws_only_inside_the_train_range(spec_source):
    lo, hi = (pd.Timestamp(x) for x in spec_source.to_dict()["split"]["train"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        sc = spec_source.draw(rng)
        start = pd.Timestamp(sc.name.split("@")[1].split("~")[0] + ":00", tz="UTC")
        assert lo <= start and start + pd.Timedelta(hours=sc.T) <= hi


def test_spec_is_reproducible_and_records_the_weather_path(spec_source):
    name, sc = spec_source.heldout()[0]
    assert name == "spec-example@2023-03-18T00" == sc.name
    again = load_scenarios(SPEC).split("heldout").get(name)
    assert again == sc
    np.testing.assert_array_equal(again.demand_gpus, sc.demand_gpus)
    a = spec_source.draw(np.random.default_rng(7))
    b = spec_source.draw(np.random.default_rng(7))
    assert a == b
    sources = spec_source.to_dict()["renewable_source"]
    assert "solar_cf column" in sources[0]
    assert "pvlib from cloud_cover_pct" in sources[2] and "windpowerlib from wind_kmh" in sources[2]


def test_overlapping_splits_are_an_error(tmp_path):
    spec = yaml.safe_load(SPEC.read_text())
    spec["split"]["validation"] = ["2023-03-14", "2023-03-18"]
    shutil.copytree(SPEC.parent / "spec", tmp_path / "spec")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ScenarioError, match=r"split\.validation: starts .* before split\.train ends"):
        load_scenarios(path)


def test_json_folder_loads(tmp_path):
    for seed in range(3):
        make_scenario("paper", seed).to_json(tmp_path / f"day{seed}.json")
    src = load_scenarios(tmp_path)
    assert src.names() == ["day0", "day1", "day2"]
    assert [sc for _, sc in src] == [make_scenario("paper", s) for s in range(3)]
    assert src.to_dict()["split"].startswith("none")
    assert src.draw(np.random.default_rng(0)) in [make_scenario("paper", s) for s in range(3)]


def test_json_folder_with_split_subfolders(tmp_path):
    for which, seeds in (("train", (0, 1)), ("heldout", (2,))):
        (tmp_path / which).mkdir()
        for seed in seeds:
            make_scenario("paper", seed).to_json(tmp_path / which / f"s{seed}.json")
    src = load_scenarios(tmp_path)
    assert src.split("train").names() == ["s0", "s1"]
    assert [name for name, _ in src.heldout()] == ["s2"]
    assert src.split("validation").names() == []


def test_single_json_and_bad_paths(tmp_path):
    path = tmp_path / "one.json"
    make_scenario("paper", 0).to_json(path)
    assert [name for name, _ in load_scenarios(path)] == ["one"]
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios(tmp_path / "missing.json")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ScenarioError, match=r"expected a \.json scenario"):
        load_scenarios(tmp_path / "x.txt")
