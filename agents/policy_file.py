"""Pickle-free policy files: a network's weights in safetensors beside a JSON description.

An SB3 ``.zip`` holds pickles: loading one can run any code its author put in it. The project's
trained policies are therefore saved as two files that cannot run code when they are read:

- ``<name>.safetensors``: the policy network's tensors (:mod:`safetensors`, a flat list of named
  arrays with a JSON header: no pickle, no code);
- ``<name>.json`` (``kind: carbon-aware-dc-policy``): what is needed to rebuild the network from the
  package's own classes: the algorithm (``ppo``, ``a2c``, ``sac``), the preset whose flat env fixes
  the observation and action spaces, ``net_arch``, the activation (by name, from a fixed table), the
  features extractor (by name, from a fixed table, with its JSON keyword arguments), the shapes,
  ``safety_layer`` (whether the policy was trained behind the project's action projection,
  :mod:`agents.safety`, and so should play behind it: true for everything the project's training
  writes; a file without the field predates it and was trained with the layer, so it reads as true)
  and the weights' SHA-256 (a truncated or swapped weights file is refused).

:func:`load_policy_file` builds a fresh SB3 model of that algorithm on the preset's flat env
(nothing is unpickled) and loads the tensors with ``strict=True``, so a file whose tensors do not
match the described network is an error, never a silent partial load. Ensemble manifests
(:mod:`agents.ensemble`) may list policy files as members. ``python -m agents.policy_file export
MODEL --out DIR`` converts a trusted SB3 zip (or a manifest of zips) into policy files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch as th

POLICY_KIND = "carbon-aware-dc-policy"
FORMAT = 1
ACTIVATIONS: dict[str, type[th.nn.Module]] = {"relu": th.nn.ReLU, "tanh": th.nn.Tanh}
"""Activation functions a policy file may name (nothing else can be instantiated from a file)."""


def _extractors() -> dict[str, type]:
    from agents.features import WindowFeatures

    return {"WindowFeatures": WindowFeatures}


def is_policy_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a policy description (a ``.json`` whose ``kind`` is a policy's)."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("kind") == POLICY_KIND
    except (ValueError, AttributeError, OSError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(model: Any, preset: str) -> dict[str, Any]:
    """The JSON description of ``model``'s policy (raises ``ValueError`` for a network this format
    cannot rebuild: an activation or features extractor outside the fixed tables)."""
    from agents.sb3 import ALGOS

    algo = next((name for name, cls in ALGOS.items() if isinstance(model, cls)), None)
    if algo is None:
        raise ValueError(
            f"policy file: unsupported algorithm {type(model).__name__}; save one of {sorted(ALGOS)}"
        )
    policy = model.policy
    kwargs = dict(getattr(policy, "_get_constructor_parameters", dict)())
    act = kwargs.get("activation_fn", th.nn.Tanh)
    act_name = next((name for name, cls in ACTIVATIONS.items() if cls is act), None)
    if act_name is None:
        raise ValueError(f"policy file: activation {act!r} is not one of {sorted(ACTIVATIONS)}")
    extractor = kwargs.get("features_extractor_class")
    extractors = _extractors()
    ext_name = next((name for name, cls in extractors.items() if cls is extractor), None)
    if ext_name is None and extractor is not None and extractor.__name__ != "FlattenExtractor":
        raise ValueError(
            f"policy file: features extractor {extractor.__name__} is not one of {sorted(extractors)}"
        )
    net_arch = kwargs.get("net_arch")
    return {
        "kind": POLICY_KIND,
        "format": FORMAT,
        "algo": algo,
        "preset": preset,
        "net_arch": net_arch,
        "activation": act_name,
        "features_extractor": ext_name,
        "features_extractor_kwargs": dict(kwargs.get("features_extractor_kwargs") or {}) if ext_name else {},
        "observation_shape": list(model.observation_space.shape),
        "action_shape": list(model.action_space.shape),
    }


def save_policy_file(
    model: Any,
    path: str | os.PathLike[str],
    preset: str,
    info: dict[str, Any] | None = None,
    safety_layer: bool = True,
) -> Path:
    """Write ``path`` (``.json``) and its weights ``path.with_suffix(".safetensors")``, atomically
    (weights first, so a description never points at a missing or partial weights file).

    ``safety_layer``: recorded in the description; true (the default) for a policy trained behind
    the safety layer, as the project's training does, so that loaders apply it by default."""
    from safetensors.torch import save_file

    from envs.atomic import atomic_path, atomic_write_text

    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"policy file: the description must be a .json path (got {path})")
    desc = describe(model, preset)
    weights = path.with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    desc["safety_layer"] = bool(safety_layer)
    desc["weights"] = weights.name
    desc["sha256"] = _sha256(weights)
    if info:
        desc["info"] = info
    atomic_write_text(path, json.dumps(desc, indent=1))
    return path


