"""ray_cluster.yaml and infra/Dockerfile, checked offline: Ray's own cluster-config validator, plus the
properties the runbook relies on (a head that runs no work, GPU workers that fit a RenderWorker, one
pinned image matching the installed Ray, token auth, instance profiles instead of keys).

The validator is private Ray API (`ray.autoscaler._private.util`); a Ray upgrade may move it, and this
test is where that would show.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from pipeline.driver.config import GPU_CPUS_PER_WORKER

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "ray_cluster.yaml"
DOCKERFILE = REPO_ROOT / "infra" / "Dockerfile"


@pytest.fixture
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validated(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does first: merge AWS defaults, then check against Ray's JSON schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_the_cluster_yaml_passes_rays_own_validator(config: dict[str, Any]) -> None:
    prepared = validated(config)
    assert prepared["provider"]["type"] == "aws" and prepared["head_node_type"] == "head"


@pytest.mark.parametrize(
    ("where", "typo", "correct"),
    [
        (("available_node_types", "gpu-l40s"), "min_workerz", "min_workers"),
        ((), "idle_timeout_minute", "idle_timeout_minutes"),
        (("docker",), "pull_befor_run", "pull_before_run"),
        (("auth",), "ssh_usr", "ssh_user"),
    ],
)
def test_a_misspelt_key_is_rejected_naming_it(
    config: dict[str, Any], where: tuple[str, ...], typo: str, correct: str
) -> None:
    section = config
    for key in where:
        section = section[key]
    section[typo] = section.pop(correct)
    # (Ray's schema leaves `provider` and each `node_config` open: typos there surface only at `ray up`.)

    with pytest.raises(jsonschema.ValidationError) as error:
        validated(config)

    assert f"'{typo}' was unexpected" in error.value.message


def test_rays_aws_defaults_do_not_sneak_in(config: dict[str, Any]) -> None:
    """Missing keys are filled from Ray's defaults.yaml, whose setup_commands pip-install a nightly Ray."""
    prepared = validated(config)
    ours = config["setup_commands"]
    assert prepared["head_setup_commands"] == ours and prepared["worker_setup_commands"] == ours
    assert not any("pip install" in command for command in prepared["setup_commands"])


def test_the_head_runs_no_work_and_each_gpu_worker_fits_one_render_actor_per_gpu(
    config: dict[str, Any],
) -> None:
    node_types = config["available_node_types"]
    assert node_types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {name: t for name, t in node_types.items() if name != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        resources = node_type["resources"]
        assert resources["GPU"] >= 1, name
        assert resources["CPU"] >= GPU_CPUS_PER_WORKER * resources["GPU"], name
        assert node_type["min_workers"] == 0, f"{name}: idle GPUs cost money; the autoscaler adds them"
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_every_node_runs_one_pinned_image_built_from_the_dockerfile_for_the_installed_ray(
    config: dict[str, Any],
) -> None:
    image = config["docker"]["image"]
    assert "head_image" not in config["docker"] and "worker_image" not in config["docker"]
    repository, _, tag = image.rpartition(":")
    assert repository.endswith("/deepforcing-render") and tag != "latest"
    match = re.fullmatch(r"\d+\.\d+\.\d+-ray(?P<ray>[\d.]+)-(?P<py>py\d+)-(?P<cuda>cu\d+)", tag)
    assert match, f"tag {tag!r} must be <version>-ray<ray>-py<python>-<cuda>"
    assert match["ray"] == ray.__version__
    base = re.search(r"^FROM (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert base is not None
    assert base[1] == f"rayproject/ray:{ray.__version__}-{match['py']}-{match['cuda']}"


def test_ray_starts_with_token_auth_everywhere(config: dict[str, Any]) -> None:
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [command for command in commands if "ray start" in command]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in command for command in starts)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert any("/deepforcing-render/ray-auth-token" in command for command in config["setup_commands"])


def test_credentials_come_from_instance_profiles_only(config: dict[str, Any]) -> None:
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"].startswith("deepforcing-render-"), name
    text = CLUSTER_YAML.read_text() + DOCKERFILE.read_text()
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN="):
        assert secret not in text
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text)
