"""The Self Forcing causal Wan2.1 DiT (T2V 1.3B), with the official parameter names.

Read top-down: config, norms, attention, feed-forward, block, embeddings/head, model. Numerics follow
the Self Forcing release: bf16 activations, float32 RMSNorm, float64 RoPE and timestep sinusoids,
LayerNorm in the activation dtype. Three entry points share every weight and every line of block code:

- `forward_chunk`: one chunk of latent frames attends to itself and to what a KV cache policy keeps
  (the streaming path).
- `cache_chunk`: the same forward for a pass whose only product is what the cache stores (the clean
  context pass, a re-cache pass): the last block stops once it has handed its keys/values over.
- `forward_block_causal`: a whole sequence at once under the block-causal mask (each chunk sees
  itself and earlier chunks), the training-time view used to check the streaming path.

A KV source may also mask the keys it returns (`MaskedKeyValueSource`): a storyboard's re-cache pass runs
earlier chunks again and must not see the cached keys of chunks after them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from pipeline.model.attention import Attention, SelfAttentionKernel, merge_key_splits, sdpa
from pipeline.model.rope import RotaryEmbedding3D, RotaryTables, apply_rotary
from pipeline.spec.model import DiTConfig


class KeyValueSource(Protocol):
    """Where self-attention gets its keys and values (a KV cache policy, or the chunk itself)."""

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class MaskedKeyValueSource(KeyValueSource, Protocol):
    """A KV source whose keys are not all visible: `key_mask` is the (B, 1, 1, L_kv) boolean mask (True:
    attend) of the keys its last `keys_values` call returned for `layer`."""

    def key_mask(self, layer: int) -> torch.Tensor: ...


class OwnKeysValues:
    """The sequence attends to its own keys and values (the block-causal, whole-sequence path)."""

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return k, v


# ---------------------------------------------------------------------------------------------------
# Norms


class RMSNorm(nn.Module):
    """Wan's RMSNorm: normalise in float32, cast back, then scale (SF:wan/modules/model.py)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


# ---------------------------------------------------------------------------------------------------
# Attention


class LayerCursor:
    """A KV source walked layer by layer: one per forward, each block's attention takes the next layer.

    Compiled blocks never see a layer index: an int handed to eager code from a compiled graph is
    guarded by value, so every layer would compile its own copy of the block (and past dynamo's
    limit of 8, run uncompiled). Blocks always run in order, so the count is the layer.
    """

    def __init__(
        self,
        kv_source: KeyValueSource,
        attention: SelfAttentionKernel = sdpa,
        store_only_at: int | None = None,
    ):
        self.kv_source = kv_source
        self.attention = attention  # the kernel for unmasked self-attention (see attention.py)
        self.layer = 0
        self.masked = isinstance(kv_source, MaskedKeyValueSource)
        # a pass that only feeds the cache: from this layer on nothing reaches the cache, so the forward
        # ends once the cache has its keys/values (`KeysValuesStored`, `CausalWanDiT.cache_chunk`)
        self.store_only_at = store_only_at


class KeysValuesStored(Exception):
    """Raised by `attend_with_cache` at the cursor's `store_only_at` layer, once the cache has that layer's
    keys/values: nothing after them reaches the cache. Leaving by exception keeps the compiled part of a
    block before the lookup one graph for every layer and pass; a branch in the block would give the
    last layer graphs of its own, fused (and so rounded) differently, or one with no ops, which dynamo
    would stop compiling altogether."""


