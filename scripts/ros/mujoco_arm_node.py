"""The sims arm as a ROS 2 node: the stand-in for a real arm driver in the end-to-end tests.

Runs in the ROS venv made by ``scripts/ros_test_env.sh`` (rclpy + mujoco + gymnasium), with the
repository on ``sys.path`` for ``sims``. Physics follows the wall clock: each joint-state tick
advances the simulation by the elapsed time, so a command's effect appears at real-time speed.

Interfaces (ROS 2 Jazzy):

- ``/joint_states`` (sensor_msgs/JointState) at ``--joint-rate`` Hz: ``j1..j6`` and ``gripper``
  (finger travel, 0 open .. 0.04 m closed);
- ``/camera/<cam>/image_raw/compressed`` (sensor_msgs/CompressedImage, JPEG) at ``--camera-rate``
  Hz, rendered with shadows, reflections and multisampling off (software rendering with shadows
  starved the node's timers);
- ``/arm_controller/joint_trajectory`` (trajectory_msgs/JointTrajectory): points are followed by
  linear interpolation from the current target; an empty trajectory stops and holds;
- ``/gripper_controller/commands`` (std_msgs/Float64MultiArray): finger travel target;
- ``/estop`` (std_srvs/Trigger): hold and ignore commands until ``/reset``;
- ``/reset`` (std_srvs/Trigger): a new episode (next seed), e-stop cleared;
- ``/task_success`` (std_msgs/Bool) at the camera rate: the sims task's success predicate.

``--target-joints`` places a reach task's target where those joint positions put the gripper, so a
scripted joint-space policy can solve the task and a test can check success.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco
import numpy as np
import rclpy
from PIL import Image
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

import sims
from sims.arm import ARM_JOINTS, FINGER_TRAVEL

MAX_CATCH_UP_S = 0.05
"""At most this much simulated time per tick: after a stall the arm does not jump."""


class Segment:
    """A commanded trajectory: ``(time, positions)`` knots, starting at the target when it came."""

    def __init__(self, t0: float, start: np.ndarray, points: list[tuple[float, np.ndarray]]) -> None:
        self.times = np.array([t0] + [t0 + dt for dt, _ in points])
        self.knots = np.stack([start] + [p for _, p in points])

    def at(self, t: float) -> np.ndarray:
        if t >= self.times[-1]:
            return self.knots[-1]
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        i = max(i, 0)
        span = self.times[i + 1] - self.times[i]
        w = 0.0 if span <= 0 else (t - self.times[i]) / span
        return self.knots[i] + w * (self.knots[i + 1] - self.knots[i])


class ArmNode(Node):
    """Simulated arm driver: physics, publishers, command subscribers and services."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("mujoco_arm")
        self.args = args
        self.env = sims.make_env(args.task, obs_mode="state", terminate_on_success=False).unwrapped
        self.model, self.data = self.env.physics.model, self.env.physics.data
        self.arm = self.env.physics.arm
        self.episode = 0
        self.estopped = False
        self._reset_scene()
        self.renderer = self._renderer(args.image_size)
        self.cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, args.camera)
        self.js_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.img_pub = self.create_publisher(CompressedImage, f"/camera/{args.camera}/image_raw/compressed", 2)
        self.success_pub = self.create_publisher(Bool, "/task_success", 10)
        self.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_trajectory, 10)
        self.create_subscription(Float64MultiArray, "/gripper_controller/commands", self._on_gripper, 10)
        self.create_service(Trigger, "/estop", self._on_estop)
        self.create_service(Trigger, "/reset", self._on_reset)
        self.create_timer(1.0 / args.joint_rate, self._tick)
        self.create_timer(1.0 / args.camera_rate, self._camera)
        self.commands = 0

    # ------------------------------------------------------------------ scene
    def _reset_scene(self) -> None:
        self.env.reset(seed=self.args.seed + self.episode)
        self.episode += 1
        if self.args.target_joints:
            self._place_target(np.array(self.args.target_joints, float))
        self.last_t = time.monotonic()
        q = self.data.qpos[self.arm.qpos].copy()
        self.data.ctrl[self.arm.arm_act] = q
        self.segment = Segment(self.last_t, q, [])
        self.estopped = False

    def _place_target(self, joints: np.ndarray) -> None:
        """Put the reach target where ``joints`` put the gripper (forward kinematics on a copy)."""
        scratch = mujoco.MjData(self.model)
        scratch.qpos[:] = self.data.qpos
        scratch.qpos[self.arm.qpos] = joints
        mujoco.mj_kinematics(self.model, scratch)
        target = scratch.site_xpos[self.arm.ee_site].copy()
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "target")
        if body < 0 or self.model.body_mocapid[body] < 0:
            raise SystemExit(f"--target-joints needs a task with a mocap 'target' (reach_target), not {self.args.task}")
        self.data.mocap_pos[self.model.body_mocapid[body]] = target
        mujoco.mj_forward(self.model, self.data)

    def _renderer(self, size: int) -> mujoco.Renderer:
        renderer = mujoco.Renderer(self.model, height=size, width=size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_HAZE):
            renderer.scene.flags[flag] = 0
        return renderer

    # ------------------------------------------------------------------ commands
    def _measured(self) -> np.ndarray:
        return self.data.qpos[self.arm.qpos].copy()

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = time.monotonic()
        current = self.segment.at(now)
        if self.estopped:
            return
        if not msg.points:
            self.segment = Segment(now, self._measured(), [])
            return
        order = [list(msg.joint_names).index(j) for j in ARM_JOINTS] if msg.joint_names else list(range(6))
        points = [(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9,
                   np.asarray(p.positions, float)[order]) for p in msg.points]
        self.segment = Segment(now, current, points)
        self.commands += 1

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if not self.estopped and len(msg.data):
            self.data.ctrl[self.arm.grip_act] = float(np.clip(msg.data[0], 0.0, FINGER_TRAVEL))

    def _on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.segment = Segment(time.monotonic(), self._measured(), [])
        self.estopped = True
        response.success, response.message = True, "arm holding; commands ignored until /reset"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._reset_scene()
        response.success, response.message = True, f"episode {self.episode}"
        return response

    # ------------------------------------------------------------------ timers
    def _tick(self) -> None:
        """Advance physics to now along the commanded segment, then publish the joint state."""
        now = time.monotonic()
        sim_dt = min(now - self.last_t, MAX_CATCH_UP_S)
        self.last_t = now
        steps = max(1, round(sim_dt / self.model.opt.timestep))
        self.data.ctrl[self.arm.arm_act] = self.segment.at(now)
        mujoco.mj_step(self.model, self.data, nstep=steps)
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = [*ARM_JOINTS, "gripper"]
        fingers = float(self.data.qpos[self.arm.finger_qpos].mean())
        msg.position = [float(x) for x in self.data.qpos[self.arm.qpos]] + [fingers]
        self.js_pub.publish(msg)

    def _camera(self) -> None:
        mujoco.mj_forward(self.model, self.data)
        self.renderer.update_scene(self.data, camera=self.cam_id)
        buf = io.BytesIO()
        Image.fromarray(self.renderer.render()).save(buf, format="JPEG", quality=90)
        img = CompressedImage()
        img.header.stamp = self.get_clock().now().to_msg()
        img.format = "jpeg"
        img.data = buf.getvalue()
        self.img_pub.publish(img)
        self.success_pub.publish(Bool(data=bool(self.env.task.success(self.env.physics))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="reach_target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--joint-rate", type=float, default=100.0)
    p.add_argument("--camera-rate", type=float, default=10.0)
    p.add_argument("--camera", default="front")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--target-joints", type=lambda s: [float(x) for x in s.split(",")], default=None,
                   help="comma-separated j1..j6: put the reach target where these joints reach")
    p.add_argument("--max-lifetime-s", type=float, default=600.0,
                   help="exit after this long whatever happens (a test rig must never linger)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rclpy.init()
    node = ArmNode(args)
    node.get_logger().info(f"mujoco arm up: task {args.task}, domain {os.environ.get('ROS_DOMAIN_ID')}")
    deadline = time.monotonic() + args.max_lifetime_s
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.renderer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
