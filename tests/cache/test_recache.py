"""pipeline/cache/recache.py: a storyboard's re-cache rewrites what each policy holds, where it holds it.

The synthetic re-cache runs the clean pass's raw q/k again (cache_driver.recache): a re-cache that puts
every key where the one it replaces was, and keeps the policy's own bookkeeping, leaves every later
forward exactly as without the switch, except for the tags of the values it rewrote.
"""

from __future__ import annotations

import pytest
import torch
from cache_driver import (
    CONTEXT,
    GEOMETRY,
    POLICY_CONFIGS,
    POLICY_IDS,
    RECACHE,
    SyntheticModel,
    build_cache,
    key_info,
    stream,
)

from pipeline.cache.base import KVCache
from pipeline.cache.deep_forcing import DeepForcingCache
from pipeline.cache.recache import RecacheGroup

NUM_FRAMES = 72
# Before the window fills (chunk 4), at a compression / first roll (7), between compressions (10),
# late in the clip (21): the prompt switches before each of these chunks.
SWITCH_CHUNKS = (4, 7, 10, 21)
_PLAIN: dict[str, dict] = {}  # each policy's clip without switches, recorded once
Forward = tuple[int, int, int]  # chunk, step, layer


def sink_frames(cache: KVCache) -> int:
    return getattr(cache, "sink_frames", 0)


def record(cache: KVCache, model: SyntheticModel, switches: dict[int, str] | None = None):
    out: dict[Forward, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(chunk: int, step: int, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        out[(chunk, step, layer)] = (keys.clone(), values.clone())

    stream(cache, model, NUM_FRAMES, observe, switches)
    return out


@pytest.mark.parametrize("mode", ["none", "window", "all"])
@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_every_policy_keeps_its_keys_bounds_and_positions_across_several_switches(name, params, mode):
    model = SyntheticModel(batch=2)
    key = f"{name}{params}"
    if key not in _PLAIN:
        _PLAIN[key] = record(build_cache(name, GEOMETRY, model.rope, **params), model)
    plain = _PLAIN[key]
    cache = build_cache(name, GEOMETRY, model.rope, **params)
    switched = record(cache, model, dict.fromkeys(SWITCH_CHUNKS, mode))

    assert switched.keys() == plain.keys()
    for forward, (keys, values) in switched.items():
        plain_keys, plain_values = plain[forward]
        # Same tokens, kept at the same positions: only the tags of re-cached values differ.
        assert keys.shape == plain_keys.shape and keys.shape[2] <= 21 * GEOMETRY.tokens_per_frame
        torch.testing.assert_close(keys, plain_keys, rtol=0, atol=1e-9)
        for batch in range(2):
            got, want = key_info(values, batch), key_info(plain_values, batch)
            assert [(i.frame, i.token, i.layer) for i in got] == [(i.frame, i.token, i.layer) for i in want]
            assert all(g.step in (w.step, RECACHE) for g, w in zip(got, want, strict=True))
    # Right after a switch every cached key is re-cached, but the sink's in `window`; none in `none`.
    for chunk in SWITCH_CHUNKS:
        for layer in range(GEOMETRY.num_layers):
            context = [i for i in key_info(switched[(chunk, 0, layer)][1]) if i.frame < 3 * chunk]
            expected = {
                (
                    i.frame,
                    RECACHE
                    if mode == "all" or (mode == "window" and i.frame >= sink_frames(cache))
                    else CONTEXT,
                )
                for i in context
            }
            assert {(i.frame, i.step) for i in context} == expected


@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_a_recache_group_sees_the_cache_of_earlier_chunks_and_its_own_frames_only(name, params):
    model = SyntheticModel(batch=2)
    cache = build_cache(name, GEOMETRY, model.rope, **params)
    groups: list[int] = []

    def observe(group: RecacheGroup, layer: int, keys, values, mask) -> None:
        groups.append(group.chunk)
        own = GEOMETRY.chunk_tokens
        assert mask.shape[1:3] == (1, 1) and mask.shape[3] == keys.shape[2]
        for batch in range(2):
            visible = mask[min(batch, mask.shape[0] - 1), 0, 0]
            infos = key_info(values, batch)
            cached, mine = infos[:-own], infos[-own:]
            assert {i.frame // 3 for i in mine} == {group.chunk} and visible[-own:].all()
            assert [bool(b) for b in visible[:-own]] == [i.frame // 3 < group.chunk for i in cached]

    stream(cache, model, NUM_FRAMES, switches={12: "all"}, observe_recache=observe)
    assert groups == sorted(groups) and groups  # chunk by chunk, in the order they were made


def test_a_deep_forcing_recache_runs_the_source_frames_of_every_layers_top_c_tokens():
    model = SyntheticModel(batch=2)
    cache = build_cache("deep-forcing", GEOMETRY, model.rope)
    assert isinstance(cache, DeepForcingCache)
    ran: set[int] = set()
    sources: set[int] = set()
    run_chunks: set[int] = set()
    oldest: set[int] = set()

    def observe(group: RecacheGroup, layer: int, keys, values, mask) -> None:
        ran.add(group.chunk)
        block = cache.block_source[layer]
        assert block is not None
        sources.update(int(frame) // 3 for frame in block.flatten().tolist())
        run_chunks.update(frame // 3 for frame in range(cache.run_start_frame, 60))  # the recent frames
        oldest.add(cache.fresh_starts[0])

    stream(cache, model, NUM_FRAMES, switches={20: "window"}, observe_recache=observe)
    assert sources and ran == sources | run_chunks  # no more, no less
    assert min(sources) >= min(oldest) // 3 and min(oldest) >= 10  # old frames, but never the sink's


@pytest.mark.slow
@pytest.mark.parametrize(
    ("params", "bounded"), [({}, True), ({"layout": "paper"}, True), ({"max_reuse": 0}, False)]
)
def test_deep_forcing_knows_the_oldest_frame_its_top_c_block_can_hold(params, bounded):
    model = SyntheticModel()
    cache = build_cache("deep-forcing", GEOMETRY, model.rope, **params)
    assert isinstance(cache, DeepForcingCache)

    def observe(chunk: int, step: int, layer: int, keys, values) -> None:
        source = cache.block_source[layer]
        if step == CONTEXT and source is not None:
            assert int(source.min()) >= cache.fresh_starts[0]

    stream(cache, model, 300, observe)
    assert cache.ages_bounded is bounded
    assert len(cache.fresh_starts) == (cache.max_reuse if bounded else 1)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "params"), POLICY_CONFIGS, ids=POLICY_IDS)
def test_latents_are_kept_for_the_chunks_the_cache_references_and_no_more(name, params):
    model = SyntheticModel()
    cache = build_cache(name, GEOMETRY, model.rope, **params)
    kept: list[int] = []

    def observe(chunk: int, step: int, layer: int, keys, values) -> None:
        if step == 0 and layer == 0:
            kept.append(len(cache.latents))

    stream(cache, model, 300, observe, switches={99: "all"})  # a late switch: latents kept 99 chunks
    assert max(kept[30:60]) == max(kept[60:99])  # bounded: as many a minute in as three minutes in
    if name != "deep-forcing":  # the window's chunks (deep-forcing's top-C sources reach ~48 frames back)
        assert max(kept) <= 21 // 3 + 1
    assert cache.latents == {}  # dropped after the last switch
