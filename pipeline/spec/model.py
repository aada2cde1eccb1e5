"""Model presets: the sizes of the three networks, the output format, chunking and the sampling schedule.

`self-forcing-1.3b` is the released model (docs/model.md §1, §3.1, §5.1, §6.1); `tiny` runs the same
code at sizes a CPU renders in seconds, with random weights. Derived sizes (latent grid, tokens per
frame, pixel frames, clip lengths) are properties here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.spec.cache import CacheGeometry


@dataclass(frozen=True)
class DiTConfig:
    in_dim: int = 16  # latent channels
    out_dim: int = 16
    dim: int = 1536  # model width
    ffn_dim: int = 8960
    freq_dim: int = 256  # sinusoidal timestep embedding size
    num_heads: int = 12
    num_layers: int = 30
    text_len: int = 512  # UMT5 tokens per prompt, after padding or truncation
    text_dim: int = 4096  # UMT5 width
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class VAEConfig:
    dim: int = 96  # base width; decoder stage widths are dim * dim_mult, widest first (384,384,384,192,96)
    z_dim: int = 16  # latent channels
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # encoder order, as in the official config
    num_res_blocks: int = 2  # the decoder runs num_res_blocks + 1 residual blocks per stage
    temporal_upsample: tuple[bool, ...] = (True, True, False)  # decoder order: which 2x upsamples double T
    # Per-channel statistics of the encoder's mu (docs/model.md §5.4); the DiT sees (mu - mean) / std.
    latent_mean: tuple[float, ...] = (
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    )  # fmt: skip
    latent_std: tuple[float, ...] = (
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if len(self.temporal_upsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_upsample={self.temporal_upsample} needs one flag per upsample, "
                f"len(dim_mult) - 1 = {len(self.dim_mult) - 1} for dim_mult={self.dim_mult}"
            )
        for name in ("latent_mean", "latent_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} values; give one per z_dim={self.z_dim}"
                )

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent along height and width: every upsample doubles them (8)."""
        return 2 ** len(self.temporal_upsample)

    @property
    def temporal_stride(self) -> int:
        """Pixel frames per latent frame after the first (4)."""
        return 2 ** sum(self.temporal_upsample)


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 256384  # embedding rows in the released file (more than the spiece vocabulary)
    dim: int = 4096  # model width
    dim_attn: int = 4096  # width of q/k/v: num_heads x 64
    dim_ffn: int = 10240  # hidden width of the gated feed-forward
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32  # relative-position buckets: half for keys before the query, half after
    max_distance: int = 128  # distances from here on share the last bucket of their direction
    eps: float = 1e-6  # T5 layer norm epsilon

    def __post_init__(self) -> None:
        if self.dim_attn % self.num_heads:
            raise ValueError(
                f"dim_attn={self.dim_attn} must be a multiple of num_heads={self.num_heads}; "
                "the released model uses 4096 = 64 heads x 64"
            )
        if self.num_buckets % 4:
            raise ValueError(
                f"num_buckets={self.num_buckets} must be a multiple of 4 (two directions, each half exact "
                "and half logarithmic); the released model uses 32"
            )

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads

    @classmethod
    def tiny(cls) -> T5Config:
        """Same code at CPU-test sizes; vocab 384 holds the byte-level `tiny_tokenizer` (259 ids)."""
        return cls(vocab_size=384, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2)


@dataclass(frozen=True)
class GenerationConfig:
    """The sampling schedule of the Self Forcing DMD checkpoint (docs/model.md §4.1)."""

    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)  # nominal, before warping
    timestep_shift: float = 5.0  # both released configs set 5.0
    context_timestep: float = 0.0  # `context_noise`: t of the pass that writes the cache


