"""What the GPU benchmarks share: CUDA-event and CUDA-graph timing, a full-size VAE with random weights,
KV-cache buffers as the cache lays them out, and the block benchmarks' arguments and steady-chunk RoPE
tables (relative errors:
`pipeline.model.attention.relative_error`, as the start-up checks measure them)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.cache.base import FrameBuffers
from pipeline.model.random_init import randomize_
from pipeline.model.rope import RotaryEmbedding3D, RotaryTables
from pipeline.model.vae import WanVAEDecoder
from pipeline.spec.model import SELF_FORCING_1_3B, ModelPreset

CACHED_FRAMES = 16  # a steady chunk's frames sit after a full cache (the block benchmarks' RoPE and keys)


def block_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of the benchmarks of one DiT block's parts; `clip_counts` reads `--clips`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", default="1,2", help="clips a forward, comma-separated")
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--device", default="cuda")
    return parser


def clip_counts(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.clips.split(",")]


def steady_chunk_rope(preset: ModelPreset, device: torch.device) -> RotaryTables:
    """float32 RoPE tables of a chunk after `CACHED_FRAMES` frames, as its block applies them."""
    config = preset.dit
    _, ph, pw = config.patch_size
    grid = (preset.latent_height // ph, preset.latent_width // pw)
    chunk = preset.cache_geometry().chunk_frames
    positions = torch.arange(CACHED_FRAMES, CACHED_FRAMES + chunk, device=device)
    return RotaryEmbedding3D(config.head_dim, config.rope_theta)(positions, *grid).to(torch.float32)


def frame_buffers(
    preset: ModelPreset, clips: int, frames: int, device: torch.device | str, dtype: torch.dtype
) -> FrameBuffers:
    """The KV cache's buffers for one layer (layer 0) of `frames` frames, filled with noise."""
    geometry = dataclasses.replace(preset.cache_geometry(), num_layers=1)
    buffers = FrameBuffers(geometry, frames)
    buffers.ensure(torch.empty(clips, 0, device=device, dtype=dtype))
    buffers.keys[0].normal_(), buffers.values[0].normal_()
    return buffers


def cache_buffers(
    preset: ModelPreset, clips: int, frames: int, device: torch.device | str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's key and value buffers, (clips, heads, tokens, head_dim) views laid out as the KV cache
    keeps them, filled with noise."""
    buffers = frame_buffers(preset, clips, frames, device, dtype)
    return buffers.keys[0], buffers.values[0]


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


def write_results(out: Path, benchmark: str, device: torch.device, fields: dict[str, Any]) -> None:
    """A benchmark's JSON: its name, the date, the GPU it ran on (or "cpu") and torch, then `fields`."""
    results = {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results | fields, indent=1) + "\n")


def print_row(row: dict[str, Any], leave_out: tuple[str, ...] = ()) -> None:
    """One measured row as a JSON line, floats to 4 decimals."""
    shown = {
        key: round(v, 4) if isinstance(v, float) else v for key, v in row.items() if key not in leave_out
    }
    print(json.dumps(shown), flush=True)


def random_vae(dtype: torch.dtype, seed: int = 1) -> WanVAEDecoder:
    """The full-size VAE decoder on the GPU with seeded random weights."""
    with torch.device("meta"):
        vae = WanVAEDecoder(SELF_FORCING_1_3B.vae)
    return randomize_(vae.to(dtype).to_empty(device="cuda"), seed)
