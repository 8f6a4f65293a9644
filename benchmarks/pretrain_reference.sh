#!/usr/bin/env bash
# Reproduce the reference pretrained policy and its evaluation (docs/results.md):
#   bash benchmarks/pretrain_reference.sh [RUN_NAME]
# 1. DART demonstrations of the five pretraining tasks, 2. the tiny_5task pretraining preset,
# 3. evaluation on the pretraining tasks and on the held-out tasks, 100 episodes each, seeds 100000+.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-pretrain-tiny5}"
VLA="${VLA:-.venv/bin/vla-rft}"
PRETRAIN_TASKS="reach_target press_button open_drawer push_cube pick_cube"
HELDOUT_TASKS="${HELDOUT_TASKS:-lift_cube close_drawer slide_block place_cube}"
EPISODES="${EPISODES:-100}"
for t in $PRETRAIN_TASKS; do
  [ -d "data/dart/$t" ] || "$VLA" collect --task "$t" --episodes 200 --noise 0.3 --seed 0 --out "data/dart/$t" --json
done
[ -f "runs/$RUN/checkpoints/last/meta.json" ] || "$VLA" pretrain --config tiny_5task --logging.name "$RUN" --json
list() { echo "[$(echo "$1" | tr ' ' ',')]"; }
"$VLA" eval --policy "runs/$RUN/checkpoints/last" --tasks "$(list "$PRETRAIN_TASKS")" --episodes "$EPISODES" \
  --seed 100000 --num_envs 10 --json --logging.name "$RUN-eval-pretrain"
"$VLA" eval --policy "runs/$RUN/checkpoints/last" --tasks "$(list "$HELDOUT_TASKS")" --episodes "$EPISODES" \
  --seed 100000 --num_envs 10 --json --logging.name "$RUN-eval-heldout"
