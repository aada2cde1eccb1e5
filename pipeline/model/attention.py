"""Kernels for a chunk's self-attention over the keys and values its KV cache returns.

Each takes q (B, nh, L, hd) and keys/values (B, nh, L_kv, hd) and returns the attention, or per-split
partial outputs and their log-sum-exps for the caller to merge with `merge_key_splits` (inside the
compiled block, where the merge fuses into the next copy). `speed.py` picks one per process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

Attention = tuple[torch.Tensor, torch.Tensor | None]  # output, and per-split log-sum-exp if keys were split
# Relative error against float32 a bf16 attention kernel must stay under (they reach about a quarter of it)
BF16_ATTENTION_TOLERANCE = 1e-2


class SelfAttentionKernel(Protocol):
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention: ...


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention:
    """PyTorch's SDPA under the backend order the DiT set (the default everywhere, and on CPU)."""
    return F.scaled_dot_product_attention(q, k, v), None


@dataclass(frozen=True)
class KeySplitAttention:
    """SDPA, except that a single video's attention over at least `min_keys` keys runs over `splits`
    equal key runs (see `attention_over_key_splits` for why)."""

    splits: int
    min_keys: int

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention:
        num_keys = k.shape[2]
        if q.shape[0] == 1 and num_keys >= self.min_keys and num_keys % self.splits == 0:
            return attention_over_key_splits(q, k, v, self.splits)
        return sdpa(q, k, v)


def attention_over_key_splits(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of a batch of one over its keys cut into `splits` equal runs, each run a batch entry
    of a single fused call: (S, nh, L, hd) partial outputs and their (S, nh, L, 1) log-sum-exps.

    Why: cuDNN tiles a chunk's 4680 queries by 128 per head, 444 tiles, which an H100's 132 SMs run
    in 4 waves, the last a third full. Two key runs make 888 half-length tiles in 7 waves, which pays
    from about 18 frames of keys on; below, the per-tile overhead eats the gain (benchmarks/README.md,
    third round).
    """
    _, nh, num_keys, hd = k.shape
    runs = (splits, num_keys // splits)
    keys = k.unflatten(2, runs).squeeze(0).transpose(0, 1)  # (S, nh, L_kv/S, hd), a view
    values = v.unflatten(2, runs).squeeze(0).transpose(0, 1)
    queries = q.expand(splits, -1, -1, -1)  # (S, nh, L, hd), a view
    if q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(queries, keys, values, None, True)[:2]
    else:  # the CPU kernel that returns the log-sum-exp too (tests, and CPU renders)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(queries, keys, values)[:2]
    return out, lse.view(splits, nh, -1, 1)


def merge_key_splits(out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Exact softmax attention from per-split partials: weight each split by its share of exp(lse)."""
    weights = torch.softmax(lse.float(), dim=0)  # (S, nh, L, 1)
    return (out.float() * weights).sum(0, keepdim=True).to(out.dtype)  # (1, nh, L, hd)


class FlashAttention4:
    """FlashAttention-4's CuTe DSL forward (pip package `flash-attn-4`, optional).

    On Hopper at a chunk's shapes it is faster than cuDNN (whole or split) once the cache holds more
    than one chunk, at the same error against float32 (benchmarks/README.md, fourth round). It reads
    the cache's (B, nh, L_kv, hd) buffers
    as (B, L_kv, nh, hd) views, and its output is laid out (B, L, nh, hd), the order the output
    projection wants. Its first call compiles the kernel (about 2 s).
    """

    def __init__(self, min_keys: int = 0) -> None:
        from flash_attn.cute import flash_attn_func  # optional dependency: see `unavailable_reason`

        self.flash_attn_func = flash_attn_func
        self.min_keys = min_keys  # fewer keys: SDPA (cuDNN), see SpeedConfig.flash4_min_key_frames

    @staticmethod
    def unavailable_reason(device: torch.device, heads: int, head_dim: int) -> str | None:
        """Why it cannot run on `device` (None: it can). Measured on Hopper only, so used there only."""
        if device.type != "cuda":
            return f"it needs a CUDA device, not {device.type}"
        if torch.cuda.get_device_capability(device)[0] != 9:
            return f"it is measured on Hopper (sm_90) only, not {torch.cuda.get_device_name(device)}"
        if importlib.util.find_spec("flash_attn") is None:
            return "the flash-attn-4 package is not installed (pip install 'deepforcing-render[flash]')"
        try:
            import flash_attn.cute  # noqa: F401
        except Exception as exc:  # a broken install names its own cause (e.g. a missing CUDA DSL library)
            return f"flash_attn.cute failed to import: {exc!r}"
        try:  # compiles the kernel (about 2 s): a DSL or driver mismatch shows here, not mid-clip
            FlashAttention4.check_against_sdpa(device, heads, head_dim)
        except Exception as exc:
            return f"its check against SDPA failed: {exc!r}"
        return None

    @staticmethod
    def check_against_sdpa(device: torch.device, heads: int, head_dim: int) -> None:
        """Raise unless a small attention at the model's head sizes matches float32 SDPA within bf16 error."""
        generator = torch.Generator(device).manual_seed(0)
        q, k, v = (
            torch.randn(1, heads, n, head_dim, device=device, dtype=torch.bfloat16, generator=generator)
            for n in (300, 700, 700)
        )
        out, _ = FlashAttention4()(q, k, v)
        expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        error = ((out.float() - expected).norm() / expected.norm()).item()
        if not error < BF16_ATTENTION_TOLERANCE:
            raise RuntimeError(f"output differs from float32 SDPA by {error:.2%}")

    def __repr__(self) -> str:
        package = f"flash-attn-4 {importlib.metadata.version('flash-attn-4')}"
        return f"FlashAttention4({package}, from {self.min_keys} keys on)"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention:
        if k.shape[2] < self.min_keys:
            return sdpa(q, k, v)
        out, _ = self.flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2), None  # (B, nh, L, hd) view of a (B, L, nh, hd) tensor
