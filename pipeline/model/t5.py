"""The UMT5-XXL encoder that turns prompt tokens into the DiT's text context, with the official names.

Parameter names and shapes match `models_t5_umt5-xxl-enc-bf16.pth` (242 tensors; docs/model.md §6.2), so the
released file loads strictly through `pipeline.model.checkpoint`. Read top-down: config, relative
position buckets, norm, attention, feed-forward, block, encoder.

Numerics follow the Wan release (docs/model.md §6.3): pre-norm blocks with a T5 layer
norm (mean of squares in float32, no mean subtraction), attention logits q·kᵀ with no 1/sqrt(d)
scaling plus a relative-position bias that every layer owns (shared_pos=False), masked keys set to the
dtype's minimum, and a gated-GELU(tanh) feed-forward. No linear layer has a bias. Upstream dropout
(p=0.1) only acts in training, so no dropout modules are built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spec.model import T5Config

# ---------------------------------------------------------------------------------------------------
# Relative positions


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5 bucket of `relative` = key position - query position (docs/model.md §6.3).

    Keys after the query (relative > 0) use the upper half of the buckets. Within a half, distances
    below a quarter of num_buckets (8) get a bucket each, longer ones a logarithmic bucket up to
    max_distance, beyond which they share the last one. The log is taken in float32 as upstream, so
    the boundaries fall on the same distances as in the released model.
    """
    half = num_buckets // 2  # 16 buckets per direction
    exact = half // 2  # distances 0..7 map to themselves
    offset = (relative > 0).long() * half
    distance = relative.abs()
    # clamp keeps log() finite for the short distances that the `where` below discards anyway
    ratio = distance.clamp(min=exact).float() / exact
    log_bucket = exact + (torch.log(ratio) / math.log(max_distance / exact) * (half - exact)).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return offset + torch.where(distance < exact, distance, log_bucket)


class RelativePositionBias(nn.Module):
    """One learned scalar per (bucket, head), spread over the (query, key) grid."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.embedding = nn.Embedding(config.num_buckets, config.num_heads)

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        bias = self.embedding(buckets)  # (L, L, heads): query rows, key columns
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, L, L)


# ---------------------------------------------------------------------------------------------------
# Norm, attention, feed-forward


class T5LayerNorm(nn.Module):
    """x / rms(x) * weight: no mean subtraction, no bias, the mean of squares in at least float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # upstream takes x.float(); promoting instead keeps float64 reference tests exact
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        x = x * torch.rsqrt(wide.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # promotes to float32
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class Attention(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.num_heads = config.num_heads
        self.q = nn.Linear(config.dim, config.dim_attn, bias=False)
        self.k = nn.Linear(config.dim, config.dim_attn, bias=False)
        self.v = nn.Linear(config.dim, config.dim_attn, bias=False)
        self.o = nn.Linear(config.dim_attn, config.dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim); bias (B, heads, L, L) additive, with masked keys at the dtype's minimum."""
        B, L, _ = x.shape  # batch, tokens
        nh = self.num_heads
        q = self.q(x).view(B, L, nh, -1).transpose(1, 2)  # (B, nh, L, hd)
        k = self.k(x).view(B, L, nh, -1).transpose(1, 2)  # (B, nh, L, hd)
        v = self.v(x).view(B, L, nh, -1).transpose(1, 2)  # (B, nh, L, hd)
        # T5 folds the 1/sqrt(hd) into its initialisation, so logits are plain q·kᵀ (scale=1).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # (B, nh, L, hd)
        return self.o(y.transpose(1, 2).reshape(B, L, -1))  # (B, L, nh*hd) -> (B, L, dim)


class GatedFeedForward(nn.Module):
    """fc2(fc1(x) * gelu_tanh(gate(x))); `gate` is a Sequential so its weight is named `gate.0`."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(config.dim, config.dim_ffn, bias=False), nn.GELU(approximate="tanh")
        )
        self.fc1 = nn.Linear(config.dim, config.dim_ffn, bias=False)
        self.fc2 = nn.Linear(config.dim_ffn, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


# ---------------------------------------------------------------------------------------------------
# Block and encoder


class EncoderBlock(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        # 1. Self-attention (pre-norm), with this layer's own position bias
        self.norm1 = T5LayerNorm(config.dim, config.eps)
        self.attn = Attention(config)
        # 2. Feed-forward (pre-norm)
        self.norm2 = T5LayerNorm(config.dim, config.eps)
        self.ffn = GatedFeedForward(config)
        self.pos_embedding = RelativePositionBias(config)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, masked_keys: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim); buckets (L, L) long; masked_keys (B, 1, 1, L) bool, True where mask is 0."""
        # 1. Self-attention: the mask replaces the bias (does not add to it), as upstream
        bias = self.pos_embedding(buckets).to(x.dtype)  # (1, heads, L, L)
        bias = bias.masked_fill(masked_keys, torch.finfo(x.dtype).min)  # (B, heads, L, L)
        x = x + self.attn(self.norm1(x), bias)
        # 2. Feed-forward
        return x + self.ffn(self.norm2(x))


class UMT5Encoder(nn.Module):
    """Token ids and attention mask -> per-token features (B, L, dim), after the final norm."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList([EncoderBlock(config) for _ in range(config.num_layers)])
        self.norm = T5LayerNorm(config.dim, config.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, L) long; mask (B, L), nonzero for real tokens. Padded positions get features too."""
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must both be (batch, tokens); "
                "pass one row of token ids and one row of 0/1 mask per prompt"
            )
        B, L = ids.shape  # batch, tokens
        c = self.config
        positions = torch.arange(L, device=ids.device)
        relative = positions[None, :] - positions[:, None]  # (L, L): key - query
        buckets = relative_position_bucket(relative, c.num_buckets, c.max_distance)  # (L, L)
        masked_keys = (mask == 0).view(B, 1, 1, L)  # (B, 1, 1, L)

        # The table may stay in host memory while the blocks are lent to the GPU (the bundle's "offload"
        # placement): 2.1 of UMT5's 11.4 GB, of which a prompt needs 512 rows. Look up where it is.
        table = self.token_embedding.weight.device
        x = self.token_embedding(ids.to(table)).to(self.device)  # (B, L, dim)
        for block in self.blocks:
            x = block(x, buckets, masked_keys)
        return self.norm(x)

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the blocks run (the embedding table may be elsewhere, see `forward`)."""
        return self.norm.weight.device
