"""Compiled kernels shared through the output, so a fresh node's first actor does not compile cold.

The first actor process that finds no artefact for its torch, Triton, GPU and model code publishes what
it compiled after its first group of clips (`compile-cache/<name>.bin` under the output:
model/compile_cache.py); every later actor process primes its compile caches from that file before its
first clip. Measured effects: benchmarks/README.md. Sharing is best effort: a missing, stale or
unreadable artefact costs a cold compile, never a clip.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pipeline.storage import OutputTarget

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PREFIX = "compile-cache/"
CONTENT_TYPE = "application/octet-stream"


class CompiledKernelShare:
    """One actor process's side of the shared artefact: prime at start, publish once if there was none."""

    def __init__(self, target: OutputTarget, device: torch.device):
        import pipeline.model.compile_cache as compile_cache  # torch: inside the actor only

        self._cache = compile_cache
        self.target = target
        self.key = PREFIX + compile_cache.artefact_name(device)
        self.primed = 0  # artefacts loaded at start
        self._publish = False  # publish once: no artefact was there at start
        self._compiled_before = 0

    def prime(self) -> None:
        """Load the shared artefact into this process's compile caches, or plan to publish one."""
        start = time.perf_counter()
        try:
            data = self.target.read_bytes(self.key)
        except FileNotFoundError:
            self._publish = True
            self._compiled_before = self._cache.compiled_graphs()
            logger.info("no shared compiled kernels at %s yet: this worker will publish its own", self.key)
            return
        except Exception as exc:
            logger.warning("shared compiled kernels at %s unreadable, compiling cold: %s", self.key, exc)
            return
        try:
            self.primed = self._cache.prime(data)
        except Exception as exc:  # another torch/Triton build or GPU behind the same name, a truncated file
            logger.warning("shared compiled kernels at %s not loaded, compiling cold: %s", self.key, exc)
            return
        logger.info(
            "loaded %d compiled artefact(s), %d bytes, from %s in %.1f s",
            self.primed,
            len(data),
            self.key,
            time.perf_counter() - start,
        )

    def publish_once(self) -> None:
        """After a group rendered: publish what this process compiled, if it is the one to."""
        if not self._publish or self._cache.compiled_graphs() == self._compiled_before:
            return
        self._publish = False
        try:
            data = self._cache.collect()
            # Only if there is still none: of the cold actors of a new cluster, the first one wins
            if data is not None and self.target.put_bytes_if(data, self.key, CONTENT_TYPE, None) is not None:
                logger.info("published %d bytes of compiled kernels to %s", len(data), self.key)
        except Exception as exc:
            logger.warning("publishing compiled kernels to %s failed: %s", self.key, exc)
