"""``vla-rft report``: one self-contained static HTML page from one or more run directories.

A run directory is what ``pretrain``, ``finetune``, ``eval`` or ``quickstart`` wrote (see
vla_rft/run.py). The page shows, for whatever the runs hold:

- a table of the runs (command, task, budget, final figures with Wilson 95% intervals);
- learning curves: evaluation success against environment steps and against wall-clock time,
  with the intervals as bands, one line per run (several runs side by side on one axis), and
  the training diagnostics PPO / GRPO users read (approx KL, clip fraction, entropy, rollout
  success); the loss curve of behaviour cloning;
- retention against gain, where runs evaluated their pretraining tasks;
- evaluation tables with intervals (before / after for a quickstart);
- rollout videos, embedded in the page (before / after side by side for a quickstart);
- each run's resolved config.

Plots are matplotlib PNGs and videos are base64 data URIs, so the one HTML file is the whole
report (it can be mailed or attached to a paper review). Nothing is computed here that the runs
did not measure: curves and tables are read from metrics.jsonl and summary.json.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.checkpoint import atomic_write_text
from vla_rft.errors import UserInputError

VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}


@dataclass
class ReportConfig:
    """Build a static HTML report (curves, tables, videos, configs) from run directories."""

    runs: list[str] = field(default_factory=list)
    """Run directories, also given as bare arguments (vla-rft report RUN_DIR...); several are drawn side by side."""
    out: str | None = None
    """Output HTML file (default <first run>/report.html)."""
    title: str | None = None
    """Page title (default from the runs)."""
    max_videos: int = 6
    """Videos embedded per run directory (the first ones by name)."""
    figures: str | None = None
    """Also save every figure as a PNG in this directory (for slides and papers)."""
    json: bool = False
    """Print one JSON object (the report's path and size) on stdout."""


# ------------------------------------------------------------------------------ reading runs
@dataclass
class Run:
    """What a run directory holds, read once."""

    path: Path
    name: str
    command: str
    config: dict[str, Any]
    config_text: str
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    videos: list[Path]

    @property
    def target(self) -> str | None:
        return self.config.get("task") or self.summary.get("target")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserInputError(f"'{path}' is not valid JSON ({e.msg} at line {e.lineno})") from None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    if not path.is_file():
        return out
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a run killed mid-write leaves a torn last line; the rest is good
            raise UserInputError(f"'{path}' line {i + 1} is not valid JSON") from None
    return out


def _command(path: Path, config: dict[str, Any], summary: dict[str, Any]) -> str:
    meta = path / "run.json"
    if meta.is_file():
        return str(_read_json(meta).get("command", "run"))
    if summary.get("kind"):
        return str(summary["kind"])
    if "algo" in config:
        return "finetune"
    if "datasets" in config:
        return "pretrain"
    if "per_task" in summary:
        return "eval"
    return "run"


def load_run(path: str | Path) -> Run:
    """Read a run directory (config.yaml, summary.json, metrics.jsonl, videos/)."""
    import yaml

    p = Path(path)
    if not p.is_dir():
        raise UserInputError(f"run directory '{p}' does not exist")
    cfg_path, sum_path = p / "config.yaml", p / "summary.json"
    if not cfg_path.is_file() and not sum_path.is_file():
        raise UserInputError(f"'{p}' is not a run directory: it has neither config.yaml nor summary.json")
    config_text = cfg_path.read_text() if cfg_path.is_file() else ""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as e:
        raise UserInputError(f"'{cfg_path}' is not valid YAML: {e}") from None
    summary = _read_json(sum_path) if sum_path.is_file() else {}
    videos = sorted(v for v in (p / "videos").glob("*") if v.suffix in VIDEO_TYPES) if (p / "videos").is_dir() else []
    return Run(p, p.name, _command(p, config, summary), config, config_text, summary,
               _read_metrics(p / "metrics.jsonl"), videos)


# ------------------------------------------------------------------------------ figures
def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _eval_series(run: Run, prefix: str = "eval") -> dict[str, list[float]]:
    xs, ts, ys, lo, hi = [], [], [], [], []
    for m in run.metrics:
        if f"{prefix}/success_rate" not in m:
            continue
        xs.append(float(m.get("env_steps", 0)))
        ts.append(float(m.get("wall_seconds", 0.0)) / 60)
        ys.append(100 * m[f"{prefix}/success_rate"])
        lo.append(100 * m.get(f"{prefix}/ci95_low", m[f"{prefix}/success_rate"]))
        hi.append(100 * m.get(f"{prefix}/ci95_high", m[f"{prefix}/success_rate"]))
    return {"steps": xs, "minutes": ts, "y": ys, "lo": lo, "hi": hi}


def curves_figure(runs: list[Run]) -> str | None:
    """Target success vs env steps and vs wall-clock, Wilson bands, one line per run."""
    series = [(r, _eval_series(r)) for r in runs]
    series = [(r, s) for r, s in series if len(s["y"]) >= 1]
    if not series:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for r, s in series:
        for ax, key in zip(axes, ("steps", "minutes")):
            line, = ax.plot(s[key], s["y"], marker="o", ms=3, label=f"{r.name} ({r.target})")
            ax.fill_between(s[key], s["lo"], s["hi"], alpha=0.18, color=line.get_color())
    from matplotlib.ticker import EngFormatter

    axes[0].xaxis.set_major_formatter(EngFormatter())
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("training wall-clock (minutes)")
    axes[0].set_ylabel("target success (%), Wilson 95% band")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Evaluation on the target task")
    return _png(fig)


def diagnostics_figure(runs: list[Run]) -> str | None:
    """Per-iteration RL diagnostics: rollout success, approx KL, clip fraction, entropy."""
    keys = [("rollout/success_rate", "rollout success (episodes ending)"), ("train/approx_kl", "approx KL per update"),
            ("train/clip_frac", "clip fraction"), ("train/entropy", "policy entropy")]
    rl = [r for r in runs if any("train/approx_kl" in m for m in r.metrics)]
    if not rl:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for r in rl:
        for ax, (k, _) in zip(axes, keys):
            pts = [(m.get("env_steps", m["step"]), m[k]) for m in r.metrics if m.get(k) is not None]
            if not pts:
                continue
            x, y = zip(*pts)
            w = max(1, len(y) // 30)  # a moving average keeps the trend readable at any length
            ys = [sum(y[max(0, i - w + 1):i + 1]) / len(y[max(0, i - w + 1):i + 1]) for i in range(len(y))]
            ax.plot(x, ys, label=r.name, lw=1.2)
    from matplotlib.ticker import EngFormatter

    for ax, (_, title) in zip(axes, keys):
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    return _png(fig)


def loss_figure(runs: list[Run]) -> str | None:
    """Behaviour-cloning loss against optimizer steps."""
    bc = [r for r in runs if r.command == "pretrain" and any("train/loss" in m for m in r.metrics)]
    if not bc:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for r in bc:
        pts = [(m["step"], m["train/loss"]) for m in r.metrics if m.get("train/loss") is not None]
        ax.plot(*zip(*pts), label=r.name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def retention_rows(run: Run) -> list[dict[str, Any]]:
    """Per retention task: first and last evaluation, from metrics (finetune) or the quickstart summary."""
    rows = []
    if run.command == "quickstart" and "before" in run.summary and "after" in run.summary:
        for task in run.summary.get("retain_tasks", []):
            b, a = run.summary["before"]["per_task"][task], run.summary["after"]["per_task"][task]
            rows.append({"task": task, "before": b, "after": a})
        return rows
    tasks = sorted({k.split("/")[1] for m in run.metrics for k in m if k.startswith("eval_retention/")})
    for task in tasks:
        s = _eval_series(run, f"eval_retention/{task}")
        if s["y"]:
            rows.append({"task": task, "before": {"success_rate": s["y"][0] / 100, "ci95": [s["lo"][0] / 100, s["hi"][0] / 100]},
                         "after": {"success_rate": s["y"][-1] / 100, "ci95": [s["lo"][-1] / 100, s["hi"][-1] / 100]}})
    return rows


def target_before_after(run: Run) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if run.command == "quickstart" and "before" in run.summary and "after" in run.summary:
        t = run.summary["target"]
        return run.summary["before"]["per_task"][t], run.summary["after"]["per_task"][t]
    s = _eval_series(run)
    if len(s["y"]) < 2:
        return None
    return ({"success_rate": s["y"][0] / 100, "ci95": [s["lo"][0] / 100, s["hi"][0] / 100]},
            {"success_rate": s["y"][-1] / 100, "ci95": [s["lo"][-1] / 100, s["hi"][-1] / 100]})


def before_after_figure(r: Run) -> str | None:
    """A quickstart's before / after success per task, Wilson 95% error bars."""
    if r.command != "quickstart" or "before" not in r.summary or "after" not in r.summary:
        return None
    tasks = [r.summary["target"], *r.summary.get("retain_tasks", [])]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(tasks), 3.6))
    for j, (key, color) in enumerate((("before", "#9aa5b1"), ("after", "#1f77b4"))):
        res = [r.summary[key]["per_task"][t] for t in tasks]
        y = [100 * x["success_rate"] for x in res]
        err = [[max(0.0, 100 * (x["success_rate"] - x["ci95"][0])) for x in res],  # max: float round-off at 0% / 100%
               [max(0.0, 100 * (x["ci95"][1] - x["success_rate"])) for x in res]]
        xs = [i + (j - 0.5) * 0.38 for i in range(len(tasks))]
        ax.bar(xs, y, width=0.36, color=color, yerr=err, capsize=3, label=f"{key} fine-tuning")
    ax.set_xticks(range(len(tasks)), [f"{t}\n(target)" if i == 0 else f"{t}\n(pretraining)" for i, t in enumerate(tasks)],
                  fontsize=8)
    ax.set_ylabel("success (%), Wilson 95%")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def wise_ft_figure(r: Run) -> str | None:
    """A WiSE-FT sweep: target and mean pretraining-task success against alpha."""
    rows = r.summary.get("rows") if r.command == "wise-ft" else None
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    a = [x["alpha"] for x in rows]
    t = [x["per_task"][r.summary["target"]] for x in rows]
    ax.errorbar(a, [100 * x["success_rate"] for x in t],
                yerr=[[max(0.0, 100 * (x["success_rate"] - x["ci95"][0])) for x in t],
                      [max(0.0, 100 * (x["ci95"][1] - x["success_rate"])) for x in t]],
                marker="o", capsize=3, label=f"target ({r.summary['target']})")
    if rows[0].get("retention_mean") is not None:
        ax.plot(a, [100 * x["retention_mean"] for x in rows], marker="s", label="pretraining tasks (mean)")
    ax.set_xlabel("alpha (0 = start, 1 = fine-tuned)")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def retention_figure(runs: list[Run]) -> str | None:
    """Retention (mean success on pretraining tasks, after / before) against the target gain."""
    pts = []
    for r in runs:
        ba, rows = target_before_after(r), retention_rows(r)
        if ba is None or not rows:
            continue
        gain = 100 * (ba[1]["success_rate"] - ba[0]["success_rate"])
        before = sum(x["before"]["success_rate"] for x in rows) / len(rows)
        after = sum(x["after"]["success_rate"] for x in rows) / len(rows)
        pts.append((r.name, gain, 100 * after / before if before > 0 else float("nan")))
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, g, ret in pts:
        ax.scatter([g], [ret], s=40)
        ax.annotate(name, (g, ret), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("target gain (points)")
    ax.set_ylabel("retention: pretraining-task success, % of start")
    ax.grid(alpha=0.3)
    return _png(fig)


# ------------------------------------------------------------------------------ html
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{_pct(r['success_rate'])} [{_pct(lo)}, {_pct(hi)}]"


def eval_table_rows(res: dict[str, Any]) -> list[list[str]]:
    """Rows (task, success, CI, episodes, mean length) of a harness result."""
    rows = []
    for task, r in res["per_task"].items():
        lo, hi = r["ci95"]
        rows.append([task, _pct(r["success_rate"]), f"[{_pct(lo)}, {_pct(hi)}]", str(r["episodes"]), f"{r['mean_length']:.1f}"])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _img(src: str | None, alt: str) -> str:
    return "" if src is None else f"<figure><img src='{src}' alt='{html.escape(alt)}'><figcaption>{html.escape(alt)}</figcaption></figure>"


def _video(path: Path, label: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure class='vid'><video controls muted loop playsinline preload='auto' "
            f"src='data:{VIDEO_TYPES[path.suffix]};base64,{data}'></video>"
            f"<figcaption>{html.escape(label)}</figcaption></figure>")


def _fmt_minutes(s: float | None) -> str:
    return "" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{s / 60:.1f} min"


def _run_row(r: Run) -> list[str]:
    s = r.summary
    ba = target_before_after(r)
    start = _ci(ba[0]) if ba else ""
    end = _ci(s) if r.command == "eval" and "per_task" in s else (_ci(ba[1]) if ba else "")
    seconds = s.get("seconds") if isinstance(s.get("seconds"), dict) else {}
    secs = s.get("wall_seconds") or seconds.get("stages_total_s") or seconds.get("total_s")
    algo = r.config.get("algo") or s.get("algo") or ("bc" if r.command == "pretrain" else "")
    tasks = r.target or ", ".join(r.config.get("tasks", []) or [])
    return [r.name, r.command, str(algo), str(tasks), f"{s['env_steps']:,}" if "env_steps" in s else "",
            _fmt_minutes(secs), start, end]


def _sections(runs: list[Run], max_videos: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    out.append(("Runs", _table(["run", "command", "algo", "task(s)", "env steps", "wall time",
                                "target at start", "target at end"], [_run_row(r) for r in runs])))
    for r in runs:  # a quickstart's own headline: before / after with retention
        if r.command == "quickstart" and "before" in r.summary and "after" in r.summary:
            out.append((f"{r.name}: before and after fine-tuning", _quickstart_html(r)
                        + _img(before_after_figure(r), "Success before and after fine-tuning, same seeded episodes")))
    trained = [_training_run(r) for r in runs]  # a quickstart's curves are its fine-tuning run's
    figs = [_img(curves_figure(trained), "Target success during fine-tuning (bands: Wilson 95% intervals)"),
            _img(diagnostics_figure(trained), "Training diagnostics per iteration (moving average)"),
            _img(loss_figure(trained), "Behaviour-cloning loss")]
    if any(figs):
        out.append(("Learning curves", "".join(figs)))
    ret = [(r, retention_rows(r)) for r in runs]
    ret = [(r, rows) for r, rows in ret if rows]
    if ret:
        body = _img(retention_figure(runs), "Retention against target gain, one point per run")
        for r, rows in ret:
            body += f"<h3>{html.escape(r.name)}</h3>" + _table(
                ["pretraining task", "before", "after", "change (points)"],
                [[x["task"], _ci(x["before"]), _ci(x["after"]),
                  f"{100 * (x['after']['success_rate'] - x['before']['success_rate']):+.1f}"] for x in rows])
        out.append(("Retention of pretraining skills", body))
    for r in runs:
        if r.command == "wise-ft" and r.summary.get("rows"):
            tasks = [r.summary["target"], *r.summary.get("retain_tasks", [])]
            table = _table(["alpha", *tasks], [[f"{x['alpha']:.2f}", *(_ci(x["per_task"][t]) for t in tasks)]
                                                for x in r.summary["rows"]])
            out.append((f"{r.name}: weight interpolation (WiSE-FT)",
                        table + _img(wise_ft_figure(r), "Success against the interpolation weight alpha")))
    evals = [r for r in runs if r.command == "eval" and "per_task" in r.summary]
    if evals:
        header = ["task", "success", "95% CI", "episodes", "mean length"]
        out.append(("Evaluations", "".join(
            f"<h3>{html.escape(r.name)} ({html.escape(str(r.summary.get('policy', '')))})</h3>" + _table(header, eval_table_rows(r.summary))
            for r in evals)))
    wm_fig = world_model_training_figure(runs)
    if wm_fig:
        out.append(("World-model training", _img(wm_fig, "Open-loop PSNR on held-out episodes, by horizon step")))
    for r in runs:
        if r.command == "world-model eval":
            out.append((f"{r.name}: world-model fidelity and policy ranking", _world_model_html(r)))
    vids = _videos_html(runs, max_videos)
    if vids:
        out.append(("Rollout videos", vids))
    out.append(("Configs", "".join(
        f"<details><summary>{html.escape(r.name)} ({html.escape(r.command)})</summary><pre>{html.escape(r.config_text or json.dumps(r.summary, indent=1))}</pre></details>"
        for r in runs)))
    return out


def _training_run(r: Run) -> Run:
    sub = r.path / "finetune"
    return load_run(sub) if r.command == "quickstart" and sub.is_dir() else r


def _quickstart_html(r: Run) -> str:
    s = r.summary
    t = s["target"]
    b, a = s["before"], s["after"]
    rows = [[f"{t} (target)", _ci(b["per_task"][t]), _ci(a["per_task"][t]),
             f"{100 * (a['per_task'][t]['success_rate'] - b['per_task'][t]['success_rate']):+.1f}", str(a["per_task"][t]["episodes"])]]
    for task in s.get("retain_tasks", []):
        rows.append([f"{task} (pretraining)", _ci(b["per_task"][task]), _ci(a["per_task"][task]),
                     f"{100 * (a['per_task'][task]['success_rate'] - b['per_task'][task]['success_rate']):+.1f}",
                     str(a["per_task"][task]["episodes"])])
    note = f"<p>{html.escape(s.get('note', ''))}</p>" if s.get("note") else ""
    return note + _table(["task", "before", "after", "change (points)", "episodes"], rows)


def world_model_fidelity_figure(r: Run) -> str | None:
    """A world-model eval: open-loop PSNR, SSIM and state error against the horizon (chunks)."""
    fid = r.summary.get("fidelity") if r.command == "world-model eval" else None
    if not fid:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, key, label in zip(axes, ("psnr", "ssim", "state_err"), ("PSNR (dB)", "SSIM", "state MAE")):
        ys = [float("nan") if v is None else v for v in fid[key]]
        ax.plot(range(1, len(ys) + 1), ys, marker="o")
        ax.set_xlabel("horizon (chunks)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    return _png(fig)


def world_model_ranking_figure(r: Run) -> str | None:
    """A world-model eval: success in the model against real success, one point per policy."""
    rows = r.summary.get("policies") if r.command == "world-model eval" else None
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    real = [100 * x["real_success"] for x in rows]
    ax.errorbar(real, [100 * x["wm_success"] for x in rows], marker="o", linestyle="none",
                xerr=[[max(0.0, v - 100 * x["real_ci95"][0]) for v, x in zip(real, rows)],
                      [max(0.0, 100 * x["real_ci95"][1] - v) for v, x in zip(real, rows)]], capsize=3)
    top = max([*real, *(100 * x["wm_success"] for x in rows), 10.0]) * 1.1
    ax.plot([0, top], [0, top], color="0.6", linewidth=1, linestyle="--")
    ax.set_xlabel("real success (%)")
    ax.set_ylabel("success in the world model (%)")
    ax.grid(alpha=0.3)
    return _png(fig)


def _world_model_html(r: Run) -> str:
    s = r.summary
    parts = []
    if s.get("policies"):
        parts.append(_table(["policy", "real success", "world-model success"],
                            [[x["policy"], _ci({"success_rate": x["real_success"], "ci95": x["real_ci95"]}),
                              _pct(x["wm_success"])] for x in s["policies"]]))
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
        parts.append(f"<p>Pearson {fmt(s.get('pearson'))}, Spearman {fmt(s.get('spearman'))}, "
                     f"mean absolute error {fmt(s.get('mae'))}</p>")
    parts.append(_img(world_model_ranking_figure(r), "World-model success against real success (same seeds)"))
    parts.append(_img(world_model_fidelity_figure(r), "Open-loop fidelity against held-out real episodes"))
    return "".join(parts)


def world_model_training_figure(runs: list[Run]) -> str | None:
    """World-model training runs: held-out open-loop PSNR at each evaluated horizon against steps."""
    wm = [r for r in runs if r.command == "world-model train" and any("eval/psnr_h1" in m for m in r.metrics)]
    if not wm:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in wm:
        evals = [m for m in r.metrics if "eval/psnr_h1" in m]
        for key in sorted({k for m in evals for k in m if k.startswith("eval/psnr_h")}, key=lambda k: int(k[11:])):
            ax.plot([m["step"] for m in evals if key in m], [m[key] for m in evals if key in m], marker=".",
                    label=f"{r.name}: {key.split('_')[-1]}")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out open-loop PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _videos_html(runs: list[Run], max_videos: int) -> str:
    parts = []
    for r in runs:
        if r.command == "quickstart":  # per task, the start policy's episodes beside the fine-tuned one's (same seeds)
            subs = {k: load_run(r.path / k).videos for k in ("before", "after") if (r.path / k).is_dir()}
            for task in [r.summary.get("target"), *r.summary.get("retain_tasks", [])]:
                cells = []
                for k, vids in subs.items():
                    mine = [v for v in vids if v.stem.startswith(f"{task}_ep")][:max_videos]
                    cells += [_video(v, f"{k}: {v.stem}") for v in mine]
                if cells:
                    label = f"{task} (target): before and after fine-tuning" if task == r.summary.get("target") else task
                    parts.append(f"<h3>{html.escape(label)}</h3><div class='row'>{''.join(cells)}</div>")
        elif r.videos:
            parts.append(f"<h3>{html.escape(r.name)}</h3><div class='row'>"
                         + "".join(_video(v, v.stem) for v in r.videos[:max_videos]) + "</div>")
    return "".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;font-size:.9em}
th{background:#f2f2f2}figure{margin:.5em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}
.row{display:flex;flex-wrap:wrap;gap:1em}.vid video{width:192px;height:192px;image-rendering:pixelated;background:#000}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}"""


def build_report(run_dirs: list[str | Path], out: str | Path | None = None, *, title: str | None = None,
                 max_videos: int = 6, figures: str | Path | None = None) -> Path:
    """Write one self-contained HTML page for ``run_dirs``; returns its path. With ``figures``,
    each figure is also saved there as ``figure_<n>.png``."""
    if not run_dirs:
        raise UserInputError("give at least one run directory: vla-rft report RUN_DIR... [--out report.html]")
    runs = [load_run(p) for p in run_dirs]
    out_path = Path(out) if out else runs[0].path / "report.html"
    title = title or ("vla-rft report: " + ", ".join(r.name for r in runs))
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in _sections(runs, max_videos):
        body.append(f"<section><h2>{html.escape(heading)}</h2>{content}</section>")
    if figures is not None:
        fig_dir = Path(figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        import re

        for i, data in enumerate(re.findall(r"<img src='data:image/png;base64,([^']+)'", "".join(body))):
            (fig_dir / f"figure_{i}.png").write_bytes(base64.b64decode(data))
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, page)
    return out_path


def run(cfg: ReportConfig) -> int:
    """CLI entry: build the page, print its path (or one JSON object with --json)."""
    from vla_rft.cli import print_json

    path = build_report(cfg.runs, cfg.out, title=cfg.title, max_videos=cfg.max_videos, figures=cfg.figures)
    if cfg.json:
        print_json({"report": str(path), "bytes": path.stat().st_size, "runs": list(cfg.runs)})
    else:
        print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
