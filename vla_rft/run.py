"""Run directories: resolved config, metrics.jsonl, checkpoints, videos, summary.json, wandb.

Every command that trains or evaluates writes into one run directory::

    <root>/<name>/
      config.yaml          the resolved config (what actually ran, after presets and overrides)
      metrics.jsonl        one JSON object per logged step: {"step": .., "time": .., <metrics>}
      checkpoints/<tag>/   vla_rft.checkpoint directories (e.g. last/, best/)
      videos/              mp4 files
      summary.json         final figures, written atomically when the run ends
      wandb/               wandb's files (offline by default: there may be no network)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.checkpoint import atomic_write_text
from vla_rft.config import ConfigError


@dataclass
class LoggingConfig:
    """Where and how a run records itself."""

    root: str = "runs"
    """Parent directory of run directories."""
    name: str | None = None
    """Run directory name (default <command>-<UTC timestamp>)."""
    wandb: str = "offline"
    """wandb mode - 'offline' (default, no network needed), 'online', or 'disabled'."""
    wandb_project: str = "vla-rft"
    """wandb project name (used when wandb is not disabled)."""


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class RunDir:
    """A run directory plus its metric sinks. Create with :func:`open_run`."""

    path: Path
    wandb_run: Any = None
    _t0: float = field(default_factory=time.time)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def videos(self) -> Path:
        (self.path / "videos").mkdir(exist_ok=True)
        return self.path / "videos"

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (flushed) and to wandb."""
        rec = {"step": int(step), "time": round(time.time() - self._t0, 3)}
        rec.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in rec.items() if k != "step"}, step=int(step))

    def truncate_metrics(self, last_step: int) -> int:
        """Drop records logged after step ``last_step`` (and a torn last line): a run killed
        after its last checkpoint logged iterations that its resumed run logs again. Returns
        how many records were dropped; the file is rewritten atomically."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return 0
        keep, dropped = [], 0
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if int(rec.get("step", 0)) <= last_step:
                keep.append(line)
            else:
                dropped += 1
        if dropped:
            atomic_write_text(path, "".join(x + "\n" for x in keep))
        return dropped

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write summary.json atomically (the run's final figures)."""
        path = self.path / "summary.json"
        atomic_write_text(path, json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.summary.update(summary)
        return path

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


class WarningLog:
    """Python warnings (third-party libraries' above all) go to the run's ``warnings.log``, not
    to the user's terminal; those raised before a run directory exists are kept until one does.
    ``VLA_RFT_WARNINGS=show`` prints them as Python would."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.pending: list[str] = []

    def install(self) -> None:
        import os
        import warnings

        if os.environ.get("VLA_RFT_WARNINGS", "") != "show":
            warnings.showwarning = self._show

    def capture_logger(self, name: str) -> None:
        """Records below ERROR of the library logger ``name`` go to ``warnings.log`` as well (for
        libraries such as robosuite that log their warnings through a console handler of their
        own). Call it before the library is imported: it catches its import-time records too."""
        import logging
        import os

        if os.environ.get("VLA_RFT_WARNINGS", "") == "show":
            return
        logger = logging.getLogger(name)
        if self._log_record not in logger.filters:
            logger.addFilter(self._log_record)

    def _log_record(self, record: Any) -> bool:
        """A logger filter: keep errors on the terminal, write everything else to the log."""
        import logging

        if record.levelno >= logging.ERROR:
            return True
        self._write(f"{record.name} {record.levelname}: {record.getMessage()} ({record.filename}:{record.lineno})\n")
        return False

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        import warnings

        self._write(warnings.formatwarning(message, category, filename, lineno, line))

    def _write(self, text: str) -> None:
        if self.path is None:
            self.pending.append(text)
            return
        with open(self.path, "a") as f:
            f.write(text)

    def attach(self, path: Path) -> None:
        self.path = path
        if self.pending:
            with open(path, "a") as f:
                f.writelines(self.pending)
            self.pending = []


warning_log = WarningLog()


def open_run(command: str, cfg: Any, logging: LoggingConfig, *, resume: bool = False) -> RunDir:
    """Create (or, with ``resume``, reopen) a run directory and write the resolved config."""
    from vla_rft.config import to_yaml

    if logging.wandb not in ("offline", "online", "disabled"):  # checked before anything is written
        raise ConfigError(f"logging.wandb must be 'offline', 'online' or 'disabled', got '{logging.wandb}'")
    name = logging.name or f"{command}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path = Path(logging.root) / name
    if path.exists() and not resume and any(path.iterdir()):
        raise FileExistsError(f"run directory '{path}' already exists; pass a new --logging.name or resume")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", to_yaml(cfg))
    atomic_write_text(path / "run.json", json.dumps({"command": command}) + "\n")
    run = RunDir(path=path)
    warning_log.attach(path / "warnings.log")
    if logging.wandb != "disabled":
        import wandb

        run.wandb_run = wandb.init(
            project=logging.wandb_project,
            name=name,
            dir=str(path),
            mode=logging.wandb,
            config=json.loads(json.dumps(_to_dict(cfg), default=str)),
            resume="allow" if resume else None,
            id=name.replace("/", "_"),
            settings=wandb.Settings(silent=True, console="off"),
        )
    return run


def _to_dict(cfg: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
