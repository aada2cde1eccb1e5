"""pipeline/model/bundle.py: model folders in the official formats load and render like their weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.generate import ClipGenerator
from pipeline.model.bundle import (
    DIT_FILE,
    TEXT_ENCODER_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    WEIGHTS_FILES,
    ModelBundle,
    find_weights,
    weights_digest,
)
from pipeline.model.checkpoint import CheckpointError
from pipeline.model.text_encoder import tiny_tokenizer
from pipeline.spec.cache import DeepForcingParams
from pipeline.spec.model import TINY
from pipeline.storage.fetch import model_folder


@pytest.fixture(scope="module")
def source() -> ModelBundle:
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=11)
    with torch.no_grad():  # the official UMT5 file is bf16: keep only values it can hold
        for param in bundle.text_encoder.parameters():
            param.copy_(param.bfloat16().float())
    return bundle


def write_official_folder(bundle: ModelBundle, folder: Path) -> Path:
    """The released layouts: nested `generator_ema` with `model.` prefix, a VAE file that also holds
    the encoder, a bf16 UMT5 state dict, and the tokenizer folder."""
    folder.mkdir(parents=True, exist_ok=True)
    dit = {f"model.{k}": v.clone() for k, v in bundle.dit.state_dict().items()}
    torch.save(
        {"generator": {k: torch.zeros_like(v) for k, v in dit.items()}, "generator_ema": dit},
        folder / DIT_FILE,
    )
    vae = dict(bundle.vae.state_dict())
    vae |= {"encoder.conv1.weight": torch.randn(4, 3, 3, 3, 3), "conv1.weight": torch.randn(32, 32, 1, 1, 1)}
    torch.save(vae, folder / VAE_FILE)
    torch.save(
        {k: v.bfloat16() for k, v in bundle.text_encoder.encoder.state_dict().items()},
        folder / TEXT_ENCODER_FILE,
    )
    (folder / TOKENIZER_DIR).mkdir(parents=True)
    tiny_tokenizer(TINY.dit.text_len).save(str(folder / TOKENIZER_DIR / "tokenizer.json"))
    return folder


def render(bundle: ModelBundle) -> np.ndarray:
    return np.concatenate(
        list(ClipGenerator(bundle).stream("a kite over the dunes", 3, 9, DeepForcingParams()))
    )


@pytest.mark.slow
def test_local_model_folder_renders_exactly_like_the_weights_it_was_written_from(source, tmp_path):
    folder = write_official_folder(source, tmp_path / "model")
    loaded = ModelBundle.load(TINY, model_folder(str(folder)), "cpu", torch.float32)
    np.testing.assert_array_equal(render(loaded), render(source))


def test_s3_model_folder_is_downloaded_once_and_renders_the_same(source, tmp_path, s3_moto):
    folder = write_official_folder(source, tmp_path / "model")
    bucket, client = s3_moto.make_bucket("models"), s3_moto.client()
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"self-forcing/{path.relative_to(folder)}")
    uri = f"s3://{bucket}/self-forcing"
    local = model_folder(uri, s3_moto.settings(), cache_root=tmp_path / "cache")
    assert model_folder(uri, s3_moto.settings(), cache_root=tmp_path / "cache") == local
    loaded = ModelBundle.load(TINY, local, "cpu", torch.float32)
    np.testing.assert_array_equal(render(loaded), render(source))


def test_missing_text_encoder_file_names_both_accepted_names(source, tmp_path):
    folder = write_official_folder(source, tmp_path / "model")
    (folder / TEXT_ENCODER_FILE).unlink()
    with pytest.raises(CheckpointError) as err:
        ModelBundle.load(TINY, folder, "cpu", torch.float32)
    assert str(err.value) == (
        f"model folder {folder} has neither models_t5_umt5-xxl-enc-bf16.pth "
        "nor models_t5_umt5-xxl-enc-bf16.safetensors"
    )


def test_missing_local_model_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: "):
        model_folder(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_a_bundle_for_the_cpu_is_float32_with_the_text_encoder_beside_it_and_knows_its_weights(
    source, tmp_path
):
    folder = write_official_folder(source, tmp_path / "model")
    loaded = ModelBundle.for_device(TINY, folder, torch.device("cpu"))
    assert (loaded.dtype, loaded.text_placement, loaded.device_name) == (torch.float32, "device", None)
    assert loaded.weights_sha256 == weights_digest(folder)
    np.testing.assert_array_equal(render(loaded), render(source))
    random = ModelBundle.for_device(TINY, None, torch.device("cpu"), seed=11)
    assert random.weights_sha256 is None
    np.testing.assert_array_equal(
        render(random), render(ModelBundle.random(TINY, "cpu", torch.float32, seed=11))
    )


def test_the_weights_digest_is_cached_beside_each_file_and_follows_a_changed_file(source, tmp_path):
    folder = write_official_folder(source, tmp_path / "model")
    first = weights_digest(folder)
    assert sorted(p.name for p in folder.glob(".*.sha256")) == sorted(
        f".{name}.sha256" for name in WEIGHTS_FILES
    )
    assert weights_digest(folder) == first
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, folder / VAE_FILE)  # another file, same name
    assert weights_digest(folder) != first


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(
        CheckpointError, match=r"has neither self_forcing_dmd\.pt nor self_forcing_dmd\.safetensors"
    ):
        find_weights(tmp_path, DIT_FILE)


def test_text_encoder_placements_give_the_same_embedding():
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=2)
    resident = bundle.encode_prompt("a paper boat")
    for placement in ("cpu", "offload", "device"):
        bundle.place_text_encoder(placement)
        torch.testing.assert_close(bundle.encode_prompt("a paper boat"), resident, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"placement 'gpu'; choose one of \['device', 'cpu', 'offload'\]"):
        bundle.place_text_encoder("gpu")
