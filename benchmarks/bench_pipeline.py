"""GPU benchmark of the whole per-clip pipeline at full size (random weights): text encoding,
chunk-wise generation with a KV cache policy, streaming VAE decode, and ffmpeg encoding to mp4.

Run on the device machine (see benchmarks/README.md):

    python benchmarks/bench_pipeline.py --latent-frames 240 --policies fifo,deep-forcing --out $OUT/x.json

Timings: a warm-up clip per policy first (kernels, cuDNN plans and
allocator pools for every cache length the policy visits), then the timed clip. Per-chunk DiT and
VAE times come from CUDA events recorded by the generator; wall time from the host clock around the
whole clip, ending when the mp4 is verified on disk.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pipeline.encode import EncoderSettings, VideoEncoder
from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.model.speed import SpeedConfig, accelerate
from pipeline.spec.cache import POLICY_PARAMS
from pipeline.spec.model import get_preset

PROMPT = (
    "A stylish woman strolls down a bustling Tokyo street, the warm glow of neon lights and animated "
    "city signs casting vibrant reflections."
)


def summarize(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def render_clip(
    generator: ClipGenerator, policy: str, latent_frames: int, encode_dir: Path | None, seed: int
) -> dict[str, Any]:
    preset = generator.bundle.preset
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    encoder = None
    if encode_dir is not None:
        path = encode_dir / f"{policy}-{latent_frames}.mp4"
        encoder = VideoEncoder(path, preset.width, preset.height, preset.fps, EncoderSettings())
    frames = 0
    clip = generator.stream(PROMPT, seed, latent_frames, POLICY_PARAMS[policy]())
    for chunk in clip:
        frames += chunk.shape[0]
        if encoder is not None:
            encoder.write(chunk)
    generated = time.perf_counter()
    encoded = encoder.close() if encoder is not None else None
    wall = time.perf_counter() - start
    stats = clip.stats
    chunk_s = [d + v for d, v in zip(stats.dit_s, stats.vae_s, strict=True)]
    return {
        "policy": policy,
        "latent_frames": latent_frames,
        "frames": frames,
        "wall_s": wall,
        "fps_end_to_end": frames / wall,
        "generate_wall_s": generated - start,
        "encode_tail_s": (time.perf_counter() - generated) if encoded else 0.0,
        "text_s": stats.text_s,
        "first_frames_s": stats.first_frames_s,
        "dit_total_s": sum(stats.dit_s),
        "vae_total_s": sum(stats.vae_s),
        "dit_chunk_s": summarize(stats.dit_s[1:]),
        "dit_steady_chunk_s": summarize(stats.dit_s[8:]),
        # deep-forcing compresses at odd chunks from 7 on; the even ones only append
        "dit_odd_chunks_from_7_s": summarize(stats.dit_s[7::2]),
        "dit_even_chunks_from_8_s": summarize(stats.dit_s[8::2]),
        "vae_chunk_s": summarize(stats.vae_s[1:]),
        "chunk_s": summarize(chunk_s[1:]),
        "first_chunk_dit_s": stats.dit_s[0],
        "first_chunk_vae_s": stats.vae_s[0],
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30,  # GiB
        "peak_reserved_gb": torch.cuda.max_memory_reserved() / 2**30,
        "mp4_bytes": encoded.bytes if encoded else None,
        "mp4_frames": encoded.frames if encoded else None,
        "telemetry": stats.cache_telemetry,
        "dit_s": stats.dit_s,
        "vae_s": stats.vae_s,
    }


# Cumulative optimisation steps of the earlier speed rounds: each adds one switch to the previous one.
PLAIN = SpeedConfig(
    attention="default",
    attention_key_splits=1,
    compile_blocks=False,
    vae_channels_last=False,
    compile_vae=False,
    cudnn_benchmark=False,
)
ROUND_3 = SpeedConfig(attention="cudnn", vae_search_all_conv_algorithms=False)  # shipped before this round
STEPS: dict[str, SpeedConfig] = {
    "plain": PLAIN,
    "cudnn-attention": replace(PLAIN, attention="cudnn"),
    "compiled-blocks": replace(PLAIN, attention="cudnn", compile_blocks=True),
    "vae-channels-last": replace(ROUND_3, attention_key_splits=1, compile_vae=False),
    "compiled-vae": replace(ROUND_3, attention_key_splits=1),
    "key-splits": ROUND_3,
    "flash-attention-4": replace(ROUND_3, attention="auto"),  # "auto" picks it when installed
    "vae-conv-search": SpeedConfig(),  # the shipped settings
}


@torch.inference_mode()
def measure_text_encoder(bundle: ModelBundle) -> dict[str, float]:
    """Cost per prompt of each UMT5 placement, and how far each embedding is from the resident one;
    leaves the encoder offloaded (pinned host memory)."""
    out: dict[str, float] = {}
    for placement in ("device", "offload", "cpu"):
        bundle.place_text_encoder(placement)
        embedding = bundle.encode_prompt(PROMPT)  # also the warm-up
        if placement == "device":
            resident = embedding
        torch.cuda.synchronize()
        start = time.perf_counter()
        bundle.encode_prompt(PROMPT)
        torch.cuda.synchronize()
        out[f"text_{placement}_s"] = time.perf_counter() - start
        out[f"text_{placement}_max_abs_diff"] = (embedding - resident).abs().max().item()
    bundle.place_text_encoder("offload")
    torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--latent-frames", type=int, default=240)
    parser.add_argument("--warmup-frames", type=int, default=36)
    parser.add_argument("--policies", default="fifo,deep-forcing")
    parser.add_argument(
        "--steps", default="", help=f"comma list of {list(STEPS)} (cumulative); none: shipped settings"
    )
    parser.add_argument("--step-frames", type=int, default=60, help="clip length for each step's run")
    parser.add_argument("--step-policy", default="fifo")
    parser.add_argument("--sweep-policies", default="", help="policies run at --step-frames after the steps")
    parser.add_argument("--text-placement", default="device", choices=["device", "offload", "cpu"])
    parser.add_argument("--no-encode", action="store_true", help="skip ffmpeg (generation + decode only)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    preset = get_preset(args.preset)
    load_start = time.perf_counter()
    bundle = ModelBundle.random(preset, "cuda", torch.bfloat16, seed=0)
    torch.cuda.synchronize()
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": preset.name,
        "model_init_s": time.perf_counter() - load_start,
        "weights_on_gpu_gb": torch.cuda.memory_allocated() / 2**30,
        "steps": [],
        "sweep": [],
        "runs": [],
    }
    if args.text_placement != "device":
        results["text_encoder"] = measure_text_encoder(bundle)
        bundle.place_text_encoder(args.text_placement)
        torch.cuda.empty_cache()
        results["weights_on_gpu_without_text_gb"] = torch.cuda.memory_allocated() / 2**30
        print(results["text_encoder"], flush=True)

    steps = list(filter(None, args.steps.split(",")))
    if not steps:  # the runs get the shipped settings, as the render job does
        accelerate(bundle, SpeedConfig())
    generator = ClipGenerator(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        encode_dir = None if args.no_encode else Path(tmp)
        for step in steps:
            accelerate(bundle, STEPS[step])
            generator = ClipGenerator(bundle)
            compile_start = time.perf_counter()
            render_clip(generator, args.step_policy, args.warmup_frames, None, seed=1)  # warm-up
            warmup_s = time.perf_counter() - compile_start
            run = render_clip(generator, args.step_policy, args.step_frames, encode_dir, seed=2)
            run["step"], run["warmup_s"] = step, warmup_s
            run["dynamo_stats"] = dict(torch._dynamo.utils.counters["stats"])
            results["steps"].append(run)
            report(f"{step} ({args.step_policy})", run)
            save(args.out, results)
        for group, policies, frames in (
            ("sweep", args.sweep_policies, args.step_frames),
            ("runs", args.policies, args.latent_frames),
        ):
            for policy in filter(None, policies.split(",")):
                warmup_start = time.perf_counter()
                render_clip(generator, policy, args.warmup_frames, None, seed=1)  # compiles, times cuDNN
                warmup_s = time.perf_counter() - warmup_start
                run = render_clip(generator, policy, frames, encode_dir, seed=2)
                run["warmup_s"] = warmup_s
                results[group].append(run)
                report(f"{policy} ({frames} latent frames)", run)
                save(args.out, results)


def save(path: Path, results: dict[str, Any]) -> None:
    """Written after every run, so a run cut short by the lease still leaves its numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def report(label: str, run: dict[str, Any]) -> None:
    print(
        f"{label:>32}: {run['frames']} frames in {run['wall_s']:.1f} s = {run['fps_end_to_end']:.2f} FPS | "
        f"DiT chunk median {run['dit_chunk_s']['median']:.3f} s | VAE chunk median "
        f"{run['vae_chunk_s']['median']:.3f} s | first frames {run['first_frames_s']:.2f} s | "
        f"peak {run['peak_mem_gb']:.1f} GB",
        flush=True,
    )


if __name__ == "__main__":
    main()
