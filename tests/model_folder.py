"""A model folder in the official release layouts, written from a bundle (random weights) for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.model.bundle import ModelBundle
from pipeline.model.text_encoder import tiny_tokenizer
from pipeline.spec.model import DIT_FILE, TEXT_ENCODER_FILE, TINY, TOKENIZER_DIR, VAE_FILE


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
