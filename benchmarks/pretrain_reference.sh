#!/usr/bin/env bash
# Reproduce the reference pretrained policy and its evaluation (docs/results.md):
#   bash benchmarks/pretrain_reference.sh [RUN_NAME]
# 1. DART demonstrations of the pretraining tasks, 2. the pretraining preset ($PRESET, default
#    tiny_kp_4task; PRETRAIN_TASKS must match its datasets),
# 3. evaluation on the pretraining tasks and on the held-out tasks, 100 episodes each, seeds 100000+.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-pretrain-tiny-kp4}"
VLA="${VLA:-.venv/bin/vla-rft}"
PRESET="${PRESET:-tiny_kp_4task}"
PRETRAIN_TASKS="${PRETRAIN_TASKS:-open_drawer close_drawer lift_cube push_cube}"
HELDOUT_TASKS="${HELDOUT_TASKS:-pick_cube press_button slide_block reach_target}"
REPLAN="${REPLAN:+--replan $REPLAN}"
EPISODES="${EPISODES:-100}"
for t in $PRETRAIN_TASKS; do
  [ -d "data/dart/$t" ] || "$VLA" collect --task "$t" --episodes 200 --noise 0.3 --seed 0 --out "data/dart/$t" --json
done
[ -f "runs/$RUN/checkpoints/last/meta.json" ] || "$VLA" pretrain --config "$PRESET" --logging.name "$RUN" --json
list() { echo "[$(echo "$1" | tr ' ' ',')]"; }
"$VLA" eval --policy "runs/$RUN/checkpoints/last" --tasks "$(list "$PRETRAIN_TASKS")" --episodes "$EPISODES" \
  --seed 100000 --num_envs 10 $REPLAN --json --logging.name "$RUN-eval-pretrain"
"$VLA" eval --policy "runs/$RUN/checkpoints/last" --tasks "$(list "$HELDOUT_TASKS")" --episodes "$EPISODES" \
  --seed 100000 --num_envs 10 $REPLAN --json --logging.name "$RUN-eval-heldout"