def _fail(path: Path, problem: str) -> None:
    raise ValueError(f"policy file {path}: {problem}")


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked description at ``path`` (errors name the field)."""
    from agents.sb3 import ALGOS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file: no description at {path}")
    try:
        desc = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"policy file {path}: not valid JSON ({exc})") from exc
    if not isinstance(desc, dict) or desc.get("kind") != POLICY_KIND:
        _fail(path, f"kind must be {POLICY_KIND!r}")
    if desc.get("format") != FORMAT:
        _fail(path, f"format must be {FORMAT} (got {desc.get('format')!r})")
    if desc.get("algo") not in ALGOS:
        _fail(path, f"algo must be one of {sorted(ALGOS)} (got {desc.get('algo')!r})")
    if desc.get("activation") not in ACTIVATIONS:
        _fail(path, f"activation must be one of {sorted(ACTIVATIONS)} (got {desc.get('activation')!r})")
    ext = desc.get("features_extractor")
    if ext is not None and ext not in _extractors():
        _fail(path, f"features_extractor must be one of {sorted(_extractors())} or null (got {ext!r})")
    if not isinstance(desc.get("safety_layer", True), bool):
        _fail(path, f"safety_layer must be true or false (got {desc['safety_layer']!r})")
    if not isinstance(desc.get("weights"), str) or Path(desc["weights"]).name != desc["weights"]:
        _fail(path, "weights must be a file name beside the description")
    return desc


def load_policy_file(path: str | os.PathLike[str], env: Any = None) -> Any:
    """Rebuild the SB3 model described at ``path`` and load its weights (no unpickling).

    ``env`` (optional) is only used to check the spaces; the model is built on the preset's flat
    env. Raises ``ValueError`` on a description, digest, shape or tensor mismatch."""
    from safetensors.torch import load_file
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.imitation import flat_env
    from agents.sb3 import ALGOS

    path = Path(path)
    desc = read_description(path)
    weights = path.parent / desc["weights"]
    if not weights.is_file():
        _fail(path, f"weights file {weights} does not exist")
    if _sha256(weights) != desc.get("sha256"):
        _fail(path, f"weights file {weights.name} does not match the recorded sha256 (truncated or replaced)")
    venv = DummyVecEnv([lambda: flat_env(desc["preset"])])
    if list(venv.observation_space.shape) != desc["observation_shape"]:
        _fail(path, f"observation_shape {desc['observation_shape']} is not preset {desc['preset']!r}'s")
    policy_kwargs: dict[str, Any] = {
        "net_arch": desc["net_arch"],
        "activation_fn": ACTIVATIONS[desc["activation"]],
    }
    if desc.get("features_extractor"):
        policy_kwargs["features_extractor_class"] = _extractors()[desc["features_extractor"]]
        policy_kwargs["features_extractor_kwargs"] = dict(desc.get("features_extractor_kwargs") or {})
    model = ALGOS[desc["algo"]]("MlpPolicy", venv, policy_kwargs=policy_kwargs, device="cpu", verbose=0)
    try:
        model.policy.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        _fail(path, f"tensors do not fit the described network ({str(exc).splitlines()[0]})")
    if env is not None and tuple(env.observation_space.shape) != tuple(venv.observation_space.shape):
        _fail(path, "the env's observation space differs from the one the policy was trained on")
    return model


def safety_layer_of(path: str | os.PathLike[str]) -> bool:
    """The description's ``safety_layer`` (true when the field is absent: see the module docstring)."""
    return bool(read_description(path).get("safety_layer", True))


def export(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    preset: str,
    safety_layer: bool = True,
) -> Path:
    """Convert a trusted SB3 zip, or an ensemble manifest of zips, into policy files in ``out_dir``;
    returns the new description or manifest. Loading the zip unpickles it: only for your own files.
    ``safety_layer`` is recorded in every description and in the manifest (true: trained behind the
    safety layer, as the project's training does; pass false for a model trained without it)."""
    from agents.ensemble import is_manifest, read_manifest, write_manifest
    from agents.sb3 import ALGOS, algo_of

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(model_path)
    if is_manifest(src) and not is_policy_file(src):
        manifest = read_manifest(src)
        members = [export(m, out, preset, safety_layer) for m in manifest["members"]]
        info = {k: v for k, v in manifest.items() if k not in ("kind", "combine", "members")}
        return write_manifest(out / src.name, members, {**info, "safety_layer": bool(safety_layer)})
    algo = algo_of(src)
    if algo not in ALGOS:
        raise ValueError(
            f"policy file: {src} is a {algo} model; policy files hold {sorted(ALGOS)} (evaluate the zip "
            "itself with --trust-pickle)"
        )
    model = ALGOS[algo].load(str(src), device="cpu")
    info = {"exported_from": src.name}
    return save_policy_file(model, out / f"{src.stem}.json", preset, info, safety_layer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.policy_file", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="convert a trusted SB3 zip or ensemble manifest into policy files")
    exp.add_argument(
        "model", help="model .zip or ensemble .json of zips (it is unpickled: your own files only)"
    )
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--preset", default="paper")
    exp.add_argument(
        "--safety-layer",
        choices=("on", "off"),
        default="on",
        help="record that the model was trained behind the safety layer (on: train.py's models) or not",
    )
    args = parser.parse_args(argv)
    if not Path(args.model).is_file():
        parser.error(f"model: no file at {args.model}")
    print(export(args.model, args.out, args.preset, args.safety_layer == "on"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
