"""Simulator benchmark: writes benchmarks/results/sim.json (see docs/benchmarks.md).

    python benchmarks/bench_sim.py            # same as: vla-rft bench sim --out benchmarks/results/sim.json
"""

import sys

from vla_rft.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sim", "--out", "benchmarks/results/sim.json", *sys.argv[1:]]))
