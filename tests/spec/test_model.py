"""pipeline/spec/model.py: the presets' sizes and the clip lengths they imply."""

import dataclasses

import pytest

from pipeline.spec.model import PRESETS, SELF_FORCING_1_3B, TINY, get_preset


def test_the_released_model_has_1560_tokens_a_frame_4680_a_chunk_and_957_frames_a_minute():
    preset = SELF_FORCING_1_3B
    assert (preset.height, preset.width, preset.fps) == (480, 832, 16)
    assert (preset.latent_height, preset.latent_width) == (60, 104)
    assert preset.tokens_per_frame == 1560
    assert preset.cache_geometry().chunk_tokens == 4680
    assert preset.latent_frames_for_seconds(60) == 240 and preset.pixel_frames(240) == 957
    assert (preset.dit.num_heads, preset.dit.head_dim, preset.dit.num_layers) == (12, 128, 30)
    assert (preset.dit.text_len, preset.dit.text_dim, preset.text_encoder.dim) == (512, 4096, 4096)


def test_tiny_runs_the_same_code_at_small_sizes_without_weights():
    assert TINY.tokens_per_frame == (64 // 8 // 2) * (112 // 8 // 2) == 28
    assert not TINY.needs_weights and SELF_FORCING_1_3B.needs_weights
    assert get_preset("tiny") is TINY and sorted(PRESETS) == ["self-forcing-1.3b", "tiny"]


@pytest.mark.parametrize(
    ("seconds", "latent_frames", "pixel_frames"),
    [(60, 240, 957), (30, 120, 477), (10, 42, 165), (2, 9, 33), (1.5, 6, 21), (1, 6, 21), (0.1, 3, 9)],
)
def test_seconds_become_the_smallest_whole_chunk_count_covering_them(seconds, latent_frames, pixel_frames):
    assert TINY.latent_frames_for_seconds(seconds) == latent_frames
    assert TINY.pixel_frames(latent_frames) == pixel_frames


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (0, "seconds=0 must be > 0, e.g. 60"),
        (float("nan"), "seconds=nan must be a positive number, e.g. 60"),
        ("60", "seconds='60' must be a positive number, e.g. 60"),
        (True, "seconds=True must be a positive number, e.g. 60"),
    ],
)
def test_a_length_in_seconds_that_is_no_positive_number_is_rejected(seconds, message):
    with pytest.raises(ValueError) as err:
        TINY.latent_frames_for_seconds(seconds)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (22, "num_latent_frames=22 must be a positive multiple of chunk_frames=3; use 21 or 24"),
        (0, "num_latent_frames=0 must be a positive multiple of chunk_frames=3; use 3 or 6"),
    ],
)
def test_latent_frame_counts_that_are_not_whole_chunks_are_rejected(frames, message):
    with pytest.raises(ValueError) as err:
        TINY.check_latent_frames(frames)
    assert str(err.value) == message


def test_a_preset_whose_size_the_vae_and_patches_cannot_tile_is_rejected():
    with pytest.raises(ValueError, match=r"preset odd: 480x830 must be a multiple of 16x16"):
        dataclasses.replace(SELF_FORCING_1_3B, name="odd", width=830)
