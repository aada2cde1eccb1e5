"""Kernels for a chunk's self-attention over the keys and values its KV cache returns.

Each takes q (B, nh, L, hd) and keys/values (B, nh, L_kv, hd) and returns the attention, or per-split
partial outputs and their log-sum-exps for the caller to merge with `merge_key_splits` (inside the
compiled block, where the merge fuses into the next copy). `FastestAttention` times the available ones
per call shape and keeps the fastest; `speed.py` sets which are available.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

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
    """SDPA, except that a single video's attention runs over `splits` equal key runs (see
    `attention_over_key_splits` for why); a batch of several, or keys that do not split evenly, stay whole."""

    splits: int

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention:
        if q.shape[0] == 1 and k.shape[2] % self.splits == 0:
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


class OptionalKernel:
    """A FlashAttention forward from an optional pip package, checked against SDPA before first use.

    Both read the cache's (B, nh, L_kv, hd) buffers as (B, L_kv, nh, hd) views, and their output is laid
    out (B, L, nh, hd), the order the output projection wants. Subclasses name the package and call it.
    With `num_splits` > 1 the kernel splits the keys into that many runs and merges them itself, for the
    same reason as `attention_over_key_splits`: more tiles than a clip's 444 fill the last SM wave.
    """

    package = ""  # pip name
    module = ""  # the module `load` imports
    extra = ""  # this project's pip extra that brings it

    def __init__(self, num_splits: int = 1) -> None:
        self.flash_attn_func = self.load()
        self.options = {"num_splits": num_splits} if num_splits > 1 else {}

    def load(self) -> Callable[..., Any]:
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls, device: torch.device, heads: int, head_dim: int) -> str | None:
        """Why it cannot run on `device` (None: it can). Measured on Hopper only, so used there only."""
        if device.type != "cuda":
            return f"it needs a CUDA device, not {device.type}"
        if torch.cuda.get_device_capability(device)[0] != 9:
            return f"it is measured on Hopper (sm_90) only, not {torch.cuda.get_device_name(device)}"
        if importlib.util.find_spec(cls.module.split(".")[0]) is None:
            install = f"pip install 'deepforcing-render[{cls.extra}]'"
            return f"the {cls.package} package is not installed ({install})"
        try:
            kernel = cls()
        except Exception as exc:  # a broken install names its own cause (e.g. a missing CUDA library)
            return f"{cls.module} failed to import: {exc!r}"
        try:  # compiles or loads the kernel: a library or driver mismatch shows here, not mid-clip
            check_against_sdpa(kernel, device, heads, head_dim)
        except Exception as exc:
            return f"its check against SDPA failed: {exc!r}"
        return None

    def __repr__(self) -> str:
        options = "".join(f", {name}={value}" for name, value in self.options.items())
        return f"{type(self).__name__}({self.package} {importlib.metadata.version(self.package)}{options})"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention:
        out = self.flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), **self.options)
        if isinstance(out, tuple):  # FlashAttention-4 also returns the log-sum-exp
            out = out[0]
        return out.transpose(1, 2), None  # (B, nh, L, hd) view of a (B, L, nh, hd) tensor


class FlashAttention4(OptionalKernel):
    """FlashAttention-4's CuTe DSL forward (pip package `flash-attn-4`). Its first call at a shape
    compiles the kernel (about 2 s)."""

    package, module, extra = "flash-attn-4", "flash_attn.cute", "flash"

    def load(self) -> Callable[..., Any]:
        from flash_attn.cute import flash_attn_func

        return cast(Callable[..., Any], flash_attn_func)


class FlashAttention3(OptionalKernel):
    """FlashAttention-3's bf16 forward for Hopper (pip package `fa3-fwd`, prebuilt, forward only)."""

    package, module, extra = "fa3-fwd", "fa3_fwd_interface", "flash3"

    def load(self) -> Callable[..., Any]:
        from fa3_fwd_interface import flash_attn_func

        return cast(Callable[..., Any], flash_attn_func)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, both in float32: how the optional kernels' checks measure a difference."""
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def check_against_sdpa(kernel: SelfAttentionKernel, device: torch.device, heads: int, head_dim: int) -> None:
    """Raise unless a small attention at the model's head sizes matches float32 SDPA within bf16 error."""
    generator = torch.Generator(device).manual_seed(0)
    q, k, v = (
        torch.randn(1, heads, n, head_dim, device=device, dtype=torch.bfloat16, generator=generator)
        for n in (300, 700, 700)
    )
    out, _ = kernel(q, k, v)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    error = relative_error(out, expected)
    if not error < BF16_ATTENTION_TOLERANCE:
        raise RuntimeError(f"output differs from float32 SDPA by {error:.2%}")


CallShape = tuple[int, int, int]  # clips (batch), queries, keys


class FastestAttention:
    """Per call shape, the fastest of several kernels, timed on real inputs at the first call of that
    shape (as cuDNN's benchmark mode times conv algorithms) and used from then on.

    No fixed thresholds: which kernel wins moves with the key count (a clip's first chunk sees only
    itself), the batch (clips per forward) and the GPU (benchmarks/README.md has the measurements). A
    policy meets a handful of key counts per clip, so the timing costs well under a second per process.
    A kernel that returns per-split partials is timed with their merge, so the comparison is whole.
    """

    def __init__(self, kernels: dict[str, SelfAttentionKernel], timed_calls: int):
        if not kernels:
            raise ValueError("FastestAttention needs at least one kernel")
        self.kernels = kernels
        self.timed_calls = timed_calls
        self.choices: dict[CallShape, str] = {}
        self.timings: dict[CallShape, dict[str, float]] = {}  # seconds per call, median

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Attention:
        shape = (q.shape[0], q.shape[2], k.shape[2])
        name = self.choices.get(shape)
        if name is None:
            name = self._choose(shape, q, k, v)
        return self.kernels[name](q, k, v)

    def _choose(self, shape: CallShape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
        seconds = {name: self._seconds(kernel, q, k, v) for name, kernel in self.kernels.items()}
        name = min(seconds, key=seconds.__getitem__)
        self.choices[shape], self.timings[shape] = name, seconds
        logger.info(
            "self-attention for %d clip(s), %d queries, %d keys: %s (%s)",
            *shape,
            name,
            ", ".join(f"{kernel} {s * 1e3:.3f} ms" for kernel, s in seconds.items()),
        )
        return name

    def _seconds(
        self, kernel: SelfAttentionKernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> float:
        def call() -> None:
            out, lse = kernel(q, k, v)
            if lse is not None:
                merge_key_splits(out, lse)

        call()  # a first call may compile or plan (FlashAttention-4, cuDNN graphs): not timed
        samples = []
        for _ in range(self.timed_calls):
            if q.is_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
            else:
                begin = time.perf_counter()
                call()
                samples.append(time.perf_counter() - begin)
        return statistics.median(samples)

    def __repr__(self) -> str:
        return f"FastestAttention({', '.join(f'{name}={kernel!r}' for name, kernel in self.kernels.items())})"
