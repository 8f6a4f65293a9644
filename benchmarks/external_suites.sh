#!/usr/bin/env bash
# PPO fine-tuning on a robosuite task and on a Meta-World task from a pretrained start
# (issue "More simulators through one contract"; figures in docs/results.md):
#   bash benchmarks/external_suites.sh robosuite     # robosuite Lift
#   bash benchmarks/external_suites.sh metaworld     # Meta-World push (pretrained on four MT10 tasks)
# Each suite: 1. DART demonstrations by the task's scripted expert, 2. behaviour cloning of the tiny
# VLA (tiny_kp_4task's recipe on these datasets), 3. evaluation of the start on the target,
# 4. PPO (ppo_tiny) for $MINUTES minutes, 5. evaluation of the `last` checkpoint on the same
# episodes. Evaluation seeds (100000+) are disjoint from the collection seeds (0..N-1).
# Environment overrides: MINUTES, EPISODES (evaluation), STEPS (pretraining), SEED (PPO), NUM_ENVS,
# ROLLOUT_LEN (chunks per env per PPO iteration; the default covers one episode of the task:
# every iteration resets the envs, so a shorter window never collects the steps past it).
# robosuite steps at about 12 per second with two cameras on one core, so its PPO iterations have
# fewer envs (8) and its evaluation is shorter (50 episodes).
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="${1:?usage: external_suites.sh robosuite|metaworld}"
VLA="${VLA:-.venv/bin/vla-rft}"
MINUTES="${MINUTES:-30}"
STEPS="${STEPS:-2000}"
SEED="${SEED:-0}"
case "$SUITE" in
  robosuite) TARGET=robosuite_lift; TASKS="robosuite_lift"; DEMOS=60
             NUM_ENVS="${NUM_ENVS:-8}"; ROLLOUT_LEN="${ROLLOUT_LEN:-13}"; EPISODES="${EPISODES:-50}" ;;
  metaworld) TARGET=metaworld_push; DEMOS=40
             NUM_ENVS="${NUM_ENVS:-16}"; ROLLOUT_LEN="${ROLLOUT_LEN:-16}"; EPISODES="${EPISODES:-100}"
             TASKS="metaworld_push metaworld_reach metaworld_drawer_open metaworld_button_press_topdown" ;;
  *) echo "unknown suite '$SUITE' (robosuite | metaworld)" >&2; exit 2 ;;
esac
DATA=""
for t in $TASKS; do
  d="data/$SUITE/$t"
  [ -d "$d" ] || "$VLA" collect --task "$t" --episodes "$DEMOS" --noise 0.3 --seed 0 --out "$d" --json
  DATA="$DATA,$d"
done
BC="$SUITE-bc"
[ -f "runs/$BC/checkpoints/last/meta.json" ] || "$VLA" pretrain --config tiny_kp_4task --datasets "[${DATA#,}]" \
  --steps "$STEPS" --save_every 500 --logging.name "$BC" --json
EVAL=(--tasks "[$TARGET]" --episodes "$EPISODES" --seed 100000 --num_envs 10 --json)
[ -f "runs/$BC-eval/summary.json" ] || "$VLA" eval --policy "runs/$BC/checkpoints/last" "${EVAL[@]}" --logging.name "$BC-eval"
FT="$SUITE-ppo-s$SEED"
"$VLA" finetune --config ppo_tiny --policy "runs/$BC/checkpoints/last" --task "$TARGET" --minutes "$MINUTES" \
  --num_envs "$NUM_ENVS" --rollout_len "$ROLLOUT_LEN" --eval_episodes 0 --seed "$SEED" --logging.name "$FT"
"$VLA" eval --policy "runs/$FT/checkpoints/last" "${EVAL[@]}" --logging.name "$FT-eval"
