"""Behaviour cloning of an SB3 policy (PPO/A2C ``ActorCriticPolicy`` or SAC) on a demonstration dataset.

:func:`behaviour_clone` minimises the negative log-likelihood ``-log pi(a|s)`` of the demonstrated
flat actions through ``policy.evaluate_actions``, plus an MSE term on the Gaussian mean and a
cross-entropy on the start choice (:class:`BCConfig`), with Adam in minibatches, a validation split
by scenario (never by row: the periods of one scenario are strongly correlated) and the epoch with
the lowest validation loss restored at the end; :func:`imitation_loss` scores a policy on a dataset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from agents.demos import DemoDataset, flat_env_sizes
from envs.dc_env import JOB_FEATURES


@dataclass
class BCConfig:
    """Behaviour-cloning settings.

    The loss per minibatch is ``nll / act_dim + mse_coef * mse``, where ``nll = -log pi(a'|s)`` from
    ``policy.evaluate_actions`` and ``mse`` is the mean squared error between the policy's
    deterministic action (the Gaussian mean; ``tanh`` of it for SAC) and ``a'``. ``a'`` is the
    demonstrated action with the values on the box boundary (+-1) pushed ``margin`` further out:
    the env clips the action to [-1, 1], so a mean beyond the boundary decodes to exactly the
    boundary (a route weight of exactly 0, i.e. nothing left unserved; generator exactly off),
    while a mean that falls just short of -1 would leave a little demand unserved in every
    period. The Gaussian's state-independent ``log_std`` (PPO/A2C) is kept within
    ``[log_std_min, log_std_max]`` so the NLL cannot run away to ``-inf`` on near-deterministic
    demonstrations. (SAC's tanh squashing bounds its mean already: no margin there.)

    Starting a job is a rare, discrete event (about one ready slot-period in ten), and regressing
    the start scores alone makes "hold" win every argmax: the policy then never starts a job. So
    ``start_ce_coef`` adds a cross-entropy term on the start choice, with logits
    ``start_logit_scale * mean score`` of each job slot that is waiting and released in that
    period (the only rows where the choice matters), averaged over those rows. The learning rate
    decays by a cosine to ``lr_final_frac * lr`` over the epochs.

    ``val_seeds`` fixes the validation scenarios (default: ``val_frac`` of the scenarios drawn with
    ``seed``). Retraining on an aggregated dataset must keep the earlier validation scenarios out of
    training: a fresh split would validate on scenarios the policy was just trained on.
    """

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    lr_final_frac: float = 0.05
    weight_decay: float = 0.0
    val_frac: float = 0.1
    mse_coef: float = 1.0
    start_ce_coef: float = 1.0
    start_logit_scale: float = 5.0
    margin: float = 0.2
    log_std_min: float = -2.5
    log_std_max: float = 0.0
    seed: int = 0
    patience: int | None = 15
    val_seeds: Sequence[int] | None = None


@dataclass
class BCHistory:
    """Per-epoch losses (validation on held-out scenarios) and the epoch restored at the end."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    initial_val: dict[str, float] = field(default_factory=dict)
    final_val: dict[str, float] = field(default_factory=dict)
    train_seeds: list[int] = field(default_factory=list)
    val_seeds: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "initial_val": self.initial_val,
            "final_val": self.final_val,
            "train_seeds": self.train_seeds,
            "val_seeds": self.val_seeds,
            "wall_s": self.wall_s,
        }


def bc_targets(actions: np.ndarray, margin: float) -> np.ndarray:
    """Demonstrated actions with boundary values (|a| = 1) pushed ``margin`` outside the box."""
    a = np.asarray(actions, dtype=np.float32)
    edge = np.abs(a) >= 1.0 - 1e-6
    return np.where(edge, np.sign(a) * (1.0 + margin), a).astype(np.float32)


def _is_sac(policy: Any) -> bool:
    return hasattr(policy, "actor") and not hasattr(policy, "evaluate_actions")


def policy_loss_terms(policy: Any, obs: th.Tensor, targets: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``(nll, deterministic action)`` of an SB3 policy: ``-log pi(targets|obs)`` per row, and the mean.

    Actor-critic policies (PPO, A2C) go through ``policy.evaluate_actions``; SAC's squashed Gaussian
    actor through its action distribution (targets clipped inside (-1, 1), where tanh is invertible).
    """
    if _is_sac(policy):
        actor = policy.actor
        mean, log_std, kwargs = actor.get_action_dist_params(obs)
        dist = actor.action_dist.proba_distribution(mean, log_std, **kwargs)
        inside = targets.clamp(-1.0 + 1e-3, 1.0 - 1e-3)
        return -dist.log_prob(inside), th.tanh(mean)
    _, log_prob, _ = policy.evaluate_actions(obs, targets)
    mean = policy.get_distribution(obs).distribution.mean
    return -log_prob, mean


@dataclass(frozen=True)
class StartLayout:
    """Where the start scores sit in the flat action and the job table in the flat observation."""

    slots: int
    n_choices: int
    jobs_offset: int
    job_width: int

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> StartLayout:
        """From a dataset's layout metadata (:func:`layout_meta`)."""
        slots, n_choices = meta["action_layout"]["start"]
        keys = meta["obs_keys"]
        flat = flat_env_sizes(meta)
        return cls(int(slots), int(n_choices), flat[keys.index("jobs")], len(JOB_FEATURES) + int(meta["S"]))

    def ready(self, obs: th.Tensor) -> th.Tensor:
        """(N, slots) bool: the slot's job is waiting and released (its start choice matters)."""
        jobs = obs[:, self.jobs_offset : self.jobs_offset + self.slots * self.job_width]
        jobs = jobs.reshape(-1, self.slots, self.job_width)
        waiting = jobs[:, :, JOB_FEATURES.index("waiting")] > 0.5
        released = jobs[:, :, JOB_FEATURES.index("until_release")] <= 1e-6
        return waiting & released

    def start_terms(self, mean: th.Tensor, targets: th.Tensor, obs: th.Tensor, scale: float) -> tuple:
        """Per-row summed cross-entropy, number of ready slots and of correct argmax choices."""
        n = self.slots * self.n_choices
        logits = mean[:, :n].reshape(-1, self.slots, self.n_choices) * scale
        label = targets[:, :n].reshape(-1, self.slots, self.n_choices).argmax(dim=2)
        ready = self.ready(obs).float()
        ce = th.nn.functional.cross_entropy(logits.transpose(1, 2), label, reduction="none")
        correct = (logits.argmax(dim=2) == label).float()
        return (ce * ready).sum(dim=1), ready.sum(dim=1), (correct * ready).sum(dim=1)


def _clamp_log_std(policy: Any, cfg: BCConfig) -> None:
    log_std = getattr(policy, "log_std", None)
    if isinstance(log_std, th.nn.Parameter):
        with th.no_grad():
            log_std.clamp_(cfg.log_std_min, cfg.log_std_max)


def split_by_seed(data: DemoDataset, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a train/validation split that keeps each scenario seed on one side."""
    seeds = np.array(data.seeds)
    rng = np.random.default_rng(seed)
    n_val = 0 if val_frac <= 0 or len(seeds) < 2 else max(1, round(val_frac * len(seeds)))
    val_seeds = set(rng.permutation(seeds)[:n_val].tolist())
    is_val = np.isin(data.seed, list(val_seeds))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def imitation_loss(
    policy: Any, data: DemoDataset, cfg: BCConfig | None = None, rows: np.ndarray | None = None
) -> dict[str, float]:
    """Mean ``loss``, ``nll`` (per action dimension), ``mse``, start cross-entropy ``start_ce`` and
    ``start_acc`` (share of ready job slots whose start choice matches) on (some rows of) ``data``."""
    cfg = cfg or BCConfig()
    rows = np.arange(len(data)) if rows is None else rows
    keys = ("loss", "nll", "mse", "start_ce", "start_acc")
    if len(rows) == 0:
        return dict.fromkeys(keys, math.nan)
    layout = StartLayout.from_meta(data.meta)
    device = policy.device
    act_dim = data.actions.shape[1]
    sac = _is_sac(policy)
    totals = np.zeros(6)
    policy.set_training_mode(False)
    with th.no_grad():
        for chunk in np.array_split(rows, max(1, math.ceil(len(rows) / 4096))):
            obs = th.as_tensor(data.obs[chunk], device=device)
            tgt = th.as_tensor(bc_targets(data.actions[chunk], 0.0 if sac else cfg.margin), device=device)
            nll, mean = policy_loss_terms(policy, obs, tgt)
            mse = ((mean - tgt) ** 2).mean(dim=1)
            ce, n_ready, correct = layout.start_terms(mean, tgt, obs, cfg.start_logit_scale)
            totals += [
                nll.sum().item() / act_dim,
                mse.sum().item(),
                ce.sum().item(),
                n_ready.sum().item(),
                correct.sum().item(),
                0.0,
            ]
    nll, mse = totals[0] / len(rows), totals[1] / len(rows)
    n_ready = max(totals[3], 1.0)
    start_ce = totals[2] / n_ready
    return {
        "loss": float(nll + cfg.mse_coef * mse + cfg.start_ce_coef * start_ce),
        "nll": float(nll),
        "mse": float(mse),
        "start_ce": float(start_ce),
        "start_acc": float(totals[4] / n_ready),
    }


def batch_loss(
    policy: Any, obs: th.Tensor, tgt: th.Tensor, layout: StartLayout, cfg: BCConfig
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """The imitation loss of :class:`BCConfig` on one minibatch (``tgt``: :func:`bc_targets`), with
    gradients: ``(loss, nll per action dimension, mse)``."""
    nll, mean = policy_loss_terms(policy, obs, tgt)
    nll = nll.mean() / tgt.shape[1]
    mse = ((mean - tgt) ** 2).mean()
    ce, n_ready, _ = layout.start_terms(mean, tgt, obs, cfg.start_logit_scale)
    start_ce = ce.sum() / n_ready.sum().clamp(min=1.0)
    return nll + cfg.mse_coef * mse + cfg.start_ce_coef * start_ce, nll, mse


def behaviour_clone(
    policy: Any,
    data: DemoDataset,
    cfg: BCConfig | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> BCHistory:
    """Fit ``policy`` (an SB3 policy: PPO/A2C ``ActorCriticPolicy`` or SAC) to ``data`` by behaviour cloning.

    Adam on the loss of :class:`BCConfig` in shuffled minibatches; after every epoch the loss on the
    held-out scenarios is computed, and the parameters of the best epoch are restored at the end
    (early stop after ``patience`` epochs without improvement). ``log`` receives each epoch's row.
    """
    cfg = cfg or BCConfig()
    tick = time.perf_counter()
    obs_dim = int(np.prod(policy.observation_space.shape))
    act_dim = int(np.prod(policy.action_space.shape))
    if data.obs.shape[1] != obs_dim or data.actions.shape[1] != act_dim:
        raise ValueError(
            f"dataset sizes obs {data.obs.shape[1]}, action {data.actions.shape[1]} do not match the "
            f"policy's {obs_dim}, {act_dim} (another preset?)"
        )
    if cfg.val_seeds is not None:
        is_val = np.isin(data.seed, np.asarray(list(cfg.val_seeds), dtype=np.int64))
        train_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    else:
        train_rows, val_rows = split_by_seed(data, cfg.val_frac, cfg.seed)
    hist = BCHistory(
        train_seeds=sorted(set(data.seed[train_rows].tolist())),
        val_seeds=sorted(set(data.seed[val_rows].tolist())),
    )
    sac = _is_sac(policy)
    params = list(policy.actor.parameters()) if sac else list(policy.parameters())
    optimizer = th.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = th.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(cfg.epochs, 1), eta_min=cfg.lr * cfg.lr_final_frac
    )
    layout = StartLayout.from_meta(data.meta)
    gen = th.Generator().manual_seed(cfg.seed)
    device = policy.device
    obs_all = th.as_tensor(data.obs, device=device)
    tgt_all = th.as_tensor(bc_targets(data.actions, 0.0 if sac else cfg.margin), device=device)
    monitor = val_rows if len(val_rows) else train_rows
    hist.initial_val = imitation_loss(policy, data, cfg, monitor)
    best = hist.initial_val["loss"]
    best_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    since_best = 0
    for epoch in range(cfg.epochs):
        policy.set_training_mode(True)
        perm = th.as_tensor(train_rows)[th.randperm(len(train_rows), generator=gen)]
        sums, count = np.zeros(3), 0
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss, nll, mse = batch_loss(policy, obs_all[idx], tgt_all[idx], layout, cfg)
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            _clamp_log_std(policy, cfg)
            sums += [loss.item() * len(idx), nll.item() * len(idx), mse.item() * len(idx)]
            count += len(idx)
        scheduler.step()
        val = imitation_loss(policy, data, cfg, monitor)
        row = {
            "epoch": epoch,
            "train_loss": float(sums[0] / max(count, 1)),
            "train_nll": float(sums[1] / max(count, 1)),
            "train_mse": float(sums[2] / max(count, 1)),
            "val_loss": val["loss"],
            "val_nll": val["nll"],
            "val_mse": val["mse"],
            "val_start_ce": val["start_ce"],
            "val_start_acc": val["start_acc"],
        }
        hist.epochs.append(row)
        if log is not None:
            log(row)
        if val["loss"] < best:
            best, hist.best_epoch, since_best = val["loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        else:
            since_best += 1
            if cfg.patience is not None and since_best >= cfg.patience:
                break
    policy.load_state_dict(best_state)
    policy.set_training_mode(False)
    hist.final_val = imitation_loss(policy, data, cfg, monitor)
    hist.wall_s = time.perf_counter() - tick
    return hist
