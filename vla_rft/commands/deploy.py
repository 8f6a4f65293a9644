"""``vla-rft deploy`` (run a policy on a robot, log a LeRobotDataset) and ``vla-rft serve``."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.errors import UserInputError


@dataclass
class SupervisorConfig:
    """The scripted supervisor of --teleop expert (simulated robots), see robots.teleop.ExpertSupervisor."""

    stall_steps: int = 20
    """Take over after this many steps without a gain of min_progress in the task's dense reward."""
    takeover_steps: int = 15
    """Steps the expert drives per takeover before handing back."""
    min_progress: float = 0.02
    """Dense-reward gain that counts as progress of the policy."""


@dataclass
class DeployConfig:
    """Run a policy on a robot at a fixed rate through the safety filter and the chunk executor,
    and write every episode as a LeRobotDataset episode (commanded and executed actions, safety
    events, interventions, link drops, reward/success)."""

    robot: str | None = None
    """Robot YAML (configs/robots/*.yaml). Required."""
    policy: str | None = None
    """scripted:expert (simulated robots) | scripted:goto:J1,J2,.. | scripted:zero | scripted:hold |
    ws://HOST:PORT (a `vla-rft serve` policy server) | a checkpoint path. Required."""
    out: str | None = None
    """Dataset root to create (must not exist). Required."""
    task: str = ""
    """Language instruction given to the policy; empty means the instruction of the robot (sim task or YAML)."""
    episodes: int = 1
    """Number of episodes."""
    max_steps: int = 200
    """Upper bound on control steps per episode."""
    control_hz: float | None = None
    """Loop rate in Hz; null means control_hz of the robot config."""
    realtime: bool = True
    """Pace the loop in wall-clock time; false runs a simulated robot as fast as it goes."""
    until_success: bool = True
    """End an episode at its first successful step."""
    teleop: str = "none"
    """Human intervention source: none | keyboard (stdin lines, see docs/deployment.md) | ros:/TOPIC
    (std_msgs/Float64MultiArray actions through the rosbridge of the robot) | expert (a scripted
    supervisor on a simulated robot - the task expert takes over when the policy stalls)."""
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    """When the expert supervisor (--teleop expert) takes over and for how long."""
    success: str = "auto"
    """Where success comes from - auto (the task predicate of a simulated robot, else the keyboard
    verdict with teleop=keyboard, else false) | robot | operator | none | ros:/TOPIC (a std_msgs/Bool)."""
    token: str | None = None
    """Policy server token; null means $VLA_RFT_SERVER_TOKEN."""
    loader: str | None = None
    """Loader of a checkpoint --policy, e.g. my_pkg.policies:load (or mod:fn)."""
    bridge_url: str | None = None
    """Override the rosbridge URL of a ROS robot (ws://127.0.0.1:PORT)."""
    mode: str = "open_loop"
    """Chunk execution, open_loop or ensemble (ACT temporal ensembling)."""
    horizon: int | None = None
    """Use at most this many actions of each chunk (null means all)."""
    prefetch: bool | None = None
    """Infer the next chunk while the current one plays; null means on when chunks hold > 1 action."""
    stale_s: float = 0.25
    """The safety filter holds on observations older than this (s)."""
    ready_s: float = 15.0
    """How long to wait for the first complete observation of the robot (s)."""
    storage: str = "image"
    """image (PNG frames in parquet) or video (mp4)."""
    json: bool = False
    """Print one JSON object (episodes, success, loop statistics) on stdout."""


@dataclass
class ServeConfig:
    """Serve a policy over websockets + msgpack for `vla-rft deploy --policy ws://HOST:PORT`."""

    policy: str | None = None
    """scripted:zero | scripted:hold | a checkpoint path. Required."""
    loader: str | None = None
    """Loader of --policy, e.g. my_pkg.policies:load (or mod:fn)."""
    host: str = "127.0.0.1"
    """Bind address (loopback by default)."""
    port: int = 8765
    """TCP port."""
    token: str | None = None
    """Shared secret; null means $VLA_RFT_SERVER_TOKEN, else a random one printed once."""
    max_msg_mb: float = 16.0
    """Frames above this size close the connection."""
    action_dim: int = 7
    """Action size (scripted policies only)."""
    state_dim: int = 7
    """State size (scripted policies only)."""
    chunk_size: int = 10
    """Actions per chunk (scripted policies only)."""
    cameras: list[str] = field(default_factory=list)
    """Camera names (scripted policies only)."""
    action_space: str = "ee_delta"
    """Action space, ee_delta or joint_position (scripted policies only)."""


