"""Shared fixtures for the deployment tests (all network traffic stays on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_rosbridge import FakeRosbridge

from robots.fake import FakeRobot, FakeRobotConfig
from robots.policy import PolicyMetadata, ScriptedPolicy
from robots.server import PolicyServer, ServerConfig

TOKEN = "test-token-0123456789"


@pytest.fixture
def bridge_server() -> Iterator[FakeRosbridge]:
    server = FakeRosbridge()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake_robot() -> FakeRobot:
    return FakeRobot(FakeRobotConfig(kind="fake", cameras=["front"], control_hz=50.0))


@pytest.fixture
def policy_server() -> Iterator[PolicyServer]:
    meta = PolicyMetadata(name="scripted:hold", action_dim=7, chunk_size=4, state_dim=7,
                          cameras=["front"], image_shape=[8, 8], action_space="joint_position")
    server = PolicyServer(ScriptedPolicy("hold", meta), ServerConfig(port=0, token=TOKEN,
                                                                      max_message_bytes=2**20,
                                                                      auth_timeout_s=2.0))
    server.start()
    yield server
    server.stop()
