"""A critic over whole action chunks, Q(s, a_{t:t+h}), and best-of-N action selection with it.

Q-chunking / CO-RFT (ALGORITHMS.md §1): an ensemble of K LayerNorm MLPs reads the policy
trunk's pooled feature and the flattened chunk (normalized action units, its first ``horizon``
steps) and returns K estimates. It lives inside the policy (``policy.critic``), so a checkpoint
trained by ``vla-rft finetune --algo chunked-td`` carries it, and with ``best_of_n`` > 0 every
command that acts with the policy (``eval``, ``serve``, ``deploy``) plays Q-chunking's QC actor:
sample N chunks, execute the one with the highest mean Q.
"""

from __future__ import annotations

import torch
from torch import nn


class ChunkCritic(nn.Module):
    """K independent MLPs (Linear → LayerNorm → GELU) × layers → Linear(1)."""

    def __init__(self, feature_dim: int, horizon: int, action_dim: int, hidden: int, layers: int, num_qs: int) -> None:
        super().__init__()
        self.horizon, self.action_dim, self.num_qs = horizon, action_dim, num_qs

        def mlp() -> nn.Sequential:
            mods: list[nn.Module] = []
            width = feature_dim + horizon * action_dim
            for _ in range(layers):
                mods += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU()]
                width = hidden
            mods.append(nn.Linear(width, 1))
            return nn.Sequential(*mods)

        self.qs = nn.ModuleList([mlp() for _ in range(num_qs)])

    def forward(self, feature: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """(K, B) estimates for features (B, D) and normalized chunks (B, >= horizon, A)."""
        x = torch.cat([feature, chunk[:, : self.horizon].flatten(1)], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])


@torch.no_grad()
def best_of_n(head: nn.Module, critic: ChunkCritic, tokens: torch.Tensor, pooled: torch.Tensor, n: int,
              generator: torch.Generator | None) -> torch.Tensor:
    """The normalized chunk (B, h, A) with the highest mean Q among ``n`` samples of the head per state."""
    b = tokens.shape[0]
    latent, _ = head.sample(tokens.repeat_interleave(n, dim=0), generator)
    chunks = head.chunk_of(latent)  # (B * n, h, A)
    q = critic(pooled.repeat_interleave(n, dim=0), chunks).mean(dim=0).view(b, n)
    best = q.argmax(dim=1)
    return chunks.view(b, n, *chunks.shape[1:])[torch.arange(b, device=chunks.device), best]
