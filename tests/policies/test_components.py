"""Normalizer, text encoders, augmentation, heads' configs and presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_rft.checkpoint import CheckpointError
from vla_rft.config import ConfigError
from vla_rft.policies import Normalizer, load_policy_preset, make_policy
from vla_rft.policies.augment import augment_images, random_shift
from vla_rft.policies.text import embed_texts


def test_normalizer_maps_percentiles_and_round_trips():
    rng = np.random.default_rng(0)
    states = rng.normal(3.0, 2.0, (2000, 4))
    actions = rng.uniform(-0.4, 0.8, (2000, 3))
    actions[:, 2] = 0.25  # a constant dimension must not divide by zero
    norm = Normalizer.from_data(states, actions)
    a = torch.as_tensor(actions[:50], dtype=torch.float32)
    n = norm.normalize_action(a)
    assert float(n[:, :2].abs().max()) <= 1.05 and float(n[:, 2].abs().max()) < 1e-3
    torch.testing.assert_close(norm.unnormalize_action(n), a, atol=1e-5, rtol=0)
    z = norm.normalize_state(torch.as_tensor(states, dtype=torch.float32))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    again = Normalizer.from_dict(norm.to_dict())
    for name in ("state_mean", "state_std", "action_low", "action_high"):
        np.testing.assert_array_equal(getattr(again, name), getattr(norm, name))
    assert norm.normalize_action(torch.tensor([[5.0, -5.0, 0.25]]), clip=True).abs().max() <= 1


def test_normalizer_refuses_missing_or_bad_statistics():
    data = Normalizer.identity(2, 2).to_dict()
    with pytest.raises(CheckpointError, match="missing statistics \\['action_high'\\]"):
        Normalizer.from_dict({k: v for k, v in data.items() if k != "action_high"})
    with pytest.raises(CheckpointError, match="version"):
        Normalizer.from_dict(dict(data, version=99))
    with pytest.raises(CheckpointError, match="invalid statistics"):
        Normalizer.from_dict(dict(data, state_std=[1.0, -1.0]))


def test_hashing_text_encoder_is_deterministic_and_separates_instructions():
    e = embed_texts(["pick up the red cube", "open the drawer", "pick up the red cube"], "hashing")
    assert e.shape == (3, 384) and e.dtype == torch.float32
    torch.testing.assert_close(e[0], e[2])
    assert float(e[0] @ e[1]) < 0.9
    with pytest.raises(ValueError, match="unknown text encoder"):
        embed_texts(["x"], "bert")


def test_minilm_text_encoder_loads_and_knows_meaning():
    """The default encoder, loaded for real once (~10 s)."""
    e = embed_texts(["pick up the red cube", "grasp the red block", "open the top drawer"], "minilm")
    assert e.shape == (3, 384)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])
    torch.testing.assert_close(embed_texts(["grasp the red block"], "minilm")[0], e[1])  # cached


def test_augmentation_shifts_and_jitters_within_range():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(6, 3, 16, 16, generator=g)
    torch.testing.assert_close(random_shift(imgs, 0), imgs)
    out = augment_images(imgs, shift=3, brightness=0.1, contrast=0.1, generator=g)
    assert out.shape == imgs.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, imgs)
    shifted = random_shift(imgs, 2, torch.Generator().manual_seed(1))
    # each output image is a translated crop of its own input: its centre pixels appear there
    assert all(torch.isclose(imgs[i], shifted[i, :, 8, 8][:, None, None]).all(0).any() for i in range(6))


@pytest.mark.parametrize("preset,low,high", [("tiny", 0.3e6, 1e6), ("tiny_kp", 0.3e6, 1e6), ("small", 1e6, 5e6), ("base", 5e6, 20e6)])
def test_presets_build_with_documented_sizes(preset, low, high):
    policy_type, cfg = load_policy_preset(preset)
    cfg.text_encoder = "hashing"
    n = make_policy(policy_type, cfg, Normalizer.identity(cfg.state_dim, cfg.action_dim)).num_parameters()
    assert low <= n <= high


def test_bad_configs_are_named():
    policy_type, cfg = load_policy_preset("tiny")
    cfg.head = "diffusion"
    with pytest.raises(ConfigError, match="head must be one of"):
        make_policy(policy_type, cfg, Normalizer.identity(7, 7))
    cfg.head, cfg.num_heads = "gaussian", 5
    with pytest.raises(ConfigError, match="divisible"):
        make_policy(policy_type, cfg, Normalizer.identity(7, 7))
    cfg.num_heads = 4
    with pytest.raises(ValueError, match="normalizer is for"):
        make_policy(policy_type, cfg, Normalizer.identity(3, 7))
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_policy_preset("tinny")


def _dot_images(rng: np.random.Generator, n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, size, size) dark images with one 2x2 red dot, and the dot's (x, y) in [-1, 1]."""
    imgs = torch.from_numpy(rng.uniform(0, 0.1, (n, 3, size, size)).astype(np.float32))
    pix = rng.integers(2, size - 3, (n, 2))  # (col, row) of the dot's corner
    for i, (c, r) in enumerate(pix):
        imgs[i, 0, r:r + 2, c:c + 2] = 1.0
    xy = torch.from_numpy(((pix + 0.5) / (size - 1) * 2 - 1).astype(np.float32))
    return imgs, xy


