"""Prompts to the DiT's text context: clean, tokenize to a fixed length, run UMT5, zero the padding.

Follows the Wan text path (docs/model.md §6.4, §6.5): every prompt becomes exactly `text_len` tokens
(`DiTConfig.text_len`, 512), `</s>` appended, padded with id 0 and truncated keeping `</s>`. The encoder
sees the attention mask, and the features of every padding position (those past the prompt's tokens and
its `</s>`) are set to zero before the DiT sees them.

The tokenizer is a plain `tokenizers.Tokenizer` read from the official `google/umt5-xxl/tokenizer.json`,
so no `transformers` dependency. `tiny_tokenizer` builds a byte-level stand-in in code for tests and
the tiny preset, where nothing can be downloaded.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import ftfy
import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, processors
from torch import nn

from pipeline.model.t5 import UMT5Encoder

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # the UMT5 ids (HF google/umt5-xxl config: pad 0, eos 1)
TOKENIZER_FILE = "tokenizer.json"


# ---------------------------------------------------------------------------------------------------
# Prompt cleaning


def clean_prompt(text: str) -> str:
    """Repair mojibake, unescape HTML entities (twice, as upstream), collapse whitespace runs to one space."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    # str.split() splits on the same whitespace as upstream's regex `\s+` once ftfy has removed
    # the control characters, and drops leading/trailing runs, which is the final strip.
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------
# Tokenizers


def load_tokenizer(folder: Path | str, text_len: int) -> tokenizers.Tokenizer:
    """Read `tokenizer.json` from the official `google/umt5-xxl/` folder, set to pad/truncate to text_len."""
    folder = Path(folder)
    expected = (
        f"expected the google/umt5-xxl tokenizer folder holding {TOKENIZER_FILE} "
        "(in the Wan2.1-T2V-1.3B model folder it is google/umt5-xxl/)"
    )
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder}; {expected}")
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {TOKENIZER_FILE}; {expected}")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # not JSON, or JSON that is not a tokenizer
        raise ValueError(f"cannot read tokenizer {path}: {exc}") from exc
    return _configure(tokenizer, text_len, source=str(path))


def tiny_tokenizer(text_len: int) -> tokenizers.Tokenizer:
    """Byte-level tokenizer built in code: every UTF-8 byte b is one token with id 3 + b (259 ids).

    The byte-level pre-tokenizer spells each byte as one printable character; a BPE model with no
    merges then maps each character to its own id.
    """
    vocab = {PAD: PAD_ID, EOS: EOS_ID, UNK: UNK_ID}
    first = len(vocab)
    vocab.update({char: first + byte for byte, char in enumerate(_byte_level_chars())})
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, EOS_ID)]
    )
    tokenizer.add_special_tokens([PAD, EOS, UNK])
    return _configure(tokenizer, text_len, source="tiny_tokenizer")


def _byte_level_chars() -> list[str]:
    """The character the byte-level pre-tokenizer writes for each byte 0..255, in byte order.

    Bytes that are printable Latin-1 characters stand for themselves; the others (controls, space,
    soft hyphen...) take the code points from 256 upwards, in byte order.
    """
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    chars, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


def _configure(tokenizer: tokenizers.Tokenizer, text_len: int, source: str) -> tokenizers.Tokenizer:
    """Pad right to exactly text_len with id 0; truncate right to text_len, keeping the appended </s>."""
    if text_len < 2:
        raise ValueError(
            f"text_len={text_len} leaves no room for a token before {EOS}; use DiTConfig.text_len"
        )
    for token, expected_id in ((PAD, PAD_ID), (EOS, EOS_ID)):
        found = tokenizer.token_to_id(token)
        if found != expected_id:
            raise ValueError(
                f"{source}: token {token!r} has id {found}, expected {expected_id}; UMT5 pads with "
                f"{PAD}={PAD_ID} and ends prompts with {EOS}={EOS_ID}"
            )
    tokenizer.enable_padding(direction="right", pad_id=PAD_ID, pad_token=PAD, length=text_len)
    # The truncation length counts the special tokens the post-processor adds, so </s> survives.
    tokenizer.enable_truncation(max_length=text_len, direction="right")
    probe = tokenizer.encode("a")
    count = sum(probe.attention_mask)
    if probe.ids[count - 1] != EOS_ID:
        raise ValueError(
            f"{source}: encoding 'a' gives ids {probe.ids[:count]} with no trailing {EOS}; the tokenizer "
            f'needs a post_processor that appends it (TemplateProcessing single="$A {EOS}")'
        )
    return tokenizer


