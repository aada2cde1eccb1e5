"""Fast execution of a loaded bundle on a GPU; every switch keeps outputs within bf16 tolerance.

Chosen once per process and logged once, never retried per call. Measured effects are in
benchmarks/README.md and benchmarks/results/; docs/gpu_ceilings.md has the kernel rates behind them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch.nn.attention import SDPBackend

from pipeline.model.attention import (
    FastestAttention,
    FlashAttention3,
    FlashAttention4,
    KeySplitAttention,
    OptionalKernel,
    SelfAttentionKernel,
    check_against_sdpa,
    relative_error,
    sdpa,
)
from pipeline.model.dit import CausalWanDiT, FusedNormRope
from pipeline.model.vae import CausalConv3d, Elementwise, Resample, WanVAEDecoder
from pipeline.spec.model import ModelPreset

if TYPE_CHECKING:  # bundle.py applies these settings when it loads for a GPU
    from pipeline.model.bundle import ModelBundle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedConfig:
    """Each switch and threshold below was measured at full size; the numbers are in benchmarks/README.md."""

    # The chunk's self-attention on a GPU: "auto" times, per call shape, cuDNN whole and over key splits
    # and FlashAttention-3 and -4 where installed (and checked on Hopper), and keeps the fastest;
    # "flash3" / "flash4" the same with that package required (an error otherwise); "cudnn" cuDNN
    # only; "default" PyTorch's SDPA order, untimed. SDPA (cuDNN > flash > efficient > math unless
    # "default") runs cross-attention and masked attention in every case.
    attention: str = "auto"
    # cuDNN over 2 key runs, and FlashAttention-3 splitting its keys as many ways, can fill the last SM
    # wave at one clip a forward (attention.py); timed beside the whole kernels; 1: never
    attention_key_splits: int = 2
    attention_timed_calls: int = 5  # per kernel and call shape, after one untimed call
    compile_blocks: bool = True  # torch.compile each DiT block's dense parts (attention stays eager)
    compile_backend: str = "inductor"  # "aot_eager" traces without code generation (CPU tests)
    # The FFN's GELU inside its up projection's GEMM on a GPU (dit.FeedForward): -9 to -16% of the FFN at
    # two clips a forward on H200s, -7 to +3% at one (benchmarks/README.md)
    ffn_gelu_in_epilogue: bool = True
    # q's and k's RMSNorms and RoPE in one Triton kernel on a GPU (qk_norm_rope.py), checked against the
    # PyTorch ops at start-up: the q/k/v part 0.330 -> 0.265 ms at two clips a forward on an H200
    fused_qk_norm_rope: bool = True
    vae_channels_last: bool = True  # VAE activations channels-last end to end (cuDNN's fast layout)
    # Each upsample's 3x3 conv as one 2x2 conv of its input to the four output phases (vae.UpsampleConv):
    # the same function, 4/9 of the work; a steady chunk's decode 95.5 -> 89.9 ms on an H200
    vae_phase_convs: bool = True
    compile_vae: bool = True  # torch.compile the VAE's ops between convs (bias + norm + SiLU + padding fused)
    cudnn_benchmark: bool = True  # let cuDNN time its conv algorithms once per shape ...
    # ... all of them for the VAE's full-resolution residual convs, not PyTorch's default first 10: the
    # fastest kernels for 96 channels lie beyond those. Searching all for every conv as well costs
    # minutes of warm-up and gains nothing more.
    vae_search_all_conv_algorithms: bool = True

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_ORDERS:
            raise ValueError(f"attention={self.attention!r}; choose one of {sorted(ATTENTION_ORDERS)}")
        if self.attention_key_splits < 1:
            splits = self.attention_key_splits
            raise ValueError(f"attention_key_splits={splits} must be >= 1; 1 means no split")


# SDPA backend order per choice. At our shapes on Hopper cuDNN attention is the fastest SDPA backend by
# far (docs/gpu_ceilings.md §1.1); the others are fallbacks for masks and old GPUs.
CUDNN_FIRST = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
ATTENTION_ORDERS: dict[str, list[SDPBackend] | None] = {
    "auto": CUDNN_FIRST,
    "flash3": CUDNN_FIRST,
    "flash4": CUDNN_FIRST,
    "cudnn": CUDNN_FIRST,
    "default": None,
}


def accelerate(bundle: ModelBundle, config: SpeedConfig = SpeedConfig()) -> ModelBundle:
    """Apply `config` to `bundle` in place (after loading, before the first clip)."""
    device = next(bundle.dit.parameters()).device
    on_cuda = device.type == "cuda"
    bundle.dit.sdpa_backends = ATTENTION_ORDERS[config.attention] if on_cuda else None
    bundle.dit.self_attention = self_attention_kernel(config, device, bundle.preset)
    norm_rope = fused_norm_rope(bundle.dit, bundle.preset) if config.fused_qk_norm_rope and on_cuda else None
    for block in bundle.dit.block_list:
        block.ffn.gelu_in_epilogue = config.ffn_gelu_in_epilogue and on_cuda
        block.self_attn.fused_norm_rope = norm_rope
        if config.compile_blocks:
            # Regional compilation: the 30 blocks share one compiled graph (parameters are inputs).
            block.compile(dynamic=False, backend=config.compile_backend)
    accelerate_vae(bundle.vae, config)
    if config.cudnn_benchmark and on_cuda:
        torch.backends.cudnn.benchmark = True
    kernel = bundle.dit.self_attention
    logger.info(
        "speed settings: %s (cuda=%s, self-attention: %s)",
        config,
        on_cuda,
        getattr(kernel, "__name__", kernel),
    )
    return bundle


FLASH_KERNELS: dict[str, type[OptionalKernel]] = {"flash3": FlashAttention3, "flash4": FlashAttention4}


def self_attention_kernel(
    config: SpeedConfig, device: torch.device, preset: ModelPreset
) -> SelfAttentionKernel:
    """The streaming self-attention kernel `config` asks for on `device` (attention.py has them)."""
    if device.type != "cuda" or config.attention == "default":
        return sdpa
    kernels: dict[str, SelfAttentionKernel] = {"cudnn": sdpa}
    # Key splits call cuDNN's kernel directly, so they come with cuDNN only (attention.py: why they win).
    if config.attention_key_splits > 1:
        kernels[f"cudnn-split{config.attention_key_splits}"] = KeySplitAttention(config.attention_key_splits)
    wanted = list(FLASH_KERNELS) if config.attention == "auto" else [config.attention]
    for name in (name for name in wanted if name in FLASH_KERNELS):
        flash = FLASH_KERNELS[name]
        reason = flash.unavailable_reason(device, preset.dit.num_heads, preset.dit.head_dim)
        if reason is None:
            kernels[name] = flash()
            if flash is FlashAttention3 and config.attention_key_splits > 1:
                kernels |= flash3_key_splits(config.attention_key_splits, device, preset)
        elif config.attention == name:
            raise RuntimeError(f"attention={name!r} cannot be used: {reason}")
        else:
            logger.info("%s not used (%s)", flash.__name__, reason)
    if len(kernels) == 1:
        return sdpa
    return FastestAttention(kernels, config.attention_timed_calls)


def flash3_key_splits(
    splits: int, device: torch.device, preset: ModelPreset
) -> dict[str, SelfAttentionKernel]:
    """FlashAttention-3 splitting its keys `splits` ways, once checked against SDPA (its split and merge
    are kernels of their own), as a candidate beside the whole kernel; none if the check fails."""
    split = FlashAttention3(num_splits=splits)
    try:
        check_against_sdpa(split, device, preset.dit.num_heads, preset.dit.head_dim)
    except Exception as exc:  # the whole FA3 passed its check: a failure here only drops this candidate
        logger.info("FlashAttention-3 over %d key splits not used (%r)", splits, exc)
        return {}
    return {f"flash3-split{splits}": split}


# Relative difference the fused kernel may have from the PyTorch ops (bf16 roundings apart: ~1e-3)
FUSED_NORM_ROPE_TOLERANCE = 1e-2


def fused_norm_rope(dit: CausalWanDiT, preset: ModelPreset) -> FusedNormRope | None:
    """The Triton kernel for q's and k's norms and RoPE, once the first block's q/k/v computed with it
    match the PyTorch ops within bf16 rounding on one frame of the preset's grid; None (and a log line)
    where Triton is missing or the check fails, and the block keeps the PyTorch ops."""
    attention = dit.block_list[0].self_attn
    weight = attention.q.weight
    _, ph, pw = preset.dit.patch_size
    grid = (preset.latent_height // ph, preset.latent_width // pw)
    tables = dit.rope(torch.arange(1, device=weight.device), *grid).to(torch.float32)
    generator = torch.Generator(weight.device).manual_seed(0)  # leaves the global RNG as it was
    x = torch.randn(2, math.prod(grid), preset.dit.dim, device=weight.device, generator=generator)
    x = x.to(weight.dtype)
    try:
        from pipeline.model.qk_norm_rope import qk_norm_rope

        with torch.inference_mode():
            expected = attention.qkv(x, tables)
            attention.fused_norm_rope = qk_norm_rope
            fused = attention.qkv(x, tables)
        for name, got, want in zip("qkv", fused, expected, strict=True):
            error = relative_error(got, want)
            if not error < FUSED_NORM_ROPE_TOLERANCE:
                raise ValueError(f"{name} differs from the PyTorch ops by {error:.2e}")
    except Exception as exc:  # an optional kernel: the PyTorch ops stay, as on a CPU
        logger.info("q/k norms and RoPE in one Triton kernel not used (%r)", exc)
        return None
    finally:
        attention.fused_norm_rope = None
    return qk_norm_rope


# Nearest upsampling is all index arithmetic, which for symbolic sizes divides at run time: 33 ms of a
# steady chunk against 1.1 ms with kernels of fixed shapes (H200, benchmarks/README.md). It compiles
# per shape instead: 6 graphs, a first and a steady chunk's at each of the 3 upsampling stages; the
# phases' interleaving, its replacement, is index arithmetic too.
STATIC_SHAPE_VAE_OPS = frozenset({"upsample_nearest", "interleave_phases"})


def compiled_vae_ops(
    ops: Elementwise, backend: str, static: frozenset[str] = STATIC_SHAPE_VAE_OPS
) -> Elementwise:
    """`ops` compiled whole, for dynamic shapes but those named in `static`. Frame counts and sizes
    differ per stage and between a video's first and later chunks: dynamic shapes give one graph per op
    and channel width (parameters keep theirs static). The convs stay eager (their stream state)."""
    return Elementwise(
        **{
            op.name: torch.compile(
                getattr(ops, op.name), dynamic=op.name not in static, fullgraph=True, backend=backend
            )
            for op in fields(ops)
        }
    )


def accelerate_vae(vae: WanVAEDecoder, config: SpeedConfig) -> WanVAEDecoder:
    """The VAE part of `accelerate`: layout, the compiled ops between convs, where cuDNN searches hardest."""
    decoder = vae.decoder
    if config.vae_channels_last:
        vae.use_channels_last()
    if config.vae_phase_convs:
        vae.use_phase_weights()
    if config.compile_vae:
        vae.elementwise = compiled_vae_ops(vae.elementwise, config.compile_backend)
    if config.vae_search_all_conv_algorithms:
        last_upsample = max(i for i, stage in enumerate(decoder.upsamples) if isinstance(stage, Resample))
        for block in decoder.upsamples[last_upsample + 1 :]:  # the full-resolution residual blocks
            for conv in block.modules():
                if isinstance(conv, CausalConv3d):
                    conv.search_all_algorithms = True
    return vae