def test_keypoint_tokens_locate_a_small_object():
    """Spatial softmax keeps where a 2-pixel object is: a linear read-out of the keypoint tokens
    learns its position to a fraction of a pixel-cell. The average-pooled 2x2 grid of the same CNN
    cannot (a dot anywhere inside one cell gives the same tokens up to its 3x3 receptive blur)."""
    from vla_rft.policies.vla.configuration_vla import VLAConfig
    from vla_rft.policies.vla.modeling_vla import make_image_encoder

    def fit(image_tokens: str) -> float:
        torch.manual_seed(0)
        cfg = VLAConfig(dim=32, cnn_channels=[8, 16], cnn_strides=[2, 1], image_tokens=image_tokens,
                        image_grid=2, num_keypoints=4)
        enc = make_image_encoder(cfg)
        readout = torch.nn.Linear(32 * 4, 2)  # 4 tokens either way
        opt = torch.optim.Adam([*enc.parameters(), *readout.parameters()], lr=3e-3)
        rng = np.random.default_rng(0)
        for _ in range(300):
            imgs, xy = _dot_images(rng, 32)
            loss = torch.nn.functional.mse_loss(readout(enc(imgs).flatten(1)), xy)
            opt.zero_grad()
            loss.backward()
            opt.step()
        imgs, xy = _dot_images(np.random.default_rng(1), 256)
        with torch.no_grad():
            return float((readout(enc(imgs).flatten(1)) - xy).abs().mean())

    kp_err, grid_err = fit("keypoints"), fit("grid")
    assert kp_err < 0.08, kp_err  # 0.08 of the half-width is about one pixel of the 32-pixel image
    assert kp_err < 0.5 * grid_err, (kp_err, grid_err)


def test_keypoint_config_errors_are_named():
    policy_type, cfg = load_policy_preset("tiny_kp")
    cfg.text_encoder = "hashing"
    assert cfg.image_tokens == "keypoints"
    for field, value, match in [("image_tokens", "patches", "image_tokens must be one of"),
                                ("cnn_strides", [2, 2], "one stride >= 1 per convolution"),
                                ("cnn_strides", [2, 0, 1], "one stride >= 1 per convolution"),
                                ("num_keypoints", 0, "num_keypoints must be >= 1"),
                                ("keypoint_temperature", 0.0, "keypoint_temperature must be > 0")]:
        _, bad = load_policy_preset("tiny_kp")
        bad.text_encoder = "hashing"
        setattr(bad, field, value)
        with pytest.raises(ConfigError, match=match):
            make_policy(policy_type, bad, Normalizer.identity(7, 7))


def test_film_starts_as_the_unconditioned_encoder_and_then_reads_the_instruction():
    from policy_fixtures import make_obs
    from policy_fixtures import make_policy as make_small_policy

    plain = make_small_policy(image_tokens="keypoints", cnn_strides=[2, 1]).eval()
    film = make_small_policy(image_tokens="keypoints", cnn_strides=[2, 1], film=True).eval()
    state = {k: v for k, v in film.state_dict().items() if not k.startswith("film.")}
    assert set(state) == set(plain.state_dict())  # FiLM adds only its own layer
    film.load_state_dict({**plain.state_dict(), **{k: v for k, v in film.state_dict().items() if k.startswith("film.")}})
    obs = make_obs(4)
    np.testing.assert_allclose(film.act(obs), plain.act(obs), atol=1e-6)  # zero-initialized: identical
    with torch.no_grad():
        film.film.weight.normal_(0, 0.5)
        inp = film.prepare(obs)
        a, b = embed_texts([obs["task"][0]] * 4, "hashing"), embed_texts([obs["task"][1]] * 4, "hashing")
        # the image tokens themselves now depend on the instruction (without FiLM they cannot)
        assert not torch.allclose(film._image_tokens(inp, a, False), film._image_tokens(inp, b, False), atol=1e-4)
        torch.testing.assert_close(plain._image_tokens(inp, a, False), plain._image_tokens(inp, b, False))
