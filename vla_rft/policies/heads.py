"""Action-chunk heads: trunk tokens for the h action queries -> a distribution over chunks.

Everything here lives in *normalized* action space (see :mod:`vla_rft.policies.normalizer`):
the policy base class de-normalizes for the environment. Each head defines a **latent**, the
random variable its log-probability is defined on, shaped ``(B, L, h, A)``:

- :class:`GaussianChunkHead`: ``L = 1``, the normalized chunk itself. Mean from each action
  query token, a learned state-independent log-std per (step, dim); log pi(chunk) is the sum
  of h * A independent Gaussian log-densities (RL4VLA's macro-action, ALGORITHMS.md §2).
- :class:`FlowMatchingHead`: ``L = K + 1``, the whole Euler chain x_0 .. x_K (pi0/SmolVLA
  style velocity net). For RL each Euler step is Gaussian,
  x_{k+1} ~ N(x_k + dt * v(x_k, t_k), sigma^2) with a learned sigma (VLA-RFT, ALGORITHMS.md
  §3), and log pi = sum over the K steps and h * A dims (x_0 ~ N(0, I) is parameter-free and
  left out). The final chunk alone does not determine that probability, hence the latent.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from vla_rft.config import ConfigError

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_STD_RANGE = (-5.0, 1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, h, A) over the steps where ``mask`` (B, h) is true."""
    weights = mask.to(values.dtype)[..., None].expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(log_std)^2)."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - _HALF_LOG_2PI


