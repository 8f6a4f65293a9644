"""A ROS arm behind the :class:`robots.base.Robot` interface, through a rosbridge v2 server.

Everything robot-specific lives in the YAML config (``configs/robots/*.yaml``): topics, message
types, joint names, cameras, the command type (``JointTrajectory`` to a trajectory controller or
``Float64MultiArray`` to a forward position controller) and the e-stop service. ROS 1 and ROS 2
differ in type names (``sensor_msgs/JointState`` vs ``sensor_msgs/msg/JointState``) and time
fields (``secs/nsecs`` vs ``sec/nanosec``); :func:`ros_type` and :func:`ros_duration` hide that.

The action space is ``joint_position``: ``[joint positions (rad)..., gripper]`` with the gripper
in contract units (-1 open, +1 closed), mapped linearly onto the gripper joint's positions.
The observation state has the same layout. Commands are expected to be safety-filtered; as a last
line of defence every joint position this class publishes (commands, holds, homing paths) is
clamped into ``limits.joint_pos_min/max`` and every gripper command into the gripper range, because
some of them (a hold at the measured pose, a homing path from it) never pass the filter, and a
measured pose can sit a hair past a limit.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from robots.base import (
    STAMP_KEY,
    ObservationUnavailable,
    Robot,
    RobotConfig,
    RobotError,
    RobotLimits,
    StateLayout,
    register_robot,
)
from robots.rosbridge import BridgeConfig, RosbridgeClient, RosbridgeError
from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY

log = logging.getLogger(__name__)


def ros_type(name: str, version: int, kind: str = "msg") -> str:
    """``pkg/Name`` in ROS 1, ``pkg/<kind>/Name`` in ROS 2 (accepts either form as input)."""
    parts = name.split("/")
    pkg, base = parts[0], parts[-1]
    return f"{pkg}/{base}" if version == 1 else f"{pkg}/{kind}/{base}"


def ros_duration(seconds: float, version: int) -> dict[str, int]:
    """A ``duration``/``time`` field: ``{secs, nsecs}`` (ROS 1) or ``{sec, nanosec}`` (ROS 2)."""
    sec = math.floor(seconds)
    nsec = round((seconds - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return {"secs": sec, "nsecs": nsec} if version == 1 else {"sec": sec, "nanosec": nsec}


@dataclass
class CameraStream:
    """One camera topic."""

    name: str
    """Camera name in the observation (``observation.images.<name>``)."""
    topic: str
    """Image topic, e.g. ``/camera/color/image_raw/compressed``."""
    encoding: Literal["compressed", "raw"] = "compressed"
    """``compressed``: sensor_msgs/CompressedImage (JPEG/PNG, decoded with Pillow);
    ``raw``: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)."""
    height: int | None = None
    """Resize (nearest neighbour) to this height; null keeps the camera's."""
    width: int | None = None
    """Resize to this width; null keeps the camera's."""
    throttle_rate_ms: int = 0
    """Ask the bridge to send at most one image per this many ms (0: every image)."""


