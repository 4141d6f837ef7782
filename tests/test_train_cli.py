"""The train.py and ``python -m bench`` command lines: every input checked before any work, --resume
against the run's config.json, Ctrl-C as one line with the command that resumes (issue 14)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import train
from agents import pipeline
from agents.pipeline import TrainConfig, resumed_config, stage_seeds

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--bc-scenarios",
    "2",
    "--bc-epochs",
    "1",
    "--dagger-rounds",
    "0",
    "--eval-scenarios",
    "1",
    "--ensemble",
    "1",
    "--no-progress",
]


def _error(capsys, argv: list[str]) -> str:
    """The error line of a parse that must fail with exit status 2."""
    with pytest.raises(SystemExit) as exc:
        train.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("train.py: error: ")
    return err[-1]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--seed", "-5"], "--seed"),
        (["--seed", str(2**32)], "--seed"),
        (["--n-envs", "0"], "--n-envs"),
        (["--torch-threads", "0"], "--torch-threads"),
        (["--eval-freq", "0"], "--eval-freq"),
        (["--checkpoint-freq", "-1"], "--checkpoint-freq"),
        (["--eval-scenarios", "0"], "--eval-scenarios"),
        (["--bc-scenarios", "0"], "--bc-scenarios"),
        (["--bc-epochs", "0"], "--bc-epochs"),
        (["--dagger-scenarios", "0"], "--dagger-scenarios"),
        (["--dagger-rounds", "-1"], "--dagger-rounds"),
        (["--timesteps", "-10"], "--timesteps"),
        (["--no-bc"], "--timesteps"),
        (["--ensemble", "0"], "--ensemble"),
        (["--noise-draws", "0"], "--noise-draws"),
        (["--exact-draws", "-1"], "--exact-draws"),
        (["--noise-draws", "2", "--exact-draws", "3"], "--exact-draws"),
        (["--oracle-time-limit", "0"], "--oracle-time-limit"),
        (["--oracle-time-limit", "nan"], "--oracle-time-limit"),
        (["--demo-mip-gap", "1"], "--demo-mip-gap"),
        (["--learning-rate=-1e-4"], "--learning-rate"),
        (["--ft-log-std", "inf"], "--ft-log-std"),
        (["--workers", "0"], "--workers"),
        (["--ft-bc-steps", "-1"], "--ft-bc-steps"),
        (["--ft-bc-lr", "0"], "--ft-bc-lr"),
        (["--forecast-level", "typcal"], "--forecast-level"),
        (["--forecast-level", "poor*x"], "--forecast-level"),
        (["--forecast-level", "poor*-1"], "--forecast-level"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_flag(capsys, tmp_path, argv, flag) -> None:
    line = _error(capsys, [*argv, "--out", str(tmp_path / "run")])
    assert re.search(rf"error: (argument )?{flag}: ", line), line
    assert not (tmp_path / "run").exists()


def test_forecast_level_takes_a_scaled_level(tmp_path) -> None:
    args = train.parse_args(["--forecast-level", "poor * 2", "--out", str(tmp_path / "run")])
    assert args.forecast_level == "poor*2"


def test_seed_range_counts_the_ensemble_members(capsys, tmp_path) -> None:
    top = 2**32 - 1
    assert train.parse_args(["--seed", str(top), "--ensemble", "1", "--out", str(tmp_path)]).seed == top
    assert "--seed: must be at most 4294967291" in _error(
        capsys, ["--seed", str(top), "--out", str(tmp_path)]
    )


def test_out_must_be_creatable(capsys, tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a folder" in _error(capsys, ["--out", str(a_file)])
    assert "is a file, so" in _error(capsys, ["--out", str(a_file / "run")])
    deep = tmp_path / "a" / "b" / "run"
    assert train.parse_args(["--out", str(deep)]).out == str(deep)
    assert not (tmp_path / "a").exists()  # the probe leaves nothing behind


def test_resume_needs_a_run(capsys, tmp_path) -> None:
    assert "does not exist" in _error(capsys, ["--resume", "--out", str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in _error(capsys, ["--resume", "--out", str(tmp_path / "empty")])
    assert "only with --resume" in _error(capsys, ["--resume-with-changes", "--out", str(tmp_path)])


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as the first stage leaves it (config.json), made from train.py's own flags."""
    out = tmp_path / "run"
    args = train.parse_args([*TINY, "--out", str(out), "--bc-epochs", "3", "--workers", "2"])
    stage_seeds(train.config_from_args(args), resume=False)
    return out


