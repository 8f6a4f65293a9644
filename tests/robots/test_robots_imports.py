"""The robot side must import without the training stack (a robot computer may lack torch)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "mujoco", "lerobot", "transformers", "jax", "sims", "world_models")


def test_robot_modules_do_not_import_the_training_stack() -> None:
    code = (
        "import sys\n"
        "import robots, robots.client, robots.safety, robots.executor, robots.server, "
        "robots.rosbridge, robots.ros_robot, robots.fake, robots.wire, robots.policy\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "vla = sorted(m for m in sys.modules if m.startswith('vla_rft') and m not in "
        "('vla_rft', 'vla_rft.contract'))\n"
        "print(heavy, vla)\n"
        "assert not heavy and not vla, (heavy, vla)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
