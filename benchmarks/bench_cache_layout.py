"""The KV cache's memory layout at our shapes: heads-major (B, H, L, D) against token by token (B, L, H, D).

The DiT's projections make a chunk's keys and values token by token, (B, L, H, D), and every forward
`keys_values` copies them into their slot of the layer's buffers. Per clips a forward and frames of
keys (16, 19, 21: a steady chunk's range under `deep-forcing`), for buffers of either layout:

- `write_ms`: that copy of a chunk's keys and values, all clips in one copy, and for token-by-token
  buffers also clip by clip (`clipwise_write_ms`, `FrameBuffers.write`, shipped: each clip's run is
  one stretch of memory, a device memcpy), inside a CUDA graph (the copies are about as short as their
  launch from Python);
- `<kernel>_ms`: each self-attention kernel the shipped `attention="auto"` times at start-up
  (`speed.self_attention_kernel`), over prefix views of the buffers, as the cache returns them: the
  median of `--passes` passes (each a median of 20 calls; `passes` keeps them) with the layouts' order
  alternating, since single passes on two H200s disagreed by more than the layouts differ; and the
  relative error of each against float32 attention for the token-by-token buffers.

The token-by-token buffers are the cache's own (`gpu.cache_buffers`); heads-major is what it kept
before. Runs on the GPU machine, or anywhere with `--device cpu --preset tiny` to check the script:

    python benchmarks/bench_cache_layout.py --out $OUT/cache_layout.json
"""

from __future__ import annotations

import statistics
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.gpu import (
    block_parser,
    clip_counts,
    frame_buffers,
    graph_ms,
    median_ms,
    print_row,
    write_results,
)
from pipeline.model.attention import SelfAttentionKernel, merge_key_splits, relative_error
from pipeline.model.speed import SpeedConfig, self_attention_kernel
from pipeline.spec.model import ModelPreset, get_preset

KEY_FRAMES = (16, 19, 21)


def heads_major_buffers(
    preset: ModelPreset, clips: int, frames: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layout the cache kept before: (B, H, L, D) contiguous."""
    g = preset.cache_geometry()
    shape = (clips, g.num_heads, frames * g.tokens_per_frame, g.head_dim)
    keys = torch.randn(shape, device=like.device, dtype=like.dtype)
    return keys, torch.randn_like(keys)


def write(keys: torch.Tensor, values: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> None:
    """The chunk's copy into its slot, all clips in one copy (the cache's write before FrameBuffers.write)."""
    keys[:, :, start : start + k.shape[2]].copy_(k)
    values[:, :, start : start + v.shape[2]].copy_(v)


def attention(
    attend: SelfAttentionKernel, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """A kernel's output as the block uses it (split partials merged)."""
    out, lse = attend(q, keys, values)
    return out if lse is None else merge_key_splits(out, lse)


def main() -> None:
    parser = block_parser(__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5, help="attention timing passes, layouts alternating")
    args = parser.parse_args()
    preset, device = get_preset(args.preset), torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    g = preset.cache_geometry()
    kernel = self_attention_kernel(SpeedConfig(), device, preset)
    kernels = getattr(kernel, "kernels", {"sdpa": kernel})  # FastestAttention's candidates, or the one
    torch.manual_seed(0)
    rows = []
    for clips in clip_counts(args):
        # q, k and v of a chunk as the projections make them: (B, H, L, D) views of (B, L, H, D)
        q, k, v = (
            torch.randn(clips, g.chunk_tokens, g.num_heads, g.head_dim, device=device, dtype=dtype).transpose(
                1, 2
            )
            for _ in range(3)
        )
        for frames in KEY_FRAMES:
            start = (frames - g.chunk_frames) * g.tokens_per_frame
            buffers = frame_buffers(preset, clips, frames, device, dtype)
            layouts = {
                "heads_major": heads_major_buffers(preset, clips, frames, q),
                "token_by_token": (buffers.keys[0], buffers.values[0]),
            }
            row: dict[str, object] = {"clips": clips, "key_frames": frames}
            row["token_by_token_clipwise_write_ms"] = graph_ms(partial(buffers.write, 0, start, k, v))
            for layout, (keys, values) in layouts.items():
                row[f"{layout}_write_ms"] = graph_ms(partial(write, keys, values, k, v, start))
                exact = F.scaled_dot_product_attention(q.float(), keys.float(), values.float())
                for name, attend in kernels.items():
                    if layout == "token_by_token":
                        row[f"{name}_error"] = relative_error(attention(attend, q, keys, values), exact)
            # Attention in `--passes` passes, the layouts' order alternating, so drift of the clocks
            # between them cancels: each kernel's median of 20 calls per pass, then the median pass.
            passes: dict[str, list[float]] = {}
            for index in range(args.passes):
                order = list(layouts.items())[:: 1 if index % 2 == 0 else -1]
                for layout, (keys, values) in order:
                    for name, attend in kernels.items():
                        call = partial(attention, attend, q, keys, values)
                        passes.setdefault(f"{layout}_{name}_ms", []).append(median_ms(call, reps=20))
            row |= {key: statistics.median(times) for key, times in passes.items()}
            row["passes"] = passes
            print_row(row, leave_out=("passes",))
            rows.append(row)
    write_results(
        args.out,
        "bench_cache_layout",
        device,
        {
            "preset": args.preset,
            "kernels": {name: getattr(attend, "__name__", repr(attend)) for name, attend in kernels.items()},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
