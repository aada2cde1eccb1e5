"""What a DiT block's dense parts cost at our shapes, as shipped and with fewer memory passes.

One full-size block (random weights, bf16) on 4680 tokens a clip (one chunk), 1 and 2 clips:

- `ffn`: up GEMM, tanh GELU, down GEMM, compiled as shipped (inductor runs the GELU as its own pass over
  the 8960-wide activations) against the GELU in the up GEMM's cuBLASLt epilogue
  (`torch._addmm_activation`, which inductor calls as is);
- `qkv`: the q/k/v projections with their RMSNorms and RoPE, compiled as shipped (three 1536x1536 GEMMs)
  against one 1536 -> 4608 GEMM of the three weights concatenated;
- `block`: the whole compiled block with cuDNN attention over 16 cached frames + the chunk, shipped,
  for the share each part has;
- on GPUs, the qkv part and the block with q's and k's norms and RoPE in one Triton kernel
  (`qk_norm_rope.py`, `*_fused_norm_rope*`);
- `--inductor-option NAME=VALUE` (repeatable, e.g. `coordinate_descent_tuning=1`): the qkv part and the
  whole block compiled once more with those inductor options (`*_tuned_ms`), against the shipped
  compile; inductor's reductions for the norms and their launch sizes are what such options change.

Each variant is timed (CUDA events, median; the parts inside a CUDA graph, whose replay leaves out
their launch from Python), and compared with float32 (relative error). Runs on the GPU machine, or
anywhere with `--device cpu --preset tiny` to check the script:

    python benchmarks/bench_dit_block.py --out $OUT/dit_block.json
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.gpu import (
    CACHED_FRAMES,
    block_parser,
    cache_buffers,
    clip_counts,
    graph_ms,
    median_ms,
    steady_chunk_rope,
    write_results,
)
from pipeline.model.attention import relative_error
from pipeline.model.dit import DiTBlock, LayerCursor, RotaryTables
from pipeline.model.random_init import randomize_
from pipeline.model.rope import apply_rotary
from pipeline.spec.model import ModelPreset, get_preset


def ffn_shipped(block: DiTBlock) -> Callable[[torch.Tensor], torch.Tensor]:
    return block.ffn


def ffn_gelu_epilogue(block: DiTBlock) -> Callable[[torch.Tensor], torch.Tensor]:
    ffn = copy.deepcopy(block.ffn)  # the model's own fused path, on a copy so the shipped one stays plain
    ffn.gelu_in_epilogue = True
    return ffn


def qkv_shipped(block: DiTBlock) -> Callable[[torch.Tensor, RotaryTables], tuple[torch.Tensor, ...]]:
    return block.self_attn.qkv


def with_fused_norm_rope(block: DiTBlock) -> DiTBlock:
    """A copy of `block` whose q's and k's norms and RoPE run as one Triton kernel (qk_norm_rope.py; GPUs)."""
    from pipeline.model.qk_norm_rope import qk_norm_rope

    fused = copy.deepcopy(block)
    fused.self_attn.fused_norm_rope = qk_norm_rope
    return fused


def qkv_one_gemm(block: DiTBlock) -> Callable[[torch.Tensor, RotaryTables], tuple[torch.Tensor, ...]]:
    attn = block.self_attn
    weight = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]).detach()
    bias = torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]).detach()

    def run(x: torch.Tensor, rope: RotaryTables) -> tuple[torch.Tensor, ...]:
        B, L, C = x.shape
        nh = attn.num_heads
        q, k, v = F.linear(x, weight, bias).split(C, dim=-1)
        q = apply_rotary(attn.norm_q(q).view(B, L, nh, -1), rope)
        k = apply_rotary(attn.norm_k(k).view(B, L, nh, -1), rope)
        return tuple(t.transpose(1, 2) for t in (q, k, v.reshape(B, L, nh, -1)))

    return run


class PrefixCache:
    """The KV cache's write-then-attend pattern for one layer: `CACHED_FRAMES` frames, then the chunk."""

    def __init__(self, preset: ModelPreset, clips: int, like: torch.Tensor):
        g = preset.cache_geometry()
        frames = CACHED_FRAMES + g.chunk_frames
        self.keys, self.values = cache_buffers(preset, clips, frames, like.device, like.dtype)
        self.start = CACHED_FRAMES * g.tokens_per_frame

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[:, :, self.start :].copy_(k)
        self.values[:, :, self.start :].copy_(v)
        return self.keys, self.values


def inductor_option(text: str) -> tuple[str, bool | int | str]:
    """`name=value` -> (name, value as a bool for 0/1 or true/false, else an int, else the text)."""
    name, _, value = text.partition("=")
    if value.lower() in ("0", "1", "true", "false"):
        return name, value.lower() in ("1", "true")
    return name, int(value) if value.lstrip("-").isdigit() else value


