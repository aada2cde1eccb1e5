"""Tests for pipeline/model/text_encoder.py: cleaning, tokenizers, and prompts to zero-padded embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from pipeline.model.random_init import randomize_
from pipeline.model.t5 import UMT5Encoder
from pipeline.model.text_encoder import (
    TextEncoder,
    clean_prompt,
    load_tokenizer,
    tiny_tokenizer,
)
from pipeline.spec.model import SELF_FORCING_1_3B, T5Config

TEXT_LEN = SELF_FORCING_1_3B.dit.text_len  # 512, the Wan prompt length these tests pin


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    encoder = UMT5Encoder(T5Config.tiny())
    randomize_(encoder, seed=0)
    return TextEncoder(encoder.eval(), tiny_tokenizer(TEXT_LEN), TEXT_LEN)


def write_umt5_folder(root: Path) -> Path:
    """A small Unigram tokenizer saved in the official layout, with the UMT5 special ids and template."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁a", -1.0), ("▁cat", -1.5), ("▁sat", -1.5)]
    pieces += [("▁", -3.0), ("a", -3.0), ("c", -3.0), ("t", -3.0), ("s", -3.0)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.add_special_tokens(["<pad>", "</s>", "<unk>"])
    folder = root / "google" / "umt5-xxl"
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


# ---------------------------------------------------------------------------------------------------
# Cleaning


def test_clean_prompt_repairs_mojibake_entities_and_whitespace() -> None:
    messy = "  The caf\u00c3\u00a9 &amp;amp; the\tbar\n\n &lt;b&gt;  don\u00e2\u20ac\u2122t\u00a0\r\nstop  "
    assert clean_prompt(messy) == "The café & the bar <b> don't stop"


# ---------------------------------------------------------------------------------------------------
# Tokenizers


def test_tiny_tokenizer_pads_to_512_with_one_token_per_utf8_byte_and_eos() -> None:
    tokenizer = tiny_tokenizer(TEXT_LEN)
    encoding = tokenizer.encode("héllo")
    real = [3 + byte for byte in "héllo".encode()] + [1]  # é is two bytes; </s> = 1
    assert encoding.ids == real + [0] * (TEXT_LEN - len(real))
    assert sum(encoding.attention_mask) == len(real) == 7
    assert tokenizer.get_vocab_size() == 259
    assert tokenizer.decode(tokenizer.encode("héllo wörld ✓").ids) == "héllo wörld ✓"


def test_tiny_tokenizer_truncates_to_512_keeping_eos() -> None:
    encoding = tiny_tokenizer(TEXT_LEN).encode("x" * 600)
    assert len(encoding.ids) == TEXT_LEN
    assert encoding.ids[-1] == 1
    assert encoding.ids[:-1] == [3 + ord("x")] * (TEXT_LEN - 1)
    assert sum(encoding.attention_mask) == TEXT_LEN


def test_load_tokenizer_reads_official_layout_and_pads_and_truncates(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(write_umt5_folder(tmp_path), TEXT_LEN)
    short = tokenizer.encode("a cat sat")
    assert short.ids[:5] == [3, 4, 5, 1, 0]
    assert len(short.ids) == TEXT_LEN
    assert sum(short.attention_mask) == 4
    long = tokenizer.encode(" ".join(["cat"] * 600))
    assert long.ids == [4] * (TEXT_LEN - 1) + [1]


def test_load_tokenizer_honours_a_shorter_text_len(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(write_umt5_folder(tmp_path), text_len=4)
    assert tokenizer.encode("a cat sat a cat").ids == [3, 4, 5, 1]
    assert tokenizer.encode("a").ids == [3, 1, 0, 0]


def test_load_tokenizer_missing_folder_names_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "wan" / "google" / "umt5-xxl"
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer(folder, TEXT_LEN)
    assert str(info.value) == (
        f"tokenizer folder not found: {folder}; expected the google/umt5-xxl tokenizer folder holding "
        "tokenizer.json (in the Wan2.1-T2V-1.3B model folder it is google/umt5-xxl/)"
    )


def test_load_tokenizer_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer(tmp_path, TEXT_LEN)
    assert str(info.value) == (
        f"{tmp_path} has no tokenizer.json; expected the google/umt5-xxl tokenizer folder holding "
        "tokenizer.json (in the Wan2.1-T2V-1.3B model folder it is google/umt5-xxl/)"
    )


def test_load_tokenizer_rejects_a_tokenizer_without_the_eos_template(tmp_path: Path) -> None:
    folder = write_umt5_folder(tmp_path)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.post_processor = None
    tokenizer.save(str(folder / "tokenizer.json"))
    with pytest.raises(ValueError) as info:
        load_tokenizer(folder, TEXT_LEN)
    assert str(info.value) == (
        f"{folder / 'tokenizer.json'}: encoding 'a' gives ids [3] with no trailing </s>; the tokenizer "
        'needs a post_processor that appends it (TemplateProcessing single="$A </s>")'
    )


# ---------------------------------------------------------------------------------------------------
# TextEncoder


def test_encode_zeroes_every_row_at_or_past_the_token_count(text_encoder: TextEncoder) -> None:
    prompts = ["a red fox", "a much longer prompt about a dog running on a beach at sunset"]
    lengths = [len(p.encode()) + 1 for p in prompts]  # bytes + </s>
    context = text_encoder.encode(prompts)
    assert context.shape == (2, TEXT_LEN, 32)
    assert context.dtype == torch.float32
    for row, length in zip(context, lengths, strict=True):
        assert bool((row[length:] == 0).all())
        assert bool((row[:length] != 0).any(dim=-1).all())


def test_encode_batch_equals_each_prompt_alone(text_encoder: TextEncoder) -> None:
    prompts = ["a cat", "a much longer prompt about a dog running on a beach at sunset"]
    together = text_encoder.encode(prompts)
    for index, prompt in enumerate(prompts):
        torch.testing.assert_close(together[index : index + 1], text_encoder.encode([prompt]))


def test_encode_cleans_prompts_before_tokenizing(text_encoder: TextEncoder) -> None:
    torch.testing.assert_close(
        text_encoder.encode(["  a\tcat &amp;amp; a\n dog "]), text_encoder.encode(["a cat & a dog"])
    )


def test_token_count_is_the_prompt_before_truncation_and_encode_keeps_the_first_512(
    text_encoder: TextEncoder,
) -> None:
    long = "y" * 600
    assert text_encoder.token_count(long) == 601  # one byte-level token per character, then </s>
    assert text_encoder.token_count("  a\tcat  ") == 6  # counted after cleaning: "a cat</s>"
    context = text_encoder.encode(["short", long])
    assert bool((context[1] != 0).any(dim=-1).all())  # all 512 positions are real tokens


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (["ok", ""], "prompts[1] is empty after cleaning (''); pass a non-empty prompt"),
        ([" \t\n"], "prompts[0] is empty after cleaning (' \\t\\n'); pass a non-empty prompt"),
        (["ok", "fine", 3], "prompts[2] is a int, not a str; pass the prompt text"),
        ([], "prompts is empty; pass at least one prompt"),
    ],
)
def test_encode_rejects_empty_and_non_string_prompts(
    text_encoder: TextEncoder, prompts: list[str], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        text_encoder.encode(prompts)
    assert str(info.value) == message


def test_encode_rejects_a_bare_string(text_encoder: TextEncoder) -> None:
    with pytest.raises(TypeError) as info:
        text_encoder.encode("a cat")
    assert str(info.value) == "prompts must be a sequence of strings, not one str; pass ['a cat']"


def test_text_encoder_rejects_tokenizer_padded_to_another_length(text_encoder: TextEncoder) -> None:
    with pytest.raises(ValueError) as info:
        TextEncoder(text_encoder.encoder, tiny_tokenizer(text_len=77), TEXT_LEN)
    assert str(info.value) == (
        "tokenizer padding is {'length': 77, 'pad_to_multiple_of': None, 'pad_id': 0, 'pad_token': '<pad>', "
        "'pad_type_id': 0, 'direction': 'right'}, expected right padding to length=512 with pad_id=0; "
        "build the tokenizer with load_tokenizer(folder, text_len=512) or tiny_tokenizer(512)"
    )


def test_text_encoder_rejects_tokenizer_larger_than_the_embedding(tmp_path: Path) -> None:
    encoder = UMT5Encoder(T5Config(vocab_size=8, dim=8, dim_attn=8, dim_ffn=16, num_heads=2, num_layers=1))
    with pytest.raises(ValueError) as info:
        TextEncoder(encoder, tiny_tokenizer(TEXT_LEN), TEXT_LEN)
    assert str(info.value) == (
        "tokenizer has 259 ids but the encoder embeds only vocab_size=8; "
        "pair load_tokenizer with the full T5Config and tiny_tokenizer with T5Config.tiny()"
    )
