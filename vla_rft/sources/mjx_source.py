"""``mjx``: the state-based tasks stepped in batch on MuJoCo MJX (:mod:`sims.mjx_env`).

All N envs advance one chunk in one compiled call (each stops at its episode's end and
auto-resets inside the call); the source only converts at the boundary. Chunks come in as numpy
or torch (torch through dlpack: zero-copy on CPU), observations go out as numpy rows of the
contract: ``observation.state`` (N, S) float32 with the task's object state appended (see
:mod:`sims.mjx_env`), ``task`` the instruction, and, for a policy that reads cameras, constant
black ``observation.images.<cam>`` (the fake source's convention: a state-based task has no
pictures, so the policy must read the state).

Compiled programs go to JAX's persistent cache (:func:`sims.mjx_env.enable_compilation_cache`;
``VLA_RFT_JAX_CACHE=0`` turns that off), so a second run of the same task and batch starts fast.

Reset seeds: env i starts from ``jax.random.PRNGKey(seeds[i])``; later episodes of that env draw
from its key, so a run is a function of the seeds only (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY, ContractError
from vla_rft.sources.base import ChunkStep, Obs, SourceSpec, register_source


def torch_to_jax(x: Any) -> Any:
    """A torch tensor as a jax array through dlpack (shares memory on CPU)."""
    import jax.dlpack

    return jax.dlpack.from_dlpack(x.detach().contiguous())


def jax_to_torch(x: Any) -> Any:
    """A jax array as a torch tensor through dlpack (shares memory on CPU)."""
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(x)


class MjxSource:
    """N MJX envs of one ported task (the :class:`~vla_rft.sources.base.RolloutSource` contract).

    Args:
        task: a task in :data:`sims.mjx_env.PORTED_TASKS`.
        num_envs: N.
        chunk_size: h, the actions per chunk.
        cameras: cameras the policy reads (filled with black images of ``image_size``).
        image_size: square side of those images.
        env: keyword arguments of :class:`sims.mjx_env.MjxTask` (reward_type, potential_gamma,
            max_episode_steps, solver, batching, ...).
    """

    def __init__(self, task: str, num_envs: int, chunk_size: int, *, cameras: Sequence[str] = (),
                 image_size: int = 64, env: dict[str, Any] | None = None) -> None:
        from sims.mjx_env import MjxTask, enable_compilation_cache, instruction, jax

        self._jax = jax
        enable_compilation_cache()
        self.env = MjxTask(task, **(env or {}))
        self.num_envs, self.chunk_size = int(num_envs), int(chunk_size)
        self.cameras, self.image_size = list(cameras), int(image_size)
        self.instruction = instruction(task)
        self.state: Any = None

    def _obs(self, states: np.ndarray) -> Obs:
        n = len(states)
        obs: Obs = {IMAGE_PREFIX + c: np.zeros((n, self.image_size, self.image_size, 3), np.uint8)
                    for c in self.cameras}
        obs[STATE_KEY] = states
        obs[TASK_KEY] = [self.instruction] * n
        return obs

    def _keys(self, seeds: Sequence[int]) -> Any:
        """One PRNG key per env from its seed (taken mod 2**32)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        seeds32 = (np.asarray([int(s) for s in seeds], np.uint64) % (1 << 32)).astype(np.uint32)
        return self._jax.vmap(self._jax.random.PRNGKey)(self._jax.numpy.asarray(seeds32))

    def reset(self, seeds: Sequence[int]) -> Obs:
        self.state = self.env.reset(self._keys(seeds))
        return self._obs(np.array(self.env.observe(self.state)))

    def reset_to(self, states: dict[str, np.ndarray], seeds: Sequence[int]) -> Obs:
        """Start every env from a recorded state (:func:`sims.mjx_env.c_reset_states`)."""
        self.state = self.env.reset_to(states["qpos"], states["mocap_pos"], states["mocap_quat"], self._keys(seeds))
        return self._obs(np.array(self.env.observe(self.state)))

    def step(self, chunks: Any) -> ChunkStep:
        if self.state is None:
            raise RuntimeError("step before reset")
        chunks = self._chunks(chunks)
        self.state, out = self.env.step_chunk(self.state, chunks)
        term, trunc = np.array(out.terminated), np.array(out.truncated)
        final_rows = np.array(out.final_state)
        ended = np.flatnonzero(term | trunc)
        finals = {int(i): self._obs(final_rows[i:i + 1]) for i in ended}
        return ChunkStep(self._obs(np.array(self.env.observe(self.state))), np.array(out.rewards, np.float64),
                         np.array(out.executed), term, trunc, np.array(out.success), finals)

    def _chunks(self, chunks: Any) -> Any:
        """(N, h, A) chunks as a float32 jax array; a wrong shape or NaN/inf is a ContractError."""
        jnp = self._jax.numpy
        is_torch = hasattr(chunks, "__dlpack__") and hasattr(chunks, "detach")
        arr = torch_to_jax(chunks.float()) if is_torch else np.asarray(chunks, np.float32)
        arr = self._jax.device_put(arr, self._jax.devices()[0])  # one placement for both: no retrace
        if tuple(arr.shape) != (self.num_envs, self.chunk_size, 7):
            raise ContractError(f"chunks have shape {tuple(arr.shape)}; this source steps "
                                f"({self.num_envs}, {self.chunk_size}, 7) chunks")
        if not bool(jnp.isfinite(arr).all()):
            raise ContractError("chunks contain NaN or inf")
        return arr

    def close(self) -> None:
        self.state = None


ENV_KEYS = ("reward_type", "potential_gamma", "max_episode_steps", "terminate_on_success")


@register_source("mjx")
def mjx_source(spec: SourceSpec) -> MjxSource:
    """``--source mjx``: ``spec.task`` on MJX; ``spec.options`` may set ``solver`` and ``batching``."""
    from vla_rft.errors import UserInputError

    kw = spec.env_kwargs
    if kw.get("perturbation", "none") != "none":
        raise UserInputError("--source mjx runs the training distribution only (--perturbation none)")
    env = {k: kw[k] for k in ENV_KEYS if k in kw} | {k: spec.options[k] for k in ("solver", "batching")
                                                     if k in spec.options}
    cameras = kw.get("cameras", []) if kw.get("obs_mode", "state") == "rgb" else []
    return MjxSource(spec.task, spec.num_envs, spec.chunk_size, cameras=cameras,
                     image_size=int(kw.get("image_size", 64)), env=env)
