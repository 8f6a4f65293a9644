import json

import numpy as np
import pytest
import torch

from vla_rft.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from vla_rft.seeding import get_rng_state, seed_everything, set_rng_state


def _ckpt() -> Checkpoint:
    g = torch.Generator().manual_seed(0)
    return Checkpoint(
        kind="vla",
        config={"model": {"dim": 32}, "chunk": 8},
        tensors={"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3, dtype=torch.float16)},
        step=123,
        counters={"env_steps": 4567},
        optimizer={"state.0.exp_avg": torch.ones(4, 3)},
        normalizer={"action": {"mean": [0.0] * 7, "std": [1.0] * 7}},
        extra={"note": "x"},
    )


def test_round_trip(tmp_path):
    ckpt = _ckpt()
    save_checkpoint(ckpt, tmp_path / "c")
    back = load_checkpoint(tmp_path / "c", kind="vla")
    assert back.step == 123 and back.counters == {"env_steps": 4567}
    assert back.config == ckpt.config and back.normalizer == ckpt.normalizer and back.extra == ckpt.extra
    for k, v in ckpt.tensors.items():
        assert torch.equal(back.tensors[k], v) and back.tensors[k].dtype == v.dtype
    assert torch.equal(back.optimizer["state.0.exp_avg"], ckpt.optimizer["state.0.exp_avg"])
    assert not any(p.name.startswith("c.") for p in tmp_path.iterdir()), "temp dirs left behind"


def test_overwrite_is_atomic_replace(tmp_path):
    save_checkpoint(_ckpt(), tmp_path / "c")
    ck = _ckpt()
    ck.step = 999
    save_checkpoint(ck, tmp_path / "c")
    assert load_checkpoint(tmp_path / "c").step == 999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_failed_write_leaves_old_checkpoint(tmp_path):
    save_checkpoint(_ckpt(), tmp_path / "c")
    bad = _ckpt()
    bad.config = {"x": float("nan")}  # JSON forbids NaN: the write fails midway
    with pytest.raises(ValueError):
        save_checkpoint(bad, tmp_path / "c")
    assert load_checkpoint(tmp_path / "c").step == 123
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_truncated_weights_are_rejected(tmp_path):
    d = save_checkpoint(_ckpt(), tmp_path / "c")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(d)


def test_corrupt_bytes_are_rejected(tmp_path):
    d = save_checkpoint(_ckpt(), tmp_path / "c")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(d)


def test_foreign_and_wrong_kind(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="not a vla-rft checkpoint"):
        load_checkpoint(tmp_path / "foreign")
    d = save_checkpoint(_ckpt(), tmp_path / "c")
    with pytest.raises(CheckpointError, match="expected a 'critic'"):
        load_checkpoint(d, kind="critic")
    meta = json.loads((d / "meta.json").read_text())
    meta["format_version"] = 99
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(d)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(d)


def test_rng_state_round_trip_through_json():
    rng = seed_everything(7)
    state = json.loads(json.dumps(get_rng_state(rng)))
    a = (np.random.rand(), torch.rand(2), rng.random(), __import__("random").random())
    seed_everything(99)
    set_rng_state(state, rng)
    b = (np.random.rand(), torch.rand(2), rng.random(), __import__("random").random())
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and a[2] == b[2] and a[3] == b[3]
