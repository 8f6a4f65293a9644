import json
from dataclasses import dataclass, field

import pytest
import yaml

from vla_rft.config import ConfigError, from_dict, parse_config, to_dict
from vla_rft.evaluation.stats import wilson_interval
from vla_rft.run import LoggingConfig, open_run


@dataclass
class Inner:
    lr: float = 1e-3
    """learning rate"""


@dataclass
class Cfg:
    episodes: int = 10
    json: bool = False
    tasks: list[str] = field(default_factory=lambda: ["a"])
    optim: Inner = field(default_factory=Inner)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def test_overrides_and_bare_bool_flag():
    cfg = parse_config(Cfg, ["--episodes", "5", "--json", "--optim.lr=0.5", "--tasks=[x,y]"])
    assert cfg.episodes == 5 and cfg.json is True and cfg.optim.lr == 0.5 and cfg.tasks == ["x", "y"]


def test_unknown_cli_key_suggests():
    with pytest.raises(ConfigError, match="unknown config key 'episdes'.*did you mean 'episodes'"):
        parse_config(Cfg, ["--episdes", "5"])
    with pytest.raises(ConfigError, match="optim.lrr.*did you mean 'optim.lr'"):
        parse_config(Cfg, ["--optim.lrr=1"])


def test_preset_unknown_key_and_bad_value(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"episodes": 3, "optim": {"lr": 0.1}}))
    cfg = parse_config(Cfg, ["--config", str(p), "--episodes=4"])
    assert cfg.episodes == 4 and cfg.optim.lr == 0.1  # CLI overrides the preset
    p.write_text(yaml.safe_dump({"optim": {"learning_rate": 0.1}}))
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        parse_config(Cfg, ["--config", str(p)])
    p.write_text("episodes: many\n")
    with pytest.raises(ConfigError, match="invalid"):
        parse_config(Cfg, ["--config", str(p)])
    with pytest.raises(ConfigError, match="not found"):
        parse_config(Cfg, ["--config", "no_such_preset"])


def test_dict_round_trip_rejects_unknown():
    cfg = parse_config(Cfg, ["--episodes=2"])
    assert from_dict(Cfg, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(Cfg, {**to_dict(cfg), "bogus": 1})


def test_run_dir_records(tmp_path):
    cfg = Cfg()
    cfg.logging = LoggingConfig(root=str(tmp_path), name="r1", wandb="disabled")
    run = open_run("test", cfg, cfg.logging)
    run.log(1, {"loss": 0.5, "nan": float("nan")})
    run.log(2, {"loss": 0.25})
    run.write_summary({"success_rate": 0.7})
    run.finish()
    lines = [json.loads(x) for x in (tmp_path / "r1" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and lines[0]["nan"] is None
    assert json.loads((tmp_path / "r1" / "summary.json").read_text()) == {"success_rate": 0.7}
    assert yaml.safe_load((tmp_path / "r1" / "config.yaml").read_text())["episodes"] == 10
    with pytest.raises(FileExistsError):
        open_run("test", cfg, cfg.logging)


def test_run_dir_wandb_offline(tmp_path):
    cfg = Cfg()
    cfg.logging = LoggingConfig(root=str(tmp_path), name="r2", wandb="offline")
    run = open_run("test", cfg, cfg.logging)
    run.log(1, {"loss": 1.0})
    run.finish()
    assert list((tmp_path / "r2" / "wandb").glob("offline-run-*")), "wandb offline run not written"


@pytest.mark.parametrize(
    "k,n,lo,hi",
    # Reference values: Wilson score interval, z = 1.96 (e.g. statsmodels proportion_confint method="wilson").
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (81, 100, 0.7222, 0.8749)],
)
def test_wilson_known_values(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=1e-3) and b == pytest.approx(hi, abs=1e-3)


def test_wilson_bad_input():
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
