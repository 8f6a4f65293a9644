"""Policy server and thin client: handshake, inference, health, errors as messages, auth."""

from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import pytest
from conftest import TOKEN

from robots.client import PolicyClient, PolicyServerError
from robots.config import ConfigError
from robots.policy import PolicyMetadata, ScriptedPolicy, load_policy, register_policy_loader
from robots.server import WARMUP_TASK, PolicyServer, PolicyWarmupError, ServerConfig, build_parser
from robots.wire import WireError, pack, unpack
from vla_rft.contract import STATE_KEY

IMG = "observation.images.front"


def good_obs() -> dict:
    return {STATE_KEY: np.arange(7, dtype=np.float32), "task": "stack the cubes",
            IMG: np.zeros((8, 8, 3), np.uint8), "observation.stamp": 12.0}


def test_wire_round_trip_and_rejections() -> None:
    msg = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.uint8(3), "x"]}
    out = unpack(pack(msg))
    np.testing.assert_array_equal(out["a"], msg["a"])
    assert out["a"].dtype == np.float32 and out["b"] == [3, "x"]
    with pytest.raises(WireError):
        pack({"o": np.array([object()])})
    with pytest.raises(WireError, match="must be a map"):
        unpack(msgpack.packb([1, 2]))
    with pytest.raises(WireError, match="text frames"):
        unpack("{}")


def test_handshake_infer_and_health(policy_server: PolicyServer) -> None:
    with PolicyClient(port=policy_server.port, token=TOKEN) as client:
        meta = client.metadata
        assert meta is not None and (meta.action_dim, meta.chunk_size, meta.cameras) == (7, 4, ["front"])
        chunk = client.infer(good_obs())
        assert chunk.shape == (4, 7) and chunk.dtype == np.float32
        np.testing.assert_array_equal(chunk[2], np.arange(7))
        batch = {STATE_KEY: np.ones((3, 7), np.float32), "task": ["a", "b", "c"],
                 IMG: np.zeros((3, 8, 8, 3), np.uint8)}
        assert client.infer_batch(batch).shape == (3, 4, 7)
        health = client.health()
        assert health["status"] == "ok" and health["stats"]["ok"] == 2


@pytest.mark.parametrize("mutate, code, text", [
    (lambda o: o.pop(IMG), "schema", "missing camera 'front'"),
    (lambda o: o.update({STATE_KEY: np.zeros(5, np.float32)}), "schema", "dimension 5"),
    (lambda o: o.update({IMG: np.zeros((8, 8, 3), np.float32)}), "schema", "must be uint8"),
    (lambda o: o.update({IMG: np.zeros((9, 8, 3), np.uint8)}), "schema", r"expected \[8, 8\]"),
    (lambda o: o.update({"task": 3}), "schema", "'task' must be a string"),
    (lambda o: o.update({STATE_KEY: np.full(7, np.nan, np.float32)}), "schema", "NaN"),
])
def test_bad_requests_get_error_replies_and_the_connection_survives(policy_server, mutate, code, text) -> None:
    with PolicyClient(port=policy_server.port, token=TOKEN) as client:
        obs = good_obs()
        mutate(obs)
        with pytest.raises(PolicyServerError, match=text) as info:
            client.infer(obs)
        assert info.value.code == code
        assert client.infer(good_obs()).shape == (4, 7)  # same connection still works


def test_wrong_token_is_refused(policy_server: PolicyServer) -> None:
    with pytest.raises(PolicyServerError, match="unauthorized"):
        PolicyClient(port=policy_server.port, token=TOKEN + "x").connect()
    assert policy_server.stats["auth_failed"] == 1


def test_policy_exceptions_and_bad_outputs_are_reported() -> None:
    meta = PolicyMetadata(name="bad", action_dim=7, chunk_size=2, state_dim=7)

    class Bad:
        metadata = meta
        mode = "raise"

        def act(self, obs: dict) -> np.ndarray:
            if self.mode == "raise":
                raise ValueError("weights missing")
            return np.full((1, 2, 7), 5.0 if self.mode == "range" else np.nan, np.float32)

    policy = Bad()
    server = PolicyServer(policy, ServerConfig(port=0, token=TOKEN, warmup=False))  # fails at requests
    server.start()
    try:
        with PolicyClient(port=server.port, token=TOKEN) as client:
            obs = {STATE_KEY: np.zeros(7, np.float32), "task": "t"}
            with pytest.raises(PolicyServerError, match="weights missing"):
                client.infer(obs)
            policy.mode = "range"
            with pytest.raises(PolicyServerError, match="out of range"):
                client.infer(obs)
            policy.mode = "nan"
            with pytest.raises(PolicyServerError, match="NaN"):
                client.infer(obs)
    finally:
        server.stop()


