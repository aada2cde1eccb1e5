"""KV cache policies behind one interface (`base.KVCache`), built from their parameters.

What each policy keeps and why: docs/cache_policies.md. Their parameters, defaults and ranges live in
`pipeline.spec.cache`, so a run is checked without torch; this package builds the caches themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.cache.base import ForwardKind, KVCache
from pipeline.cache.deep_forcing import DeepForcingCache
from pipeline.cache.deep_sink import DeepSinkCache
from pipeline.cache.fifo import FifoCache
from pipeline.cache.rolling_sink import RollingSinkCache
from pipeline.cache.sink import SinkCache
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry, PolicyParams

# Each class takes (geometry, rope, its own parameters class)
POLICIES: dict[str, Callable[[CacheGeometry, RotaryEmbedding3D, Any], KVCache]] = {
    policy.name: policy
    for policy in (FifoCache, SinkCache, RollingSinkCache, DeepSinkCache, DeepForcingCache)
}


def make_cache(params: PolicyParams, geometry: CacheGeometry, rope: RotaryEmbedding3D) -> KVCache:
    """The cache of `params.policy` with `params`; ValueError naming a value the geometry cannot take."""
    return POLICIES[params.policy](geometry, rope, params)


__all__ = ["POLICIES", "ForwardKind", "KVCache", "make_cache"]
