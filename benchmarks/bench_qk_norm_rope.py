"""The q/k RMSNorm + RoPE of one DiT block: inductor's fused kernel against a hand-written Triton one.

After the q and k projections every block normalises each token's 1536 channels (RMSNorm over all
heads, float32, then the weight) and rotates its channel pairs (3D RoPE). Compiled, inductor fuses both
into one kernel per tensor, which the last profile showed at ~1 TB/s (62 us a block at one clip a
forward, against ~20 us at memory speed). This script times, at full size and 1 and 2 clips a forward:

- `inductor`: `RMSNorm` + `apply_rotary` as the block runs them, compiled (what ships);
- `triton_w4` / `triton_w8`: one program per token that loads its channels once as (even, odd) pairs,
  normalises as `RMSNorm` does (float32, rounded to bf16, times the weight, rounded), rotates in float32
  and writes bf16 (4 or 8 warps);

with each one's error against float32 and its memory rate (bytes read and written over time). Nothing
here ships: the numbers say whether the kernel is worth wiring into the block (benchmarks/README.md).

    python benchmarks/bench_qk_norm_rope.py --out $OUT/qk_norm_rope.json

Checked on a CPU with Triton's interpreter, in float32 (its float32 -> bf16 casts truncate where a GPU
rounds to nearest, so bf16 is judged on the GPU only); pip install triton, then:

    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/bench_qk_norm_rope.py --device cpu --preset tiny \\
        --out /tmp/qk_norm_rope.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
import triton.language as tl

from benchmarks.gpu import median_ms, relative_error
from pipeline.model.dit import RMSNorm
from pipeline.model.random_init import randomize_
from pipeline.model.rope import RotaryEmbedding3D, RotaryTables, apply_rotary
from pipeline.spec.model import ModelPreset, get_preset

CACHED_FRAMES = 16  # the chunk's frames sit after a full cache, as in a steady chunk


@triton.jit
def rms_norm_rope_kernel(
    x_ptr,  # (rows, DIM) activations, rows = clips x tokens
    weight_ptr,  # (DIM,) the norm's weight, the activations' dtype
    cos_ptr,  # (tokens, HALF_HEAD) float32, one row per token of a clip
    sin_ptr,
    out_ptr,  # (rows, DIM)
    tokens_per_clip,
    eps,
    DIM: tl.constexpr,
    HALF_HEAD: tl.constexpr,
    PAIRS: tl.constexpr,  # DIM // 2 rounded up to a power of two
):
    row = tl.program_id(0)
    token = row % tokens_per_clip
    pair = tl.arange(0, PAIRS)
    valid = pair < DIM // 2
    x_row = x_ptr + row * DIM
    even = tl.load(x_row + 2 * pair, mask=valid, other=0.0).to(tl.float32)
    odd = tl.load(x_row + 2 * pair + 1, mask=valid, other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt((tl.sum(even * even, axis=0) + tl.sum(odd * odd, axis=0)) / DIM + eps)
    # as RMSNorm: normalised in float32 and rounded to the activations' dtype, then scaled and rounded
    dtype = x_ptr.dtype.element_ty
    w_even = tl.load(weight_ptr + 2 * pair, mask=valid, other=0.0).to(tl.float32)
    w_odd = tl.load(weight_ptr + 2 * pair + 1, mask=valid, other=0.0).to(tl.float32)
    real = ((even * inv_rms).to(dtype).to(tl.float32) * w_even).to(dtype).to(tl.float32)
    imag = ((odd * inv_rms).to(dtype).to(tl.float32) * w_odd).to(dtype).to(tl.float32)
    # as apply_rotary: pair i of every head turns by the token's angle i, in float32
    angle = token * HALF_HEAD + pair % HALF_HEAD
    cos = tl.load(cos_ptr + angle, mask=valid, other=0.0)
    sin = tl.load(sin_ptr + angle, mask=valid, other=0.0)
    out_row = out_ptr + row * DIM
    tl.store(out_row + 2 * pair, (real * cos - imag * sin).to(dtype), mask=valid)
    tl.store(out_row + 2 * pair + 1, (real * sin + imag * cos).to(dtype), mask=valid)


def triton_norm_rope(
    norm: RMSNorm, tables: RotaryTables, heads: int, num_warps: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, L, C) -> (B, L, heads, C // heads): `norm` then RoPE by `tables`, in one Triton kernel."""
    cos, sin = (t.reshape(t.shape[0], -1).contiguous() for t in tables)  # (L, head_dim / 2)

    def run(x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        out = torch.empty_like(x)
        rms_norm_rope_kernel[(B * L,)](
            x,
            norm.weight,
            cos,
            sin,
            out,
            L,
            norm.eps,
            DIM=C,
            HALF_HEAD=cos.shape[1],
            PAIRS=triton.next_power_of_2(C // 2),
            num_warps=num_warps,
        )
        return out.view(B, L, heads, C // heads)

    return run


def inductor_norm_rope(
    norm: RMSNorm, tables: RotaryTables, heads: int, on_gpu: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The block's own ops (SelfAttention.qkv after its projection), compiled as the block is."""

    def run(x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        return apply_rotary(norm(x).view(B, L, heads, C // heads), tables)

    return torch.compile(run, dynamic=False) if on_gpu else run


def measure(preset: ModelPreset, device: torch.device, clips: int) -> dict[str, float | int]:
    config, geometry = preset.dit, preset.cache_geometry()
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    norm32 = randomize_(RMSNorm(config.dim, config.eps).to(device), seed=1)
    norm = RMSNorm(config.dim, config.eps).to(device=device, dtype=dtype)
    norm.load_state_dict(norm32.state_dict())
    _, ph, pw = config.patch_size
    grid = (preset.latent_height // ph, preset.latent_width // pw)
    positions = torch.arange(CACHED_FRAMES, CACHED_FRAMES + geometry.chunk_frames, device=device)
    tables = RotaryEmbedding3D(config.head_dim, config.rope_theta)(positions, *grid).to(torch.float32)
    x32 = torch.randn(clips, geometry.chunk_tokens, config.dim, device=device)
    x = x32.to(dtype)
    reference = apply_rotary(norm32(x32).view(clips, -1, config.num_heads, config.head_dim), tables)
    ways = {"inductor": inductor_norm_rope(norm, tables, config.num_heads, on_gpu)}
    ways |= {f"triton_w{w}": triton_norm_rope(norm, tables, config.num_heads, w) for w in (4, 8)}
    # read the activations, write the result, read a token's angles once (they repeat over heads)
    moved = x.numel() * x.element_size() * 2 + 2 * tables.cos.numel() * 4
    run: dict[str, float | int] = {"clips": clips, "bytes_moved": moved}
    with torch.inference_mode():
        for name, fn in ways.items():
            run[f"{name}_error"] = relative_error(fn(x), reference)
            run[f"{name}_ms"] = median_ms(lambda f=fn: f(x), reps=50 if on_gpu else 3, warmup=5)
            run[f"{name}_tb_per_s"] = moved / (run[f"{name}_ms"] * 1e-3) / 1e12
        run["triton_vs_inductor_max_abs"] = float(
            (ways["triton_w4"](x).float() - ways["inductor"](x).float()).abs().max()
        )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", default="1,2")
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    preset, device = get_preset(args.preset), torch.device(args.device)
    runs = []
    for clips in [int(c) for c in args.clips.split(",")]:
        runs.append(measure(preset, device, clips))
        print(json.dumps(runs[-1], indent=1), flush=True)
    results = {
        "benchmark": "bench_qk_norm_rope",
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "preset": preset.name,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
