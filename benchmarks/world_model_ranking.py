"""Does the world model rank policies as the real sim does? Fidelity and ranking in one run.

    python benchmarks/world_model_ranking.py --world_model runs/wm-pick/checkpoints/last --task pick_cube \
        --policies random runs/kp4-s0/checkpoints/step_0001000 ... --trained_on runs/kp4-s0/checkpoints/last ... \
        --data data/wm/pick_cube/heldout_grpo data/wm/pick_cube/heldout_expert

Runs ``vla-rft world-model eval`` (real success from the evaluation harness, ``--episodes`` per
policy, and success in the model from the same seeds), then writes
``benchmarks/results/world_model_ranking_<task>.json`` and a markdown table beside it, marking the
policies whose rollouts were in the model's training data (``--trained_on``), with Pearson,
Spearman and MAE over all policies and over the unseen ones alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    from world_models.evaluate import WorldModelEvalConfig, evaluate_world_model
    from world_models.metrics import ranking

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world_model", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--policies", nargs="+", required=True)
    ap.add_argument("--trained_on", nargs="*", default=[], help="policies whose rollouts the model was trained on")
    ap.add_argument("--data", nargs="*", default=[], help="held-out datasets for the open-loop fidelity")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=300000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--name", default=None, help="results name (default world_model_ranking_<task>)")
    args = ap.parse_args()
    name = args.name or f"world_model_ranking_{args.task}"
    out_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    t0 = time.time()
    cfg = WorldModelEvalConfig(world_model=args.world_model, task=args.task, policy=list(args.policies),
                               episodes=args.episodes, seed=args.seed, data=list(args.data), videos=args.videos,
                               threads=args.threads, out=str(out_dir))
    res = evaluate_world_model(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    for row in res["policies"]:
        row["in_training_data"] = row["policy"] in args.trained_on
    unseen = [r for r in res["policies"] if not r["in_training_data"]]
    res["unseen"] = ranking([r["wm_success"] for r in unseen], [r["real_success"] for r in unseen]) | {
        "policies": len(unseen)}
    res["command"] = "python benchmarks/world_model_ranking.py " + " ".join(sys.argv[1:])
    res["seconds"] = round(time.time() - t0, 1)
    res["out_dir"] = str(out_dir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def markdown(res: dict) -> str:
    lines = [(f"World-model ranking on {res['task']} ({res['policies'][0]['episodes']} episodes per policy, "
             "real and imagined from the same seeds)"), "",
             "| policy | in WM data | real success (95% CI) | world-model success |", "|---|---|---|---|"]
    for r in res["policies"]:
        lo, hi = r["real_ci95"]
        lines.append(f"| {r['policy']} | {'yes' if r['in_training_data'] else 'no'} | {r['real_success']:.1%} "
                     f"({lo:.1%}-{hi:.1%}) | {r['wm_success']:.1%} |")
    u = res["unseen"]
    lines += ["", (f"All {len(res['policies'])} policies: Pearson {_f(res['pearson'])}, Spearman {_f(res['spearman'])}, "
              f"MAE {_f(res['mae'], '{:.3f}')}."),
              (f"The {u['policies']} unseen: Pearson {_f(u['pearson'])}, Spearman {_f(u['spearman'])}, "
              f"MAE {_f(u['mae'], '{:.3f}')}.")]
    if "fidelity" in res:
        f = res["fidelity"]
        lines += ["", f"Open loop on {f['episodes']} held-out episodes, by chunk step (PSNR dB / SSIM / state MAE):", ""]
        lines.append("| step | " + " | ".join(str(i + 1) for i in range(len(f["psnr"]))) + " |")
        lines.append("|---|" + "---|" * len(f["psnr"]))
        for key, fmt in (("psnr", "{:.1f}"), ("ssim", "{:.3f}"), ("state_err", "{:.4f}"), ("count", "{}")):
            lines.append(f"| {key} | " + " | ".join(_f(v, fmt) for v in f[key]) + " |")
        lines += ["", (f"Success head on the held-out transitions: precision {f['success_precision']:.2f}, "
                  f"recall {f['success_recall']:.2f} ({f['success_positives']} successes in "
                  f"{f['success_transitions']} transitions).")]
    lines += ["", f"Command: `{res['command']}` ({res['seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
