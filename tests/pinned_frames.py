"""Print the SHA-256 of a short tiny-preset clip's frames under every cache policy, as JSON.

Run by tests/test_generate.py in a subprocess whose environment pins the CPU kernels (one thread,
AVX2 code paths in MKL, oneDNN and ATen), so the hashes are the same on any x86-64 machine with AVX2
and do not depend on how many cores the test machine has: float32 sums in another order round
differently, and one rounding is enough to change a uint8 pixel.
"""

from __future__ import annotations

import hashlib
import json

import torch
from cache_driver import POLICY_CONFIGS, POLICY_IDS

from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.spec.cache import policy_params
from pipeline.spec.model import TINY

PROMPT, SEED = "a red fox trots through fresh snow", 7
LATENT_FRAMES = 24  # 8 chunks: chunk 7 overflows the 21-frame window (a compression, a roll, a sink shift)


def frame_hashes() -> dict[str, str]:
    generator = ClipGenerator(ModelBundle.random(TINY, "cpu", torch.float32))
    hashes = {}
    for (name, params), policy_id in zip(POLICY_CONFIGS, POLICY_IDS, strict=True):
        digest = hashlib.sha256()
        for frames in generator.stream(PROMPT, SEED, LATENT_FRAMES, policy_params(name, params, 3)):
            digest.update(frames.tobytes())
        hashes[policy_id] = digest.hexdigest()
    return hashes


if __name__ == "__main__":
    print(json.dumps(frame_hashes()))
