"""``python -m oracle --scenario PATH`` with a folder or a data spec: one schedule per scenario of
the chosen split, named by the source's scenario names; bad combinations fail before any solve."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.sources import load_scenarios
from oracle.__main__ import main
from oracle.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "data_spec.yaml"


def test_spec_heldout_windows_each_get_a_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schedules"
    assert main(["--scenario", str(SPEC), "--out", str(out), "--time-limit", "60"]) == 0
    names = [name for name, _ in load_scenarios(SPEC).heldout()]
    written = sorted(p.stem for p in out.glob("*.json"))
    assert written == sorted(names) and len(names) >= 2
    for name in names:
        sch = Schedule.from_json(out / f"{name}.json")
        assert sch.status == "optimal" and sch.scenario.name.startswith("spec-example")
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)


def test_split_choice_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # compare solves six configurations of ONE scenario: a spec's several windows are refused.
    assert main(["compare", "--scenario", str(SPEC)]) == 2
    assert "compare takes one scenario" in capsys.readouterr().err
    assert main(["--scenario", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--split", "train"]) == 2  # a preset has no splits
    assert "--split" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["--scenario", str(SPEC), "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err