class LazyPolicy(ScriptedPolicy):
    """Loads its "instruction encoder" on the first call, as trained policies load MiniLM."""

    def __init__(self, meta: PolicyMetadata) -> None:
        super().__init__("hold", meta)
        self.encoder: str | None = None
        self.seen: list[dict] = []

    def act(self, obs: dict) -> np.ndarray:
        if self.encoder is None:
            self.encoder = "loaded"
        self.seen.append(obs)
        return super().act(obs)


def test_the_server_is_warm_before_it_accepts_connections(caplog: pytest.LogCaptureFixture) -> None:
    meta = PolicyMetadata(name="lazy", action_dim=7, chunk_size=4, state_dim=7, cameras=["front"],
                          image_shape=[8, 8], action_space="joint_position")
    policy = LazyPolicy(meta)
    server = PolicyServer(policy, ServerConfig(port=0, token=TOKEN))
    with caplog.at_level(logging.INFO, logger="robots.server"):
        server.start()
    try:
        # before any client: the encoder is loaded by one inference on a dummy that fits the contract
        assert policy.encoder == "loaded" and len(policy.seen) == 1
        dummy = policy.seen[0]
        assert dummy["task"] == [WARMUP_TASK] and dummy[STATE_KEY].shape == (1, 7)
        assert dummy[IMG].shape == (1, 8, 8, 3) and dummy[IMG].dtype == np.uint8
        assert server.warmup_s is not None and "policy warm: first inference took" in caplog.text
        assert server.stats["ok"] == 0  # the warm-up is not a request
        with PolicyClient(port=server.port, token=TOKEN) as client:
            assert client.infer(good_obs()).shape == (4, 7)
        assert len(policy.seen) == 2 and server.stats["ok"] == 1
    finally:
        server.stop()


def test_a_policy_that_fails_its_warm_up_is_not_served() -> None:
    meta = PolicyMetadata(name="broken", action_dim=7, chunk_size=2, state_dim=7, cameras=["front"])

    class Broken(ScriptedPolicy):
        def act(self, obs: dict) -> np.ndarray:
            raise ValueError("weights missing")

    server = PolicyServer(Broken("zero", meta), ServerConfig(port=0, token=TOKEN))
    with pytest.raises(PolicyWarmupError, match="policy 'broken' failed its warm-up inference on a dummy "
                                                "observation: ValueError: weights missing"):
        server.start()
    assert server.port is None  # never listened


def test_client_times_out_and_discards_the_late_reply() -> None:
    gate = threading.Event()
    meta = PolicyMetadata(name="slow", action_dim=7, chunk_size=2, state_dim=7)

    class Slow(ScriptedPolicy):
        def act(self, obs: dict) -> np.ndarray:
            gate.wait(5.0)
            return super().act(obs)

    server = PolicyServer(Slow("zero", meta), ServerConfig(port=0, token=TOKEN, warmup=False))
    server.start()
    try:
        with PolicyClient(port=server.port, token=TOKEN, timeout_s=0.2) as client:
            obs = {STATE_KEY: np.zeros(7, np.float32), "task": "t"}
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                client.infer(obs)
            assert time.monotonic() - start < 1.0
            assert client.health()["status"] == "ok"  # the loop answers while the policy blocks
            gate.set()
            assert client.infer(obs).shape == (2, 7)  # the stale reply (old id) is skipped
    finally:
        server.stop()


def test_unreachable_server_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError):
        PolicyClient(port=1, token=TOKEN, connect_timeout_s=0.5).connect()


def test_policy_loading_is_pluggable(monkeypatch: pytest.MonkeyPatch) -> None:
    import robots.policy

    # without vla-rft's checkpoint loader, which an earlier in-process `vla-rft deploy` registers
    monkeypatch.setattr(robots.policy, "_LOADERS", {k: v for k, v in robots.policy._LOADERS.items() if k != "checkpoint"})
    policy = load_policy("scripted:hold", {"action_dim": 4, "state_dim": 7})
    assert policy.metadata.name == "scripted:hold"
    with pytest.raises(ConfigError, match="did you mean 'zero'"):
        load_policy("scripted:zer0")
    with pytest.raises(ConfigError, match="no 'checkpoint' loader"):
        load_policy("/tmp/some/checkpoint")
    register_policy_loader("test-ckpt", lambda spec, opts: load_policy("scripted:zero", opts))
    assert load_policy("test-ckpt:anything").metadata.name == "scripted:zero"
    loaded = load_policy("hold", {}, loader="robots.policy:_load_scripted")
    with pytest.raises(ConfigError):
        load_policy("zero", {}, loader="no_colon")
    assert loaded is not None
    args = build_parser().parse_args(["--policy", "scripted:zero", "--port", "0"])
    assert args.host == "127.0.0.1"


def test_server_refuses_an_empty_token() -> None:
    policy = load_policy("scripted:zero")
    with pytest.raises(ValueError, match="non-empty token"):
        PolicyServer(policy, ServerConfig(port=0, token=""))