@dataclass(frozen=True)
class ModelPreset:
    name: str
    height: int  # output pixels
    width: int
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: T5Config = field(default_factory=T5Config)
    fps: int = 16  # Self Forcing writes video at 16 fps
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

    def nominal_seconds(self, latent_frames: int) -> float:
        """The length latent frames stand for: 4 pixel frames each (240 -> 60 s)."""
        return latent_frames * self.vae.temporal_stride / self.fps

    def first_pixel_frame(self, latent_frame: int) -> int:
        """The first video frame latent frame `latent_frame` decodes to (0, then 1, 5, 9, ...)."""
        return self.pixel_frames(latent_frame) if latent_frame else 0

    def latent_frames_for_seconds(self, seconds: float) -> int:
        """Smallest multiple of chunk_frames whose nominal length (4 pixel frames each) covers `seconds`.

        The first latent frame decodes to a single frame, so a clip is 3 frames shorter than its
        nominal length: 60 s -> 240 latent frames -> 957 frames (59.8 s).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ValueError(f"seconds={seconds!r} must be a positive number, e.g. 60")
        if seconds <= 0:
            raise ValueError(f"seconds={seconds!r} must be > 0, e.g. 60")
        per_chunk = self.vae.temporal_stride * self.chunk_frames  # pixel frames a chunk stands for (12)
        chunks = max(1, math.ceil(seconds * self.fps / per_chunk - 1e-9))
        return chunks * self.chunk_frames

    @property
    def seconds_per_chunk(self) -> float:
        """Nominal length of one chunk in the video: 4 pixel frames per latent frame (0.75 s)."""
        return self.vae.temporal_stride * self.chunk_frames / self.fps

    def chunk_boundary_nearest(self, seconds: float) -> int:
        """The chunk boundary (a latent frame) nearest to `seconds` into a clip, halves rounded up:
        where a storyboard segment that ends `seconds` in ends (20 s -> 81, 40 s -> 159)."""
        return math.floor(seconds / self.seconds_per_chunk + 0.5) * self.chunk_frames

    def check_latent_frames(self, num_latent_frames: int) -> None:
        """ValueError unless the clip is a positive whole number of chunks."""
        chunk = self.chunk_frames
        if num_latent_frames <= 0 or num_latent_frames % chunk:
            lower = max(chunk, num_latent_frames - num_latent_frames % chunk)
            raise ValueError(
                f"num_latent_frames={num_latent_frames} must be a positive multiple of "
                f"chunk_frames={chunk}; use {lower} or {lower + chunk}"
            )

    def cache_geometry(self) -> CacheGeometry:
        return CacheGeometry(
            num_layers=self.dit.num_layers,
            num_heads=self.dit.num_heads,
            head_dim=self.dit.head_dim,
            tokens_per_frame=self.tokens_per_frame,
            chunk_frames=self.chunk_frames,
        )


# An official model folder (docs/model.md §2.1); each weights file may instead be a .safetensors file
# with the same stem.
DIT_FILE = "self_forcing_dmd.pt"
VAE_FILE = "Wan2.1_VAE.pth"
TEXT_ENCODER_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"  # holds tokenizer.json
WEIGHTS_FILES = (DIT_FILE, VAE_FILE, TEXT_ENCODER_FILE)

SELF_FORCING_1_3B = ModelPreset(name="self-forcing-1.3b", height=480, width=832)

TINY = ModelPreset(
    name="tiny",
    height=64,
    width=112,
    dit=DiTConfig(dim=48, ffn_dim=96, freq_dim=32, num_heads=2, num_layers=2, text_dim=32),
    vae=VAEConfig(dim=4),
    text_encoder=T5Config.tiny(),
    needs_weights=False,
)

PRESETS = {preset.name: preset for preset in (SELF_FORCING_1_3B, TINY)}


# Frames per second of a whole 60 s clip, mp4 included, per GPU (benchmarks/README.md, fourth round,
# H100 80GB): what a dry run's GPU-hour estimate assumes when the output holds no earlier clips.
REFERENCE_FPS_PER_GPU = {SELF_FORCING_1_3B.name: 25.4}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
