"""pipeline/driver/cluster.py: sizing the actor pool from the options and what the cluster has."""

from __future__ import annotations

import pytest

from pipeline.driver.cluster import Resources, size_pool
from pipeline.driver.config import CPU_CPUS_PER_WORKER, CPU_WORKERS, GPU_CPUS_PER_WORKER, RenderConfig
from pipeline.driver.options import config_from_args, parse_args


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
