"""Fine-tuning inside a world model: success the model predicts against real success, per run.

    python benchmarks/world_model_rft_curve.py runs/gain-grpo-pick_cube-s0-wm runs/gain-grpo-pick_cube-s1-wm ...

Reads each run's metrics.jsonl: ``rollout/success_rate`` is the success of the imagined training
rollouts (what the world model's success head says), ``eval/success_rate`` the periodic
evaluation in the real sim (not training data; Wilson bands). Draws both against the GRPO
iteration and writes ``benchmarks/results/world_model_rft_curve.png`` and a JSON of the series.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def series(run: Path, window: int = 20) -> dict:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    roll = [(r["step"], r["rollout/success_rate"]) for r in recs if "rollout/success_rate" in r]
    steps = [s for s, _ in roll]
    vals = np.array([v for _, v in roll], float)
    smooth = [float(vals[max(0, i - window + 1): i + 1].mean()) for i in range(len(vals))]
    ev = [r for r in recs if "eval/success_rate" in r]
    return {"run": run.name, "imagined_steps": steps, "imagined_success": smooth,
            "real_steps": [r["step"] for r in ev], "real_success": [r["eval/success_rate"] for r in ev],
            "real_lo": [r.get("eval/ci95_low", r["eval/success_rate"]) for r in ev],
            "real_hi": [r.get("eval/ci95_high", r["eval/success_rate"]) for r in ev]}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=str(RESULTS / "world_model_rft_curve.png"))
    args = ap.parse_args()
    data = [series(Path(r)) for r in args.runs]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, d in enumerate(data):
        color = f"C{i}"
        ax.plot(d["imagined_steps"], [100 * v for v in d["imagined_success"]], color=color, linestyle="--",
                label=f"{d['run']}: in the model (imagined rollouts, 20-it mean)")
        ax.errorbar(d["real_steps"], [100 * v for v in d["real_success"]], color=color, marker="o", capsize=3,
                    yerr=[[max(0.0, 100 * (v - lo)) for v, lo in zip(d["real_success"], d["real_lo"])],
                          [max(0.0, 100 * (hi - v)) for v, hi in zip(d["real_success"], d["real_hi"])]],
                    label=f"{d['run']}: real sim (periodic evaluation)")
    ax.set_xlabel("GRPO iteration (zero real simulator steps)")
    ax.set_ylabel("success (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    Path(args.out).with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
