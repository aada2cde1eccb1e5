"""pipeline/worker/compiled.py with model/compile_cache.py: compiled kernels shared through the output.

Real inductor compiles on the CPU (a C++ kernel per graph) in processes of their own, each with an
empty cache folder of its own, as fresh nodes have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

import pipeline.model.compile_cache as compile_cache
from pipeline.model.compile_cache import artefact_name
from pipeline.storage import OutputTarget
from pipeline.worker.compiled import CompiledKernelShare

# One actor process: prime from the output, compile and run a small graph, publish.
ACTOR = """
import json, sys, torch
from torch._dynamo.utils import counters
from pipeline.storage import open_target
from pipeline.worker.compiled import CompiledKernelShare

share = CompiledKernelShare(open_target(sys.argv[1]), torch.device("cpu"))
share.prime()
block = torch.compile(lambda x: torch.nn.functional.gelu(x @ x.T) * 2.0)
block(torch.randn(32, 32))
share.publish_once()
print(json.dumps({"primed": share.primed, "hits": counters["inductor"]["fxgraph_cache_hit"],
                  "misses": counters["inductor"]["fxgraph_cache_miss"]}))
"""


def actor(out: Path, cache: Path) -> dict[str, int]:
    env = {"TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).parents[2])}
    # one core: compile in the process (no worker pool to start) and leave the other to the Ray tests
    env |= {"TORCHINDUCTOR_COMPILE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", ACTOR, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_fresh_node_loads_what_the_first_worker_compiled_instead_of_compiling(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    first = actor(out, tmp_path / "node-1")
    (artefact,) = (out / "compile-cache").iterdir()
    assert first == {"primed": 0, "hits": 0, "misses": 1}
    published = artefact.read_bytes()

    # An empty cache folder (a fresh node): the graph loads instead of compiling, and having found an
    # artefact at start, this process publishes nothing (nor would it after compiling others: the test
    # of an unreadable artefact below)
    second = actor(out, tmp_path / "node-2")
    assert second["primed"] > 0 and second["hits"] == 1 and second["misses"] == 0
    assert artefact.read_bytes() == published


def test_an_unreadable_artefact_costs_a_cold_compile_never_an_error(target: OutputTarget, caplog) -> None:
    share = CompiledKernelShare(target, torch.device("cpu"))
    target.put_bytes(b"not an artefact", share.key, "application/octet-stream")
    share.prime()
    assert share.primed == 0
    assert "not loaded, compiling cold" in caplog.text
    counters["inductor"]["fxgraph_cache_miss"] += 1  # as if the cold compile ran
    share.publish_once()  # an artefact was there at start: this process publishes nothing
    assert target.read_bytes(share.key) == b"not an artefact"


def test_artefacts_are_named_per_torch_triton_device_and_model_code(tmp_path: Path, monkeypatch) -> None:
    name = artefact_name(torch.device("cpu"))
    version = re.escape(torch.__version__.replace("+", "-"))
    assert re.fullmatch(rf"torch-{version}_triton-.+_cpu_model-[0-9a-f]{{12}}\.bin", name), name
    # a changed model source names another artefact: stale graphs never prime a new version
    copy = tmp_path / "model"
    shutil.copytree(Path(compile_cache.__file__).parent, copy)
    (copy / "dit.py").write_text((copy / "dit.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(compile_cache, "__file__", str(copy / "compile_cache.py"))
    assert artefact_name(torch.device("cpu")) != name
