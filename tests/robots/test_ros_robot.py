"""RosRobot through the fake bridge: ROS 1/2 conventions, observations, commands, e-stop."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fake_rosbridge import FakeRosbridge

from robots.base import (
    STAMP_KEY,
    ObservationUnavailable,
    RobotError,
    make_robot,
    robot_config_from_dict,
)
from robots.config import ConfigError
from robots.deploy import DeploySettings, EpisodeRunner, hold_action
from robots.executor import ExecutorConfig
from robots.ros_robot import CameraStream, RosRobot, decode_image, ros_duration, ros_type
from robots.safety import SafetyConfig, SafetyFilter
from vla_rft.contract import STATE_KEY, validate_observation

LIMITS = {"joint_pos_min": [-1.0, -1.0], "joint_pos_max": [1.0, 1.0], "joint_vel_max": [1.0, 1.0],
          "joint_acc_max": [5.0, 5.0]}


def config(url: str, version: int = 2, **extra: object) -> dict:
    return {"kind": "ros", "url": url, "ros_version": version, "joint_names": ["j1", "j2"],
            "gripper_joint": "finger", "gripper_command_topic": "/gripper/commands",
            "gripper_open_position": 0.0, "gripper_closed_position": 0.8,
            "camera_streams": [{"name": "wrist", "topic": "/wrist/image_raw", "encoding": "raw"}],
            "estop_service": "/estop", "limits": LIMITS, **extra}


@pytest.fixture
def robot(bridge_server: FakeRosbridge) -> Iterator[RosRobot]:
    r = make_robot(config(bridge_server.url))
    assert isinstance(r, RosRobot)
    yield r
    r.close()


def feed(server: FakeRosbridge, positions: tuple[float, float] = (0.1, -0.2), finger: float = 0.4) -> None:
    deadline = time.monotonic() + 3.0
    while server.subscribers("/joint_states") == 0 or server.subscribers("/wrist/image_raw") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    server.send("/joint_states", {"name": ["j2", "j1"], "position": [positions[1], positions[0]]})
    server.send("/joint_states", {"name": ["finger"], "position": [finger]})
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    server.send("/wrist/image_raw", {"height": 4, "width": 5, "encoding": "bgr8", "step": 15,
                                     "data": base64.b64encode(img.tobytes()).decode()})


def test_type_and_time_conventions() -> None:
    assert ros_type("sensor_msgs/JointState", 2) == "sensor_msgs/msg/JointState"
    assert ros_type("sensor_msgs/msg/JointState", 1) == "sensor_msgs/JointState"
    assert ros_type("std_srvs/Trigger", 2, "srv") == "std_srvs/srv/Trigger"
    assert ros_duration(1.25, 1) == {"secs": 1, "nsecs": 250_000_000}
    assert ros_duration(0.1, 2) == {"sec": 0, "nanosec": 100_000_000}


def test_observation_merges_joint_messages_maps_gripper_and_decodes_images(
        bridge_server: FakeRosbridge, robot: RosRobot) -> None:
    with pytest.raises(ObservationUnavailable):
        robot.get_observation()
    feed(bridge_server)
    robot.wait_ready(3.0)
    obs = robot.get_observation()
    validate_observation(obs, cameras=["wrist"], state_dim=3)
    np.testing.assert_allclose(obs[STATE_KEY], [0.1, -0.2, 0.0], atol=1e-6)  # 0.4 of 0.8 -> 0.0
    img = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(obs["observation.images.wrist"], img[..., ::-1])
    assert time.monotonic() - obs[STAMP_KEY] < 2.0
    types = {op["topic"]: op["type"] for op in bridge_server.subscribe_ops}
    assert types == {"/joint_states": "sensor_msgs/msg/JointState", "/wrist/image_raw": "sensor_msgs/msg/Image"}


def test_joint_trajectory_commands_hold_and_chunks(bridge_server: FakeRosbridge, robot: RosRobot) -> None:
    feed(bridge_server)
    robot.wait_ready(3.0)
    robot.send_action(np.array([0.2, 0.3, 1.0]))
    robot.send_chunk(np.array([[0.2, 0.3, 1.0], [0.25, 0.3, 1.0]]))
    robot.hold()
    topic = "/arm_controller/joint_trajectory"
    deadline = time.monotonic() + 3.0
    while len(bridge_server.published[topic]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    single, chunk, hold = bridge_server.published[topic]
    assert single == {"joint_names": ["j1", "j2"], "points": [
        {"positions": [0.2, 0.3], "time_from_start": {"sec": 0, "nanosec": 100_000_000}}]}
    assert [p["time_from_start"]["nanosec"] for p in chunk["points"]] == [100_000_000, 200_000_000]
    assert hold == {"joint_names": ["j1", "j2"], "points": []}
    assert bridge_server.published["/gripper/commands"][0] == {"data": [pytest.approx(0.8)]}
    adverts = {op["topic"]: op["type"] for op in bridge_server.advertise_ops}
    assert adverts[topic] == "trajectory_msgs/msg/JointTrajectory"


def test_ros1_forward_controller(bridge_server: FakeRosbridge) -> None:
    cfg = config(bridge_server.url, version=1, command_type="float64_multi_array",
                 command_topic="/position_controller/command")
    robot = make_robot(cfg)
    try:
        feed(bridge_server)
        robot.wait_ready(3.0)
        robot.send_action(np.array([0.2, 0.3, -1.0]))
        robot.hold()
        deadline = time.monotonic() + 3.0
        while len(bridge_server.published["/position_controller/command"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        sent, hold = bridge_server.published["/position_controller/command"]
        assert sent == {"data": [0.2, 0.3]} and hold == {"data": [pytest.approx(0.1), pytest.approx(-0.2)]}
        types = {op["topic"]: op["type"] for op in bridge_server.subscribe_ops[-2:]}
        assert types["/joint_states"] == "sensor_msgs/JointState"
    finally:
        robot.close()


FORWARD = "/position_controller/command"


def forward_robot(url: str, **extra: object) -> RosRobot:
    robot = make_robot(config(url, command_type="float64_multi_array", command_topic=FORWARD, **extra))
    assert isinstance(robot, RosRobot)
    return robot


def published_until_sentinel(server: FakeRosbridge, robot: RosRobot) -> list[dict]:
    """Every forward command published so far: sends a sentinel command and waits for it (one
    websocket keeps order), so everything published before it has arrived."""
    robot.send_action(np.array([0.0123, 0.0, -1.0]))
    deadline = time.monotonic() + 3.0
    while not any(m["data"] == [0.0123, 0.0] for m in server.published[FORWARD]):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return server.published[FORWARD][:-1]


def test_forward_controller_never_commands_outside_the_joint_limits(bridge_server: FakeRosbridge) -> None:
    # j1 rests a hair past its 1.0 rad limit (gravity, tracking error): hold, e-stop, homing, an
    # episode's holds and its end must all command it *at* the limit, never at the measured pose.
    bridge_server.services["/estop"] = lambda args: (True, {"success": True})
    robot = forward_robot(bridge_server.url, home=[0.5, 0.0], home_speed_fraction=1.0)
    try:
        feed(bridge_server, positions=(1.0021, -0.2))
        robot.wait_ready(3.0)
        robot.hold()
        robot.estop()
        runner = EpisodeRunner(robot, lambda obs: np.array([[1.5, -0.2, 1.0]] * 4, np.float32),
                               DeploySettings(max_steps=3, realtime=False,
                                              executor=ExecutorConfig(async_inference=False)))
        result = runner.run_episode()  # reset (home), 3 held steps (state outside limits), end (hold)
        assert result.holds == 3
        sent = published_until_sentinel(bridge_server, robot)
        holds = [m["data"] for m in sent if m["data"][1] == pytest.approx(-0.2)]
        assert len(holds) >= 6 and all(h == [1.0, pytest.approx(-0.2)] for h in holds)
        assert len(sent) > len(holds)  # the homing path
        for m in sent:
            assert all(-1.0 <= x <= 1.0 for x in m["data"]), m
        logged = hold_action(robot, robot.get_observation(), -1.0)
        np.testing.assert_allclose(logged, [1.0, -0.2, -1.0], atol=1e-6)
    finally:
        robot.close()


def test_a_pose_far_outside_the_limits_is_not_clamped_into_a_jump(
        bridge_server: FakeRosbridge, caplog: pytest.LogCaptureFixture) -> None:
    robot = forward_robot(bridge_server.url, home=[0.5, 0.0])
    try:
        feed(bridge_server, positions=(1.5, -0.2))  # 0.5 rad out, one period at 1 rad/s is 0.1 rad
        robot.wait_ready(3.0)
        robot.hold()
        assert "hold not sent: joint 'j1' measured at 1.5000 rad" in caplog.text
        with pytest.raises(RobotError, match="joint 'j1' measured at 1.5000 rad is 0.5000 rad outside"):
            robot.home()
        assert published_until_sentinel(bridge_server, robot) == []
    finally:
        robot.close()


def test_estop_calls_the_service_and_reports_failure(bridge_server: FakeRosbridge, robot: RosRobot) -> None:
    calls: list[dict] = []
    bridge_server.services["/estop"] = lambda args: (calls.append(args) or True, {"success": True})
    feed(bridge_server)
    robot.wait_ready(3.0)
    robot.estop()
    assert calls == [{}]
    bridge_server.status_error_services.add("/estop")
    with pytest.raises(RobotError, match="e-stop service /estop failed"):
        robot.estop()


def test_filtered_commands_from_ros_observations_stay_in_limits(
        bridge_server: FakeRosbridge, robot: RosRobot) -> None:
    feed(bridge_server, positions=(0.95, 0.0))
    robot.wait_ready(3.0)
    safety = SafetyFilter(robot.limits, robot.state_layout, SafetyConfig(control_dt=robot.config.control_dt))
    for _ in range(20):
        res = safety.filter(np.array([5.0, -5.0, 1.0]), robot.get_observation())
        assert res.command is not None and -1.0 <= res.command[0] <= 1.0 and res.command[1] >= -1.0
        robot.send_action(res.command)


def test_config_errors_are_specific(bridge_server: FakeRosbridge) -> None:
    with pytest.raises(ConfigError, match="did you mean 'joint_state_topic'"):
        robot_config_from_dict(config(bridge_server.url, joint_states_topic="/js"))
    with pytest.raises(ConfigError, match="limits list 2 joints, joint_names has 3"):
        robot_config_from_dict({**config(bridge_server.url), "joint_names": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="float64_multi_array"):
        robot_config_from_dict(config(bridge_server.url, command_type="float64"))


def test_compressed_and_mono_images_decode_and_resize() -> None:
    from PIL import Image

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = [255, 0, 0]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    msg = {"format": "png", "data": base64.b64encode(buf.getvalue()).decode()}
    out = decode_image(msg, CameraStream("c", "/c", "compressed", height=10, width=15))
    assert out.shape == (10, 15, 3) and out[0, 0].tolist() == [255, 0, 0] and out[0, -1].tolist() == [0, 0, 0]
    mono = {"height": 2, "width": 2, "encoding": "mono8", "step": 4,
            "data": base64.b64encode(bytes([1, 2, 9, 9, 3, 4, 9, 9])).decode()}
    out = decode_image(mono, CameraStream("m", "/m", "raw"))
    assert out.shape == (2, 2, 3) and out[1, 1].tolist() == [4, 4, 4]
    with pytest.raises(ObservationUnavailable, match="unsupported image encoding"):
        decode_image({**mono, "encoding": "16UC1"}, CameraStream("m", "/m", "raw"))
