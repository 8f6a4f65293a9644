"""Forgetting mitigation (ALGORITHMS.md §5): composable modules every fine-tuning route takes.

One config (:class:`ForgettingConfig`, ``--regularizers.*`` on ``finetune`` and ``quickstart``)
chooses any combination; each module is active when its coefficient (or rank / decay) is set:

======================  ==========================================================================
``kl_ref_coef``         KL to the starting policy pi_0, **forward** KL(pi_0 || pi) (kickstarting,
                        RL's Razor) or **reverse** KL(pi || pi_0) (``kl_direction``), on the batch's
                        target-task states or on pretraining states (``kl_states``).
``l2_init_coef``        (lambda / 2) ||theta - theta_0||^2.
``ewc_coef``            EWC: (lambda / 2) sum_i F_i (theta_i - theta_0,i)^2, F the diagonal empirical
                        Fisher of pi_0's imitation loss on ``pretrain_data`` (mean-normalized to 1,
                        so lambda is comparable to ``l2_init_coef``); computed once, saved with the run.
``replay_coef``         BC replay: ``replay_coef`` x imitation loss on pretraining windows, ``replay_ratio``
                        of them per row of each minibatch (the mixing ratio).
``lora_rank``           LoRA through ``peft`` on the trunk's and encoders' linear layers: base weights
                        frozen, checkpoints hold the merged weights (a plain policy anywhere).
``freeze``              Parameter-name prefixes kept frozen (frozen parts, e.g. ``image_encoder``).
``ema_decay``           EMA of the weights during training: evaluations and checkpoints use the average
                        (the raw weights stay in the training state). WiSE-FT after training is
                        ``vla-rft wise-ft``.
======================  ==========================================================================

A module is a loss term (callable, see :class:`~vla_rft.algorithms.losses.LossTerm`) or a
**hook**: an object with a ``name`` and some of ``after_update(policy)``, ``export(policy,
tensors) -> tensors`` (what a checkpoint's weights are), ``swap(policy)`` (a context manager
evaluations run under), ``state_dict()`` / ``load_state_dict()`` (saved in every checkpoint
and restored on resume). The trainer calls these; algorithms only see loss terms.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vla_rft.algorithms.losses import L2ToInit, forward_kl, registered_term
from vla_rft.config import ConfigError
from vla_rft.contract import TASK_KEY

KL_DIRECTIONS = ("forward", "reverse")
KL_STATES = ("target", "pretrain")
LORA_TARGETS = ["linear1", "linear2", "proj.0", "proj.2", "state_proj.0", "state_proj.2", "text_proj", "mean.1"]


@dataclass
class ForgettingConfig:
    """Forgetting-mitigation modules (ALGORITHMS.md section 5); any combination, each on when its coefficient is set."""

    kl_ref_coef: float = 0.0
    """Weight of the KL to the starting policy (0 disables; 0.01-0.1 in the literature)."""
    kl_direction: str = "forward"
    """forward is KL(pi_0 || pi), kickstarting and RL's Razor; reverse is KL(pi || pi_0), as RLHF."""
    kl_states: str = "target"
    """States the KL is taken on, target (the training batch) or pretrain (windows of pretrain_data)."""
    l2_init_coef: float = 0.0
    """L2-to-init weight lambda in (lambda/2) ||theta - theta0||^2 (0 disables)."""
    ewc_coef: float = 0.0
    """EWC weight lambda on the Fisher-weighted squared distance to the start, Fisher mean-normalized (0 disables; needs pretrain_data)."""
    ewc_samples: int = 256
    """Pretraining windows the diagonal Fisher is estimated from (one gradient each)."""
    replay_coef: float = 0.0
    """Weight of the imitation loss on replayed pretraining windows (0 disables; needs pretrain_data)."""
    replay_ratio: float = 0.5
    """Replayed pretraining windows per row of each training minibatch (the mixing ratio)."""
    pretrain_data: list[str] = field(default_factory=list)
    """LeRobotDataset roots of the pretraining data (for replay, EWC and KL on pretraining states)."""
    lora_rank: int = 0
    """LoRA rank through peft on the linear layers of lora_targets; base weights frozen (0 disables)."""
    lora_alpha: float = 16.0
    """LoRA scaling alpha (the update is alpha / rank times B A)."""
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Module-name suffixes that get LoRA adapters (peft target_modules)."""
    freeze: list[str] = field(default_factory=list)
    """Parameter-name prefixes kept frozen during fine-tuning, e.g. image_encoder or trunk."""
    ema_decay: float = 0.0
    """EMA decay of the weights per update; evaluations and checkpoints use the average (0 disables, e.g. 0.9)."""
    terms: dict[str, float] = field(default_factory=dict)
    """More loss terms, a mapping from a registered term name (see register_term) to its coefficient."""
    seed: int = 0
    """Seeds replay sampling and the Fisher estimate (the run's seed is added)."""

    def active(self) -> list[str]:
        """Names of the active modules, in the order they are applied."""
        on = {"freeze": bool(self.freeze), "lora": self.lora_rank > 0, "kl_ref": self.kl_ref_coef > 0,
              "l2_init": self.l2_init_coef > 0, "ewc": self.ewc_coef > 0, "replay": self.replay_coef > 0,
              "ema": self.ema_decay > 0}
        return [k for k, v in on.items() if v] + sorted(self.terms)


def check_config(cfg: ForgettingConfig) -> None:
    """Refuse a bad module config with one line naming the field."""
    for name in ("kl_ref_coef", "l2_init_coef", "ewc_coef", "replay_coef", "replay_ratio", "lora_alpha"):
        value = float(getattr(cfg, name))
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"regularizers.{name} must be a finite number >= 0, got {value}")
    for name, coef in cfg.terms.items():
        registered_term(name, 0.0)  # an unknown name fails here
        if not np.isfinite(float(coef)) or float(coef) < 0:
            raise ConfigError(f"regularizers.terms.{name} must be a finite number >= 0, got {coef}")
    if cfg.kl_direction not in KL_DIRECTIONS:
        raise ConfigError(f"regularizers.kl_direction must be one of {KL_DIRECTIONS}, got '{cfg.kl_direction}'")
    if cfg.kl_states not in KL_STATES:
        raise ConfigError(f"regularizers.kl_states must be one of {KL_STATES}, got '{cfg.kl_states}'")
    if cfg.lora_rank < 0 or cfg.ewc_samples < 1:
        raise ConfigError("regularizers.lora_rank must be >= 0 and regularizers.ewc_samples >= 1")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"regularizers.ema_decay must be in [0, 1), got {cfg.ema_decay}")
    needs = [n for n, on in (("ewc_coef", cfg.ewc_coef > 0), ("replay_coef", cfg.replay_coef > 0),
                             ("kl_states pretrain", cfg.kl_ref_coef > 0 and cfg.kl_states == "pretrain")) if on]
    if needs and not cfg.pretrain_data:
        raise ConfigError(f"regularizers.{needs[0]} needs regularizers.pretrain_data (the pretraining datasets)")
    if cfg.replay_coef > 0 and cfg.replay_ratio <= 0:
        raise ConfigError("regularizers.replay_ratio must be > 0 when replay is on")