def test_resume_refuses_changed_flags_and_lists_each(capsys, run_folder) -> None:
    out = str(run_folder)
    # The same flags, none at all, runtime flags and more fine-tuning steps are not changes.
    assert train.parse_args(["--resume", "--out", out]).apply == set()
    assert train.parse_args(["--resume", "--out", out, *TINY, "--bc-epochs", "3"]).apply == set()
    assert (
        train.parse_args(["--resume", "--out", out, "--workers", "1", "--torch-threads", "2"]).apply == set()
    )
    assert train.parse_args(["--resume", "--out", out, "--timesteps", "500"]).apply == set()

    line = _error(
        capsys, ["--resume", "--out", out, "--bc-epochs", "7", "--seed", "4", "--no-window-features"]
    )
    assert (
        "--bc-epochs 3 -> 7" in line and "--seed 0 -> 4" in line and "--window-features True -> False" in line
    )
    assert "--resume-with-changes" in line

    args = train.parse_args(["--resume", "--out", out, "--bc-epochs", "7", "--resume-with-changes"])
    assert args.apply == {"bc_epochs"}
    cfg, _ = resumed_config(train.config_from_args(args), args.apply)
    assert cfg.bc_epochs == 7 and cfg.bc_scenarios == 2 and cfg.ensemble == 1


def test_resume_refuses_changes_that_would_reshape_the_networks(capsys, run_folder) -> None:
    out = str(run_folder)
    for flags, named in (
        (["--hp", "net_arch=[64, 64]"], "net_arch"),
        (["--no-window-features"], "window_features"),
        (["--algo", "a2c"], "algo"),
    ):
        line = _error(capsys, ["--resume", "--out", out, *flags, "--resume-with-changes"])
        assert f"--resume: {named}" in line and "would reshape the saved networks" in line, line
    # The algorithm's own hyperparameters may change: they apply to the loaded checkpoint.
    args = train.parse_args(["--resume", "--out", out, "--learning-rate", "3e-5", "--resume-with-changes"])
    assert args.apply == {"learning_rate"}


def test_resume_with_changes_records_them(run_folder) -> None:
    args = train.parse_args(
        ["--resume", "--out", str(run_folder), "--bc-epochs", "7", "--resume-with-changes"]
    )
    run = stage_seeds(train.config_from_args(args), resume=True, apply=args.apply)
    record = json.loads((run_folder / "config.json").read_text())
    assert run.cfg.bc_epochs == 7 and record["config"]["bc_epochs"] == 7
    assert record["resumed"][-1]["changed"] == {"bc_epochs": [3, 7]}


