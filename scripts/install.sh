#!/usr/bin/env bash
# Install vla-rft on a fresh Debian machine: system libraries for headless rendering, the
# package with its extras, and robosuite (whose pins pip cannot co-resolve with lerobot).
#
#   bash scripts/install.sh            # into the active virtualenv, else a new ./.venv
#   VLA_RFT_EXTRAS=dev,bench bash scripts/install.sh   # without Ray and MJX
#   VLA_RFT_ROBOSUITE=0 bash scripts/install.sh   # skip robosuite (the sim benchmark then omits it)
#   VLA_RFT_METAWORLD=0 bash scripts/install.sh   # skip Meta-World
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${VLA_RFT_EXTRAS:-dev,bench,ray,mjx}"
ROBOSUITE="${VLA_RFT_ROBOSUITE:-1}"
METAWORLD="${VLA_RFT_METAWORLD:-1}"

# 1. Debian libraries: EGL/OSMesa for MuJoCo's headless renderer, libav* for torchcodec video decoding.
APT_PKGS="libegl1 libosmesa6 libgl1 libglib2.0-0 libavcodec59 libavformat59 libavutil57 libswscale6 libavdevice59 libavfilter8 libswresample4"
# The dev extra's report test renders the HTML report in headless Chromium (selenium + chromedriver).
case ",$EXTRAS," in *,dev,*) APT_PKGS="$APT_PKGS chromium chromium-driver" ;; esac
missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] apt-get install $missing" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[install] WARNING: missing system packages (need root + apt): $missing" >&2
  fi
fi

# 2. A virtualenv: the active one, else ./.venv.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY="$VIRTUAL_ENV/bin/python"
fi
"$PY" -m pip install -q -U pip

# 3. The package. lerobot 0.4.4 chooses torch (<2.11): see docs/install.md.
"$PY" -m pip install -q -e ".[${EXTRAS}]"

# 4. robosuite 1.5.2 pins mink==0.0.5 -> numpy<2 while lerobot needs numpy>=2; both run fine with
#    numpy 2.2 (measured), so install them without their pins, then their other requirements.
if [ "$ROBOSUITE" = 1 ]; then
  "$PY" -m pip install -q --no-deps robosuite==1.5.2 mink==0.0.5
  "$PY" -m pip install -q -e ".[robosuite]"
fi
# 5. Meta-World 3.1.1 pins mujoco==3.3.0; the project's mujoco 3.3.7 runs it (measured, docs/tasks.md).
if [ "$METAWORLD" = 1 ]; then
  "$PY" -m pip install -q --no-deps metaworld==3.1.1
  "$PY" -m pip install -q -e ".[metaworld]"
fi
"$PY" -c "import vla_rft, sims, robots; print('[install] vla-rft installed in', __import__('sys').prefix)" >&2