# ------------------------------------------------------------------------------- pretraining data
def load_pretrain_windows(roots: list[str], policy: Any, what: str = "regularizers.pretrain_data") -> Any:
    """Chunk windows over LeRobotDatasets (``what`` names the option in errors), checked against
    the policy (cameras, image size, state and action dims): replay data of another action
    dimension fails here."""
    from vla_rft.commands.pretrain import load_training_table
    from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, ContractError
    from vla_rft.data.chunks import ChunkWindows

    spec = policy.spec
    table = load_training_table(list(roots), list(spec.cameras))
    cam = table.arrays[IMAGE_PREFIX + spec.cameras[0]]
    try:
        policy.check_compatible(cameras=table.cameras, state_dim=table.arrays[STATE_KEY].shape[1],
                                action_dim=table.arrays[ACTION_KEY].shape[1], image_size=tuple(cam.shape[1:3]))
    except ContractError as e:
        raise ConfigError(f"{what} {list(roots)} does not fit the policy: {e}") from None
    return ChunkWindows(table, spec.chunk_size)


def _rows(batch: Any) -> int:
    return len(batch.obs[TASK_KEY])


class _Counter:
    """A call counter saved in checkpoints: seeds per-call sampling so resumes repeat exactly."""

    def __init__(self) -> None:
        self.calls = 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"calls": torch.tensor([self.calls], dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.calls = int(state["calls"][0])


# ------------------------------------------------------------------------------- loss terms
class KLTerm(_Counter):
    """coef x KL between pi_0 and pi. forward: the sampled :func:`forward_kl` (kickstarting's
    cross-entropy gradient). reverse: KL(pi || pi_0) with a ~ pi, its score-function gradient
    E[grad log pi(a) (log pi(a) - log pi_0(a))] (exact in expectation for any head with a latent
    log-prob). ``windows`` set: on pretraining states (``ratio`` windows per batch row)."""

    name = "kl_ref"

    def __init__(self, coef: float, direction: str = "forward", windows: Any = None, ratio: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        self.coef, self.direction, self.windows, self.ratio, self.seed = coef, direction, windows, ratio, seed

    def __call__(self, policy: Any, ref_policy: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        obs = batch.obs
        if self.windows is not None:
            rng = np.random.default_rng([self.seed, 1, self.calls])
            obs = self.windows.sample(max(1, round(self.ratio * _rows(batch))), rng)
        self.calls += 1
        if self.direction == "forward":
            kl = forward_kl(policy, ref_policy, obs).mean()
            return self.coef * kl, {"kl": float(kl.detach())}
        with torch.no_grad():
            latent, _ = policy.sample_latent(obs)
            ref_logp = ref_policy.log_prob(obs, latent)
        logp = policy.log_prob(obs, latent)
        diff = (logp - ref_logp).detach()
        surrogate = (diff * logp).mean()  # its gradient is the reverse KL's
        return self.coef * surrogate, {"kl": float(diff.mean())}


class ReplayBC(_Counter):
    """BC replay: coef x the imitation loss on ``ratio`` x rows pretraining windows per call."""

    name = "replay"

    def __init__(self, coef: float, windows: Any, ratio: float, seed: int = 0) -> None:
        super().__init__()
        self.coef, self.windows, self.ratio, self.seed = coef, windows, ratio, seed

    def replay_batch(self, rows: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, 2, self.calls])
        self.calls += 1
        return self.windows.sample(max(1, round(self.ratio * rows)), rng)

    def __call__(self, policy: Any, ref_policy: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        replay = self.replay_batch(_rows(batch))
        gen = torch.Generator(device=policy.device).manual_seed(self.seed * 1_000_003 + self.calls)
        loss, _ = policy.bc_loss(replay, gen)
        return self.coef * loss, {"bc": float(loss.detach()), "windows": float(len(replay[TASK_KEY]))}


class EWC:
    """(coef / 2) sum_i F_i (theta_i - theta*_i)^2 over trainable parameters pi_0 also has.

    F is the diagonal empirical Fisher of pi_0's imitation loss, the mean of squared per-window
    gradients over ``samples`` pretraining windows, divided by its mean over all entries. It is
    computed when the term is built and saved in every checkpoint (its state)."""

    name = "ewc"

    def __init__(self, coef: float, windows: Any, samples: int, ref_policy: Any, seed: int = 0) -> None:
        self.coef, self.windows, self.samples, self.seed = coef, windows, samples, seed
        self.fisher = self.estimate(ref_policy)

    def estimate(self, ref_policy: Any) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(ref_policy).eval()
        params = dict(model.named_parameters())
        for p in params.values():
            p.requires_grad_(True)
        sums = {n: torch.zeros_like(p) for n, p in params.items()}
        rng = np.random.default_rng([self.seed, 3])
        idx = rng.integers(0, len(self.windows), size=self.samples)
        for i, j in enumerate(idx):
            model.zero_grad(set_to_none=True)
            gen = torch.Generator(device=model.device).manual_seed(self.seed * 7_919 + i)
            loss, _ = model.bc_loss(self.windows.batch(np.array([j])), gen)
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n] += p.grad.detach() ** 2
        fisher = {n: s / self.samples for n, s in sums.items()}
        mean = torch.cat([f.reshape(-1) for f in fisher.values()]).mean().clamp_min(1e-12)
        return {n: f / mean for n, f in fisher.items()}

    def __call__(self, policy: Any, ref_policy: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        ref = dict(ref_policy.named_parameters())
        total = torch.zeros((), device=policy.device)
        for n, p in policy.named_parameters():
            if p.requires_grad and n in self.fisher:
                total = total + (self.fisher[n] * (p - ref[n].detach()) ** 2).sum()
        return 0.5 * self.coef * total, {"weighted_sq_dist": float(total.detach())}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"fisher.{n}": f for n, f in self.fisher.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.fisher = {k.removeprefix("fisher."): v for k, v in state.items()}


# ------------------------------------------------------------------------------- hooks
class Freeze:
    """Frozen parts: parameters whose name starts with one of ``prefixes`` get no gradient."""

    name = "freeze"

    def __init__(self, policy: Any, prefixes: list[str]) -> None:
        def under(name: str, prefix: str) -> bool:
            return name == prefix or name.startswith(prefix.rstrip(".") + ".")

        names = [n for n, _ in policy.named_parameters()]
        for prefix in prefixes:
            if not any(under(n, prefix) for n in names):
                raise ConfigError(f"regularizers.freeze: no parameter of the policy starts with '{prefix}'")
        self.prefixes = list(prefixes)
        for n, p in policy.named_parameters():
            if any(under(n, pre) for pre in prefixes):
                p.requires_grad_(False)


class LoRA:
    """LoRA adapters injected into the policy by ``peft`` (``inject_adapter_in_model``): every
    base parameter is frozen except the exploration noise and the value MLP, which RL still
    trains. :meth:`export` merges B A into the base weights, so checkpoints are plain policies;
    the adapters are this module's state (resume re-injects them on pi_0's base weights)."""

    name = "lora"

    def __init__(self, policy: Any, ref_policy: Any, rank: int, alpha: float, targets: list[str]) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        names = {n for n, _ in policy.named_modules()}
        matched = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
        if not matched:
            raise ConfigError(f"regularizers.lora_targets {targets} match no module of the policy")
        keep = {id(p) for p in policy.head.noise_parameters()}
        if policy.value_net is not None:
            keep |= {id(p) for p in policy.value_net.parameters()}
        ref_state = ref_policy.state_dict()
        for n, p in policy.named_parameters():
            p.requires_grad_(id(p) in keep)
        with torch.no_grad():  # the base is pi_0 exactly (a resumed policy holds merged weights)
            for n, t in policy.state_dict().items():
                if n in ref_state and not any(n.startswith(v) for v in ("value_net.", "head.log_std")):
                    t.copy_(ref_state[n])
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=matched, lora_dropout=0.0),
                                policy)
        self.rank = rank

    @staticmethod
    def adapter_keys(tensors: dict[str, torch.Tensor]) -> list[str]:
        return [k for k in tensors if ".lora_" in k]

    def export(self, policy: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Merged weights under the plain policy's names: W = W_base + (alpha / r) B A."""
        out: dict[str, torch.Tensor] = {}
        for k, v in tensors.items():
            if ".lora_" in k:
                continue
            out[k.replace(".base_layer.", ".")] = v
        for name, module in policy.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                a = tensors[f"{name}.lora_A.default.weight"]
                b = tensors[f"{name}.lora_B.default.weight"]
                out[f"{name}.weight"] = out[f"{name}.weight"] + (b @ a) * module.scaling["default"]
        return out



class EMA:
    """Exponential moving average of the weights, updated after every iteration's update."""

    name = "ema"

    def __init__(self, policy: Any, decay: float) -> None:
        self.decay = decay
        self.average = {k: v.detach().clone() for k, v in policy.state_dict().items() if v.is_floating_point()}
        self.raw: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def after_update(self, policy: Any) -> None:
        for k, v in policy.state_dict().items():
            if k in self.average:
                self.average[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)

    def export(self, policy: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.average.get(k, v).clone() for k, v in tensors.items()}

    @contextlib.contextmanager
    def swap(self, policy: Any) -> Iterator[None]:
        raw = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        policy.load_state_dict({**raw, **self.average})
        try:
            yield
        finally:
            policy.load_state_dict(raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"avg.{k}": v for k, v in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.average = {k.removeprefix("avg."): v.clone() for k, v in state.items()}


class RawWeights:
    """The training weights themselves, kept in the state when a module's export replaces them
    in the checkpoint (EMA, LoRA), so a resumed run continues from the weights it trained."""

    name = "raw"

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.policy.load_state_dict(state)


# ------------------------------------------------------------------------------- building
def build_modules(cfg: ForgettingConfig, policy: Any, ref_policy: Any, run_seed: int = 0) -> list[Any]:
    """The modules ``cfg`` asks for, applied to ``policy`` (freeze, LoRA) before any optimizer is
    built; loss terms first-class, hooks after. Pretraining data is loaded once."""
    check_config(cfg)
    seed = cfg.seed + 1_000 * run_seed
    windows = load_pretrain_windows(cfg.pretrain_data, policy) if cfg.pretrain_data and (
        cfg.ewc_coef > 0 or cfg.replay_coef > 0 or (cfg.kl_ref_coef > 0 and cfg.kl_states == "pretrain")) else None
    out: list[Any] = []
    if cfg.freeze:
        out.append(Freeze(policy, cfg.freeze))
    if cfg.lora_rank > 0:
        out.append(LoRA(policy, ref_policy, cfg.lora_rank, cfg.lora_alpha, list(cfg.lora_targets)))
    if cfg.kl_ref_coef > 0:
        out.append(KLTerm(cfg.kl_ref_coef, cfg.kl_direction, windows if cfg.kl_states == "pretrain" else None,
                          cfg.replay_ratio, seed))
    if cfg.l2_init_coef > 0:
        out.append(L2ToInit(cfg.l2_init_coef))
    if cfg.ewc_coef > 0:
        out.append(EWC(cfg.ewc_coef, windows, cfg.ewc_samples, ref_policy, seed))
    if cfg.replay_coef > 0:
        out.append(ReplayBC(cfg.replay_coef, windows, cfg.replay_ratio, seed))
    out += [registered_term(name, float(coef)) for name, coef in cfg.terms.items() if float(coef) > 0]
    if cfg.ema_decay > 0:
        out.append(EMA(policy, cfg.ema_decay))
    if any(hasattr(m, "export") for m in out):
        out.append(RawWeights(policy))  # last: restored after the others
    return out


# ------------------------------------------------------------------------------- trainer helpers
def export_weights(modules: list[Any], policy: Any) -> dict[str, torch.Tensor]:
    """The weights a checkpoint holds: the policy's, through every module's ``export``."""
    tensors = dict(policy.state_dict())
    for m in modules:
        if hasattr(m, "export"):
            tensors = m.export(policy, tensors)
    return tensors


@contextlib.contextmanager
def evaluation_weights(modules: list[Any], policy: Any) -> Iterator[None]:
    """Run evaluations with the weights the modules export (EMA's average)."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            if hasattr(m, "swap"):
                stack.enter_context(m.swap(policy))
        yield


def after_update(modules: list[Any], policy: Any) -> None:
    for m in modules:
        if hasattr(m, "after_update"):
            m.after_update(policy)
