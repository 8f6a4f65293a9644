"""``vla-rft bench policy``: chunk-inference latency and size of the policy presets.

Times ``policy.act(obs)``, the whole path a deployed policy runs per chunk (validation, uint8
to float, trunk, head, de-normalization), for each preset x head x batch size x resolution
with one camera. Instructions are embedded once per process and cached, so the text encoder
adds nothing in steady state; the default 'hashing' encoder avoids the 10 s MiniLM load.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.errors import UserInputError


@dataclass
class BenchPolicyConfig:
    """Measure policy inference latency (p50/p99 per chunk) and parameter counts."""

    presets: list[str] = field(default_factory=lambda: ["tiny", "small", "base"])
    """Policy presets under configs/policy/."""
    heads: list[str] = field(default_factory=lambda: ["gaussian"])
    """Action heads to measure (gaussian, flow)."""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])
    """Observation batch sizes."""
    resolutions: list[int] = field(default_factory=lambda: [64, 96])
    """Square camera resolutions (one camera)."""
    iters: int = 50
    """Timed calls per row (p99 of fewer than 100 calls is the maximum)."""
    warmup: int = 5
    """Untimed calls before timing."""
    num_threads: int = 1
    """torch CPU threads (1 gives comparable numbers on a shared 2-core machine)."""
    text_encoder: str = "hashing"
    """Instruction encoder for the measured policies (minilm adds a one-off 10 s load)."""
    seed: int = 0
    """Seed for weights and observations."""
    out: str | None = None
    """Also write the JSON result to this path."""
    json: bool = False
    """Print one JSON object with the rows on stdout."""


def _observation(batch: int, res: int, state_dim: int, rng: Any) -> dict[str, Any]:
    return {"observation.images.front": rng.integers(0, 256, (batch, res, res, 3), dtype="uint8"),
            "observation.state": rng.standard_normal((batch, state_dim)).astype("float32"),
            "task": ["pick up the red cube and place it in the bowl"] * batch}


def measure_row(preset: str, head: str, batch: int, res: int, cfg: BenchPolicyConfig) -> dict[str, Any]:
    """Build one policy and time ``act`` on a fixed observation batch."""
    import numpy as np
    import torch

    from vla_rft.policies import Normalizer, load_policy_preset, make_policy

    policy_type, model_cfg = load_policy_preset(preset)
    model_cfg.head, model_cfg.text_encoder = head, cfg.text_encoder
    model_cfg.cameras, model_cfg.image_size = ["front"], [res, res]
    torch.manual_seed(cfg.seed)
    policy = make_policy(policy_type, model_cfg, Normalizer.identity(model_cfg.state_dim, model_cfg.action_dim)).eval()
    obs = _observation(batch, res, model_cfg.state_dim, np.random.default_rng(cfg.seed))
    for _ in range(cfg.warmup):
        policy.act(obs)
    times = []
    for _ in range(cfg.iters):
        t0 = time.perf_counter()
        policy.act(obs)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"preset": preset, "head": head, "batch": batch, "resolution": res, "params": policy.num_parameters(),
            "p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3),
            "chunk_size": model_cfg.chunk_size}


def bench_policy(cfg: BenchPolicyConfig) -> dict[str, Any]:
    """Every row of the benchmark plus the conditions it ran under."""
    import torch

    if cfg.iters < 1 or cfg.warmup < 0:
        raise UserInputError(f"--iters must be >= 1 and --warmup >= 0, got {cfg.iters} and {cfg.warmup}")
    torch.set_num_threads(cfg.num_threads)
    rows = [measure_row(p, h, b, r, cfg)
            for p in cfg.presets for h in cfg.heads for r in cfg.resolutions for b in cfg.batch_sizes]
    return {"rows": rows, "num_threads": cfg.num_threads, "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "iters": cfg.iters, "what": "policy.act(obs), one camera, ms per chunk"}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'preset':<8}{'head':<10}{'batch':>6}{'res':>5}{'params':>12}{'p50 ms':>9}{'p99 ms':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['preset']:<8}{r['head']:<10}{r['batch']:>6}{r['resolution']:>5}{r['params']:>12,}"
                     f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
    return "\n".join(lines)


def run(cfg: BenchPolicyConfig) -> int:
    from vla_rft.cli import print_json

    result = bench_policy(cfg)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2) + "\n")
    if cfg.json:
        print_json(result)
    else:
        print(format_table(result))
        print(f"({cfg.num_threads} thread(s), {cfg.iters} calls per row)", file=sys.stderr)
    return 0
