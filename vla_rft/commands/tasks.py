"""``vla-rft tasks``: the MuJoCo task suite, one line per task (or one JSON object)."""

from __future__ import annotations

from dataclasses import dataclass

from vla_rft.errors import UserInputError


@dataclass
class TasksConfig:
    """List the registered MuJoCo tasks with their family, instructions, cameras and action size."""

    json: bool = False
    """Print one JSON object, {"tasks" [{name, family, instructions, cameras, action_dim}, ...]}."""
    family: str | None = None
    """Only tasks of this family (e.g. 'pick', 'drawer')."""


def run(cfg: TasksConfig) -> int:
    import sims
    from vla_rft.cli import print_json

    specs = sims.list_tasks()
    families = sorted({s.family for s in specs})
    if cfg.family is not None:
        if cfg.family not in families:
            raise UserInputError(f"unknown family '{cfg.family}'; families: {', '.join(families)}")
        specs = [s for s in specs if s.family == cfg.family]
    rows = [
        {"name": s.name, "family": s.family, "instructions": list(s.instructions),
         "cameras": list(s.cameras), "action_dim": int(s.action_dim), "gym_id": s.gym_id}
        for s in specs
    ]
    if cfg.json:
        print_json({"tasks": rows})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} tasks in {len({r['family'] for r in rows})} families")
    for col in ("name", "family", "gym id", "example instruction", "action"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["family"], r["gym_id"], r["instructions"][0], str(r["action_dim"]))
    Console().print(table)
    return 0
