"""Start and stop the real ROS test stack: rosbridge-server-rs + the MuJoCo arm node, on loopback.

    python scripts/ros/stack.py --port 9090 [--venv .venv-ros] [--target-joints ...]

runs both until Ctrl-C (for `vla-rft deploy --robot configs/robots/sim_arm_ros2.yaml`). Tests and
benchmarks use :class:`RosStack` as a context manager. Why a helper: both processes need the ROS
venv's environment (``ros_env.sh``: library path, LD_PRELOAD, shared-memory DDS profile, a domain
id), the bridge must be bound to 127.0.0.1 with ``--no-rosapi`` and a scratch ``$HOME``, and every
process must be torn down whatever happens, in its own process group, with a bounded wait.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".venv-ros"
NODE = ROOT / "scripts" / "ros" / "mujoco_arm_node.py"


class StackError(RuntimeError):
    """The ROS stack could not be started (missing venv, a process died, a port never opened)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ros_environment(venv: Path, domain_id: int) -> dict[str, str]:
    """The environment ``ros_env.sh`` sets up, on top of this process's, with ``domain_id``."""
    script = venv / "ros_env.sh"
    if not script.is_file():
        raise StackError(f"{script} not found: run `bash scripts/ros_test_env.sh {venv}` first")
    base = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    base.pop("LD_PRELOAD", None)
    out = subprocess.run(["bash", "-c", f"source '{script}' && env -0"], env=base, capture_output=True,
                         check=True, timeout=30).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until ``127.0.0.1:port`` accepts TCP connections; raises if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"process exited with {proc.returncode} before opening port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"nothing listened on 127.0.0.1:{port} within {timeout_s} s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    """SIGINT, then SIGTERM, then SIGKILL the process group of ``proc``, waiting a bounded time."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


class RosStack:
    """The bridge and the arm node as child processes (each in its own session/process group)."""

    def __init__(self, venv: Path = DEFAULT_VENV, port: int | None = None, *,
                 node_args: list[str] | None = None, log_dir: Path | None = None,
                 domain_id: int | None = None, lifetime_s: float = 600.0) -> None:
        self.venv = Path(venv)
        self.port = port or free_port()
        self.domain_id = domain_id if domain_id is not None else random.randint(1, 200)
        self.node_args = list(node_args or [])
        self.lifetime_s = lifetime_s
        self._tmp = tempfile.TemporaryDirectory(prefix="ros-stack-")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.env = ros_environment(self.venv, self.domain_id)
        self.env["HOME"] = self._tmp.name  # the bridge writes under $HOME
        self.bridge: subprocess.Popen[bytes] | None = None
        self.node: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def start_bridge(self, timeout_s: float = 30.0) -> None:
        """Start (or restart) rosbridge-server-rs on 127.0.0.1:port."""
        exe = self.venv / "bin" / "rosbridge_server_rs_jazzy"
        self.bridge = self._spawn("bridge", ["timeout", "-s", "INT", str(self.lifetime_s), str(exe),
                                             "--bind", f"127.0.0.1:{self.port}", "--no-rosapi"])
        wait_port(self.port, self.bridge, timeout_s)

    def kill_bridge(self) -> None:
        """SIGKILL the bridge (a crash, not a shutdown): clients see the connection drop."""
        if self.bridge is not None and self.bridge.poll() is None:
            os.killpg(self.bridge.pid, signal.SIGKILL)
            self.bridge.wait(timeout=5)

    def start_node(self) -> None:
        python = self.venv / "bin" / "python"
        self.node = self._spawn("node", [str(python), str(NODE), "--max-lifetime-s", str(self.lifetime_s),
                                         *self.node_args])

    def start(self) -> Self:
        self.start_node()
        self.start_bridge()
        return self

    def stop(self) -> None:
        stop_process(self.bridge)
        stop_process(self.node)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def logs(self) -> str:
        """Both processes' output so far (for failure messages)."""
        parts = []
        for name in ("bridge", "node"):
            path = self.log_dir / f"{name}.log"
            if path.is_file():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run rosbridge-server-rs + the MuJoCo arm node on loopback.")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--lifetime-s", type=float, default=3600.0)
    args, node_args = p.parse_known_args(argv)
    with RosStack(args.venv, args.port, node_args=node_args, lifetime_s=args.lifetime_s) as stack:
        print(f"ROS stack up: bridge {stack.url}, ROS_DOMAIN_ID={stack.domain_id}, logs {stack.log_dir}; "
              "Ctrl-C stops it", file=sys.stderr)
        try:
            while stack.bridge and stack.bridge.poll() is None and stack.node and stack.node.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        print(stack.logs(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