def run_serve(cfg: ServeConfig) -> int:
    from robots.server import serve_main
    from vla_rft.policies.serving import register

    register()  # bare checkpoint paths load trained vla-rft policies

    if not cfg.policy:
        raise UserInputError("--policy is required (scripted:zero, scripted:hold or a checkpoint path)")
    argv = ["--policy", cfg.policy, "--host", cfg.host, "--port", str(cfg.port),
            "--max-message-mb", str(cfg.max_msg_mb), "--action-dim", str(cfg.action_dim),
            "--state-dim", str(cfg.state_dim), "--chunk-size", str(cfg.chunk_size),
            "--cameras", ",".join(cfg.cameras), "--action-space", cfg.action_space]
    argv += ["--loader", cfg.loader] if cfg.loader else []
    argv += ["--token", cfg.token] if cfg.token else []
    return serve_main(argv)


def _check(cfg: DeployConfig) -> None:
    """One-line errors for bad input, before anything connects or moves."""
    for name in ("robot", "policy", "out"):
        if not getattr(cfg, name):
            raise UserInputError(f"--{name} is required (see `vla-rft deploy --help`)")
    if not Path(str(cfg.robot)).is_file():
        raise FileNotFoundError(f"--robot: no such file '{cfg.robot}'")
    if Path(str(cfg.out)).exists():
        raise FileExistsError(f"--out '{cfg.out}' already exists; choose a new directory")
    if cfg.episodes < 1 or cfg.max_steps < 1:
        raise UserInputError("--episodes and --max_steps must be >= 1")
    if cfg.mode not in ("open_loop", "ensemble"):
        raise UserInputError(f"--mode must be open_loop or ensemble, got '{cfg.mode}'")
    if cfg.teleop not in ("none", "keyboard", "expert") and not cfg.teleop.startswith("ros:/"):
        raise UserInputError(f"--teleop must be none, keyboard, expert or ros:/TOPIC, got '{cfg.teleop}'")
    sup = cfg.supervisor
    if sup.stall_steps < 1 or sup.takeover_steps < 1:
        raise UserInputError("--supervisor.stall_steps and --supervisor.takeover_steps must be >= 1")
    if cfg.success not in ("auto", "robot", "operator", "none") and not cfg.success.startswith("ros:/"):
        raise UserInputError(f"--success must be auto, robot, operator, none or ros:/TOPIC, got '{cfg.success}'")
    if cfg.success == "operator" and cfg.teleop != "keyboard":
        raise UserInputError("--success operator needs --teleop keyboard (the verdict is typed there)")


def _make_robot(cfg: DeployConfig) -> Any:
    from robots.base import load_robot_config, make_robot

    rcfg = load_robot_config(str(cfg.robot))
    if cfg.bridge_url:
        if not hasattr(rcfg, "url"):
            raise UserInputError(f"--bridge_url applies to ROS robots, not kind '{rcfg.kind}'")
        rcfg.url = cfg.bridge_url  # type: ignore[attr-defined]
    robot = make_robot(rcfg)
    if cfg.task:
        if not hasattr(robot, "task"):
            raise UserInputError(f"robot kind '{rcfg.kind}' takes no --task")
        robot.task = cfg.task
    return robot


def _check_policy(cfg: DeployConfig, robot: Any) -> None:
    """One-line errors for a policy the robot cannot run, before waiting for an observation."""
    if cfg.policy == "scripted:expert" and getattr(robot, "make_expert", None) is None:
        raise UserInputError(f"scripted:expert needs a simulated robot with a task expert, not kind "
                             f"'{robot.config.kind}'")
    if cfg.teleop == "expert" and (getattr(robot, "make_expert", None) is None or not hasattr(robot, "outcome")):
        raise UserInputError(f"--teleop expert needs a simulated robot with a task expert and reward, not kind "
                             f"'{robot.config.kind}'")


def _bridge(robot: Any, what: str) -> Any:
    bridge = getattr(robot, "bridge", None)
    if bridge is None:
        raise UserInputError(f"{what} needs a ROS robot (one with a rosbridge connection)")
    return bridge


def _teleop(cfg: DeployConfig, robot: Any) -> Any:
    from robots import deploy

    if cfg.teleop == "keyboard":
        print("teleop: type i<Enter> to take over / hand back, x+ x- y+ y- z+ z- 0 to jog, g gripper, "
              "s/f success/failure, q quit", file=sys.stderr)
        return deploy.KeyboardTeleop(robot, sys.stdin)
    if cfg.teleop == "expert":
        sup = cfg.supervisor
        return deploy.ExpertSupervisor(robot, sup.stall_steps, sup.takeover_steps, sup.min_progress)
    if cfg.teleop.startswith("ros:"):
        return deploy.RosTeleop(_bridge(robot, "--teleop ros:"), cfg.teleop[4:], robot.limits.action_dim)
    return deploy.NoTeleop()


def _outcome(cfg: DeployConfig, robot: Any, teleop: Any) -> Any:
    from robots import deploy

    kind = cfg.success
    if kind == "auto":
        kind = "robot" if hasattr(robot, "outcome") else ("operator" if cfg.teleop == "keyboard" else "none")
    if kind == "robot":
        if not hasattr(robot, "outcome"):
            raise UserInputError(f"robot kind '{robot.config.kind}' does not know success; use --success operator "
                                 "or ros:/TOPIC")
        return deploy.RobotOutcome(robot)
    if kind == "operator":
        return deploy.OperatorOutcome(teleop)
    if kind.startswith("ros:"):
        return deploy.TopicOutcome(_bridge(robot, "--success ros:"), kind[4:])
    return deploy.FixedOutcome(False)