def _check_setup(tokenizer: tokenizers.Tokenizer, text_len: int) -> None:
    padding, truncation = tokenizer.padding, tokenizer.truncation
    fix = (
        f"build the tokenizer with load_tokenizer(folder, text_len={text_len}) or tiny_tokenizer({text_len})"
    )
    padding_setup = padding and (padding["length"], padding["direction"], padding["pad_id"])
    if padding_setup != (text_len, "right", PAD_ID):
        raise ValueError(
            f"tokenizer padding is {padding}, expected right padding to length={text_len} with "
            f"pad_id={PAD_ID}; {fix}"
        )
    truncation_setup = truncation and (truncation["max_length"], truncation["direction"])
    if truncation_setup != (text_len, "right"):
        raise ValueError(
            f"tokenizer truncation is {truncation}, expected right truncation to max_length={text_len}; {fix}"
        )


# ---------------------------------------------------------------------------------------------------
# The text encoder


class TextEncoder(nn.Module):
    """Prompts -> (B, text_len, dim) UMT5 features in the encoder's dtype, on the encoder's device."""

    def __init__(self, encoder: UMT5Encoder, tokenizer: tokenizers.Tokenizer, text_len: int):
        super().__init__()
        _check_setup(tokenizer, text_len)
        vocab = tokenizer.get_vocab_size()
        if vocab > encoder.config.vocab_size:
            raise ValueError(
                f"tokenizer has {vocab} ids but the encoder embeds only "
                f"vocab_size={encoder.config.vocab_size}; "
                "pair load_tokenizer with the full T5Config and tiny_tokenizer with T5Config.tiny()"
            )
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.text_len = text_len
        self.num_special = tokenizer.num_special_tokens_to_add(is_pair=False)  # the appended </s>

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        # 1. Clean
        texts = self._clean(prompts)
        # 2. Tokenize: exactly text_len ids per prompt, </s> appended, padding with id 0 and mask 0
        encodings = self.tokenizer.encode_batch(texts)  # longer prompts lose their end: see token_count
        tokens = torch.tensor([[e.ids for e in encodings], [e.attention_mask for e in encodings]])
        ids, mask = tokens.to(self.encoder.device).unbind(0)  # (B, text_len) each, one copy
        # 3. Encode
        context = self.encoder(ids, mask)  # (B, text_len, dim)
        # 4. Zero every position at or past the prompt's token count; with right padding (checked in
        #    __init__) those are exactly the positions where the mask is 0.
        return context.masked_fill_((mask == 0).unsqueeze(-1), 0.0)  # (B, text_len, dim)

    @staticmethod
    def _clean(prompts: Sequence[str]) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError(f"prompts must be a sequence of strings, not one str; pass [{prompts[:40]!r}]")
        if len(prompts) == 0:
            raise ValueError("prompts is empty; pass at least one prompt")
        texts = []
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(
                    f"prompts[{index}] is a {type(prompt).__name__}, not a str; pass the prompt text"
                )
            text = clean_prompt(prompt)
            if not text:
                raise ValueError(
                    f"prompts[{index}] is empty after cleaning ({prompt!r}); pass a non-empty prompt"
                )
            texts.append(text)
        return texts

    def token_count(self, prompt: str) -> int:
        """Tokens of the cleaned prompt with its </s>, before truncation; past text_len its end is lost."""
        [text] = self._clean([prompt])
        encoding = self.tokenizer.encode(text)
        # Each overflowing piece is post-processed and padded like the kept one: count its real tokens.
        dropped = sum(sum(piece.attention_mask) - self.num_special for piece in encoding.overflowing)
        return sum(encoding.attention_mask) + dropped