@dataclass
class RosRobotConfig(RobotConfig):
    """A ROS arm reached through rosbridge (action space ``joint_position``)."""

    limits: RobotLimits = field(default_factory=lambda: RobotLimits(
        joint_pos_min=[-1.0], joint_pos_max=[1.0], joint_vel_max=[0.5], joint_acc_max=[2.0]))
    """Hard limits; must list one entry per name in ``joint_names``."""
    url: str = "ws://127.0.0.1:9090"
    """rosbridge websocket URL."""
    ros_version: Literal[1, 2] = 2
    """Selects type names and time-field conventions."""
    joint_names: list[str] = field(default_factory=lambda: ["joint1"])
    """Arm joints in action/state order."""
    joint_state_topic: str = "/joint_states"
    """sensor_msgs/JointState topic (messages carrying a subset of joints are merged)."""
    joint_state_throttle_ms: int = 0
    """Bridge-side throttle for joint states (use one at high publish rates)."""
    command_topic: str = "/arm_controller/joint_trajectory"
    """Where arm commands go."""
    command_type: Literal["joint_trajectory", "float64_multi_array"] = "joint_trajectory"
    """trajectory_msgs/JointTrajectory or std_msgs/Float64MultiArray (forward controller)."""
    gripper_joint: str | None = None
    """Name of the gripper joint in the JointState messages (null: no gripper measurement)."""
    gripper_command_topic: str | None = None
    """std_msgs/Float64MultiArray topic for the gripper position command."""
    gripper_open_position: float = 0.04
    """Gripper joint position that contract -1 (open) maps to."""
    gripper_closed_position: float = 0.0
    """Gripper joint position that contract +1 (closed) maps to."""
    camera_streams: list[CameraStream] = field(default_factory=list)
    """Camera topics; their names become ``cameras``."""
    estop_service: str | None = None
    """std_srvs/Trigger-like service that stops the arm at driver level (null: none)."""
    estop_service_type: str = "std_srvs/Trigger"
    """Service type of ``estop_service`` (either ROS 1 or ROS 2 spelling)."""
    task: str = ""
    """Instruction put in each observation until ``robot.task`` is set."""
    home_speed_fraction: float = 0.25
    """Homing moves at this fraction of the joint velocity limits."""
    ready_timeout_s: float = 10.0
    """How long ``wait_ready`` waits for the bridge and the first messages."""

    def __post_init__(self) -> None:
        names = [c.name for c in self.camera_streams]
        if self.cameras and self.cameras != names:
            raise ValueError(f"cameras {self.cameras} disagree with camera_streams {names}")
        self.cameras = names
        super().__post_init__()
        n = len(self.joint_names)
        if self.limits.action_space != "joint_position":
            raise ValueError("the ROS robot takes joint_position actions")
        if self.limits.n_joints != n:
            raise ValueError(f"limits list {self.limits.n_joints} joints, joint_names has {n}")
        if self.limits.has_gripper and (self.gripper_joint is None or self.gripper_command_topic is None):
            raise ValueError("limits.has_gripper needs gripper_joint and gripper_command_topic")
        expected = StateLayout([0, n], n if self.limits.has_gripper else None, None)
        if self.state_layout == StateLayout():
            self.state_layout = expected
        elif self.state_layout != expected:
            raise ValueError(f"state_layout must be {expected} for the ROS robot")