def test_ctrl_c_says_what_was_kept_and_how_to_resume(monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "run"

    def interrupted(run):
        (run.out / "oracle_cache" / "full").mkdir(parents=True)
        (run.out / "oracle_cache" / "full" / "item.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "stage_validation", interrupted)
    assert train.main([*TINY, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"kept in {out}: config.json; 1 cached oracle solves" in err[0]
    command = err[0].split("resume with: ")[1]
    assert command == shlex.join(["python", "train.py", "--resume", "--out", str(out)])
    # The printed command is accepted as it is (no flag differs from the saved run).
    assert train.parse_args(shlex.split(command)[2:]).resume


def test_ctrl_c_before_the_run_folder_says_nothing_was_kept(monkeypatch, capsys, tmp_path) -> None:
    def interrupted(cfg, resume, apply=()):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "stage_seeds", interrupted)
    argv = [*TINY, "--out", str(tmp_path / "run")]
    assert train.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing kept" in err[0]
    assert err[0].endswith("start it again with: " + shlex.join(["python", "train.py", *argv]))


def test_config_check_is_the_api_guard_too() -> None:
    with pytest.raises(ValueError, match=r"^n_envs: must be an integer >= 1 \(got 0\)"):
        TrainConfig(n_envs=0).check()
    with pytest.raises(ValueError, match=r"^eval_freq"):
        TrainConfig(eval_freq=0).check()
    with pytest.raises(ValueError, match=r"^forecast_level: 'poor\*x': the factor after"):
        TrainConfig(forecast_level="poor*x").check()
    TrainConfig(forecast_level="poor*2").check()
    with pytest.raises(ValueError, match=r"^ft_bc_steps: the anchor clones the oracle dataset: it needs bc"):
        TrainConfig(bc=False, timesteps=100, ft_bc_steps=4).check()
    TrainConfig().check()


# ------------------------------------------------------------------------------------ python -m bench
def _bench(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_bench_checks_inputs_before_running(tmp_path) -> None:
    res = _bench("--only", "env,nope", "--out", str(tmp_path / "r.md"))
    assert res.returncode == 2 and "--only: unknown sections ['nope']" in res.stderr
    assert "[bench]" not in res.stderr  # nothing ran
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = _bench("--only", "env", "--out", str(a_file / "r.md"))
    assert res.returncode == 2 and "--out: " in res.stderr and "is a file" in res.stderr
    res = _bench("--only", "env", "--out", str(tmp_path))
    assert res.returncode == 2 and "is a folder" in res.stderr


def test_bench_ctrl_c_keeps_finished_sections(monkeypatch, capsys, tmp_path) -> None:
    import bench.__main__ as bench_main
    from bench import agents_speed, env_speed

    monkeypatch.setattr(env_speed, "run", lambda **kw: "### env\n\nfast")

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(agents_speed, "sweep_section", interrupted)
    out = tmp_path / "results.md"
    out.write_text("earlier results\n")
    assert bench_main.main(["--quick", "--only", "env,sweeps,dataset", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[:2] == ["[bench] env ...", "[bench] sweeps ..."] and len(err) == 3  # no traceback
    line = err[-1]
    assert "interrupted in section 'sweeps'" in line and "kept env in" in line
    assert out.read_text() == "earlier results\n"  # untouched
    assert "### env" in out.with_suffix(".partial.md").read_text()
    rest = line.split("run the rest with: ")[1]
    assert shlex.split(rest)[3:] == [
        "--quick",
        "--only",
        "sweeps,dataset",
        "--out",
        str(tmp_path / "results.rest.md"),
    ]


def test_bench_only_replaces_its_sections_and_keeps_the_others(monkeypatch, capsys, tmp_path) -> None:
    """``--only env`` updates the env section of an existing results file in place; every other
    section (and the header) stays."""
    import bench.__main__ as bench_main
    from bench import env_speed

    monkeypatch.setattr(env_speed, "run", lambda **kw: "### Environment\n\nnew env table")
    out = tmp_path / "results.md"
    out.write_text(
        "# Benchmarks\n\nMachine: x.\n\n### Environment\n\nold env table\n\n_env: 3 s_\n\n"
        "### Oracle\n\noracle table\n\n_oracle: 9 s_\n\nTotal benchmark time: 1.0 min.\n"
    )
    assert bench_main.main(["--quick", "--only", "env", "--out", str(out)]) == 0
    text = out.read_text()
    assert "new env table" in text and "old env table" not in text
    assert "oracle table" in text and "_oracle: 9 s_" in text and "Machine: x." in text
    assert text.index("new env table") < text.index("oracle table")  # kept in place
    assert "Partial run (--only): Environment updated." in text and "Total benchmark time" not in text
    capsys.readouterr()