class ActionHead(nn.Module, ABC):
    """Interface shared by the chunk heads; ``tokens`` are the trunk outputs (B, h, D)."""

    latent_steps: int  # L, the second dimension of the latent

    def __init__(self, dim: int, chunk_size: int, action_dim: int) -> None:
        super().__init__()
        self.dim, self.chunk_size, self.action_dim = dim, chunk_size, action_dim

    @abstractmethod
    def mode(self, tokens: torch.Tensor) -> torch.Tensor:
        """The deterministic chunk (B, h, A) used by ``act(deterministic=True)``."""

    @abstractmethod
    def sample(self, tokens: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent (B, L, h, A), per-step log_prob (B, h), the same values :meth:`step_log_prob` gives)."""

    @abstractmethod
    def step_log_prob(self, tokens: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """log pi of each chunk step (B, h): the densities of step j's A dims (and, for a latent
        chain, of every link that draws them) summed; a chunk's log pi is the sum over steps."""

    def log_prob(self, tokens: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """log pi(latent) (B,), summed over every random dimension of the latent."""
        return self.step_log_prob(tokens, latent).sum(dim=-1)

    @abstractmethod
    def step_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        """Entropy (B, h) of each step's Gaussians (summed over A, and over the chain's links)."""

    def entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        """Entropy (B,) of the per-step Gaussians that :meth:`log_prob` sums."""
        return self.step_entropy(tokens).sum(dim=-1)

    @abstractmethod
    def bc_loss(self, tokens: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Imitation loss on normalized expert chunks ``target`` (B, h, A); ``mask`` (B, h) true = real step."""

    @abstractmethod
    def latent_from_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        """The latent (B, L, h, A) of a normalized chunk, where the chunk determines it."""

    @abstractmethod
    def noise_parameters(self) -> list[nn.Parameter]:
        """The exploration-scale parameters (often given their own learning rate)."""

    @staticmethod
    def chunk_of(latent: torch.Tensor) -> torch.Tensor:
        """The normalized chunk (B, h, A) a latent (B, L, h, A) ends in."""
        return latent[:, -1]


class GaussianChunkHead(ActionHead):
    """Diagonal Gaussian over the chunk: mean per query token, state-independent log-std."""

    latent_steps = 1

    def __init__(self, dim: int, chunk_size: int, action_dim: int, *, init_log_std: float, loss: str) -> None:
        super().__init__(dim, chunk_size, action_dim)
        if loss not in ("l1", "nll"):
            raise ConfigError(f"gaussian head loss must be 'l1' or 'nll', got '{loss}'")
        self.loss_type = loss
        self.mean = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, action_dim))
        self.log_std = nn.Parameter(torch.full((chunk_size, action_dim), float(init_log_std)))

    def _log_std(self) -> torch.Tensor:
        return self.log_std.clamp(*LOG_STD_RANGE)  # (h, A)

    def mode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mean(tokens)  # (B, h, A)

    def sample(self, tokens: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.mean(tokens), self._log_std()
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        chunk = mean + eps * torch.exp(log_std)
        return chunk[:, None], gaussian_log_density(chunk, mean, log_std).sum(dim=-1)

    def step_log_prob(self, tokens: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return gaussian_log_density(latent[:, -1], self.mean(tokens), self._log_std()).sum(dim=-1)

    def step_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        per_dim = 0.5 + _HALF_LOG_2PI + self._log_std()  # (h, A)
        return per_dim.sum(dim=-1).expand(tokens.shape[0], -1)

    def bc_loss(self, tokens, target, mask, generator=None):
        """'l1': L1 on the mean (OpenVLA-OFT) plus the NLL of a detached mean, so the std
        still learns the residual scale RL will start exploring from; 'nll': full NLL."""
        mean, log_std = self.mean(tokens), self._log_std()
        l1 = masked_mean((mean - target).abs(), mask)
        nll_mean = mean if self.loss_type == "nll" else mean.detach()
        nll = masked_mean(-gaussian_log_density(target, nll_mean, log_std), mask)
        loss = nll if self.loss_type == "nll" else l1 + nll
        return loss, {"l1": l1.detach(), "nll": nll.detach(), "std": torch.exp(log_std).mean().detach()}

    def latent_from_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        return chunk[:, None]

    def noise_parameters(self) -> list[nn.Parameter]:
        return [self.log_std]


def _time_features(t: torch.Tensor, n: int = 16) -> torch.Tensor:
    """Sinusoidal features (B, 2n) of flow times t (B,) in [0, 1]."""
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), n, device=t.device, dtype=t.dtype))
    ang = t[:, None] * freqs[None, :] * math.pi
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class FlowMatchingHead(ActionHead):
    """Rectified-flow velocity net from N(0, I) (t = 0) to the chunk (t = 1), K Euler steps."""

    def __init__(self, dim: int, chunk_size: int, action_dim: int, *, steps: int, hidden: int,
                 init_log_noise: float) -> None:
        super().__init__(dim, chunk_size, action_dim)
        if steps < 1:
            raise ConfigError(f"flow steps must be >= 1, got {steps}")
        self.steps = steps
        self.latent_steps = steps + 1
        self.cond = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden))  # per query token
        self.x_in = nn.Linear(action_dim, hidden)  # this step's action
        self.chunk_in = nn.Linear(chunk_size * action_dim, hidden)  # the whole chunk, for coherence
        self.t_in = nn.Linear(32, hidden)
        self.net = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, action_dim))
        self.log_noise = nn.Parameter(torch.full((chunk_size, action_dim), float(init_log_noise)))

    def _log_noise(self) -> torch.Tensor:
        return self.log_noise.clamp(*LOG_STD_RANGE)  # (h, A)

    def velocity(self, cond: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x_t, t | trunk): cond (N, h, H) projected tokens, x (N, h, A), t (N,) -> (N, h, A)."""
        hidden = cond + self.x_in(x) + self.chunk_in(x.flatten(1))[:, None] + self.t_in(_time_features(t))[:, None]
        return self.net(hidden)

    def _integrate(self, tokens: torch.Tensor, x0: torch.Tensor, noisy: bool,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Euler chain (B, K+1, h, A) from x0 and its per-step log-prob (B, h) (zero when not ``noisy``)."""
        cond, dt = self.cond(tokens), 1.0 / self.steps
        log_sigma = self._log_noise()
        xs, logp = [x0], x0.new_zeros(x0.shape[:2])
        for k in range(self.steps):
            t = x0.new_full((x0.shape[0],), k * dt)
            mean = xs[-1] + dt * self.velocity(cond, xs[-1], t)
            if noisy:
                eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
                nxt = mean + eps * torch.exp(log_sigma)
                logp = logp + gaussian_log_density(nxt, mean, log_sigma).sum(dim=-1)
            else:
                nxt = mean
            xs.append(nxt)
        return torch.stack(xs, dim=1), logp

    def mode(self, tokens: torch.Tensor) -> torch.Tensor:
        x0 = tokens.new_zeros(tokens.shape[0], self.chunk_size, self.action_dim)
        return self._integrate(tokens, x0, noisy=False, generator=None)[0][:, -1]

    def sample(self, tokens: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (tokens.shape[0], self.chunk_size, self.action_dim)
        x0 = torch.randn(shape, generator=generator, dtype=tokens.dtype, device=tokens.device)
        return self._integrate(tokens, x0, noisy=True, generator=generator)

    def step_log_prob(self, tokens: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        b, k = latent.shape[0], self.steps
        if latent.shape[1] != k + 1:
            raise ValueError(f"flow latent must hold the {k + 1} Euler states, got shape {tuple(latent.shape)}")
        # All K transitions in one velocity pass: (B, K, ...) folded into the batch.
        cond = self.cond(tokens).repeat_interleave(k, dim=0)  # (B*K, h, H)
        x = latent[:, :-1].reshape(b * k, self.chunk_size, self.action_dim)
        t = (torch.arange(k, dtype=latent.dtype, device=latent.device) / k).repeat(b)
        mean = x + self.velocity(cond, x, t) / k
        nxt = latent[:, 1:].reshape_as(mean)
        dens = gaussian_log_density(nxt, mean, self._log_noise())  # (B*K, h, A)
        return dens.reshape(b, k, self.chunk_size, self.action_dim).sum(dim=(1, 3))

    def step_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        per_dim = 0.5 + _HALF_LOG_2PI + self._log_noise()  # (h, A)
        return (self.steps * per_dim.sum(dim=-1)).expand(tokens.shape[0], -1)

    def bc_loss(self, tokens, target, mask, generator=None):
        """Conditional flow matching: regress v(x_t, t) onto a - eps at a random t."""
        b = target.shape[0]
        t = torch.rand((b,), generator=generator, dtype=target.dtype, device=target.device)
        eps = torch.randn(target.shape, generator=generator, dtype=target.dtype, device=target.device)
        x_t = (1 - t[:, None, None]) * eps + t[:, None, None] * target
        v = self.velocity(self.cond(tokens), x_t, t)
        loss = masked_mean(F.mse_loss(v, target - eps, reduction="none"), mask)
        return loss, {"flow_mse": loss.detach(), "noise": torch.exp(self._log_noise()).mean().detach()}

    def latent_from_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        raise ValueError("the flow head's log-prob is defined on its whole Euler chain, not on a chunk: "
                         "store the latent from policy.sample_latent() and pass that to log_prob()")

    def noise_parameters(self) -> list[nn.Parameter]:
        return [self.log_noise]
