"""Compiled kernels carried between machines: PyTorch's compile-cache artefacts.

Inductor keeps what it compiles (FX graphs, Triton kernels, autotune results) in a cache folder on the
node's disk, so a second actor on a node that has rendered loads instead of compiling. A fresh node
starts cold. `collect` serialises what this process compiled (`torch.compiler.save_cache_artifacts`)
and `prime` writes such bytes into this process's caches (`load_cache_artifacts`), so the next compile
of the same graph is a cache hit. The artefacts only fit the torch and Triton versions and the GPU
that made them, and only the graphs of this package's model code: `artefact_name` keeps one file per
such combination, so a changed model file starts a new artefact instead of priming with stale graphs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

import torch


def artefact_name(device: torch.device) -> str:
    """A file name for this process's torch, Triton, GPU and model code, e.g.
    `torch-2.11.0-cu130_triton-3.6.0_nvidia-h200_model-3f2a9c1e7b40.bin`."""
    try:
        triton = importlib.metadata.version("triton")  # with every CUDA build of torch
    except importlib.metadata.PackageNotFoundError:
        triton = "none"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    parts = (f"torch-{torch.__version__}", f"triton-{triton}", gpu, f"model-{model_code_digest()}")
    return "_".join(re.sub(r"[^a-z0-9.]+", "-", part.lower()).strip("-") for part in parts) + ".bin"


def model_code_digest() -> str:
    """12 hex digits of sha256 over this package's sources (the modules whose graphs get compiled)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def compiled_graphs() -> int:
    """Graphs this process compiled so far (inductor FX-graph cache misses)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["fxgraph_cache_miss"])


def collect() -> bytes | None:
    """What this process compiled, serialised; None if it compiled nothing."""
    saved = torch.compiler.save_cache_artifacts()
    return None if saved is None or not saved[0] else saved[0]


def prime(data: bytes) -> int:
    """Load artefacts of `collect` into this process's compile caches; the count of artefacts loaded.
    ValueError if torch could not read them (it logs why: a checksum, another torch build)."""
    info = torch.compiler.load_cache_artifacts(data)
    if info is None:
        raise ValueError(
            f"torch {torch.__version__} could not read these {len(data)} bytes as compile artefacts"
        )
    return sum(len(keys) for keys in info.artifacts.values())
