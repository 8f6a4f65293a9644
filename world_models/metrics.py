"""Fidelity and ranking metrics: PSNR, SSIM, open-loop rollouts against recorded episodes, and the
agreement of success estimated in the model with real success (Pearson, Spearman, MAE)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of float images in [0, 1], (B, 3, H, W) -> (B,)."""
    mse = (pred - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, the
    mean over channels and valid windows) of float images in [0, 1], (B, 3, H, W) -> (B,)."""
    c = pred.shape[1]
    w = _gaussian_window().to(pred).expand(c, 1, 11, 11)
    conv = lambda x: F.conv2d(x, w, groups=c)
    mu_x, mu_y = conv(pred), conv(target)
    sxx = conv(pred * pred) - mu_x**2
    syy = conv(target * target) - mu_y**2
    sxy = conv(pred * target) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


@torch.no_grad()
def open_loop(model: Any, sequences: Any, starts: np.ndarray) -> dict[str, Any]:
    """Replay recorded chunks open loop from the real frames at ``starts`` (frame indices; the
    sequences' K steps) and compare with the real frames and states at every chunk boundary.

    Returns per horizon step k = 1..K (averaged over valid sequences and cameras): ``psnr``,
    ``ssim``, ``state_err`` (mean absolute error of the state, in its units), ``count``; and for
    the first sequences, uint8 strips ``real`` / ``imagined`` {camera: (n, K+1, H, W, 3)}."""
    b = sequences.batch(starts)
    cams = model.cfg.cameras
    z = model.encode({c: b["frames"][c][:, 0] for c in cams})
    s = model.normalize_state(b["observation.state"][:, 0])
    k_steps = b["action"].shape[1]
    out = {"psnr": [], "ssim": [], "state_err": [], "count": []}
    imagined = {c: [model.to_uint8(model.decode(z)[c])] for c in cams}
    alive = np.ones(len(starts), bool)
    for k in range(k_steps):
        z, s, _ = model.step(z, s, torch.as_tensor(b["action"][:, k], device=model.device))
        alive &= b["valid"][:, k]
        frames = model.decode(z)
        rows = torch.as_tensor(alive, device=model.device)
        ps, ss = [], []
        for c in cams:
            imagined[c].append(model.to_uint8(frames[c]))
            real = model.frames_tensor(b["frames"][c][:, k + 1])
            ps.append(psnr(frames[c], real)[rows])
            ss.append(ssim(frames[c], real)[rows])
        err = (model.unnormalize_state(s) - torch.as_tensor(b["observation.state"][:, k + 1], device=model.device)
               ).abs().mean(1)[rows]
        n = int(alive.sum())
        out["psnr"].append(float(torch.cat(ps).mean()) if n else math.nan)
        out["ssim"].append(float(torch.cat(ss).mean()) if n else math.nan)
        out["state_err"].append(float(err.mean()) if n else math.nan)
        out["count"].append(n)
    out["real"] = {c: b["frames"][c] for c in cams}
    out["imagined"] = {c: np.stack(v, axis=1) for c, v in imagined.items()}
    return out


@torch.no_grad()
def success_head_scores(model: Any, sequences: Any, starts: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Precision / recall of the one-chunk success prediction from real frames against the task's
    success labels (every valid transition of the sequences at ``starts``)."""
    b = sequences.batch(starts)
    cams = model.cfg.cameras
    k_steps = b["action"].shape[1]
    preds, labels = [], []
    for k in range(k_steps):
        z = model.encode({c: b["frames"][c][:, k] for c in cams})
        s = model.normalize_state(b["observation.state"][:, k])
        _, _, logit = model.step(z, s, torch.as_tensor(b["action"][:, k], device=model.device))
        v = b["valid"][:, k]
        preds.append((torch.sigmoid(logit).cpu().numpy() > threshold)[v])
        labels.append(b["success"][:, k][v])
    p, y = np.concatenate(preds), np.concatenate(labels)
    tp = int((p & y).sum())
    return {"success_precision": tp / max(int(p.sum()), 1), "success_recall": tp / max(int(y.sum()), 1),
            "success_positives": int(y.sum()), "success_transitions": len(y)}


def ranking(wm: list[float], real: list[float]) -> dict[str, float]:
    """Agreement of world-model success with real success across policies."""
    from scipy import stats

    wm_a, real_a = np.asarray(wm, float), np.asarray(real, float)
    out = {"mae": float(np.abs(wm_a - real_a).mean()) if len(wm_a) else math.nan}
    if len(wm_a) >= 2 and wm_a.std() > 0 and real_a.std() > 0:
        out["pearson"] = float(stats.pearsonr(wm_a, real_a).statistic)
        out["spearman"] = float(stats.spearmanr(wm_a, real_a).statistic)
    else:  # constant inputs have no correlation
        out["pearson"] = out["spearman"] = math.nan
    return out