def measure(
    parts: Mapping[str, Callable[..., Any]],
    inputs: tuple[object, ...],
    reference: Any,  # a tensor, or a tuple of them as the parts return
    on_gpu: bool,
    options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """ms (compiled, median) and relative error against `reference` (float32) of each way of one part."""
    out: dict[str, float] = {}
    for name, fn in parts.items():
        compiled = torch.compile(fn, dynamic=False, options=options)
        result = compiled(*inputs)
        pairs = zip(result, reference, strict=True) if isinstance(result, tuple) else [(result, reference)]
        out[f"{name}_error"] = max(relative_error(o, r) for o, r in pairs)
        # in a CUDA graph: the qkv part's kernels are about as short as the compiled call's launch
        out[f"{name}_ms"] = graph_ms(partial(compiled, *inputs), reps=30 if on_gpu else 1)
    return out


def measure_block(
    block: DiTBlock,
    block32: DiTBlock,
    preset: ModelPreset,
    tables: RotaryTables,
    clips: int,
    options: dict[str, Any],
) -> dict[str, object]:
    """Every part's ways at `clips` clips a forward, the GEMMs alone, and the whole compiled block (and
    with `options`, the qkv part and the block compiled with those inductor options)."""
    config, geometry = preset.dit, preset.cache_geometry()
    device, dtype = block.self_attn.q.weight.device, block.self_attn.q.weight.dtype
    on_gpu = device.type == "cuda"
    reps = 30 if on_gpu else 1
    x32 = torch.randn(clips, geometry.chunk_tokens, config.dim, device=device)
    x = x32.to(dtype)
    run: dict[str, object] = {"clips": clips}
    ffns = {"ffn_shipped": ffn_shipped(block), "ffn_gelu_epilogue": ffn_gelu_epilogue(block)}
    run |= measure(ffns, (x,), block32.ffn(x32), on_gpu)
    qkvs = {"qkv_shipped": qkv_shipped(block), "qkv_one_gemm": qkv_one_gemm(block)}
    if on_gpu:
        qkvs["qkv_fused_norm_rope"] = qkv_shipped(with_fused_norm_rope(block))
    run |= measure(qkvs, (x, tables), block32.self_attn.qkv(x32, tables), on_gpu)
    if options:
        tuned = {"qkv_tuned": qkv_shipped(block)}
        run |= measure(tuned, (x, tables), block32.self_attn.qkv(x32, tables), on_gpu, options)
    hidden = torch.empty(clips, geometry.chunk_tokens, config.ffn_dim, device=device, dtype=dtype)
    gemms: dict[str, Callable[[], object]] = {
        "gemm_dim_x_dim_ms": lambda: block.self_attn.q(x),
        "gemm_ffn_up_ms": lambda: block.ffn[0](x),
        "gemm_ffn_down_ms": lambda: block.ffn[2](hidden),
    }
    for name, gemm in gemms.items():
        run[name] = median_ms(gemm, reps=reps, warmup=5)
    # the whole compiled block with attention over the cache, for the share each part has
    time_mod = torch.randn(clips, geometry.chunk_frames, 6, config.dim, device=device, dtype=dtype)
    text = torch.randn(clips, config.text_len, config.dim, device=device, dtype=dtype)
    text_kv = block.cross_attn.project_text(text)
    cache = PrefixCache(preset, clips, x)
    backends = [SDPBackend.CUDNN_ATTENTION] if on_gpu else [SDPBackend.MATH]
    blocks: dict[str, tuple[DiTBlock, dict[str, Any]]] = {"block_shipped_ms": (block, {})} | (
        {"block_tuned_ms": (block, options)} if options else {}
    )
    if on_gpu:
        blocks["block_fused_norm_rope_ms"] = (with_fused_norm_rope(block), {})
    for name, (variant, compile_options) in blocks.items():
        # a copy per compile, so options never reuse another's graphs (the fused variant is a copy already)
        own = copy.deepcopy(variant) if variant is block else variant
        compiled_block = torch.compile(own, dynamic=False, options=compile_options or None)

        def block_forward(compiled: Callable[..., torch.Tensor] = compiled_block) -> torch.Tensor:
            with sdpa_kernel(backends):
                return compiled(x, time_mod, text_kv, tables, LayerCursor(cache), None)

        run[name] = graph_ms(block_forward, calls=5, reps=reps)
    return run


def main() -> None:
    parser = block_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--inductor-option", action="append", default=[], metavar="NAME=VALUE", help="also compile with it"
    )
    args = parser.parse_args()
    options = dict(inductor_option(text) for text in args.inductor_option)
    preset = get_preset(args.preset)
    config, geometry = preset.dit, preset.cache_geometry()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    with torch.device("meta"):
        block32 = DiTBlock(config)
    block32 = randomize_(block32.to_empty(device=device), seed=1).eval()
    block = copy.deepcopy(block32).to(torch.bfloat16 if on_gpu else torch.float32)
    tables = steady_chunk_rope(preset, device)
    runs = []
    with torch.inference_mode():
        for clips in clip_counts(args):
            runs.append(measure_block(block, block32, preset, tables, clips, options))
            print(json.dumps(runs[-1], indent=1), flush=True)
    write_results(
        args.out,
        "bench_dit_block",
        device,
        {
            "preset": preset.name,
            "tokens_per_clip": geometry.chunk_tokens,
            "cached_frames": CACHED_FRAMES,
            "inductor_options": options,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
