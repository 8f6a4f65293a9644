"""The rosbridge client against an in-process fake bridge on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fake_rosbridge import FakeRosbridge

from robots.rosbridge import BridgeConfig, RosbridgeClient, RosbridgeError

JS = "sensor_msgs/msg/JointState"


@pytest.fixture
def client(bridge_server: FakeRosbridge) -> Iterator[RosbridgeClient]:
    c = RosbridgeClient(BridgeConfig(url=bridge_server.url, backoff_initial_s=0.02, backoff_max_s=0.1,
                                     service_timeout_s=0.5))
    c.subscribe("/joint_states", JS, queue_length=1, throttle_rate_ms=10)
    c.advertise("/cmd", "std_msgs/msg/Float64MultiArray")
    assert c.start(wait_s=3.0)
    yield c
    c.close()


def wait_until(cond, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_subscribe_op_and_latest_message_cache(bridge_server: FakeRosbridge, client: RosbridgeClient) -> None:
    wait_until(lambda: bridge_server.subscribers("/joint_states") == 1)
    op = bridge_server.subscribe_ops[0]
    assert (op["type"], op["queue_length"], op["throttle_rate"]) == (JS, 1, 10)
    assert client.latest("/joint_states") is None
    before = time.monotonic()
    bridge_server.send("/joint_states", {"name": ["a"], "position": [0.5]})
    cached = client.wait_for_message("/joint_states", 2.0)
    assert cached.msg["position"] == [0.5] and cached.count == 1 and cached.arrival >= before
    bridge_server.send("/joint_states", {"name": ["a"], "position": [0.6]})
    assert client.wait_for_message("/joint_states", 2.0, after=1).msg["position"] == [0.6]


def test_publish_reaches_the_bridge(bridge_server: FakeRosbridge, client: RosbridgeClient) -> None:
    assert client.publish("/cmd", {"data": [1.0, 2.0]})
    wait_until(lambda: bridge_server.published["/cmd"] == [{"data": [1.0, 2.0]}])
    with pytest.raises(RosbridgeError, match="before advertise"):
        client.publish("/unadvertised", {})


def test_service_success_and_both_failure_shapes(bridge_server: FakeRosbridge, client: RosbridgeClient) -> None:
    bridge_server.services["/estop"] = lambda args: (True, {"success": True, "message": "stopped"})
    bridge_server.services["/refuse"] = lambda args: (False, {})
    bridge_server.status_error_services.add("/wrongtype")
    bridge_server.silent_services.add("/hang")
    assert client.call_service("/estop", "std_srvs/srv/Trigger")["message"] == "stopped"
    with pytest.raises(RosbridgeError, match="service call failed"):
        client.call_service("/refuse", "std_srvs/srv/Trigger")
    with pytest.raises(RosbridgeError, match="/wrongtype failed"):
        client.call_service("/wrongtype", "std_srvs/srv/Trigger")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.call_service("/hang", "std_srvs/srv/Trigger", timeout_s=0.2)
    assert time.monotonic() - start < 1.0


def test_reconnect_resubscribes_readvertises_and_drops_stale_publishes(
        bridge_server: FakeRosbridge, client: RosbridgeClient) -> None:
    wait_until(lambda: bridge_server.subscribers("/joint_states") == 1)
    bridge_server.send("/joint_states", {"name": ["a"], "position": [1.0]})
    client.wait_for_message("/joint_states", 2.0)
    bridge_server.drop_all()
    wait_until(lambda: not client.connected, 2.0)
    assert client.publish("/cmd", {"data": [9.0]}) is False  # not queued while disconnected
    wait_until(lambda: client.connected and bridge_server.subscribers("/joint_states") == 1)
    assert client.connects == 2 and len(bridge_server.subscribe_ops) == 2
    assert [op["topic"] for op in bridge_server.advertise_ops] == ["/cmd", "/cmd"]
    bridge_server.send("/joint_states", {"name": ["a"], "position": [2.0]})
    assert client.wait_for_message("/joint_states", 2.0, after=1).msg["position"] == [2.0]
    assert client.publish("/cmd", {"data": [3.0]})
    wait_until(lambda: {"data": [3.0]} in bridge_server.published["/cmd"])
    assert {"data": [9.0]} not in bridge_server.published["/cmd"]


def test_pending_call_fails_fast_when_the_connection_drops(
        bridge_server: FakeRosbridge, client: RosbridgeClient) -> None:
    bridge_server.silent_services.add("/hang")
    import threading

    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.call_service("/hang", "std_srvs/srv/Trigger", timeout_s=5.0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=call)
    start = time.monotonic()
    thread.start()
    time.sleep(0.1)
    bridge_server.drop_all()
    thread.join(3.0)
    assert errors and isinstance(errors[0], ConnectionError) and time.monotonic() - start < 2.0


def test_backoff_keeps_trying_until_a_bridge_appears() -> None:
    server = FakeRosbridge()
    server.start()
    url = server.url
    server.stop()  # nothing listens on that port now
    c = RosbridgeClient(BridgeConfig(url=url, backoff_initial_s=0.01, backoff_max_s=0.05))
    try:
        assert c.start(wait_s=0.3) is False
        assert not c.connected
    finally:
        c.close()
