"""pipeline/driver/cluster.py: sizing the actor pool from the options and what the cluster has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO_ROOT

from pipeline.driver.cluster import LOCAL_ONLY_ENV, Resources, clips_per_batch, size_pool, worker_config
from pipeline.driver.config import CPU_CPUS_PER_WORKER, CPU_WORKERS, GPU_CPUS_PER_WORKER, RenderConfig
from pipeline.driver.options import config_from_args, parse_args
from pipeline.prompts import parse_line
from pipeline.worker.config import (
    FULL_CONV_SEARCH_SAVING_S_PER_CHUNK,
    FULL_CONV_SEARCH_WARMUP_S,
    MAX_AUTO_CLIPS_PER_FORWARD,
)


def config(*args: str) -> RenderConfig:
    return config_from_args(parse_args(["prompts.jsonl", *args]))


def test_one_actor_per_gpu_never_more_than_clips_and_cpu_actors_without_gpus() -> None:
    assert size_pool(config(), {"GPU": 4, "CPU": 64}, nodes=1, clips=10) == Resources(
        4, 1, GPU_CPUS_PER_WORKER
    )
    assert size_pool(config(), {"GPU": 4, "CPU": 64}, nodes=1, clips=2) == Resources(
        2, 1, GPU_CPUS_PER_WORKER
    )
    assert size_pool(config(), {"CPU": 2}, nodes=1, clips=10) == Resources(
        CPU_WORKERS, 0, CPU_CPUS_PER_WORKER
    )
    wide = config("--workers", "3", "--cpus-per-worker", "2")
    assert size_pool(wide, {"GPU": 8, "CPU": 64}, nodes=1, clips=10) == Resources(3, 1, 2.0)


def test_a_batch_is_a_group_auto_on_gpus_one_on_cpus_never_starving_a_worker() -> None:
    gpus, cpus = Resources(workers=2, num_gpus=1, num_cpus=4), Resources(workers=2, num_gpus=0, num_cpus=1)
    assert clips_per_batch(config(), gpus, clips=100) == MAX_AUTO_CLIPS_PER_FORWARD
    assert clips_per_batch(config(), cpus, clips=100) == 1
    assert clips_per_batch(config("--clips-per-forward", "3"), cpus, clips=100) == 3
    assert clips_per_batch(config("--clips-per-forward", "4"), gpus, clips=5) == 3  # 5 clips, 2 workers
    assert clips_per_batch(config("--clips-per-forward", "4"), gpus, clips=1) == 1


def test_auto_conv_search_runs_the_full_search_only_where_a_worker_decodes_enough_to_pay_it_back() -> None:
    cfg = config("--model", "self-forcing-1.3b", "--random-weights", "--seconds", "60")
    preset = cfg.defaults.preset
    chunks_per_clip = preset.latent_frames_for_seconds(60) // preset.chunk_frames
    payback_clips = FULL_CONV_SEARCH_WARMUP_S / FULL_CONV_SEARCH_SAVING_S_PER_CHUNK / chunks_per_clip
    assert 20 < payback_clips < 50  # minute-long clips: a few dozen per worker

    def clips(count: int) -> list:
        return [parse_line(f'{{"prompt": "a fox, take {i}"}}', i + 1, cfg.defaults) for i in range(count)]

    gpus = Resources(workers=2, num_gpus=1, num_cpus=4)
    few, many = clips(2 * int(payback_clips)), clips(2 * int(payback_clips) + 4)
    assert worker_config(cfg, gpus, few).search_all_conv_algorithms is False  # fewer per worker than payback
    assert worker_config(cfg, gpus, many).search_all_conv_algorithms is True
    one_worker = Resources(workers=1, num_gpus=1, num_cpus=4)
    assert worker_config(cfg, one_worker, few).search_all_conv_algorithms is True  # all on one worker
    full = config("--model", "self-forcing-1.3b", "--random-weights", "--conv-search", "full")
    quick = config("--model", "self-forcing-1.3b", "--random-weights", "--conv-search", "quick")
    assert worker_config(full, gpus, clips(1)).search_all_conv_algorithms is True
    assert worker_config(quick, gpus, many).search_all_conv_algorithms is False
    assert worker_config(cfg, gpus, many).run_id == cfg.worker.run_id  # everything else as configured


def test_an_unknown_conv_search_is_refused_with_the_choices(capsys) -> None:
    with pytest.raises(SystemExit):
        config("--conv-search", "fastest")
    # argparse quotes the choices on some Python versions
    choices = r"\(choose from '?auto'?, '?full'?, '?quick'?\)"
    assert re.search(rf"argument --conv-search: invalid choice: 'fastest' {choices}", capsys.readouterr().err)


def test_a_model_that_needs_gpus_on_a_cluster_without_any_says_how_to_go_on() -> None:
    with pytest.raises(ValueError) as err:
        size_pool(config("--model", "self-forcing-1.3b", "--random-weights"), {"CPU": 8}, nodes=1, clips=1)
    assert str(err.value) == (
        "model self-forcing-1.3b needs GPUs but the cluster has none right now; pass --gpus N to wait for "
        "N GPU workers (autoscaling clusters start them on demand), or --gpus 0 to run on CPUs anyway"
    )


def test_a_local_output_folder_on_a_cluster_of_several_nodes_is_refused() -> None:
    with pytest.raises(ValueError) as err:
        size_pool(config("--out", "renders"), {"GPU": 2, "CPU": 16}, nodes=2, clips=4)
    assert str(err.value) == (
        "--out renders is a local folder but the cluster has 2 nodes: each would keep its own videos; "
        "pass --out s3://bucket/prefix"
    )


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int, str]]:
    pids = {p.pid: p for p in processes}
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.add((conn.laddr.ip, conn.laddr.port, pids[conn.pid].name()))
    return found


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_embedded_ray_listens_on_loopback_only_and_ends_with_a_killed_driver(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "take {i}", "latent_frames": 12}}\n' for i in range(8)))
    env = {k: v for k, v in os.environ.items() if k not in (*LOCAL_ONLY_ENV, "RAY_ADDRESS", "RAY_AUTH_MODE")}
    driver = subprocess.Popen(
        [sys.executable, "jobs/render.py", str(prompts), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any("RenderWorker" in p.name() or p.name() == "raylet" for p in _descendants(driver.pid)):
            assert driver.poll() is None and time.monotonic() < deadline, "the driver never started Ray"
            time.sleep(0.5)
        time.sleep(5)  # the agents and the first actors bind their ports
        ray_processes = _descendants(driver.pid)
        listening = _listening(ray_processes)

        assert {name for _, _, name in listening} >= {"gcs_server", "raylet"}
        assert {(ip, name) for ip, _, name in listening if ip not in LOOPBACK} == set()
    finally:
        driver.kill()  # as an OOM killer or a lost SSH session would
        driver.wait()
    # A worker forked just before the kill, still importing Ray under load, exits once it finds no raylet.
    deadline = time.monotonic() + 60
    while alive := [p for p in ray_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, f"still running after the driver was killed: {alive}"
        time.sleep(0.5)


def test_an_embedded_ray_keeps_token_authentication_on(ray_local: dict[str, float]) -> None:
    assert os.environ.get("RAY_AUTH_MODE") == "token"
