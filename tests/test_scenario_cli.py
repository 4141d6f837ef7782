"""The evaluation CLIs (evaluate.py, ``python -m agents.diagnose``): ``--scenario PATH`` (a user's
scenario JSON, folder or data spec end to end, named by its source name; bad input fails before any
work with one line), the sweep cache's checks on read, and Ctrl-C."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.evaluation import evaluate, heldout_scenarios
from envs.presets import PRESETS
from envs.scenario import ScenarioError
from tests.conftest import make_tiny

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "data_spec.yaml"
HELDOUT = [f"spec-example@2023-03-{d}T00" for d in (18, 19, 20, 21)]


@pytest.fixture
def tiny_json(tmp_path: Path) -> Path:
    """A 2-site, 6-period scenario: no preset has these shapes, so the env must take the scenario's."""
    sc = make_tiny(T=6, S=2, name="not-the-file-name")
    assert all((p["S"], p["T"]) != (2, 6) for p in PRESETS.values())
    path = tmp_path / "my-day.json"
    sc.to_json(path)
    return path


def _evaluate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "evaluate.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_heldout_scenarios_of_each_kind_of_source(tmp_path: Path, tiny_json: Path) -> None:
    spec, info = heldout_scenarios(SPEC)
    assert [name for name, _ in spec] == HELDOUT and info["evaluated"] == "held-out"
    assert all(sc.T == 24 and sc.S == 3 for _, sc in spec)
    (single,), info = heldout_scenarios(tiny_json)
    assert single[0] == "my-day" and single[1].S == 2 and info["evaluated"] == "all"
    split = tmp_path / "split"
    for which, names in (("train", ["a"]), ("heldout", ["c", "b"])):
        (split / which).mkdir(parents=True)
        for n in names:
            shutil.copy(tiny_json, split / which / f"{n}.json")
    chosen, info = heldout_scenarios(split)
    assert [name for name, _ in chosen] == ["b", "c"] and info["evaluated"] == "held-out"
    only_train = tmp_path / "only_train"
    (only_train / "train").mkdir(parents=True)
    shutil.copy(tiny_json, only_train / "train" / "a.json")
    with pytest.raises(ScenarioError, match="no held-out scenarios"):
        heldout_scenarios(only_train)


def test_evaluate_rejects_mixing_preset_and_scenarios(tiny_json: Path) -> None:
    (named,), _ = heldout_scenarios(tiny_json)
    with pytest.raises(ValueError, match="not both"):
        evaluate(["greedy"], "paper", None, scenarios=[named])


@pytest.mark.slow
def test_evaluate_cli_on_a_scenario_json(tmp_path: Path, tiny_json: Path) -> None:
    out = tmp_path / "res"
    proc = _evaluate_cli(
        "--scenario", str(tiny_json), "--policies", "greedy,oracle", "--out", str(out), "--json",
        "--workers", "2", "--no-plots",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["policy"], r["scenario"], r["preset"], r["seed"]) for r in rows] == [
        ("greedy", "my-day", None, None),
        ("oracle", "my-day", None, None),
    ]
    greedy, oracle = rows
    assert oracle["benefit_usd"] == pytest.approx(oracle["oracle_benefit_usd"], abs=1e-4)
    assert greedy["benefit_usd"] <= oracle["oracle_benefit_usd"] + 1e-6
    assert sorted(p.name for p in (out / "items").iterdir()) == ["greedy-my-day.json", "oracle-my-day.json"]
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["scenarios"] == ["my-day"] and meta["preset"] is None
    assert meta["source"]["path"] == str(tiny_json) and meta["source"]["evaluated"] == "all"
    header, *lines = (out / "results.csv").read_text().splitlines()
    assert "scenario" in header.split(",") and all(",my-day," in line for line in lines)


