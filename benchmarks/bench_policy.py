"""Policy inference benchmark: prints a table and writes benchmarks/results/policy.json.

Runs the same code as ``vla-rft bench policy`` (vla_rft.commands.bench_policy); any of its
options can be overridden, e.g. ``python benchmarks/bench_policy.py --heads '[gaussian,flow]'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vla_rft.commands.bench_policy import BenchPolicyConfig, run
from vla_rft.config import parse_config

RESULT = Path(__file__).resolve().parent / "results" / "policy.json"

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(RESULT)]
    sys.exit(run(parse_config(BenchPolicyConfig, args)))