@register_robot("ros")
class RosRobot(Robot):
    """A rosbridge-connected arm: joint states and cameras in, joint position commands out."""

    config_class = RosRobotConfig

    def __init__(self, config: RosRobotConfig, bridge: RosbridgeClient | None = None) -> None:
        super().__init__(config)
        self.config: RosRobotConfig = config
        self.task = config.task
        self.bridge = bridge or RosbridgeClient(BridgeConfig(url=config.url))
        self._joints: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._setup()

    # ------------------------------------------------------------------ setup
    def _type(self, name: str, kind: str = "msg") -> str:
        return ros_type(name, self.config.ros_version, kind)

    def _setup(self) -> None:
        c, b = self.config, self.bridge
        b.subscribe(c.joint_state_topic, self._type("sensor_msgs/JointState"),
                    throttle_rate_ms=c.joint_state_throttle_ms, callback=self._on_joint_state)
        for cam in c.camera_streams:
            kind = "CompressedImage" if cam.encoding == "compressed" else "Image"
            b.subscribe(cam.topic, self._type(f"sensor_msgs/{kind}"), throttle_rate_ms=cam.throttle_rate_ms)
        cmd = "trajectory_msgs/JointTrajectory" if c.command_type == "joint_trajectory" \
            else "std_msgs/Float64MultiArray"
        b.advertise(c.command_topic, self._type(cmd))
        if c.gripper_command_topic:
            b.advertise(c.gripper_command_topic, self._type("std_msgs/Float64MultiArray"))
        b.start()

    def _on_joint_state(self, msg: dict[str, Any], arrival: float) -> None:
        names, positions = msg.get("name") or [], msg.get("position") or []
        with self._lock:
            for name, pos in zip(names, positions):
                if isinstance(pos, (int, float)):
                    self._joints[name] = (float(pos), arrival)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until connected and a complete observation exists; raises RobotError."""
        deadline = time.monotonic() + (self.config.ready_timeout_s if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            try:
                if self.bridge.connected:
                    self.get_observation()
                    return
            except ObservationUnavailable:
                pass
            time.sleep(0.01)
        raise RobotError(f"robot '{self.config.name}' not ready: connected={self.bridge.connected}")

    # ------------------------------------------------------------------ observation
    def get_observation(self) -> dict[str, Any]:
        joints, stamp = self._measured_joints()
        state = joints
        if self.limits.has_gripper:
            state = np.append(joints, self._gripper_to_contract(self._measured(self.config.gripper_joint)[0]))
            stamp = min(stamp, self._measured(self.config.gripper_joint)[1])
        obs: dict[str, Any] = {STATE_KEY: state.astype(np.float32), TASK_KEY: self.task}
        for cam in self.config.camera_streams:
            cached = self.bridge.latest(cam.topic)
            if cached is None:
                raise ObservationUnavailable(f"no image on {cam.topic} yet")
            obs[IMAGE_PREFIX + cam.name] = decode_image(cached.msg, cam)
            stamp = min(stamp, cached.arrival)
        obs[STAMP_KEY] = stamp
        return obs

    def _measured(self, name: str | None) -> tuple[float, float]:
        with self._lock:
            if name not in self._joints:
                raise ObservationUnavailable(f"joint '{name}' not seen on {self.config.joint_state_topic}")
            return self._joints[name]

    def _measured_joints(self) -> tuple[np.ndarray, float]:
        values = [self._measured(n) for n in self.config.joint_names]
        return np.array([v[0] for v in values]), min(v[1] for v in values)

    def _gripper_to_contract(self, position: float) -> float:
        o, c = self.config.gripper_open_position, self.config.gripper_closed_position
        return float(np.clip(-1.0 + 2.0 * (position - o) / (c - o), -1.0, 1.0)) if c != o else 0.0

    def _gripper_to_position(self, command: float) -> float:
        o, c = self.config.gripper_open_position, self.config.gripper_closed_position
        return o + (float(command) + 1.0) / 2.0 * (c - o)

    # ------------------------------------------------------------------ commands
    def send_action(self, action: np.ndarray) -> None:
        self._send_points(np.asarray(action, dtype=np.float64)[None])

    def send_chunk(self, chunk: np.ndarray) -> None:
        """JointTrajectory: one message, a point per control period; otherwise one per period."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if self.config.command_type == "joint_trajectory":
            self._send_points(chunk)
        else:
            super().send_chunk(chunk)

    def _send_points(self, points: np.ndarray) -> None:
        c, lim, n = self.config, self.limits, self.limits.n_joints
        joints = self._clamp_joints(points[:, :n])
        if c.command_type == "joint_trajectory":
            msg = self.trajectory(joints, c.control_dt)
        else:
            msg = {"data": [float(x) for x in joints[-1]]}
        if not self.bridge.publish(c.command_topic, msg):
            raise RobotError("rosbridge is disconnected: command not sent")
        if lim.has_gripper and c.gripper_command_topic:
            grip = min(max(float(points[0, n]), lim.gripper_min), lim.gripper_max)
            self.bridge.publish(c.gripper_command_topic, {"data": [self._gripper_to_position(grip)]})

    def _clamp_joints(self, positions: np.ndarray) -> np.ndarray:
        """``positions`` (rows of joint positions, rad) clamped into the joint position limits."""
        return np.clip(positions, self.limits.joint_pos_min, self.limits.joint_pos_max)

    def trajectory(self, positions: np.ndarray, dt: float) -> dict[str, Any]:
        """A JointTrajectory message with one point per row, ``dt`` apart (first at ``dt``)."""
        v = self.config.ros_version
        return {"joint_names": list(self.config.joint_names),
                "points": [{"positions": [float(x) for x in row],
                            "time_from_start": ros_duration((i + 1) * dt, v)}
                           for i, row in enumerate(positions)]}

    def hold(self) -> None:
        """JointTrajectory: an empty trajectory (the controller stops and holds); else the measured
        pose clamped into the joint limits (:meth:`measured_in_limits`).

        A forward controller's hold is a position command that never passes the safety filter, so
        it is clamped here: an arm resting a hair past a limit is held at the limit, not commanded
        outside it. When the pose is too far outside to clamp, nothing is published (the
        controller keeps its previous, filtered target) and a warning names the joint. Never raises
        for that reason: ``estop`` calls this first.
        """
        c = self.config
        if c.command_type == "joint_trajectory":
            self.bridge.publish(c.command_topic, {"joint_names": list(c.joint_names), "points": []})
            return
        try:
            target = self.measured_in_limits()
        except ObservationUnavailable:
            return  # nothing was ever measured, so nothing was commanded either
        except RobotError as exc:
            log.warning("hold not sent: %s; the controller keeps its previous target", exc)
            return
        self.bridge.publish(c.command_topic, {"data": [float(x) for x in target]})

    def measured_in_limits(self) -> np.ndarray:
        """The measured joint positions clamped into the joint position limits.

        An arm can rest a hair past a limit (gravity, tracking error, encoder noise); clamping
        moves it back by that hair. A joint further outside than one control period of motion at
        its velocity limit is not clamped, since that would command a jump: RobotError names it.
        """
        joints, _ = self._measured_joints()
        target = self._clamp_joints(joints)
        jump = np.abs(target - joints)
        max_jump = np.asarray(self.limits.joint_vel_max) * self.config.control_dt
        if np.any(jump > max_jump):
            i = int(np.argmax(jump - max_jump))
            lim = self.limits
            raise RobotError(f"joint '{self.config.joint_names[i]}' measured at {joints[i]:.4f} rad is "
                             f"{jump[i]:.4f} rad outside its limits [{lim.joint_pos_min[i]}, "
                             f"{lim.joint_pos_max[i]}], more than one control period of motion "
                             f"({max_jump[i]:.4f} rad); check the limits or move the arm by hand")
        return target

    def estop(self) -> None:
        """Hold at once, then call the driver's e-stop service; raises RobotError if it fails."""
        self.hold()
        c = self.config
        if c.estop_service is None:
            return
        try:
            self.bridge.call_service(c.estop_service, self._type(c.estop_service_type, "srv"))
        except (RosbridgeError, TimeoutError, ConnectionError) as exc:
            raise RobotError(f"e-stop service {c.estop_service} failed: {exc}") from exc

    def home(self) -> None:
        """Move to ``home`` along a straight joint path at a fraction of the velocity limits.

        The path starts from the measured pose clamped into the joint limits (``home`` itself is
        inside them), so no point of it lies outside; a pose too far outside to clamp raises
        RobotError (see :meth:`measured_in_limits`).
        """
        c = self.config
        if not c.home:
            return
        start = self.measured_in_limits()
        target = np.array(c.home)
        speed = np.array(self.limits.joint_vel_max) * c.home_speed_fraction
        steps = max(1, math.ceil(float(np.max(np.abs(target - start) / speed)) / c.control_dt))
        path = start + (target - start) * (np.arange(1, steps + 1) / steps)[:, None]
        if self.limits.has_gripper:
            path = np.hstack([path, np.full((steps, 1), self.limits.gripper_min)])
        self.send_chunk(path)

    def close(self) -> None:
        try:
            self.hold()
        finally:
            self.bridge.close()


