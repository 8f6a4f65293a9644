"""Offline chunked TD learning (CO-RFT, Q-chunking; ALGORITHMS.md §1) as a trainer algorithm.

A critic over whole action chunks, Q(s_t, a_{t:t+h}), learns from LeRobotDatasets (demos, policy
rollouts, deployed episodes) with the n-step chunk backup::

    y = R_t + gamma^n * m * agg_k Qbar_k(s_{t+h}, a'),   R_t = sum_{k<n} gamma^k r_{t+k},   a' ~ pi(s_{t+h})

n = the window's steps inside the episode; m = 0 when the episode **terminates** inside the window
(its last frame is a success), 1 when it continues or is **truncated** (a time limit: the
bootstrap then reads the episode's last frame, the nearest stored state). Rewards are the stored
``next.reward`` or relabelled from ``next.success`` (1 on the first success frame). The critic reads
the policy trunk's pooled feature, computed once for every frame with the trunk frozen, plus the
chunk's first ``horizon`` actions; an ensemble of LayerNorm MLPs with a Polyak-averaged target.
Cal-QL's calibrated conservative penalty is an option.

Actors:

- ``best_of_n`` (Q-chunking's QC): the policy is unchanged; it acts with the best of N sampled
  chunks by the critic (``policy.best_of_n``), in ``eval``, ``serve`` and ``deploy`` alike.
- ``bc_q`` (TD3+BC / one-step distilled form): the head learns bc_coef x its imitation loss on
  the data minus q_coef x Q(s, mode(s)) / mean|Q|.
- ``awr``: the head learns the data chunks weighted by exp(A / beta), A = Q(s, a) - mean_N Q(s, pi).

**Offline → online** (``finetune --online_steps N``): after the offline iterations, each
iteration collects ``rollout_len`` chunk steps of every env of a rollout source (seeded resets,
the policy acting as the route's actor with sampled chunks; one chunk step is one transition
with its in-chunk return and its own discount) into an online buffer, then takes
``online_updates`` updates on batches mixing ``online_ratio`` online transitions with offline
windows (RLPD's symmetric sampling). The critic keeps learning across the switch. The buffer is
saved in every checkpoint, so an online run resumes exactly too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from vla_rft.algorithms.bc import OfflineAlgorithm
from vla_rft.config import ConfigError, require_at_least
from vla_rft.contract import ACTION_KEY
from vla_rft.data.lerobot_io import REWARD_KEY, SUCCESS_KEY

ACTORS = ("best_of_n", "bc_q", "awr")


@dataclass
class ChunkedTDConfig:
    """Chunked TD hyperparameters (Q-chunking's public code where it states them)."""

    actor: str = "best_of_n"
    """best_of_n (QC, the critic picks among sampled chunks), bc_q (BC plus Q on the head) or awr."""
    num_samples: int = 32
    """N, chunks sampled per state by best_of_n (at inference) and by awr's baseline."""
    num_qs: int = 2
    """Critic ensemble size."""
    hidden: int = 256
    """Hidden width of each critic MLP."""
    layers: int = 2
    """Hidden layers of each critic MLP."""
    horizon: int = 0
    """Chunk steps the critic and its backup span (0 is the policy's chunk; 1 is the one-step ablation)."""
    gamma: float = 0.99
    """Per-step discount."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    target_agg: str = "mean"
    """Ensemble aggregation in the target, mean or min."""
    batch_size: int = 256
    """Windows per update."""
    lr_critic: float = 3e-4
    """Critic learning rate."""
    lr_actor: float = 1e-4
    """Head learning rate (bc_q, awr)."""
    reward: str = "success"
    """success (1 on the first success frame) or stored (the dataset's next.reward)."""
    intervention_penalty: float = 0.0
    """RLIF - subtracted from the reward of the policy's last frame before each operator takeover
    (a deployed dataset's intervention flags), so the critic learns which chunks get corrected."""
    cal_ql_alpha: float = 0.0
    """Cal-QL penalty weight (0 disables; 0.1 to 1 in ConRFT)."""
    cal_ql_samples: int = 10
    """Chunks per source (uniform, pi(s), pi(s')) in the Cal-QL log-sum-exp."""
    bc_coef: float = 1.0
    """bc_q weight of the imitation loss."""
    q_coef: float = 0.1
    """bc_q weight of -Q(s, mode(s)) / mean|Q|."""
    awr_beta: float = 1.0
    """AWR temperature."""
    awr_max_weight: float = 20.0
    """AWR weight clip."""
    online_ratio: float = 0.5
    """Online phase (finetune --online_steps), the fraction of each batch drawn from the online data (RLPD 0.5)."""
    online_updates: int = 16
    """Online phase, critic (and actor) updates per online iteration of num_envs x rollout_len chunk steps."""


def check_config(cfg: ChunkedTDConfig) -> None:
    if cfg.actor not in ACTORS:
        raise ConfigError(f"chunked_td.actor must be one of {ACTORS}, got '{cfg.actor}'")
    if cfg.target_agg not in ("mean", "min"):
        raise ConfigError(f"chunked_td.target_agg must be mean or min, got '{cfg.target_agg}'")
    if cfg.reward not in ("success", "stored"):
        raise ConfigError(f"chunked_td.reward must be success or stored, got '{cfg.reward}'")
    require_at_least(cfg, ("num_samples", "num_qs", "hidden", "layers", "batch_size", "cal_ql_samples"),
                     prefix="chunked_td.")
    if not 0 <= cfg.online_ratio <= 1 or cfg.online_updates < 1:
        raise ConfigError("chunked_td needs 0 <= online_ratio <= 1 and online_updates >= 1")
    if not 0 < cfg.gamma <= 1 or not 0 < cfg.tau <= 1 or cfg.cal_ql_alpha < 0 or cfg.awr_beta <= 0:
        raise ConfigError("chunked_td needs 0 < gamma <= 1, 0 < tau <= 1, cal_ql_alpha >= 0 and awr_beta > 0")
    if cfg.intervention_penalty < 0:
        raise ConfigError(f"chunked_td.intervention_penalty must be >= 0, got {cfg.intervention_penalty}")


# ------------------------------------------------------------------------------ targets
class ChunkTargets(NamedTuple):
    """Per frame t (N,): the window's backup pieces."""

    ret: np.ndarray  # R_t, discounted in-window reward
    discount: np.ndarray  # gamma^n
    bootstrap: np.ndarray  # m: 0 if the episode terminates inside the window
    next_index: np.ndarray  # the frame the bootstrap reads
    mc_return: np.ndarray  # Monte-Carlo return from t to the episode's end (Cal-QL's bound)
    window: np.ndarray  # (N, horizon) frame indices of a_{t:t+h}, clamped to the episode
    pad: np.ndarray  # (N, horizon) steps past the episode's end


def frame_rewards(table: Any, kind: str, where: str = "the data") -> np.ndarray:
    """Per-frame rewards (N,): stored ``next.reward`` or 1 on each episode's first success frame."""
    a = table.arrays
    if kind == "stored":
        if REWARD_KEY not in a:
            raise ConfigError(f"{where} has no '{REWARD_KEY}'; use --chunked_td.reward success")
        return a[REWARD_KEY].reshape(-1).astype(np.float64)
    if SUCCESS_KEY not in a:
        hint = " or rewards" if REWARD_KEY not in a else "; use --chunked_td.reward stored"
        raise ConfigError(f"{where} has no '{SUCCESS_KEY}' flags{hint}: chunked TD needs a reward")
    success = a[SUCCESS_KEY].reshape(-1).astype(bool)
    first = success.copy()
    first[1:] &= ~success[:-1] | (table.episode_start[1:] == np.arange(1, len(success)))
    return first.astype(np.float64)


def intervention_penalties(table: Any, penalty: float, where: str = "the data") -> np.ndarray:
    """Per-frame RLIF penalties (N,): ``-penalty`` on the frame before each takeover (an
    ``intervention`` run's first frame; on that frame itself when it opens the episode)."""
    a = table.arrays
    if "intervention" not in a:
        raise ConfigError(f"{where} has no 'intervention' flags (episodes logged by vla-rft deploy have them); "
                          "set --chunked_td.intervention_penalty 0")
    flag = a["intervention"].reshape(-1).astype(bool)
    idx = np.arange(len(flag))
    opens = table.episode_start == idx
    starts = flag & (opens | ~np.concatenate([[False], flag[:-1]]))
    out = np.zeros(len(flag))
    at = np.flatnonzero(starts)
    out[np.where(opens[at], at, at - 1)] = -penalty
    return out


def chunk_targets(table: Any, rewards: np.ndarray, horizon: int, gamma: float) -> ChunkTargets:
    """The backup of every frame's window (see the module docstring for the rule)."""
    from vla_rft.data.chunks import ChunkWindows

    n_frames = len(rewards)
    idx = np.arange(n_frames)
    start, end = table.episode_start, table.episode_end
    window, pad = ChunkWindows(table, horizon).window_indices(idx)
    disc = gamma ** np.arange(horizon)
    ret = (np.where(pad, 0.0, rewards[window]) * disc).sum(axis=1)
    steps = (~pad).sum(axis=1)
    crosses = idx + horizon >= end
    success = table.arrays.get(SUCCESS_KEY)
    last_success = (success.reshape(-1).astype(bool)[end - 1] if success is not None
                    else np.zeros(n_frames, dtype=bool))
    terminated = crosses & last_success
    bootstrap = (~terminated).astype(np.float64)
    discount = gamma ** steps.astype(np.float64)
    next_index = np.where(crosses, end - 1, idx + horizon)
    mc = np.zeros(n_frames)
    for s in np.unique(start):  # backward per episode
        e = int(end[s])
        g = 0.0
        for t in range(e - 1, s - 1, -1):
            g = rewards[t] + gamma * g
            mc[t] = g
    return ChunkTargets(ret, discount, bootstrap, next_index, mc, window, pad)


# ------------------------------------------------------------------------------ the algorithm
class TargetCritic:
    """The Polyak-averaged critic copy; saved in every checkpoint (a stateful trainer module)."""

    name = "target_critic"

    def __init__(self, critic: torch.nn.Module) -> None:
        self.net = copy.deepcopy(critic)
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, critic: torch.nn.Module, tau: float) -> None:
        for t, s in zip(self.net.parameters(), critic.parameters()):
            t.lerp_(s.detach(), tau)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)


