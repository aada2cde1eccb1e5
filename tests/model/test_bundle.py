"""pipeline/model/bundle.py: model folders in the official formats load and render like their weights."""

import numpy as np
import pytest
import torch
from model_folder import write_official_folder

from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle, find_weights, folder_problems, weights_digest
from pipeline.model.checkpoint import CheckpointError
from pipeline.spec.cache import WINDOW_FRAMES, DeepForcingParams
from pipeline.spec.model import DIT_FILE, TEXT_ENCODER_FILE, TINY, TOKENIZER_DIR, VAE_FILE, WEIGHTS_FILES
from pipeline.storage.fetch import model_folder


@pytest.fixture(scope="module")
def source() -> ModelBundle:
    bundle = ModelBundle.random(TINY, "cpu", torch.float32, seed=11)
    with torch.no_grad():  # the official UMT5 file is bf16: keep only values it can hold
        for param in bundle.text_encoder.parameters():
            param.copy_(param.bfloat16().float())
    return bundle


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


def test_a_folder_that_loads_has_no_problems_and_each_broken_part_is_named(source, tmp_path):
    folder = write_official_folder(source, tmp_path / "model")
    assert folder_problems(TINY, folder) == []

    (folder / TEXT_ENCODER_FILE).unlink()
    (folder / TOKENIZER_DIR / "tokenizer.json").unlink()
    state = torch.load(folder / DIT_FILE, weights_only=True)
    state["generator_ema"]["model.head.head.weight"] = torch.zeros(3, 3)
    torch.save(state, folder / DIT_FILE)

    problems = folder_problems(TINY, folder)
    assert problems[0] == (
        f"{folder / DIT_FILE} does not match CausalWanDiT (69 tensors expected):\n"
        "  1 wrong shape: head.head.weight: file (3, 3) vs model (64, 48)"
    )
    assert problems[1:] == [
        f"model folder {folder} has neither {TEXT_ENCODER_FILE} nor models_t5_umt5-xxl-enc-bf16.safetensors",
        f"{folder / TOKENIZER_DIR} has no tokenizer.json; expected the google/umt5-xxl tokenizer folder "
        "holding tokenizer.json (in the Wan2.1-T2V-1.3B model folder it is google/umt5-xxl/)",
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_offloaded_text_encoder_moves_onto_a_gpu_with_room_and_encodes_the_same():
    bundle = ModelBundle.random(TINY, "cuda", torch.bfloat16, seed=2, text_placement="offload")
    offloaded = bundle.encode_prompt("a paper boat")
    generator = ClipGenerator(bundle)
    assert generator.keep_text_encoder_resident(WINDOW_FRAMES, 2)
    assert bundle.text_placement == "device"
    assert {p.device.type for p in bundle.text_encoder.parameters()} == {"cuda"}
    torch.testing.assert_close(bundle.encode_prompt("a paper boat"), offloaded, rtol=0, atol=0)
    assert not generator.keep_text_encoder_resident(WINDOW_FRAMES, 2)  # resident already
