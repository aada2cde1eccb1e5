"""The layering of docs/architecture.md, checked: who may import whom, and where torch may load."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# For each part of the package, the other parts it may import (itself always). Everything not listed,
# torch included, is the job of a higher layer.
ALLOWED: dict[str, set[str]] = {
    "pipeline.spec": set(),
    "pipeline.digest": set(),
    "pipeline.model": {"pipeline.spec", "pipeline.digest"},
    "pipeline.cache": {"pipeline.spec", "pipeline.model.rope"},
    "pipeline.generate": {"pipeline.spec", "pipeline.model", "pipeline.cache"},
    "pipeline.storage": {"pipeline.digest"},
    "pipeline.encode": {"pipeline.digest"},
    "pipeline.quality": set(),
    "pipeline.metrics": {"pipeline.spec", "pipeline.storage"},
    "pipeline.prompts": {"pipeline.spec", "pipeline.digest"},
    "pipeline.runs": {"pipeline.spec", "pipeline.storage"},
    "pipeline.query": {"pipeline.storage", "pipeline.runs"},
    "pipeline.worker": {
        "pipeline.spec",
        "pipeline.storage",
        "pipeline.encode",
        "pipeline.metrics",
        "pipeline.quality",
        "pipeline.generate",  # inside RenderWorker.__init__ only (see the torch-free check below)
        "pipeline.model.bundle",  # the same
        "pipeline.model.compile_cache",  # inside CompiledKernelShare (worker/compiled.py) only
    },
    "pipeline.driver": {
        "pipeline.spec",
        "pipeline.prompts",
        "pipeline.storage",
        "pipeline.encode",
        "pipeline.metrics",
        "pipeline.runs",
        "pipeline.worker",
    },
    "pipeline.report": {"pipeline.quality", "pipeline.metrics", "pipeline.runs", "pipeline.storage"},
}
TORCH_FREE = [
    "pipeline.spec",
    "pipeline.prompts",
    "pipeline.query",
    "pipeline.runs",
    "pipeline.driver",
    "pipeline.worker",
    "pipeline.metrics",
    "pipeline.quality",
    "pipeline.report",
    "pipeline.report.__main__",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    return next(
        part for part in sorted(ALLOWED, key=len, reverse=True) if (module + ".").startswith(part + ".")
    )


def pipeline_imports(path: Path) -> set[str]:
    """Every `pipeline.*` module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name == "pipeline" or name.startswith("pipeline.")}


MODULES = sorted(
    path
    for path in (ROOT / "pipeline").rglob("*.py")
    if path.parent != ROOT / "pipeline" or path.stem != "__init__"
)


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_every_import_runs_down_the_layers(path: Path) -> None:
    part = part_of(module_name(path))
    allowed = ALLOWED[part] | {part}
    for imported in pipeline_imports(path):
        assert any((imported + ".").startswith(a + ".") for a in allowed), (
            f"{module_name(path)} imports {imported}, which {part} may not (docs/architecture.md)"
        )


@pytest.mark.slow
def test_the_driver_worker_and_planning_modules_import_without_torch() -> None:
    code = (
        "import sys; import importlib; "
        f"[importlib.import_module(m) for m in {TORCH_FREE!r}]; "
        "import pipeline.driver.options, pipeline.driver.cluster, pipeline.driver.plan; "
        "import pipeline.driver.progress, pipeline.driver.record, pipeline.report.page; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_render_help_runs_without_importing_torch_or_ray() -> None:
    """Ray is imported only once the run is checked: an embedded Ray's settings must be in the
    environment before its first import (driver/cluster.py)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "jobs/render.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: render.py" in done.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}
    heavy = [m for m in imported if m.split(".")[0] in ("torch", "ray")]
    assert sorted(heavy) == []


def test_the_worker_makes_no_cuda_calls_and_never_sees_rope() -> None:
    for path in (ROOT / "pipeline" / "worker").rglob("*.py"):
        text = path.read_text()
        assert "torch.cuda" not in text and "rope" not in text.lower(), path
