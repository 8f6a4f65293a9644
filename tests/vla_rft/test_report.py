"""`vla-rft report`: the page built from small fixed run directories, its errors, and its render
in headless Chromium (Debian's chromium + chromium-driver, installed by scripts/install.sh)."""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from vla_rft.errors import UserInputError
from vla_rft.evaluation.harness import _write_video
from vla_rft.report import build_report, load_run


def _frames(seed: int, n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def _ci(k: int, n: int) -> list[float]:
    from vla_rft.evaluation.stats import wilson_interval

    return list(wilson_interval(k, n))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _finetune_run(root: Path, name: str, evals: list[int], retain: list[int]) -> Path:
    """A finetune run directory as the trainer writes it: evaluations every 2 iterations."""
    d = root / name
    _write(d / "config.yaml", "algo: ppo\ntask: pick_cube\nretain_tasks:\n- open_drawer\n")
    _write(d / "run.json", json.dumps({"command": "finetune"}))
    lines = []
    for it in range(2 * len(evals) - 1):
        rec = {"step": it, "time": 10.0 * it, "env_steps": 1000 * it, "wall_seconds": 30.0 * it}
        if it:
            rec.update({"train/approx_kl": 0.01 + 0.001 * it, "train/clip_frac": 0.1, "train/entropy": 1.3,
                        "rollout/success_rate": 0.1 * it})
        if it % 2 == 0:
            k = evals[it // 2]
            lo, hi = _ci(k, 50)
            rec.update({"eval/success_rate": k / 50, "eval/ci95_low": lo, "eval/ci95_high": hi, "eval/mean_length": 60.0})
            k = retain[it // 2]
            lo, hi = _ci(k, 20)
            rec.update({"eval_retention/open_drawer/success_rate": k / 20,
                        "eval_retention/open_drawer/ci95_low": lo, "eval_retention/open_drawer/ci95_high": hi})
        lines.append(json.dumps(rec))
    _write(d / "metrics.jsonl", "\n".join(lines) + "\n")
    _write(d / "summary.json", json.dumps({"algo": "ppo", "task": "pick_cube", "env_steps": 1000 * (2 * len(evals) - 2),
                                           "wall_seconds": 600.0, "finished": True}))
    return d


def _eval_summary(per_task: dict[str, tuple[int, int]]) -> dict:
    out = {}
    for task, (k, n) in per_task.items():
        out[task] = {"success_rate": k / n, "episodes": n, "successes": k, "ci95": _ci(k, n), "mean_length": 50.0}
    k, n = sum(v[0] for v in per_task.values()), sum(v[1] for v in per_task.values())
    return {"success_rate": k / n, "episodes": n, "successes": k, "ci95": _ci(k, n), "per_task": out,
            "seed": 200000, "perturbation": "none", "policy": "pretrained:tiny_kp_4task"}


def _quickstart_run(root: Path) -> Path:
    d = root / "quickstart"
    before = _eval_summary({"pick_cube": (3, 100), "open_drawer": (25, 25)})
    after = _eval_summary({"pick_cube": (31, 100), "open_drawer": (24, 25)})
    for sub, res, seed in (("before", before, 1), ("after", after, 2)):
        _write(d / sub / "config.yaml", "policy: x\n")
        _write(d / sub / "summary.json", json.dumps(res))
        for task in ("pick_cube", "open_drawer"):
            _write_video(d / sub / "videos" / f"{task}_ep000_fail.mp4", _frames(seed))
    _finetune_run(d, "finetune", [3, 9, 14], [20, 20, 19])
    _write(d / "config.yaml", "target: pick_cube\nminutes: 7.0\n")
    _write(d / "run.json", json.dumps({"command": "quickstart"}))
    _write(d / "summary.json", json.dumps({"kind": "quickstart", "target": "pick_cube", "retain_tasks": ["open_drawer"],
                                           "before": before, "after": after, "algo": "ppo", "env_steps": 4000,
                                           "note": "Budget: 7 minutes of PPO."}))
    return d


@pytest.fixture
def runs(tmp_path):
    a = _finetune_run(tmp_path, "ppo-s0", [7, 12, 17], [12, 11, 6])
    b = _finetune_run(tmp_path, "ppo-s1", [7, 8, 20], [12, 12, 12])
    q = _quickstart_run(tmp_path)
    ev = tmp_path / "eval-1"
    _write(ev / "config.yaml", "policy: scripted:expert\ntasks:\n- reach_target\n")
    _write(ev / "run.json", json.dumps({"command": "eval"}))
    _write(ev / "summary.json", json.dumps(_eval_summary({"reach_target": (9, 10)})))
    _write_video(ev / "videos" / "reach_target_ep000_success.mp4", _frames(3))
    return [a, b, q, ev]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.videos, self.cells, self.h2 = [], [], [], []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "video":
            self.videos.append(a["src"])
        self._tag = tag

    def handle_data(self, data):
        if self._tag in ("td", "th"):
            self.cells.append(data)
        if self._tag == "h2":
            self.h2.append(data)


def test_report_holds_the_runs_figures(runs, tmp_path):
    out = build_report(runs, tmp_path / "r" / "report.html")
    page = _Page()
    page.feed(out.read_text())
    assert page.h2 == ["Runs", "quickstart: before and after fine-tuning", "Learning curves",
                       "Retention of pretraining skills", "Evaluations", "Rollout videos", "Configs"]
    # before/after bars, curves, diagnostics and retention-vs-gain are PNGs inside the page (self-contained)
    assert len(page.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    # the quickstart's before/after videos of both tasks, and the eval run's one
    assert len(page.videos) == 5 and all(s.startswith("data:video/mp4;base64,") for s in page.videos)
    cells = " | ".join(page.cells)
    lo, hi = _ci(17, 50)
    assert f"34.0% [{100 * lo:.1f}%, {100 * hi:.1f}%]" in cells  # ppo-s0's last target evaluation
    assert "+28.0" in cells  # quickstart: pick_cube 3% -> 31%
    assert "-30.0" in cells  # ppo-s0 retention: open_drawer 12/20 -> 6/20
    assert "90.0%" in cells  # the eval run
    assert "reach_target" in cells


def test_report_cli_positional_and_json(runs, tmp_path):
    out = tmp_path / "cli.html"
    p = subprocess.run([sys.executable, "-m", "vla_rft.cli", "report", *map(str, runs[:2]), "--out", str(out),
                        "--figures", str(tmp_path / "figs"), "--json"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["report"] == str(out) and res["runs"] == [str(r) for r in runs[:2]] and out.stat().st_size == res["bytes"]
    from PIL import Image

    figs = sorted((tmp_path / "figs").glob("figure_*.png"))  # curves, diagnostics, retention vs gain
    assert len(figs) == 3 and all(Image.open(f).size[0] > 300 for f in figs)


def test_report_bad_input_names_the_problem(runs, tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        build_report([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="not a run directory"):
        build_report([tmp_path / "empty"])
    (runs[0] / "summary.json").write_text("{not json")
    with pytest.raises(UserInputError, match="summary.json"):
        build_report([runs[0]])
    with pytest.raises(UserInputError, match="at least one run"):
        build_report([])


def test_torn_last_metrics_line_is_ignored_but_a_torn_middle_is_an_error(runs):
    m = runs[0] / "metrics.jsonl"
    good = m.read_text()
    m.write_text(good + '{"step": 9, "ev')  # a run killed mid-write
    assert len(load_run(runs[0]).metrics) == len(good.splitlines())
    lines = good.splitlines()
    m.write_text("\n".join([lines[0], '{"step": 1, "ev', *lines[1:]]) + "\n")
    with pytest.raises(UserInputError, match="line 2"):
        load_run(runs[0])


def _chromium() -> tuple[str, str] | None:
    b, d = shutil.which("chromium"), shutil.which("chromedriver")
    return (b, d) if b and d else None


def test_report_renders_in_headless_chromium(runs, tmp_path):
    """The page as a browser shows it: no console errors, every plot decoded, every video loaded."""
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium / chromedriver missing: scripts/install.sh installs Debian's chromium and chromium-driver")
        pytest.skip("chromium / chromedriver not installed (scripts/install.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    binary, driver_path = _chromium()
    out = build_report(runs, tmp_path / "report.html")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1300,2600", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(out.as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)"))
        videos = driver.execute_script(
            "return [...document.querySelectorAll('video')].map(v => [v.readyState, v.error ? v.error.code : null, v.videoWidth])")
        images = driver.execute_script("return [...document.images].map(i => [i.complete, i.naturalWidth])")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert errors == []
    assert len(videos) == 5 and all(rs >= 2 and err is None and w == 64 for rs, err, w in videos), videos
    assert len(images) == 4 and all(ok and w > 300 for ok, w in images), images
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape[1] == 1300 and img.std() > 10  # a rendered page, not a blank one
    assert re.search(r"<h2>Rollout videos</h2>", out.read_text())
