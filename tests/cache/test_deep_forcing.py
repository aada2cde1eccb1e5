"""`deep-forcing`: schedule, top-C selection, recent queries and both layouts (docs/cache_policies.md §6).

docs/cache_policies.md §6 describes the authors' release; §6.8 is its worked schedule for
S=10, N=16, R=4 over 240 latent frames, written out below as the expected table.
"""

from collections import defaultdict
from typing import ClassVar

import pytest
import torch
from cache_driver import (
    CONTEXT,
    FIRST_STEP,
    GEOMETRY,
    SyntheticModel,
    build_cache,
    key_info,
    key_positions,
    stream,
)

from pipeline.cache.deep_forcing import DeepForcingCache
from pipeline.spec.cache import CacheGeometry

TPF = GEOMETRY.tokens_per_frame


def observe_first_steps(cache, model, num_frames, layer=0, batch=0):
    """Per chunk, at the first step: [(KeyInfo, position)] of the returned keys."""
    rows = {}

    def observe(chunk, step, lay, keys, values):
        if step == FIRST_STEP and lay == layer:
            rows[chunk] = list(
                zip(key_info(values, batch), key_positions(keys, model.rope, batch), strict=True)
            )

    stream(cache, model, num_frames, observe)
    return rows


def sink_span(row, sink_frames=10):
    positions = [round(p) for info, p in row if info.frame < sink_frames]
    return min(positions), max(positions) + 1


# docs/cache_policies.md §6.8: (event, K_aug frames, candidate frames, sink target [lo, hi), Δ), chunks 0..9
FACTS_TABLE = {
    **{c: ("append", None, None, (0, min(10, 3 * c + 3)), None) for c in range(7)},  # sink fills up
    7: ("compress", 24, 10, (5, 15), 5),
    8: ("append", None, None, (5, 15), None),
    9: ("compress", 22, 8, (11, 21), 6),
}


def expected_row(chunk):
    """The table's "every 2nd chunk" rows: compress at odd chunks from 7, sink at [f-16, f-6), Δ +6."""
    if chunk in FACTS_TABLE:
        return FACTS_TABLE[chunk]
    f = 3 * chunk
    if chunk % 2:
        return ("compress", 22, 8, (f - 16, f - 6), 6)
    return ("append", None, None, (f - 19, f - 9), None)  # the sink of the previous chunk's compression


def test_deep_forcing_compresses_every_second_chunk_from_chunk_7():
    model = SyntheticModel(
        CacheGeometry(num_layers=1, num_heads=2, head_dim=16, tokens_per_frame=4, chunk_frames=3)
    )
    cache = build_cache("deep-forcing", model.geometry, model.rope)
    lengths, context_lengths, rows = {}, {}, {}

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP:
            lengths[chunk] = keys.shape[2] // TPF
            rows[chunk] = list(zip(key_info(values), key_positions(keys, model.rope), strict=True))
        if step == CONTEXT:
            context_lengths[chunk] = keys.shape[2] // TPF

    stream(cache, model, 240, observe)
    compressions, previous_sink = [], (0, 10)
    for chunk in range(80):
        event, k_aug, candidates, sink, delta = expected_row(chunk)
        f = 3 * chunk
        assert sink_span(rows[chunk]) == sink, chunk
        if event == "compress":
            compressions.append(chunk)
            assert context_lengths[chunk - 1] + 3 == k_aug  # K_aug = cached context + the new chunk
            assert k_aug - 10 - 4 == candidates
            assert sink[0] - previous_sink[0] == delta
            assert lengths[chunk] == 16
        else:
            assert lengths[chunk] == (3 * (chunk + 1) if chunk < 7 else 19)
        previous_sink = sink
        # recent keys keep their true positions; so does every key before the first compression
        assert all(round(p) == info.frame for info, p in rows[chunk] if info.frame >= f - 1 or chunk < 7)
    assert compressions == list(range(7, 80, 2))
    assert len(compressions) == 37
    assert sink_span(rows[79]) == (221, 231)  # the table's last row
    assert cache.telemetry()["compressions"] == 37 and cache.telemetry()["sink_shifts"] == 37


def test_top_c_comes_from_frames_10_to_19_first_then_from_the_old_block_and_frames_f_minus_7_to_f_minus_1():
    model = SyntheticModel()
    rows = observe_first_steps(build_cache("deep-forcing", GEOMETRY, model.rope), model, 60)
    block: set[tuple[int, int]] = set()
    for chunk in range(7, 20, 2):
        f = 3 * chunk
        top = [(info.frame, info.token) for info, _ in rows[chunk] if 10 <= info.frame < f - 1]
        assert len(top) == 2 * TPF
        allowed = (
            set(range(10, 20)) if chunk == 7 else {frame for frame, _ in block} | set(range(f - 7, f - 1))
        )
        assert {frame for frame, _ in top} <= allowed
        assert top == sorted(top)  # temporal order
        block = set(top)


