"""pipeline/driver/options.py: the command line and the RenderConfig it parses into."""

from __future__ import annotations

import re

import pytest

from pipeline.driver.options import config_from_args, parse_args
from pipeline.prompts import DEFAULT_CLIP_SECONDS
from pipeline.spec.cache import DEFAULT_POLICY
from pipeline.spec.storyboard import DEFAULT_RECACHE


def test_defaults_render_a_minute_of_the_default_policy_on_the_tiny_model_into_renders() -> None:
    cfg = config_from_args(parse_args(["prompts.jsonl"]))
    assert (cfg.worker.out, cfg.worker.model, cfg.defaults.preset.name) == ("renders", "tiny", "tiny")
    assert (cfg.defaults.seconds, cfg.defaults.latent_frames) == (DEFAULT_CLIP_SECONDS, None)
    assert (cfg.defaults.cache_policy, dict(cfg.defaults.cache_params)) == (DEFAULT_POLICY, {})
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", cfg.run_id)


def test_cache_params_are_read_as_json_else_as_strings() -> None:
    args = ["p.jsonl", "--cache-param", "sink_frames=12", "--cache-param", "layout=paper"]
    cfg = config_from_args(parse_args(args))
    assert dict(cfg.defaults.cache_params) == {"sink_frames": 12, "layout": "paper"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers=0 must be >= 1"),
        (["--gpus", "-1"], "--gpus=-1 must be >= 0"),
        (["--checksum-algorithm", "MD5"], "--checksum-algorithm 'MD5' is not one of CRC32, "),
    ],
)
def test_values_that_cannot_work_name_the_option(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_args(parse_args(["p.jsonl", *args]))


@pytest.mark.parametrize("run_id", ["a/b", "../../x", ".hidden", "run 1", "x" * 129])
def test_a_run_id_that_cannot_name_a_folder_is_refused_before_anything_starts(run_id: str) -> None:
    with pytest.raises(ValueError) as err:
        config_from_args(parse_args(["p.jsonl", "--run-id", run_id]))
    assert str(err.value) == (
        f'--run-id {run_id!r} must be 1-128 letters, digits, "_", "." or "-", not starting with ".": '
        "it names the folder metrics/run_id=<id>/; e.g. --run-id run-2026-12-01"
    )


def test_max_seconds_and_dry_run_reach_the_config() -> None:
    cfg = config_from_args(parse_args(["p.jsonl", "--max-seconds", "3600", "--dry-run"]))
    assert (cfg.defaults.max_seconds, cfg.dry_run) == (3600, True)
    assert config_from_args(parse_args(["p.jsonl"])).defaults.max_seconds == 1800


def test_recache_is_a_run_wide_default_for_storyboard_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_from_args(parse_args(["p.jsonl"])).defaults.recache == DEFAULT_RECACHE == "all"
    assert config_from_args(parse_args(["p.jsonl", "--recache", "window"])).defaults.recache == "window"
    with pytest.raises(SystemExit):
        parse_args(["p.jsonl", "--recache", "sometimes"])
    assert "argument --recache: invalid choice: 'sometimes'" in capsys.readouterr().err


def test_help_explains_every_option_and_how_seconds_become_latent_frames(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width

    assert (
        "--seconds SECONDS clip length in seconds, rounded up to whole chunks of 3 latent frames "
        "(0.75 s at 16 fps): 60 s = 240 latent frames = 957 frames (default: 60)" in text
    )
    assert "--log-level {DEBUG,INFO,WARNING,ERROR} driver and worker log level;" in text
    assert "--s3-addressing-style {auto,path,virtual} path: http://host/bucket/key," in text
    assert "--x264-preset {ultrafast,superfast,veryfast,faster,fast,medium,slow,slower,veryslow} x264" in text


def test_the_x264_preset_is_its_own_option_next_to_the_model_preset() -> None:
    cfg = config_from_args(parse_args(["p.jsonl", "--x264-preset", "veryfast", "--model", "tiny"]))
    assert (cfg.worker.encoder.preset, cfg.worker.model) == ("veryfast", "tiny")
    with pytest.raises(SystemExit):
        parse_args(["p.jsonl", "--preset", "veryfast"])