@pytest.mark.slow
def test_evaluate_cli_scores_the_held_out_windows_of_a_data_spec(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = _evaluate_cli(
        "--scenario", str(SPEC), "--policies", "greedy,carbon_greedy", "--out", str(out), "--workers", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "data_spec.yaml: 4 held-out scenarios" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["scenarios"] == HELDOUT
    assert [(r["policy"], r["scenario"]) for r in data["rows"]] == [
        (p, n) for p in ("greedy", "carbon_greedy") for n in HELDOUT
    ]
    assert all(r["oracle_benefit_usd"] >= r["benefit_usd"] - 1e-6 for r in data["rows"])
    keys = sorted(p.stem for p in (out / "items").iterdir())
    assert "oracle-spec-example_2023-03-18T00" in keys and len(keys) == 3 * 4
    assert (out / "dispatch.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "/no/such/file.json"], "does not exist"),
        (["--scenario", "{bad}", "--seeds", "0-3"], "without --seeds and --preset"),
        (["--scenario", "{bad}", "--preset", "week"], "without --seeds and --preset"),
        (["--scenario", "{bad}"], "not valid JSON"),
        (["--scenario", "{txt}"], "expected a .json scenario"),
    ],
)
@pytest.mark.parametrize("cli", ["evaluate", "diagnose"])
def test_bad_scenario_input_is_one_line_before_any_work(tmp_path, capsys, cli, args, message) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    argv = [a.replace("{bad}", str(bad)).replace("{txt}", str(txt)) for a in args]
    if cli == "evaluate":
        import evaluate as entry

        argv += ["--policies", "greedy", "--out", str(tmp_path / "out")]
    else:
        from agents import diagnose as entry

        argv += ["--model", "greedy", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        entry.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and message in err[-1], err
    assert not (tmp_path / "out").exists()  # nothing was run or written


@pytest.mark.slow
def test_diagnose_on_a_scenario_json_and_a_data_spec(tmp_path, capsys, tiny_json) -> None:
    from agents.diagnose import main

    out = tmp_path / "diag"
    assert main(["--model", "greedy", "--scenario", str(tiny_json), "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["rows"]
    assert row["scenario"] == "my-day" and row["seed"] is None and data["scenario"] == str(tiny_json)
    assert sum(row["parts_usd"].values()) == pytest.approx(
        row["benefit_usd"]["oracle"] - row["benefit_usd"]["policy"]
    )
    assert [p.name for p in (out / "items").iterdir()] == ["my-day.json"]

    argv = ["--model", "carbon_greedy", "--scenario", str(SPEC), "--out", str(out), "--workers", "2"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["scenario"] for r in data["rows"]] == HELDOUT and data["summary"]["scenarios"] == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "items").iterdir()}
    assert main(argv) == 0  # the second run reads the cache: no item is written again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "items").iterdir()} == stamps
    text = capsys.readouterr().out
    assert "on 4 held-out data_spec.yaml scenarios" in text and "job_choice" in text


# ---------------------------------------------------------------------- the sweep cache and Ctrl-C
def test_invalid_cached_items_are_recomputed_with_a_warning(tmp_path: Path) -> None:
    import warnings

    from oracle.executor import StaleItemWarning

    first = evaluate(["greedy"], "paper", [0], out_dir=tmp_path, max_workers=1, progress=False)
    benefit = first.rows[0]["benefit_usd"]
    path = tmp_path / "items" / "greedy-paper-0.json"
    good = json.loads(path.read_text())

    def broken(change) -> dict:
        stored = json.loads(json.dumps(good))
        change(stored)
        return stored

    cases = {
        "empty result": broken(lambda d: d.update(result={})),
        "no benefit": broken(lambda d: d["result"].pop("benefit_usd")),
        "NaN benefit": broken(lambda d: d["result"].update(benefit_usd=float("nan"))),
        "no scenario": broken(lambda d: d["result"].pop("scenario")),
    }
    for name, stored in cases.items():
        path.write_text(json.dumps(stored))
        with pytest.warns(StaleItemWarning, match="greedy-paper-0.json: invalid stored sweep item"):
            again = evaluate(["greedy"], "paper", [0], out_dir=tmp_path, max_workers=1, progress=False)
        assert again.rows[0]["benefit_usd"] == benefit, name
        assert json.loads(path.read_text())["result"]["benefit_usd"] == benefit, name
    # a well-formed result of other settings is stale, not invalid: rerun without a warning
    path.write_text(json.dumps(broken(lambda d: d["result"].update(fingerprint="other", benefit_usd=1.0))))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleItemWarning)
        again = evaluate(["greedy"], "paper", [0], out_dir=tmp_path, max_workers=1, progress=False)
    assert again.rows[0]["benefit_usd"] == benefit


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the next sweep finish its first ``n`` items, then raise KeyboardInterrupt (a Ctrl-C)."""
    import oracle.executor as executor

    real = executor.run_sweep

    def interrupted(fn, items, **kw):
        real(fn, items[:n], **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(executor, "run_sweep", interrupted)


def test_ctrl_c_in_evaluate_says_what_is_cached_and_exits_130(tmp_path, capfd, monkeypatch) -> None:
    import evaluate as cli

    out = tmp_path / "res"
    argv = ["--policies", "greedy", "--seeds", "0-1", "--out", str(out), "--workers", "1", "--no-plots"]
    _interrupt_after(monkeypatch, 1)
    assert cli.main(argv) == 130
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [
        f"interrupted: 1 finished item cached in {out / 'items'}; re-run the same command to resume from them"
    ]
    (cached,) = (out / "items").iterdir()
    stamp = cached.stat().st_mtime_ns
    monkeypatch.undo()
    assert cli.main(argv) == 0  # the same command resumes: the cached item is read, not rerun
    assert cached.stat().st_mtime_ns == stamp and len(list((out / "items").iterdir())) == 4
    assert "Traceback" not in capfd.readouterr().err


def test_ctrl_c_in_diagnose_says_what_is_cached_and_exits_130(tmp_path, capfd, monkeypatch) -> None:
    from agents.diagnose import main

    out = tmp_path / "diag"
    argv = ["--model", "greedy", "--seeds", "3,4", "--out", str(out), "--workers", "1"]
    _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line == (
        f"interrupted: 1 finished item cached in {out / 'items'}; "
        "re-run the same python -m agents.diagnose command to resume from them"
    )
    monkeypatch.undo()
    assert main([*argv, "--json"]) == 0
    assert [r["seed"] for r in json.loads(capfd.readouterr().out)["rows"]] == [3, 4]
