"""What the GPU benchmarks share: CUDA-event and CUDA-graph timing, a full-size VAE with random weights
(relative errors: `pipeline.model.attention.relative_error`, as the start-up checks measure them)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from pipeline.model.random_init import randomize_
from pipeline.model.vae import WanVAEDecoder
from pipeline.spec.model import SELF_FORCING_1_3B


def median_ms(fn: Callable[[], object], reps: int = 15, warmup: int = 3) -> float:
    """Median of `reps` timed calls after `warmup` untimed ones, CUDA events around each call (the host
    clock without a GPU, where scripts are only checked)."""
    for _ in range(warmup):
        fn()
    times = []
    if not torch.cuda.is_available():
        for _ in range(reps):
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1000)
        return sorted(times)[len(times) // 2]
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def graph_ms(fn: Callable[[], object], calls: int = 20, reps: int = 15) -> float:
    """Device time of one call of `fn`, for kernels shorter than their launch from Python: `calls` calls
    captured in one CUDA graph (after warm-up calls that compile), the median replay over `calls`. On a
    CPU, `median_ms`."""
    if not torch.cuda.is_available():
        return median_ms(fn, reps=reps)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return median_ms(graph.replay, reps=reps) / calls


def random_vae(dtype: torch.dtype, seed: int = 1) -> WanVAEDecoder:
    """The full-size VAE decoder on the GPU with seeded random weights."""
    with torch.device("meta"):
        vae = WanVAEDecoder(SELF_FORCING_1_3B.vae)
    return randomize_(vae.to(dtype).to_empty(device="cuda"), seed)