@torch.compiler.disable
def attend_with_cache(
    cursor: LayerCursor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> Attention:
    """Cache lookup and self-attention, kept out of compiled graphs: the key count changes from chunk
    to chunk and the policy's bookkeeping is plain Python, so the compiled parts around this call keep
    static shapes and compile once. Returns the attention (B, nh, L, hd), or per-split partial results
    for the caller to merge with `merge_key_splits`. At the cursor's `store_only_at` layer the policy
    stores this chunk's keys/values (and what it keeps of q), then `KeysValuesStored` ends the pass."""
    keys, values = cursor.kv_source.keys_values(cursor.layer, q, k, v)  # (B, nh, L_kv, hd)
    layer = cursor.layer
    cursor.layer += 1
    if layer == cursor.store_only_at:
        raise KeysValuesStored
    if cursor.masked:
        attn_mask = cast(MaskedKeyValueSource, cursor.kv_source).key_mask(layer)
    if attn_mask is not None:  # the block-causal whole-sequence path, or a masked KV source
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask), None
    return cursor.attention(q, keys, values)


class AttentionProjections(nn.Module):
    """q/k/v/o projections with q/k RMSNorms spanning all heads (1536 channels, before the head split)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.q = nn.Linear(config.dim, config.dim)
        self.k = nn.Linear(config.dim, config.dim)
        self.v = nn.Linear(config.dim, config.dim)
        self.o = nn.Linear(config.dim, config.dim)
        self.norm_q = RMSNorm(config.dim, config.eps)
        self.norm_k = RMSNorm(config.dim, config.eps)


class FusedNormRope(Protocol):
    """q's and k's RMSNorms and RoPE in one call (qk_norm_rope.py): (q, k, q's and k's norm weights,
    the tables' cos and sin, eps) -> q, k, each (B, L, C) as `SelfAttention.qkv` computes them."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_weight: torch.Tensor,
        k_weight: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class SelfAttention(AttentionProjections):
    """Projections only: the block calls the KV source and attention itself (see `DiTBlock.forward`)."""

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        self.fused_norm_rope: FusedNormRope | None = None  # a GPU kernel for both, set by speed.accelerate

    def qkv(self, x: torch.Tensor, rope: RotaryTables) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, C = x.shape  # batch, tokens, channels
        nh, hd = self.num_heads, C // self.num_heads
        if self.fused_norm_rope is None:
            q = apply_rotary(self.norm_q(self.q(x)).view(B, L, nh, hd), rope)  # (B, L, nh, hd)
            k = apply_rotary(self.norm_k(self.k(x)).view(B, L, nh, hd), rope)  # (B, L, nh, hd)
        else:
            weights = self.norm_q.weight, self.norm_k.weight
            q, k = self.fused_norm_rope(self.q(x), self.k(x), *weights, *rope, self.norm_q.eps)
            q, k = q.view(B, L, nh, hd), k.view(B, L, nh, hd)
        v = self.v(x).view(B, L, nh, hd)  # (B, L, nh, hd)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hd)
        return q, k, v


class CrossAttention(AttentionProjections):
    """Text cross-attention; the text keys/values are computed once per prompt by `project_text`."""

    def project_text(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = text.shape  # batch, text tokens, channels
        nh = self.num_heads
        k = self.norm_k(self.k(text)).view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hd)
        v = self.v(text).view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hd)
        return k, v

    def forward(self, x: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, L, C = x.shape
        nh = self.num_heads
        q = self.norm_q(self.q(x)).view(B, L, nh, C // nh).transpose(1, 2)  # (B, nh, L, hd)
        # Every query sees all text_len tokens, padding included (upstream passes no lengths).
        y = F.scaled_dot_product_attention(q, *text_kv)  # (B, nh, L, hd)
        return self.o(y.transpose(1, 2).reshape(B, L, C))


# ---------------------------------------------------------------------------------------------------
# Feed-forward


class FeedForward(nn.Sequential):
    """Linear -> tanh GELU -> Linear; a Sequential so the official names hold (ffn.0, ffn.2).

    With `gelu_in_epilogue` (CUDA only: on CPUs PyTorch's fused op computes the erf GELU) the up
    projection's GEMM applies the GELU before it writes its ffn_dim-wide output (cuBLASLt's epilogue), so
    the largest activation of the block is written once and never re-read by a separate GELU pass.
    """

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.gelu_in_epilogue = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gelu, down = cast(nn.Linear, self[0]), self[1], cast(nn.Linear, self[2])
        if not self.gelu_in_epilogue:
            return down(gelu(up(x)))
        # inductor calls this op as is (no decomposition), so the fusion survives torch.compile
        hidden = torch._addmm_activation(up.bias, x.flatten(0, -2), up.weight.t(), use_gelu=True)
        return down(hidden.unflatten(0, x.shape[:-1]))


# ---------------------------------------------------------------------------------------------------
# Transformer block


class DiTBlock(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        # 1. Self-attention, modulated per frame by the timestep
        self.norm1 = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(config)
        # 2. Cross-attention to the prompt (affine norm, no modulation, no gate)
        self.norm3 = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(config)
        # 3. Feed-forward, modulated per frame
        self.norm2 = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.ffn = FeedForward(config.dim, config.ffn_dim)
        # shift/scale/gate for self-attention then for the FFN, added to the timestep projection
        self.modulation = nn.Parameter(torch.randn(1, 6, config.dim) / config.dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        time_mod: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        rope: RotaryTables,
        kv_cursor: LayerCursor,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        B, L, C = x.shape
        num_frames = time_mod.shape[1]  # time_mod: (B, F, 6, C)
        mod = (self.modulation.unsqueeze(1) + time_mod).chunk(6, dim=2)  # 6 x (B, F, 1, C)
        shift_sa, scale_sa, gate_sa, shift_ffn, scale_ffn, gate_ffn = mod

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(1, (num_frames, L // num_frames))  # (B, F, tokens_per_frame, C)

        # 1. Self-attention. The eager cache lookup is called here, not inside a submodule: a graph
        # break in a nested call compiles that submodule as a frame of its own.
        h = (per_frame(self.norm1(x)) * (1 + scale_sa) + shift_sa).flatten(1, 2)
        q, k, v = self.self_attn.qkv(h, rope)  # (B, nh, L, hd)
        y, lse = attend_with_cache(kv_cursor, q, k, v, attn_mask)  # (B, nh, L, hd) or split partials
        if lse is not None:
            y = merge_key_splits(y, lse)  # (B, nh, L, hd)
        y = self.self_attn.o(y.transpose(1, 2).reshape(B, L, C))
        x = x + (per_frame(y) * gate_sa).flatten(1, 2)
        # 2. Cross-attention
        x = x + self.cross_attn(self.norm3(x), text_kv)
        # 3. Feed-forward
        h = (per_frame(self.norm2(x)) * (1 + scale_ffn) + shift_ffn).flatten(1, 2)
        y = self.ffn(h)
        return x + (per_frame(y) * gate_ffn).flatten(1, 2)


class Head(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        patch_volume = math.prod(config.patch_size)
        self.norm = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.head = nn.Linear(config.dim, patch_volume * config.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        num_frames = time_emb.shape[1]  # time_emb: (B, F, C)
        shift, scale = (self.modulation.unsqueeze(1) + time_emb.unsqueeze(2)).chunk(2, dim=2)  # (B, F, 1, C)
        h = self.norm(x).unflatten(1, (num_frames, L // num_frames))  # (B, F, tokens_per_frame, C)
        return self.head(h * (1 + scale) + shift).flatten(1, 2)  # (B, L, patch_volume*out_dim)


def timestep_sinusoid(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos(t*f_k), sin(t*f_k)] with f_k = 10000^(-k/(dim/2)), in float64; t is the raw 0..1000 value."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    angles = torch.outer(timesteps.to(torch.float64), freqs)  # (N, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)  # (N, dim)


# ---------------------------------------------------------------------------------------------------
# The model


@dataclass
class TextContext:
    """A prompt prepared for the DiT: per-layer cross-attention keys/values, computed once per clip."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (B, heads, text_len, head_dim) x 2


class CausalWanDiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList([DiTBlock(c) for _ in range(c.num_layers)])
        self.head = Head(c)
        self.rope = RotaryEmbedding3D(c.head_dim, c.rope_theta)
        self.sdpa_backends: list[SDPBackend] | None = None  # None: PyTorch's own order (see speed.py)
        self.self_attention: SelfAttentionKernel = sdpa  # the streaming path's kernel (see speed.py)

    # -- prompt -------------------------------------------------------------------------------------

    def prepare_text(self, prompt_embeds: torch.Tensor) -> TextContext:
        """UMT5 output (B, <=text_len, text_dim) -> per-layer cross-attention keys/values."""
        B, T, _ = prompt_embeds.shape
        if self.config.text_len < T:
            raise ValueError(f"prompt_embeds has {T} tokens, more than text_len={self.config.text_len}")
        padded = F.pad(prompt_embeds, (0, 0, 0, self.config.text_len - T))  # (B, text_len, text_dim)
        text = self.text_embedding(padded.to(self.dtype))  # (B, text_len, C)
        return TextContext([block.cross_attn.project_text(text) for block in self.block_list])

    # -- forwards -----------------------------------------------------------------------------------

    def forward_chunk(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: TextContext,
        kv_cache: KeyValueSource,
        frame_position: int | Sequence[int],
    ) -> torch.Tensor:
        """Flow prediction for one chunk. latents (B, C, F, H, W); timestep (B,) shared by the chunk.

        `frame_position` is the temporal RoPE position of the chunk's first frame (from the cache), or
        one position per frame (a re-cache pass runs frames where the cache keeps their keys).
        """
        timesteps, positions = self._chunk_timesteps_positions(latents, timestep, frame_position)
        x, time_emb = self._run_blocks(latents, timesteps, text, positions, kv_cache, attn_mask=None)
        return self._head(x, time_emb, latents.shape)

    def cache_chunk(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: TextContext,
        kv_cache: KeyValueSource,
        frame_position: int | Sequence[int],
    ) -> None:
        """`forward_chunk` for its effect on `kv_cache` alone: every layer's keys/values reach the cache as
        they would, but the last block stops once it has handed its own over (its attention, FFN and the
        head only make the flow, which a context or re-cache pass throws away): 1/30 of a forward."""
        timesteps, positions = self._chunk_timesteps_positions(latents, timestep, frame_position)
        self._run_blocks(latents, timesteps, text, positions, kv_cache, attn_mask=None, keys_only=True)

    @staticmethod
    def _chunk_timesteps_positions(
        latents: torch.Tensor, timestep: torch.Tensor, frame_position: int | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A chunk's per-frame timesteps (B, F) and temporal RoPE positions (F,)."""
        B, _, num_frames = latents.shape[:3]
        if isinstance(frame_position, int):
            positions = torch.arange(num_frames, device=latents.device) + frame_position
        elif list(frame_position) == list(range(frame_position[0], frame_position[0] + num_frames)):
            positions = torch.arange(num_frames, device=latents.device) + frame_position[0]  # no host copy
        else:
            positions = torch.tensor(frame_position, device=latents.device)
        return timestep.view(B, 1).expand(B, num_frames), positions

    def forward_block_causal(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: TextContext,
        chunk_frames: int,
        frame_positions: Sequence[int] | None = None,
        kv_source: KeyValueSource | None = None,
    ) -> torch.Tensor:
        """Flow prediction for a whole sequence at once; timesteps (B, F), one per frame.

        Frame f attends to every frame of its own chunk and of earlier chunks, as the streaming path
        does with an unbounded cache. Frames sit at `frame_positions` (default 0, 1, ...); `kv_source`
        (default: the sequence's own keys/values) sees every layer's keys and values, e.g. to record them.
        """
        num_frames = latents.shape[2]
        if num_frames % chunk_frames:
            raise ValueError(f"{num_frames} frames is not a multiple of chunk_frames={chunk_frames}")
        order = torch.arange(num_frames, device=latents.device)
        positions = order if frame_positions is None else torch.tensor(frame_positions, device=latents.device)
        tokens_per_frame = self._tokens_per_frame(latents)
        chunk_of_token = (order // chunk_frames).repeat_interleave(tokens_per_frame)  # (L,)
        mask = chunk_of_token[None, :] <= chunk_of_token[:, None]  # (L, L): key chunk <= query chunk
        source = OwnKeysValues() if kv_source is None else kv_source
        x, time_emb = self._run_blocks(latents, timesteps, text, positions, source, attn_mask=mask)
        return self._head(x, time_emb, latents.shape)

    def _tokens_per_frame(self, latents: torch.Tensor) -> int:
        _, ph, pw = self.config.patch_size
        return (latents.shape[3] // ph) * (latents.shape[4] // pw)

    def _run_blocks(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: TextContext,
        frame_positions: torch.Tensor,
        kv_source: KeyValueSource,
        attn_mask: torch.Tensor | None,
        keys_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patchify and run every block: the tokens (B, L, C) and the per-frame time embedding (B, F, C)
        the head needs. With `keys_only` the last block stops at its keys/values (`cache_chunk`)."""
        B, _, num_frames, H, W = latents.shape
        _, ph, pw = self.config.patch_size
        grid_h, grid_w = H // ph, W // pw
        dtype = self.dtype

        # Patchify: (B, C_in, F, H, W) -> (B, F*grid_h*grid_w, C), tokens in (f, h, w) order
        x = self.patch_embedding(latents.to(dtype)).flatten(2).transpose(1, 2)

        # Timestep embedding per frame, projected to the six block modulations
        sinusoid = timestep_sinusoid(timesteps.flatten(), self.config.freq_dim).to(dtype)
        time_emb = self.time_embedding(sinusoid)  # (B*F, C)
        time_mod = (
            self.time_projection(time_emb).unflatten(1, (6, -1)).unflatten(0, (B, num_frames))
        )  # (B,F,6,C)
        time_emb = time_emb.unflatten(0, (B, num_frames))  # (B, F, C)

        # float64 tables, applied in float32 (see apply_rotary); (L, 1, head_dim/2) each
        rope = self.rope(frame_positions, grid_h, grid_w).to(torch.promote_types(dtype, torch.float32))
        kv_cursor = LayerCursor(kv_source, self.self_attention, len(self.blocks) - 1 if keys_only else None)
        with self._attention_backends():
            for block, text_kv in zip(self.blocks, text.kv, strict=True):
                try:
                    x = block(x, time_mod, text_kv, rope, kv_cursor, attn_mask)
                except KeysValuesStored:  # keys_only: the cache has every layer's keys/values
                    break
        return x, time_emb

    def _head(self, x: torch.Tensor, time_emb: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
        """Tokens (B, L, C) -> flow (B, C_out, F, H, W); each token gives (p_t, p_h, p_w, c), c fastest."""
        B, _, num_frames, H, W = latent_shape
        pt, ph, pw = self.config.patch_size
        grid_h, grid_w = H // ph, W // pw
        out = self.head(x, time_emb)  # (B, L, pt*ph*pw*C_out)
        out = out.view(B, num_frames // pt, grid_h, grid_w, pt, ph, pw, self.config.out_dim)
        out = torch.einsum("bfhwpqrc->bcfphqwr", out)  # (B, C_out, F/pt, pt, grid_h, ph, grid_w, pw)
        return out.reshape(B, self.config.out_dim, num_frames, H, W)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def block_list(self) -> list[DiTBlock]:
        return cast(list[DiTBlock], list(self.blocks))  # ModuleList items are typed as Module

    def _attention_backends(self) -> AbstractContextManager[None]:
        if self.sdpa_backends is None:
            return nullcontext()
        return sdpa_kernel(self.sdpa_backends, set_priority=True)
