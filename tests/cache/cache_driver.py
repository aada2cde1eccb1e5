"""Drive a KV cache policy the way pipeline/generate.py does, with synthetic q/k/v instead of a DiT.

`SyntheticModel` makes, for each layer, latent frame and pass, deterministic raw q/k and rotates them
with the real 3D RoPE at the position the cache returned, as `SelfAttention.forward` does. Values
carry the identity of each key (frame, token, pass, layer), so a test can tell which keys a policy
returned, and with `probe=True` one temporal channel pair of every raw key is 1 + 0i, so the position
a key sits at can be read back from its phase.

A storyboard's prompt switch runs the cache's re-cache pass (`recache`): by default with the raw q/k of
the clean pass, so a correct re-cache reproduces the cached keys exactly, and with values tagged
RECACHE, so a test can tell which keys it rewrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pipeline.cache import make_cache
from pipeline.cache.base import ForwardKind, KVCache
from pipeline.cache.recache import Recache, RecacheGroup
from pipeline.model.rope import RotaryEmbedding3D, apply_rotary, rope_frequencies
from pipeline.spec.cache import CacheGeometry, policy_params

# Every policy the renderer offers, with the parameters that select its variants (test ids beside them)
POLICY_CONFIGS = [
    ("fifo", {}),
    ("sink", {}),
    ("rolling-sink", {}),
    ("deep-sink", {}),
    ("deep-forcing", {}),
    ("deep-forcing", {"layout": "paper"}),
]
POLICY_IDS = ["fifo", "sink", "rolling-sink", "deep-sink", "deep-forcing", "deep-forcing-paper"]

# 2 layers, 2 heads of 16 channels (8 temporal = 4 complex pairs, 4 + 4 spatial), 2x2 tokens a frame
GEOMETRY = CacheGeometry(num_layers=2, num_heads=2, head_dim=16, tokens_per_frame=4, chunk_frames=3)
GRID = (2, 2)  # token rows x columns of a latent frame
FIRST_STEP, LAST_STEP, CONTEXT = 0, 3, 4  # pass ids: 0 = t=1000, 1..3 later steps, 4 = clean pass
RECACHE = 5  # the tag of values written by a re-cache pass
KINDS = {
    0: ForwardKind.FIRST_STEP,
    1: ForwardKind.STEP,
    2: ForwardKind.STEP,
    3: ForwardKind.STEP,
    4: ForwardKind.CONTEXT,
}
PROBE_PAIR = 3  # the slowest temporal pair: ω = 10000^(-6/8) = 1e-3, a period of 6283 frames


@dataclass(frozen=True)
class KeyInfo:
    frame: int  # latent frame the key was made for
    token: int  # token within that frame
    step: int  # pass id that wrote it
    layer: int


class SyntheticModel:
    """q/k/v of every forward, deterministic per (seed, layer, frame, pass); RoPE at the cache's position."""

    def __init__(
        self,
        geometry: CacheGeometry = GEOMETRY,
        grid: tuple[int, int] = GRID,
        batch: int = 1,
        dtype: torch.dtype = torch.float64,
        seed: int = 0,
        probe: bool = True,
        query_bias: torch.Tensor | None = None,  # (H, D) added to every raw query
        magnets: Callable[[int, int], bool] | None = None,  # (frame, token) -> key gets 4 * query_bias
    ):
        assert grid[0] * grid[1] == geometry.tokens_per_frame
        self.geometry, self.grid, self.batch, self.dtype = geometry, grid, batch, dtype
        self.seed, self.probe = seed, probe
        self.query_bias, self.magnets = query_bias, magnets
        self.rope = RotaryEmbedding3D(geometry.head_dim)

    def raw(self, name: str, layer: int, frame: int, step: int) -> torch.Tensor:
        """Raw (pre-RoPE) q or k of one frame: (B, H, tokens_per_frame, D), float64."""
        g = self.geometry
        code = {"q": 1, "k": 2}[name]
        gen = torch.Generator().manual_seed(
            ((self.seed * 31 + layer) * 100_003 + frame) * 16 + step * 4 + code
        )
        x = torch.randn(
            self.batch, g.num_heads, g.tokens_per_frame, g.head_dim, generator=gen, dtype=torch.float64
        )
        if name == "q" and self.query_bias is not None:
            x = x + self.query_bias.to(torch.float64)[None, :, None, :]
        if name == "k" and self.magnets is not None and self.query_bias is not None:
            for token in range(g.tokens_per_frame):
                if self.magnets(frame, token):
                    x[:, :, token] += 4 * self.query_bias.to(torch.float64)
        if name == "k" and self.probe:
            x[..., 2 * PROBE_PAIR] = 1.0
            x[..., 2 * PROBE_PAIR + 1] = 0.0
        return x

    def rotate(self, raw: torch.Tensor, frame_position: float) -> torch.Tensor:
        """RoPE at `frame_position` for one frame's tokens (B, H, tpf, D), as the DiT applies it."""
        freqs = self.rope(torch.tensor([frame_position], dtype=torch.float64), *self.grid)
        return apply_rotary(raw.transpose(1, 2), freqs).transpose(1, 2)

    def qkv(
        self,
        layer: int,
        chunk: int,
        step: int,
        position: int | Sequence[int],
        value_step: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chunk's q, k, v (B, H, chunk_tokens, D) for one forward, RoPE'd from `position` on (or at
        one position per frame); the values are tagged `value_step` (default: `step`)."""
        g = self.geometry
        positions = range(position, position + g.chunk_frames) if isinstance(position, int) else position
        qs, ks, vs = [], [], []
        for j in range(g.chunk_frames):
            frame = chunk * g.chunk_frames + j
            qs.append(self.rotate(self.raw("q", layer, frame, step), positions[j]))
            ks.append(self.rotate(self.raw("k", layer, frame, step), positions[j]))
            v = torch.zeros(self.batch, g.num_heads, g.tokens_per_frame, g.head_dim, dtype=torch.float64)
            v[..., 0] = frame
            v[..., 1] = torch.arange(g.tokens_per_frame, dtype=torch.float64)
            v[..., 2] = step if value_step is None else value_step
            v[..., 3] = layer
            vs.append(v)
        return tuple(torch.cat(t, dim=2).to(self.dtype) for t in (qs, ks, vs))  # type: ignore[return-value]


def build_cache(name: str, geometry: CacheGeometry, rope: RotaryEmbedding3D, **params: object) -> KVCache:
    """Policy `name` with `params`, checked as a prompt line's are, for `geometry`."""
    return make_cache(policy_params(name, params, geometry.chunk_frames), geometry, rope)


Observer = Callable[[int, int, int, torch.Tensor, torch.Tensor], None]  # chunk, step, layer, keys, values


RecacheObserver = Callable[[RecacheGroup, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def recache(
    cache: KVCache,
    model: SyntheticModel,
    mode: str,
    raw_step: int = CONTEXT,
    observe: RecacheObserver | None = None,  # group, layer, keys, values, mask
) -> Recache:
    """A prompt switch's re-cache pass, group by group as the generator runs it, with synthetic q/k."""
    session = cache.recache_session(mode)
    for group in session.groups:
        session.latents(group)  # the cache must still hold every chunk the pass runs
        session.begin(group)
        for layer in range(model.geometry.num_layers):
            q, k, v = model.qkv(layer, group.chunk, raw_step, group.positions, value_step=RECACHE)
            keys, values = session.keys_values(layer, q, k, v)
            if observe is not None:
                observe(group, layer, keys, values, session.key_mask(layer))
    session.finish()
    return session


def stream(
    cache: KVCache,
    model: SyntheticModel,
    num_frames: int,
    observe: Observer | None = None,
    switches: dict[int, str] | None = None,  # chunk -> recache mode of a prompt switch before it
    observe_recache: RecacheObserver | None = None,
) -> None:
    """One clip: per chunk the first step, 3 later steps, then the clean pass (skipped after the last).

    With `switches`, the clip keeps its latents as the generator does (a tensor naming each chunk) and
    runs a re-cache pass before each switch chunk.
    """
    g = model.geometry
    num_chunks = num_frames // g.chunk_frames
    switches = switches or {}
    keep_until = max((c for c, mode in switches.items() if mode != "none"), default=0)
    cache.reset()
    for chunk in range(num_chunks):
        if chunk in switches and switches[chunk] != "none":
            recache(cache, model, switches[chunk], observe=observe_recache)
            if chunk == keep_until:
                cache.drop_latents()
        steps = [0, 1, 2, 3] + ([CONTEXT] if chunk + 1 < num_chunks else [])
        for step in steps:
            position = cache.begin_forward(chunk, KINDS[step])
            for layer in range(g.num_layers):
                q, k, v = model.qkv(layer, chunk, step, position)
                keys, values = cache.keys_values(layer, q, k, v)
                if observe is not None:
                    observe(chunk, step, layer, keys, values)
        if chunk < keep_until:
            cache.keep_latents(torch.full((1,), float(chunk)))


def key_info(values: torch.Tensor, batch: int = 0) -> list[KeyInfo]:
    """Identity of each returned key, from the values the synthetic model wrote (head 0)."""
    v = values[batch, 0, :, :4].to(torch.float64).round().long().tolist()
    return [KeyInfo(frame, token, step, layer) for frame, token, step, layer in v]


def key_positions(keys: torch.Tensor, rope: RotaryEmbedding3D, batch: int = 0) -> list[float]:
    """Temporal position each returned key sits at, read from the probe pair's phase (head 0)."""
    omega = rope_frequencies(rope.split.temporal, rope.theta)[PROBE_PAIR].item()
    pair = keys[batch, 0, :, 2 * PROBE_PAIR : 2 * PROBE_PAIR + 2].to(torch.float64)
    return (torch.atan2(pair[:, 1], pair[:, 0]) / omega).tolist()


def frame_positions(keys: torch.Tensor, values: torch.Tensor, rope: RotaryEmbedding3D) -> dict[int, int]:
    """{source frame: integer position} for whole frames (all tokens of a frame at one position)."""
    found: dict[int, set[int]] = {}
    for info, pos in zip(key_info(values), key_positions(keys, rope), strict=True):
        found.setdefault(info.frame, set()).add(round(pos))
    assert all(len(p) == 1 for p in found.values()), f"a frame's tokens sit at several positions: {found}"
    return {frame: p.pop() for frame, p in sorted(found.items())}