def _features(cfg: DeployConfig, robot: Any, obs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    import numpy as np

    from robots.deploy import deploy_features
    from vla_rft.contract import IMAGE_PREFIX, STATE_KEY
    from vla_rft.data.lerobot_io import contract_features

    cams = list(robot.config.cameras)
    shapes = {tuple(np.asarray(obs[IMAGE_PREFIX + c]).shape[:2]) for c in cams}
    if len(shapes) > 1:
        raise UserInputError(f"cameras of robot '{robot.config.name}' differ in size {sorted(shapes)}; "
                             "configure one size (height/width) for all")
    size = shapes.pop() if shapes else (1, 1)
    dim = robot.limits.action_dim
    return contract_features(cams, size, int(np.asarray(obs[STATE_KEY]).shape[0]), dim,
                             storage=cfg.storage, extra_features=deploy_features(dim))


def _settings(cfg: DeployConfig, chunk_size: int) -> Any:
    from robots.deploy import DeploySettings
    from robots.executor import ExecutorConfig
    from robots.safety import SafetyConfig

    async_inference = chunk_size > 1 if cfg.prefetch is None else cfg.prefetch
    return DeploySettings(
        max_steps=cfg.max_steps, end_on_success=cfg.until_success, realtime=cfg.realtime,
        control_hz=cfg.control_hz,
        executor=ExecutorConfig(mode=cfg.mode, execute_horizon=cfg.horizon,  # type: ignore[arg-type]
                                async_inference=async_inference),
        safety=SafetyConfig(max_obs_age_s=cfg.stale_s))


def run(cfg: DeployConfig) -> int:
    """Resolve everything (errors before motion), then run the episodes; SIGTERM stops cleanly.

    A robot or policy server that cannot be reached is reported in one line (exit status 1).
    """
    from vla_rft.policies.serving import register

    register()  # bare checkpoint paths load trained vla-rft policies
    _check(cfg)
    from robots.base import RobotError

    try:
        return _run(cfg)
    except (RobotError, ConnectionError, TimeoutError) as exc:
        print(f"vla-rft: deploy failed: {exc}", file=sys.stderr)
        return 1


def _run(cfg: DeployConfig) -> int:
    from robots.deploy import DeployDataset, EpisodeRunner, resolve_policy, wait_for_observation

    _quiet_datasets()
    signal.signal(signal.SIGTERM, _interrupt)
    robot = _make_robot(cfg)
    policy = teleop = None
    try:
        _check_policy(cfg, robot)
        obs = wait_for_observation(robot, cfg.ready_s)
        hz = cfg.control_hz or robot.config.control_hz
        policy = resolve_policy(str(cfg.policy), robot, obs, token=cfg.token, loader=cfg.loader, hz=hz)
        teleop = _teleop(cfg, robot)
        outcome = _outcome(cfg, robot, teleop)
        dataset = DeployDataset(str(cfg.out), _features(cfg, robot, obs), fps=max(1, round(hz)),
                                robot_type=robot.config.name)
        runner = EpisodeRunner(robot, policy.infer, _settings(cfg, policy.chunk_size), dataset,
                               teleop, outcome)
        results = []
        for ep in range(cfg.episodes):
            result = runner.run_episode()
            results.append(result)
            _report_episode(ep, result)
            if runner.stop_requested:
                break
    finally:
        if teleop is not None:
            teleop.close()
        if policy is not None:
            policy.close()
        robot.close()
    _summary(cfg, policy.name if policy else "", results)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _report_episode(ep: int, r: Any) -> None:
    loop = r.loop
    print(f"episode {ep}: {'success' if r.success else 'failure'} ({r.success_source}) in {r.steps} steps; "
          f"period p50 {loop['period_p50_ms']:.1f} ms, jitter p99 {loop['jitter_p99_ms']:.2f} ms, "
          f"obs->command p50 {loop['obs_to_command_p50_ms']:.2f} ms, overruns {loop['overruns']}; "
          f"holds {r.holds}, interventions {r.interventions}, link drops {r.bridge_dropped_frames}, "
          f"reconnects {r.reconnects}", file=sys.stderr)


def _summary(cfg: DeployConfig, policy_name: str, results: list[Any]) -> None:
    from dataclasses import asdict

    from vla_rft.cli import print_json

    successes = sum(r.success for r in results)
    out = {"robot": cfg.robot, "policy": policy_name, "out": cfg.out, "episodes": len(results),
           "successes": successes, "frames": sum(r.frames for r in results),
           "results": [asdict(r) for r in results]}
    if cfg.json:
        print_json(out)
    else:
        print(f"deploy: {successes}/{len(results)} successful episodes written to {cfg.out}")


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
