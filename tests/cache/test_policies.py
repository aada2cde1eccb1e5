"""What every policy owes the generator: registry, per-clip reset, bounded memory, clean context keys."""

import json

import pytest
import torch
from cache_driver import (
    CONTEXT,
    GEOMETRY,
    POLICY_CONFIGS,
    POLICY_IDS,
    SyntheticModel,
    build_cache,
    key_info,
    stream,
)

from pipeline.cache import POLICIES, make_cache
from pipeline.cache.base import FrameBuffers, KVCache
from pipeline.spec.cache import POLICY_PARAMS, CacheGeometry


def test_every_policy_with_parameters_has_a_cache_and_every_cache_its_parameters():
    assert (
        sorted(POLICIES)
        == sorted(POLICY_PARAMS)
        == ["deep-forcing", "deep-sink", "fifo", "rolling-sink", "sink"]
    )
    for name, params in POLICY_PARAMS.items():
        assert type(make_cache(params(), GEOMETRY, SyntheticModel().rope)) is POLICIES[name]


def record(cache: KVCache, model: SyntheticModel, num_frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    stream(cache, model, num_frames, lambda c, s, lay, k, v: out.append((k.clone(), v.clone())))
    return out


@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_second_clip_with_the_same_cache_equals_a_fresh_cache(name, params):
    first, second = SyntheticModel(batch=2, seed=1), SyntheticModel(batch=2, seed=2)
    reused = build_cache(name, GEOMETRY, first.rope, **params)
    record(reused, first, 60)
    again = record(reused, second, 45)
    fresh_cache = build_cache(name, GEOMETRY, second.rope, **params)
    fresh = record(fresh_cache, second, 45)
    assert len(again) == len(fresh)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(again, fresh, strict=True))
    assert reused.telemetry() == fresh_cache.telemetry()


@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_context_keys_come_from_clean_passes_and_the_chunk_from_the_current_pass(name, params):
    model = SyntheticModel(probe=False)

    def observe(chunk, step, layer, keys, values):
        infos = key_info(values)
        f = 3 * chunk
        assert {i.step for i in infos if i.frame < f} <= {CONTEXT}
        assert sorted({(i.frame, i.token) for i in infos if i.frame >= f}) == [
            (f + j, t) for j in range(3) for t in range(GEOMETRY.tokens_per_frame)
        ]
        assert {i.step for i in infos if i.frame >= f} == {step}
        assert {i.layer for i in infos} == {layer}
        assert len(infos) <= 21 * GEOMETRY.tokens_per_frame

    stream(build_cache(name, GEOMETRY, model.rope, **params), model, 60, observe)


def state_size(obj: object, seen: set[int] | None = None) -> tuple[int, int]:
    """(bytes of tensors, items in containers) reachable from a policy object's attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0, 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes(), 0
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, list | tuple | set):
        items = list(obj)
    elif type(obj).__module__.startswith("pipeline.cache"):
        items = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    else:
        return 0, 0
    size = (0, len(items) if not type(obj).__module__.startswith("pipeline.cache") else 0)
    for item in items:
        b, n = state_size(item, seen)
        size = (size[0] + b, size[1] + n)
    return size


class FixedModel(SyntheticModel):
    """The same random q/k/v for every forward: cheap enough for a 10-minute clip."""

    def __init__(self, geometry: CacheGeometry):
        super().__init__(geometry, grid=(1, geometry.tokens_per_frame))
        g = geometry
        gen = torch.Generator().manual_seed(0)
        self.tensors = [
            torch.randn(1, g.num_heads, g.chunk_tokens, g.head_dim, generator=gen) for _ in range(3)
        ]

    def qkv(self, layer, chunk, step, position, value_step=None):
        return tuple(self.tensors)


# Chunks in the same phase of every cycle (compress every 2nd chunk, a 7-slot ring for deep-sink's tail):
# one minute in, ~5 minutes in, the end of a 10-minute clip.
SAMPLED = (30, 100, 786)
TINY_GEOMETRY = CacheGeometry(num_layers=2, num_heads=1, head_dim=16, tokens_per_frame=2, chunk_frames=3)


@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_memory_and_telemetry_stay_the_same_size_from_300_to_2400_frames(name, params):
    model = FixedModel(TINY_GEOMETRY)
    cache = build_cache(name, TINY_GEOMETRY, model.rope, **params)
    sizes = {}
    telemetry_shape = {}

    def observe(chunk, step, layer, keys, values):
        if step == CONTEXT and layer == 1 and chunk in SAMPLED:
            sizes[chunk] = state_size(cache)
            t = cache.telemetry()
            json.dumps(t)
            telemetry_shape[chunk] = {k: len(v) if isinstance(v, list) else type(v) for k, v in t.items()}
        assert keys.shape[2] <= 21 * TINY_GEOMETRY.tokens_per_frame

    stream(cache, model, 2400, observe)
    assert sizes[30] == sizes[100] == sizes[786]
    assert telemetry_shape[100] == telemetry_shape[786]


@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_a_cache_refuses_a_window_its_geometry_cannot_take(name, params):
    with pytest.raises(ValueError, match="window_frames=2 is out of range: valid is >= "):
        make_cache(POLICY_PARAMS[name](**params, window_frames=2), GEOMETRY, SyntheticModel().rope)  # type: ignore[call-arg]


@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_keys_and_values_lie_token_by_token_as_flash_attention_reads_them(name, params):
    """(B, H, L, D) views of (B, L, H, D) memory: a chunk's write is one run of memory per clip, not a
    transposing copy, and FlashAttention reads the buffers in its own layout."""
    g = GEOMETRY
    model = SyntheticModel(batch=2)
    cache = build_cache(name, g, model.rope, **params)
    seen = []

    def observe(chunk, step, layer, keys, values):
        seen.append(chunk)
        for tensor in (keys, values):
            assert tensor.stride()[1:] == (g.head_dim, g.num_heads * g.head_dim, 1)

    stream(cache, model, 45, observe)
    assert seen


def test_a_write_puts_each_clips_run_in_place_and_nothing_else():
    g = GEOMETRY
    buffers = FrameBuffers(g, capacity_frames=5)
    buffers.ensure(torch.empty(2, 0))
    for buffer in (*buffers.keys, *buffers.values):
        buffer.fill_(-1.0)
    k, v = (
        torch.randn(2, 7, g.num_heads, g.head_dim).transpose(1, 2) for _ in range(2)
    )  # as the DiT makes them
    buffers.write(1, 5, k, v)
    for written, run in ((buffers.keys[1], k), (buffers.values[1], v)):
        assert torch.equal(written[:, :, 5:12], run)
        assert (written[:, :, :5] == -1).all() and (written[:, :, 12:] == -1).all()
    assert all((buffer == -1).all() for buffer in (buffers.keys[0], buffers.values[0]))