# -- selection against a brute-force re-enactment of the release -----------------------------------


def brute_force_selections(model, num_frames, sink=10, budget=16, recent=4, window=21, max_reuse=7):
    """Top-C of every compression, {(chunk, layer, batch): [(frame, token)]}, with explicit loops in
    float64: the release's control flow at token level (K_aug, sink/recent/candidates, score by the
    summed recent queries over all heads, eligibility, top-C, temporal order, reuse counts)."""
    g = model.geometry
    tpf, chunk_frames = g.tokens_per_frame, g.chunk_frames
    top_c = (budget - sink - recent) * tpf
    m = recent - chunk_frames
    rotated = {}

    def vector(name, layer, frame, step, batch, token):
        key = (name, layer, frame, step)
        if key not in rotated:
            rotated[key] = model.rotate(model.raw(name, layer, frame, step), frame)  # true positions
        return rotated[key][batch, :, token].to(torch.float64)  # (H, D)

    selections = {}
    for layer in range(g.num_layers):
        for batch in range(model.batch):
            context: list[tuple[int, int]] = []  # (frame, token) in cache order, before the chunk
            picks: defaultdict[tuple[int, int], int] = defaultdict(int)
            for chunk in range(num_frames // chunk_frames):
                f = chunk * chunk_frames
                new = [(f + j, t) for j in range(chunk_frames) for t in range(tpf)]
                if len(context) // tpf + chunk_frames > window:
                    augmented = context + new
                    sink_tokens = augmented[: sink * tpf]
                    candidates = augmented[sink * tpf : len(augmented) - recent * tpf]
                    recent_context = augmented[len(augmented) - recent * tpf : len(augmented) - len(new)]
                    query = torch.zeros(g.num_heads, g.head_dim, dtype=torch.float64)
                    for frame in range(f - m, f):  # clean-pass queries of the previous frames
                        for t in range(tpf):
                            query += vector("q", layer, frame, CONTEXT, batch, t)
                    for frame, t in new:  # this chunk's t=1000 queries
                        query += vector("q", layer, frame, FIRST_STEP, batch, t)
                    scores = {}
                    for frame, t in candidates:
                        k = vector("k", layer, frame, CONTEXT, batch, t)
                        scores[frame, t] = sum(
                            float(query[h, d]) * float(k[h, d])
                            for h in range(g.num_heads)
                            for d in range(g.head_dim)
                        )
                    eligible = [c for c in candidates if not max_reuse or picks[c] < max_reuse]
                    best = set(sorted(eligible, key=lambda c: scores[c], reverse=True)[:top_c])
                    chosen = [c for c in candidates if c in best]
                    for c in chosen:
                        picks[c] += 1
                    selections[chunk, layer, batch] = chosen
                    context = sink_tokens + chosen + recent_context
                context = context + new
    return selections


def observed_selections(cache, model, num_frames, recent=4):
    selections = {}

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP:
            f = 3 * chunk
            for batch in range(model.batch):
                infos = key_info(values, batch)
                selections[chunk, layer, batch] = [
                    (i.frame, i.token) for i in infos if 10 <= i.frame < f - (recent - 3)
                ]

    stream(cache, model, num_frames, observe)
    return selections


MAGNET_BIAS = torch.zeros(2, 16)
MAGNET_BIAS[:, [4, 10, 14]] = 1.0  # slow-rotating channels: aligned queries/keys stay aligned


def magnets(frame, token):
    """Keys that attract every query: picked again and again until the reuse cap drops them."""
    return frame % 3 == 0 and token == 0


@pytest.mark.parametrize(("max_reuse", "num_frames"), [(7, 150), (2, 90), (0, 90)])
def test_top_c_selection_equals_a_brute_force_reference_per_layer_and_batch_item(max_reuse, num_frames):
    model = SyntheticModel(batch=2, seed=3, query_bias=MAGNET_BIAS, magnets=magnets)
    expected = brute_force_selections(model, num_frames, max_reuse=max_reuse)
    cache = build_cache("deep-forcing", GEOMETRY, model.rope, max_reuse=max_reuse)
    observed = observed_selections(cache, model, num_frames)
    assert {key: observed[key] for key in expected} == expected
    assert len(expected) == 2 * 2 * len(range(7, num_frames // 3, 2))
    chosen_sets = {tuple(sel) for sel in expected.values()}
    assert len(chosen_sets) > len(expected) // 2  # layers and batch items really choose differently


def test_reuse_cap_drops_a_token_after_seven_picks():
    model = SyntheticModel(
        seed=4, query_bias=MAGNET_BIAS, magnets=lambda frame, token: (frame, token) == (12, 0)
    )
    held = []

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP and layer == 0 and chunk >= 7 and chunk % 2:
            held.append((12, 0) in {(i.frame, i.token) for i in key_info(values)})

    stream(build_cache("deep-forcing", GEOMETRY, model.rope), model, 90, observe)
    assert held[:8] == [True] * 7 + [False]  # picked at 7 compressions, ineligible at the 8th


# -- which queries score ---------------------------------------------------------------------------


class PlantedQueries(SyntheticModel):
    """Queries point along one direction per source; one candidate key ("magnet") per direction.

    Used sources must make their magnet win; an unused source's magnet scores below every other key.
    """

    SOURCES: ClassVar[
        dict[str, tuple[tuple[int, int], tuple[int, int]]]
    ] = {  # name: (magnet (frame, token), direction (head, channel))
        "previous clean pass, last frame": ((11, 0), (0, 0)),
        "this chunk, first step": ((17, 3), (0, 3)),
        "previous clean pass, other frames": ((13, 1), (0, 1)),
        "previous chunk, last denoising step": ((15, 2), (0, 2)),
        "this chunk, later steps": ((18, 0), (1, 0)),
        "clean pass two chunks back": ((12, 2), (1, 1)),
    }
    USED: ClassVar[tuple[str, ...]] = ("previous clean pass, last frame", "this chunk, first step")

    def source(self, chunk, step, frame):
        if chunk == 6 and step == CONTEXT:
            return "previous clean pass, last frame" if frame == 20 else "previous clean pass, other frames"
        if chunk == 6 and step == 3:
            return "previous chunk, last denoising step"
        if chunk == 7:
            return "this chunk, first step" if step == FIRST_STEP else "this chunk, later steps"
        if chunk == 5 and step == CONTEXT:
            return "clean pass two chunks back"
        return None

    def direction(self, name):
        d = torch.zeros(self.geometry.num_heads, self.geometry.head_dim, dtype=torch.float64)
        d[self.SOURCES[name][1]] = 1.0
        return d

    def qkv(self, layer, chunk, step, position, value_step=None):
        g = self.geometry
        used = sum(self.direction(name) for name in self.USED)
        qs, ks, vs = [], [], []
        for j in range(g.chunk_frames):
            frame = chunk * g.chunk_frames + j
            name = self.source(chunk, step, frame)
            q = torch.zeros(self.batch, g.num_heads, g.tokens_per_frame, g.head_dim, dtype=torch.float64)
            if name is not None:
                q[:] = self.direction(name)[None, :, None, :]
            k = -0.01 * used.expand(self.batch, g.tokens_per_frame, -1, -1).transpose(1, 2).clone()
            for name_, ((m_frame, m_token), _) in self.SOURCES.items():
                if m_frame == frame:
                    magnet = (
                        self.direction(name_) if name_ in self.USED else self.direction(name_) - 0.1 * used
                    )
                    k[:, :, m_token] = magnet
            v = torch.zeros_like(k)
            v[..., 0], v[..., 1], v[..., 2], v[..., 3] = frame, torch.arange(g.tokens_per_frame), step, layer
            qs.append(q)
            ks.append(k)
            vs.append(v)
        return tuple(torch.cat(t, dim=2) for t in (qs, ks, vs))


def test_recent_queries_are_the_previous_clean_pass_last_frame_and_the_new_first_step():
    model = PlantedQueries(probe=False)
    kept = {}

    def observe(chunk, step, layer, keys, values):
        if chunk == 7 and layer == 0:
            kept[step] = {(i.frame, i.token) for i in key_info(values)}

    stream(build_cache("deep-forcing", GEOMETRY, model.rope), model, 27, observe)
    magnets_kept = {
        name for name, (magnet, _) in PlantedQueries.SOURCES.items() if magnet in kept[FIRST_STEP]
    }
    assert magnets_kept == set(PlantedQueries.USED)
    assert all(kept[step] == kept[FIRST_STEP] for step in (1, 2, 3, CONTEXT))  # fixed for the chunk


# -- layouts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["reference", "paper"])
def test_layout_positions_at_a_compression_and_the_chunk_after(layout):
    """reference: sink at [f-16, f-6), top-C where it was made; paper: [sink ‖ top-C ‖ recent] contiguous,
    the i-th top-C token (temporal order) at f-3 + i // tokens_per_frame. Recent keys at their own frames.
    Every key equals RoPE of its raw key at that position (not only its probe phase)."""
    model = SyntheticModel()
    positions = {}

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP and chunk in (9, 10):
            infos, at = key_info(values), [round(p) for p in key_positions(keys, model.rope)]
            for token, info in enumerate(infos):
                if info.frame < 3 * chunk:  # context keys: their clean-pass raw key
                    raw = model.raw("k", layer, info.frame, CONTEXT)  # the whole frame: RoPE is per grid cell
                    expected = model.rotate(raw, at[token])[:, :, info.token]
                    torch.testing.assert_close(keys[:, :, token], expected, rtol=1e-12, atol=1e-12)
            positions[chunk, layer] = list(zip(infos, at, strict=True))

    stream(build_cache("deep-forcing", GEOMETRY, model.rope, layout=layout), model, 33, observe)
    for chunk in (9, 10):
        f = 27  # the compression chunk's first frame; chunk 10 keeps its layout and appends
        rows = positions[chunk, 0]
        sink = [p for info, p in rows if info.frame < 10]
        top = [(info, p) for info, p in rows if 10 <= info.frame < f - 1]
        recent = [(info, p) for info, p in rows if info.frame >= f - 1]
        if layout == "reference":
            assert sink == [f - 16 + i // TPF for i in range(10 * TPF)]
            assert all(p == info.frame for info, p in top)
        else:
            assert sink == [f + 3 - 16 + i // TPF for i in range(10 * TPF)]
            assert [p for _, p in top] == [f - 3 + i // TPF for i in range(2 * TPF)]
            all_positions = sorted({p for _, p in rows})
            assert all_positions == list(range(f - 13, 3 * chunk + 3))  # contiguous up to the chunk
        assert all(p == info.frame for info, p in recent)
        assert len(rows) == (16 if chunk == 9 else 19) * TPF


def test_paper_layout_moves_the_sink_8_frames_first_then_6_per_compression():
    model = SyntheticModel()
    rows = observe_first_steps(build_cache("deep-forcing", GEOMETRY, model.rope, layout="paper"), model, 60)
    starts = [sink_span(rows[chunk])[0] for chunk in range(7, 20, 2)]
    assert starts == [8, 14, 20, 26, 32, 38, 44]  # f + 3 - 16


def test_paper_and_reference_layouts_choose_the_same_tokens_at_the_first_compression():
    model = SyntheticModel(batch=2, seed=5)
    reference = observed_selections(build_cache("deep-forcing", GEOMETRY, model.rope), model, 24)
    paper = observed_selections(build_cache("deep-forcing", GEOMETRY, model.rope, layout="paper"), model, 24)
    assert paper[7, 0, 0] == reference[7, 0, 0] and paper[7, 1, 1] == reference[7, 1, 1]


# -- telemetry and parameters ----------------------------------------------------------------------


def test_telemetry_reports_compressions_shifts_and_top_c_ages_in_a_fixed_histogram():
    model = SyntheticModel(batch=2)
    cache = build_cache("deep-forcing", GEOMETRY, model.rope)
    ages: list[int] = []

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP and chunk >= 7 and chunk % 2:
            for batch in range(2):
                ages.extend(
                    3 * chunk - i.frame for i in key_info(values, batch) if 10 <= i.frame < 3 * chunk - 1
                )

    stream(cache, model, 60, observe)
    t = cache.telemetry()
    assert t["compressions"] == 7 and t["sink_shifts"] == 7 and t["sink_start"] == 57 - 16
    assert t["topc_age_bin_frames"] == 4 and len(t["topc_age_hist"]) == 16
    assert sum(t["topc_age_hist"]) == len(ages) == 7 * 2 * 2 * 2 * TPF  # compressions x layers x batch x C
    assert t["topc_age_hist"] == [sum(1 for a in ages if min(a // 4, 15) == b) for b in range(16)]
    assert t["topc_age_mean"] == pytest.approx(sum(ages) / len(ages))
    assert t["topc_age_max"] == max(ages)


def test_telemetry_of_a_clip_without_compression_has_the_same_keys():
    model = SyntheticModel()
    cache = build_cache("deep-forcing", GEOMETRY, model.rope)
    stream(cache, model, 9)
    assert cache.telemetry() == {
        "compressions": 0,
        "sink_shifts": 0,
        "sink_start": 0,
        "topc_age_bin_frames": 4,
        "topc_age_hist": [0] * 16,
        "topc_age_mean": None,
        "topc_age_max": None,
    }


def test_top_c_is_the_budget_less_sink_and_recent_in_tokens():
    cache = DeepForcingCache(GEOMETRY, SyntheticModel().rope)
    assert (cache.topc_frames, cache.topc_tokens) == (2, 2 * TPF)