@torch.no_grad()
def trunk_features(policy: Any, windows: Any, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, D) and action tokens (N, h, D) of every frame, the trunk in eval mode."""
    pooled, tokens = [], []
    for lo in range(0, len(windows), batch):
        f = policy.features(policy.prepare(windows.batch(np.arange(lo, min(lo + batch, len(windows))))))
        pooled.append(f.pooled.float())
        tokens.append(f.action_tokens.float())
    return torch.cat(pooled), torch.cat(tokens)


class ChunkedTD(OfflineAlgorithm):
    """The trainer's algorithm: ``collect`` samples window indices, ``update`` takes one critic
    step (and one actor step for bc_q / awr) and moves the target critic.

    Args:
        policy: the starting policy (its trunk stays frozen); a chunk critic is attached if it has none.
        windows: chunk windows over the offline data (:class:`~vla_rft.data.chunks.ChunkWindows`).
        cfg: the hyperparameters.
        rng: the trainer's Generator (batch sampling, saved in checkpoints).
        terms: forgetting hooks (EMA); loss terms that read observations are refused.
    """

    def __init__(self, policy: Any, windows: Any, cfg: ChunkedTDConfig, rng: np.random.Generator,
                 terms: list[Any] | None = None, seed: int = 0, where: str = "--data", source: Any = None,
                 offline_iterations: int = 0, rollout_len: int = 8) -> None:
        check_config(cfg)
        if not hasattr(policy, "attach_critic"):
            raise ConfigError(f"chunked TD needs a policy that can carry a chunk critic (the built-in VLA), "
                              f"not '{policy.policy_type}'")
        spec = policy.spec
        horizon = cfg.horizon or spec.chunk_size
        if not 1 <= horizon <= spec.chunk_size:
            raise ConfigError(f"chunked_td.horizon must be in [1, {spec.chunk_size}] (0 is the policy's chunk)")
        if policy.critic is None:
            policy.attach_critic(cfg.num_qs, cfg.hidden, cfg.layers, 0 if horizon == spec.chunk_size else horizon)
        policy.config.best_of_n = cfg.num_samples if cfg.actor == "best_of_n" else 0
        for p in policy.parameters():
            p.requires_grad_(False)
        trainable = list(policy.critic.parameters())
        actor_params = [p for n, p in policy.head.named_parameters()] if cfg.actor != "best_of_n" else []
        for p in trainable + actor_params:
            p.requires_grad_(True)
        illegal = [t.name for t in terms or [] if callable(t)]
        if illegal:
            raise ConfigError(f"chunked TD takes weight hooks (EMA) but not loss terms yet: {', '.join(illegal)}")
        self.policy, self.windows, self.cfg, self.rng, self.seed = policy, windows, cfg, rng, seed
        self.horizon = horizon
        self.target = TargetCritic(policy.critic)
        self.source, self.offline_iterations, self.rollout_len = source, int(offline_iterations), int(rollout_len)
        self.online: OnlineBuffer | None = None
        if source is not None:
            if horizon != spec.chunk_size:
                raise ConfigError("the online phase stores whole executed chunks: it needs chunked_td.horizon 0 "
                                  "(the policy's chunk)")
            self.online = OnlineBuffer()
        self.terms = [self.target, *([self.online] if self.online is not None else []), *(terms or [])]
        groups = [{"params": trainable, "lr": cfg.lr_critic}]
        if actor_params:
            groups.append({"params": actor_params, "lr": cfg.lr_actor})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        table = windows.table
        self.rewards = frame_rewards(table, cfg.reward, where)
        if cfg.intervention_penalty:
            self.rewards = self.rewards + intervention_penalties(table, cfg.intervention_penalty, where)
        self.targets = chunk_targets(table, self.rewards, horizon, cfg.gamma)
        policy.eval()
        self.pooled, self.tokens = trunk_features(policy, windows)
        actions = torch.as_tensor(table.arrays[ACTION_KEY], dtype=torch.float32, device=policy.device)
        self.actions = policy.normalizer.normalize_action(actions, clip=True)  # (N, A) normalized
        full = windows.window_indices(np.arange(len(table)))  # the policy's whole chunk, for BC
        self.bc_window, self.bc_pad = torch.as_tensor(full[0]), torch.as_tensor(full[1])

    # ------------------------------------------------------------------ trainer hooks
    def collect(self, iteration: int) -> Any:
        if self.online is None or iteration < self.offline_iterations:
            return self.rng.integers(0, len(self.rewards), size=self.cfg.batch_size)
        return self._collect_online(iteration)

    def env_steps(self, batch: Any) -> int:
        return int(batch["env_steps"]) if isinstance(batch, dict) else 0

    def batch_metrics(self, batch: Any, seconds: float) -> dict[str, float]:
        if not isinstance(batch, dict):
            return {}
        out = {"rollout/env_steps_per_s": batch["env_steps"] / max(seconds, 1e-9), "rollout/episodes": float(
            len(batch["outcomes"]))}
        if batch["outcomes"]:
            out["rollout/success_rate"] = float(np.mean(batch["outcomes"]))
        return out

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    @torch.no_grad()
    def _collect_online(self, iteration: int) -> dict[str, Any]:
        """``rollout_len`` chunk steps of every env from seeded resets, acting as the route's actor
        with sampled chunks; each chunk step becomes one transition in the online buffer."""
        from vla_rft.algorithms.online import iteration_seeds, sample_seed

        policy, src, gamma = self.policy, self.source, self.cfg.gamma
        gen = torch.Generator(device=policy.device).manual_seed(sample_seed(self.seed, iteration))
        obs = src.reset(iteration_seeds(self.seed, iteration, src.num_envs))
        feats = policy.features(policy.prepare(obs))
        steps, outcomes = 0, []
        for _ in range(self.rollout_len):
            chunk = policy.act(obs, deterministic=False, generator=gen)
            out = src.step(chunk)
            nxt = _with_rows(out.obs, out.final_obs)  # an ended episode bootstraps from its last observation
            nf = policy.features(policy.prepare(nxt))
            disc = gamma ** np.arange(src.chunk_size)
            n_exec = out.executed.sum(1)
            self.online.add(pooled=feats.pooled, tokens=feats.action_tokens,
                            chunk=policy.normalizer.normalize_action(torch.as_tensor(chunk, device=policy.device),
                                                                     clip=True),
                            mask=torch.as_tensor(out.executed), ret=torch.as_tensor((out.rewards * disc).sum(1)),
                            discount=torch.as_tensor(gamma ** n_exec.astype(np.float64)),
                            bootstrap=torch.as_tensor(~out.terminated), next_pooled=nf.pooled,
                            next_tokens=nf.action_tokens)
            steps += int(n_exec.sum())
            outcomes += out.success[out.done].tolist()
            obs = out.obs
            feats = policy.features(policy.prepare(obs)) if out.done.any() else nf
        return {"env_steps": steps, "outcomes": outcomes}

    def _sample_chunks(self, tokens: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """(B * n, h, A) normalized chunks from the head for action tokens (B, h, D) (n per state)."""
        latent, _ = self.policy.head.sample(tokens.repeat_interleave(n, dim=0), gen)
        return self.policy.head.chunk_of(latent)

    def _offline_rows(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
        """A batch of offline windows as the update reads it (every transition's pieces)."""
        tg, idx = self.targets, torch.as_tensor(batch)
        nxt = torch.as_tensor(tg.next_index[batch])
        f = lambda a: torch.as_tensor(a[batch], dtype=torch.float32)
        return {"pooled": self.pooled[idx], "tokens": self.tokens[idx],
                "chunk": self.actions[torch.as_tensor(tg.window[batch])],  # (B, hc, A)
                "ret": f(tg.ret), "discount": f(tg.discount), "bootstrap": f(tg.bootstrap), "mc": f(tg.mc_return),
                "next_pooled": self.pooled[nxt], "next_tokens": self.tokens[nxt],
                "bc_target": self.actions[self.bc_window[idx]], "bc_mask": ~self.bc_pad[idx]}

    def update(self, batch: Any, iteration: int, progress: float, rng: np.random.Generator) -> dict[str, float]:
        if self.online is None or iteration < self.offline_iterations:
            return self._step(self._offline_rows(batch), iteration)
        metrics: dict[str, float] = {}
        n_on = round(self.cfg.batch_size * self.cfg.online_ratio)
        for u in range(self.cfg.online_updates):  # RLPD: symmetric sampling of online and offline data
            off = self._offline_rows(rng.integers(0, len(self.rewards), size=self.cfg.batch_size - n_on))
            on = self.online.rows(rng.integers(0, len(self.online), size=n_on))
            rows = {k: torch.cat([off[k], on[k][:, : off[k].shape[1]] if k == "chunk" else on[k]]) for k in off}
            metrics = self._step(rows, iteration * 1_000 + u)
        return {**metrics, "online_buffer": float(len(self.online))}

    def _step(self, rows: dict[str, torch.Tensor], stream: int) -> dict[str, float]:
        """One critic (and actor) step on a batch of transitions."""
        cfg, policy = self.cfg, self.policy
        gen = torch.Generator(device=policy.device).manual_seed(self.seed * 1_000_003 + stream)
        with torch.no_grad():
            next_chunk = self._sample_chunks(rows["next_tokens"], 1, gen)
            q_next = self.target.net(rows["next_pooled"], next_chunk)  # (K, B)
            q_next = q_next.mean(0) if cfg.target_agg == "mean" else q_next.min(0).values
            y = rows["ret"] + rows["discount"] * rows["bootstrap"] * q_next
        q = policy.critic(rows["pooled"], rows["chunk"])  # (K, B)
        td = ((q - y[None]) ** 2).mean()
        critic_loss = td
        metrics: dict[str, float] = {"loss/td": float(td.detach()), "q_mean": float(q.mean().detach()),
                                     "target_mean": float(y.mean())}
        if cfg.cal_ql_alpha > 0:
            pen = self._cal_ql(rows, q, gen)
            critic_loss = critic_loss + cfg.cal_ql_alpha * pen
            metrics["loss/cal_ql"] = float(pen.detach())
        crit_params = list(policy.critic.parameters())
        grads = torch.autograd.grad(critic_loss, crit_params)
        for p, g in zip(crit_params, grads):
            p.grad = g
        if cfg.actor != "best_of_n":
            actor_loss, am = self._actor_loss(rows, gen)
            head_params = [p for p in policy.head.parameters() if p.requires_grad]
            grads = torch.autograd.grad(actor_loss, head_params, allow_unused=True)
            for p, g in zip(head_params, grads):
                p.grad = g
            metrics.update(am)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.target.update(policy.critic, cfg.tau)
        return metrics

    def _cal_ql(self, rows: dict[str, torch.Tensor], q_data: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Cal-QL: E[logsumexp_{a in A_s} max(Q(s, a), G_MC(s)) - Q(s, a_data)], A_s = N uniform
        chunks in the normalized range, N from pi(s), N from pi(s')."""
        n, b = self.cfg.cal_ql_samples, len(rows["pooled"])
        h, a_dim = self.policy.spec.chunk_size, self.policy.spec.action_dim
        with torch.no_grad():
            uniform = torch.rand((b * n, h, a_dim), generator=gen, device=q_data.device) * 2 - 1
            ood = torch.cat([uniform, self._sample_chunks(rows["tokens"], n, gen),
                             self._sample_chunks(rows["next_tokens"], n, gen)])
        feats = rows["pooled"].repeat_interleave(n, dim=0).repeat(3, 1)
        q_ood = self.policy.critic(feats, ood)  # (K, 3 * B * n): [uniform | pi(s) | pi(s')], each state-major
        q_ood = q_ood.view(q_ood.shape[0], 3, b, n).permute(0, 2, 1, 3).reshape(q_ood.shape[0], b, 3 * n)
        return cal_ql_penalty(q_ood, q_data, rows["mc"])

    def _actor_loss(self, rows: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, head, critic = self.cfg, self.policy.head, self.policy.critic
        tokens, pooled = rows["tokens"], rows["pooled"]
        target = rows["bc_target"]  # (B, h, A)
        mask = rows["bc_mask"]
        if cfg.actor == "bc_q":
            bc, _ = head.bc_loss(tokens, target, mask, gen)
            q = critic(pooled, head.mode(tokens)).mean(0)
            scale = q.abs().mean().detach().clamp_min(1e-6)
            return cfg.bc_coef * bc - cfg.q_coef * q.mean() / scale, {"loss/bc": float(bc.detach()),
                                                                       "q_actor": float(q.mean().detach())}
        with torch.no_grad():  # awr
            q_data = critic(pooled, target).mean(0)
            n = cfg.num_samples
            q_pi = critic(pooled.repeat_interleave(n, dim=0), self._sample_chunks(tokens, n, gen)).mean(0)
            adv = q_data - q_pi.view(len(pooled), n).mean(1)
            w = torch.exp(adv / cfg.awr_beta).clamp(max=cfg.awr_max_weight)
        step_logp = head.step_log_prob(tokens, head.latent_from_chunk(target))  # (B, h)
        m = mask.to(step_logp.dtype)
        nll = -(step_logp * m).sum(1) / m.sum(1).clamp_min(1.0)
        return (w * nll).mean(), {"loss/awr": float((w * nll).mean().detach()), "awr_weight": float(w.mean())}



def _with_rows(obs: dict[str, Any], rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``obs`` with the given env rows replaced by one-row observations."""
    if not rows:
        return obs
    out = {k: (list(v) if k == "task" else np.array(v, copy=True)) for k, v in obs.items()}
    for i, row in rows.items():
        for k, v in row.items():
            out[k][i] = v[0]
    return out


class OnlineBuffer:
    """The online transitions (trunk features, executed chunk, in-chunk return, discount, bootstrap
    mask, next features); a stateful trainer module, saved in every checkpoint (tokens as float16)."""

    name = "online_buffer"
    KEYS = ("pooled", "tokens", "chunk", "mask", "ret", "discount", "bootstrap", "next_pooled", "next_tokens")

    def __init__(self) -> None:
        self.data: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.data["ret"]) if self.data else 0

    def add(self, **rows: torch.Tensor) -> None:
        rows = {k: (v.to(torch.float16) if "tokens" in k else v.float() if k not in ("mask",) else v.bool()).cpu()
                for k, v in rows.items()}
        rows["bootstrap"] = rows["bootstrap"].float()
        self.data = {k: torch.cat([self.data[k], rows[k]]) if self.data else rows[k] for k in self.KEYS}

    def rows(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(idx)
        d = {k: v[i] for k, v in self.data.items()}
        return {"pooled": d["pooled"], "tokens": d["tokens"].float(), "chunk": d["chunk"], "ret": d["ret"],
                "discount": d["discount"], "bootstrap": d["bootstrap"], "mc": torch.zeros_like(d["ret"]),
                "next_pooled": d["next_pooled"], "next_tokens": d["next_tokens"].float(), "bc_target": d["chunk"],
                "bc_mask": d["mask"]}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.data.items()} if self.data else {"empty": torch.zeros(1)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.data = {} if "empty" in state else {k: state[k].clone() for k in self.KEYS}


def cal_ql_penalty(q_ood: torch.Tensor, q_data: torch.Tensor, mc_return: torch.Tensor) -> torch.Tensor:
    """Cal-QL's conservative term, mean over ensemble and batch: logsumexp over the out-of-data
    chunks (K, B, M) of Q lower-bounded by the data's Monte-Carlo return (B,), minus Q(s, a_data) (K, B)."""
    bounded = torch.maximum(q_ood, mc_return[None, :, None])
    return (torch.logsumexp(bounded, dim=-1) - q_data).mean()