def decode_image(msg: dict[str, Any], cam: CameraStream) -> np.ndarray:
    """A sensor_msgs Image/CompressedImage as uint8 ``(H, W, 3)`` RGB, resized if configured."""
    data = msg.get("data", "")
    raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    img = _decode_compressed(raw) if cam.encoding == "compressed" else _decode_raw(msg, raw)
    if cam.height and cam.width and img.shape[:2] != (cam.height, cam.width):
        rows = (np.arange(cam.height) * img.shape[0] // cam.height)
        cols = (np.arange(cam.width) * img.shape[1] // cam.width)
        img = img[rows][:, cols]
    return np.ascontiguousarray(img)


def _decode_compressed(raw: bytes) -> np.ndarray:
    try:
        from PIL import Image  # optional: only robots with compressed cameras need Pillow
    except ImportError as exc:
        raise RobotError("compressed camera topics need Pillow (pip install pillow)") from exc
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def _decode_raw(msg: dict[str, Any], raw: bytes) -> np.ndarray:
    enc = str(msg.get("encoding", "")).lower()
    if enc not in _CHANNELS:
        raise ObservationUnavailable(f"unsupported image encoding '{enc}' (use one of {sorted(_CHANNELS)})")
    h, w, ch = int(msg["height"]), int(msg["width"]), _CHANNELS[enc]
    step = int(msg.get("step") or w * ch)
    if len(raw) < h * step or step < w * ch:
        raise ObservationUnavailable(f"image data has {len(raw)} bytes, expected {h * step}")
    img = np.frombuffer(raw, np.uint8)[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return img[..., :3]
