"""Where steady chunks' time goes: torch.profiler over a few chunks of a warmed-up clip (or group).

Prints the operators and kernels with the most device time, the kernel time per kind (attention,
GEMM, conv, fused Triton, copies, other elementwise) and how busy the device was, then does the same
for the VAE decoding steady chunks on its own. Writes both as JSON. Used to find what is left above
the attention + GEMM floor (benchmarks/README.md). Runs on the GPU machine with the shipped settings,
or anywhere with `--device cpu --preset tiny` to check the script.

    python benchmarks/profile_chunk.py --out $OUT/profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from pipeline.generate import ClipGenerator, ClipRequest
from pipeline.model.bundle import ModelBundle
from pipeline.model.speed import SpeedConfig, accelerate
from pipeline.spec.cache import POLICY_PARAMS
from pipeline.spec.model import get_preset

PROMPT = "A drone view of waves crashing against the rugged cliffs along Big Sur's Garay Point beach."


# First match wins: cuDNN's attention kernels contain "sdpa", its convs "fprop", cuBLAS's "gemm"/"nvjet".
KERNEL_KINDS = [
    ("attention", ("sdpa", "fmha", "flash", "attention")),
    ("conv", ("fprop", "conv", "dgrad")),
    ("gemm", ("gemm", "nvjet", "cutlass")),
    ("triton", ("triton",)),
    ("copy", ("copy", "memcpy", "cat", "memset")),
]


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KERNEL_KINDS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"


def profile_region(
    run: Callable[[], object], on_gpu: bool, rows: int, stacks: bool = False
) -> dict[str, Any]:
    """Profile `run`; the top operators and kernels, device time per kernel kind, and busy fraction.

    With `stacks`, also the top operators grouped by the Python lines that called them."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    if on_gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=activities, with_stack=stacks) as prof:
        run()
        if on_gpu:
            torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) * 1000
    events = prof.key_averages()
    sort_by = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    print(events.table(sort_by=sort_by, row_limit=rows), flush=True)
    if stacks:
        by_stack = prof.key_averages(group_by_stack_n=6)
        print(by_stack.table(sort_by=sort_by, row_limit=rows, max_name_column_width=60), flush=True)
    by_kind: dict[str, float] = {}
    for event in events:
        if event.device_type == DeviceType.CUDA:
            kind = kernel_kind(event.key)
            by_kind[kind] = by_kind.get(kind, 0.0) + event.self_device_time_total / 1000
    kernel_ms = sum(by_kind.values())
    print(f"kernel ms by kind: { {k: round(v, 1) for k, v in sorted(by_kind.items())} }")
    print(f"kernels {kernel_ms:.1f} ms in {wall_ms:.1f} ms of wall time (profiler on)", flush=True)
    table = [
        {
            "name": event.key,
            "calls": event.count,
            "self_device_ms": event.self_device_time_total / 1000,
            "self_cpu_ms": event.self_cpu_time_total / 1000,
        }
        for event in events
    ]
    table.sort(key=lambda r: r["self_device_ms"] if on_gpu else r["self_cpu_ms"], reverse=True)
    return {"wall_ms": wall_ms, "kernel_ms": kernel_ms, "kernel_ms_by_kind": by_kind, "rows": table[:rows]}


@torch.inference_mode()  # as generation runs: compiled graphs guard on it, and grad mode would recompile
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--policy", default="deep-forcing")
    parser.add_argument("--warmup-frames", type=int, default=27, help="latent frames before profiling")
    parser.add_argument("--profiled-frames", type=int, default=6, help="latent frames profiled (2 chunks)")
    parser.add_argument("--clips", type=int, default=1, help="clips a forward (a group rendered in lockstep)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--stacks", action="store_true", help="also group the chunks' ops by call site")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    preset = get_preset(args.preset)
    on_gpu = args.device == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    bundle = ModelBundle.random(preset, args.device, dtype, text_placement="offload" if on_gpu else "device")
    if not args.no_compile:
        accelerate(bundle, SpeedConfig(compile_backend="inductor" if on_gpu else "aot_eager"))
    generator = ClipGenerator(bundle)
    cache = POLICY_PARAMS[args.policy]()
    # Chunks go out one behind, so reading one runs the next: the profile's chunks are those after the
    # warm-up's, and two chunks more keep the last one (which has no context pass) out of it.
    num_frames = args.warmup_frames + args.profiled_frames + 2 * preset.chunk_frames
    requests = [ClipRequest(PROMPT, seed) for seed in range(args.clips)]
    chunks = generator.stream_group(requests, num_frames, cache)
    warmup_chunks = args.warmup_frames // preset.chunk_frames
    for _ in range(warmup_chunks):  # compile, cuDNN plans, allocator pools, a compression or two
        next(chunks)
    profiled_chunks = args.profiled_frames // preset.chunk_frames
    print(f"== {profiled_chunks} steady chunks of {args.clips} clip(s), DiT and VAE", flush=True)
    chunk_profile = profile_region(
        lambda: [next(chunks) for _ in range(profiled_chunks)], on_gpu, args.rows, args.stacks
    )
    chunks.close()

    vae = bundle.vae
    latent_shape = (1, preset.dit.in_dim, preset.chunk_frames, preset.latent_height, preset.latent_width)
    latents = torch.randn(latent_shape, device=args.device, dtype=dtype)
    stream = vae.start_stream()
    for _ in range(3):  # the first chunk plus two steady ones: cuDNN plans for every shape
        vae.decode(latents, stream)
    print(f"== VAE alone, {profiled_chunks} steady chunks", flush=True)
    vae_profile = profile_region(
        lambda: [vae.decode(latents, stream) for _ in range(profiled_chunks)], on_gpu, args.rows
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if on_gpu else "cpu",
                "torch": torch.__version__,
                "policy": args.policy,
                "clips": args.clips,
                "compiled": not args.no_compile,
                "profiled_chunks": profiled_chunks,
                "chunks": chunk_profile,
                "vae_alone": vae_profile,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
