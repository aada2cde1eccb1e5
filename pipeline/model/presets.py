"""Model presets: the real Self Forcing 1.3B sizes, and `tiny` (same code, small sizes) for CPUs.

Derived sizes (latent grid, tokens per frame, pixel frames) are properties here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.cache.base import CacheGeometry
from pipeline.model.dit import DiTConfig
from pipeline.model.t5 import T5Config
from pipeline.model.vae import VAEConfig


@dataclass(frozen=True)
class ModelPreset:
    name: str
    height: int  # output pixels
    width: int
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: T5Config = field(default_factory=T5Config)
    fps: int = 16  # SF writes video at 16 fps
    chunk_frames: int = 3  # latent frames denoised together (one "block")
    needs_weights: bool = True  # False: random weights and the built-in tokenizer are the model

    def __post_init__(self) -> None:
        _, ph, pw = self.dit.patch_size
        stride = self.vae.spatial_stride
        if self.height % (stride * ph) or self.width % (stride * pw):
            raise ValueError(
                f"preset {self.name}: {self.height}x{self.width} must be a multiple of "
                f"{stride * ph}x{stride * pw}"
            )
        if self.dit.text_dim != self.text_encoder.dim:
            raise ValueError(f"preset {self.name}: DiT text_dim {self.dit.text_dim} != encoder dim")

    @property
    def latent_height(self) -> int:
        return self.height // self.vae.spatial_stride

    @property
    def latent_width(self) -> int:
        return self.width // self.vae.spatial_stride

    @property
    def tokens_per_frame(self) -> int:
        """DiT tokens per latent frame: 30 x 52 = 1560 at 480x832."""
        _, ph, pw = self.dit.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    def pixel_frames(self, latent_frames: int) -> int:
        """The causal VAE turns L latent frames into 1 + 4(L-1) pixel frames (240 -> 957)."""
        return 1 + self.vae.temporal_stride * (latent_frames - 1)

    def cache_geometry(self) -> CacheGeometry:
        return CacheGeometry(
            num_layers=self.dit.num_layers,
            num_heads=self.dit.num_heads,
            head_dim=self.dit.head_dim,
            tokens_per_frame=self.tokens_per_frame,
            chunk_frames=self.chunk_frames,
        )


SELF_FORCING_1_3B = ModelPreset(name="self-forcing-1.3b", height=480, width=832)

TINY = ModelPreset(
    name="tiny",
    height=64,
    width=112,
    dit=DiTConfig(dim=48, ffn_dim=96, freq_dim=32, num_heads=2, num_layers=2, text_dim=32),
    vae=VAEConfig(dim=4),
    text_encoder=T5Config(vocab_size=384, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2),
    needs_weights=False,
)

PRESETS = {preset.name: preset for preset in (SELF_FORCING_1_3B, TINY)}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
