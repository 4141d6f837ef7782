"""Pickle-free policy files (agents/policy_file.py) and the refusal to unpickle untrusted zips."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest

import evaluate
from agents.ensemble import write_manifest
from agents.policy_file import load_policy_file, save_policy_file
from agents.sb3 import UntrustedModelError, load_model, make_model, make_vec_env, policy_features


@pytest.fixture(scope="module")
def model():
    return make_model("ppo", make_vec_env("paper", 1, 0), 0, policy_extra=policy_features("paper", True))


def _obs(model, n=5):
    rng = np.random.default_rng(0)
    space = model.observation_space
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)


def test_policy_file_round_trip_predicts_the_same_actions(model, tmp_path) -> None:
    path = save_policy_file(model, tmp_path / "p.json", "paper", {"note": "test"})
    assert (tmp_path / "p.safetensors").is_file()
    desc = json.loads(path.read_text())
    assert (
        desc["algo"] == "ppo"
        and desc["features_extractor"] == "WindowFeatures"
        and desc["info"]["note"] == "test"
    )
    loaded = load_model(path)
    obs = _obs(model)
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_truncated_or_mismatched_weights_are_refused(model, tmp_path) -> None:
    path = save_policy_file(model, tmp_path / "p.json", "paper")
    weights = tmp_path / "p.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="sha256"):
        load_policy_file(path)
    path = save_policy_file(model, tmp_path / "q.json", "paper")
    desc = json.loads(path.read_text())
    desc["net_arch"] = {"pi": [8], "vf": [8]}
    path.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="tensors do not fit"):
        load_policy_file(path)
    desc["activation"] = "os.system"
    path.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="activation"):
        load_policy_file(path)


class _Evil:
    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _evil_zip(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", json.dumps({"clip_range": 0.2, "policy_class": {":serialized:": ""}}))
        zf.writestr("policy.pth", pickle.dumps(_Evil(str(sentinel))))
    return path, sentinel


def test_a_pickle_bearing_zip_is_never_unpickled_without_trust(tmp_path) -> None:
    path, sentinel = _evil_zip(tmp_path)
    with pytest.raises(UntrustedModelError, match="trust_pickle"):
        load_model(path)
    manifest = write_manifest(tmp_path / "ens.json", [path])
    with pytest.raises(UntrustedModelError):
        load_model(manifest)
    assert not sentinel.exists()


def test_evaluate_refuses_a_zip_before_any_work(tmp_path, capsys) -> None:
    path, sentinel = _evil_zip(tmp_path)
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--model", str(path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "--trust-pickle" in capsys.readouterr().err
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_an_ensemble_of_policy_files_loads(model, tmp_path) -> None:
    a = save_policy_file(model, tmp_path / "a.json", "paper")
    b = save_policy_file(model, tmp_path / "b.json", "paper")
    ens = load_model(write_manifest(tmp_path / "ensemble.json", [a, b]))
    obs = _obs(model, 2)
    np.testing.assert_allclose(
        ens.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0], atol=1e-6
    )
