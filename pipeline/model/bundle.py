"""The three networks a render needs, loaded from an official model folder or made with random weights,
and placed for a device.

A model folder holds the files of the official releases (docs/model.md §2):

    self_forcing_dmd.pt                     Self Forcing DiT (`generator_ema` / `generator`, `model.` prefix)
    Wan2.1_VAE.pth                          Wan VAE (we build the decoder; encoder tensors are skipped)
    models_t5_umt5-xxl-enc-bf16.pth         UMT5-XXL encoder
    google/umt5-xxl/tokenizer.json          its tokenizer

Each weights file may instead be a `.safetensors` file with the same stem. Folders on S3 are fetched
to local disk by `pipeline.storage` first: this module reads local files only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.digest import file_sha256
from pipeline.model.checkpoint import (
    CheckpointError,
    check_shapes,
    load_strict,
    read_state_dict,
    strip_wrapper_prefixes,
    tensor_shapes,
)
from pipeline.model.dit import CausalWanDiT
from pipeline.model.random_init import randomize_
from pipeline.model.speed import SpeedConfig, accelerate
from pipeline.model.t5 import UMT5Encoder
from pipeline.model.text_encoder import TextEncoder, load_tokenizer, tiny_tokenizer
from pipeline.model.vae import VAE_IGNORED_PREFIXES, WanVAEDecoder
from pipeline.spec.model import (
    DIT_FILE,
    TEXT_ENCODER_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    WEIGHTS_FILES,
    ModelPreset,
)

logger = logging.getLogger(__name__)

DIT_KEYS = ("generator_ema", "generator")  # EMA weights are the released ones (inference.py --use_ema)


def find_weights(model_dir: Path, official_name: str) -> Path:
    """The official file, or a `.safetensors` file with the same stem."""
    candidates = [model_dir / official_name, (model_dir / official_name).with_suffix(".safetensors")]
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(
        f"model folder {model_dir} has neither {candidates[0].name} nor {candidates[1].name}"
    )


def weights_digest(model_dir: Path) -> str:
    """sha256 over the three weights files' sha256s; each file's digest is cached beside it.

    A cached digest is reused while the file's size and mtime are unchanged, so the actors of a node
    hash the ~17 GB once (the first actor may be joined by others hashing in parallel; same result).
    """
    parts = []
    for name in WEIGHTS_FILES:
        path = find_weights(model_dir, name)
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        sidecar = path.with_name(f".{path.name}.sha256")
        try:
            cached_stamp, digest = sidecar.read_text().split()
        except (OSError, ValueError):
            cached_stamp, digest = "", ""
        if cached_stamp != stamp:
            digest = file_sha256(path)
            try:
                tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}")
                tmp.write_text(f"{stamp} {digest}\n")
                os.replace(tmp, sidecar)
            except OSError:  # a read-only model folder: hash again next time
                pass
        parts.append(f"{path.name} {digest}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Network:
    """How one network of the bundle is read from its official file."""

    file: str  # official name (a .safetensors file of the same stem also does)
    build: Callable[[ModelPreset], torch.nn.Module]
    keys: tuple[str, ...] = ()  # nested state dicts to look for, in order of preference
    ignore_prefixes: tuple[str, ...] = ()  # tensors of the file we do not build


NETWORKS = (
    Network(DIT_FILE, lambda preset: CausalWanDiT(preset.dit), keys=DIT_KEYS),
    Network(VAE_FILE, lambda preset: WanVAEDecoder(preset.vae), ignore_prefixes=VAE_IGNORED_PREFIXES),
    Network(TEXT_ENCODER_FILE, lambda preset: UMT5Encoder(preset.text_encoder)),
)


def _load_network(model_dir: Path, network: Network, preset: ModelPreset) -> torch.nn.Module:
    path = find_weights(model_dir, network.file)
    state = strip_wrapper_prefixes(read_state_dict(path, keys=network.keys))
    with torch.device("meta"):
        module = network.build(preset)
    load_strict(module, state, path, ignore_prefixes=network.ignore_prefixes)
    return module


def folder_problems(preset: ModelPreset, model_dir: Path) -> list[str]:
    """What in a model folder would keep `ModelBundle.load` from loading it, read from the files'
    headers only: missing files, tensor names and shapes, the tokenizer. Empty: it loads."""
    problems = []
    for network in NETWORKS:
        try:
            path = find_weights(model_dir, network.file)
            with torch.device("meta"):
                module = network.build(preset)
            shapes = strip_wrapper_prefixes(tensor_shapes(path, network.keys))
            check_shapes(module, shapes, path, network.ignore_prefixes)
        except CheckpointError as exc:
            problems.append(str(exc))
    try:
        load_tokenizer(model_dir / TOKENIZER_DIR, preset.dit.text_len)
    except (FileNotFoundError, ValueError) as exc:
        problems.append(str(exc))
    return problems


# Where the 11.4 GB UMT5-XXL lives between prompts (generation must fit a 24 GB card without it):
TEXT_PLACEMENTS = (
    "device",  # resident beside the DiT: fastest, costs its full size in GPU memory
    "cpu",  # runs on the host CPU: no GPU memory, seconds per prompt at full size
    "offload",  # block weights pinned in host memory and lent to the GPU per prompt; token table on host
)


@dataclass
class ModelBundle:
    preset: ModelPreset
    dit: CausalWanDiT
    vae: WanVAEDecoder
    text_encoder: TextEncoder
    text_placement: str = "device"
    weights_sha256: str | None = None  # digest of the weights files (`weights_digest`); None: random weights
    _pinned_text_weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls,
        preset: ModelPreset,
        model_dir: Path,
        device: torch.device | str,
        dtype: torch.dtype = torch.bfloat16,
        text_placement: str = "device",
    ) -> ModelBundle:
        """Load all three networks strictly from the official files."""
        dit, vae, t5 = (_load_network(model_dir, network, preset) for network in NETWORKS)
        tokenizer = load_tokenizer(model_dir / TOKENIZER_DIR, preset.dit.text_len)
        assert (
            isinstance(dit, CausalWanDiT) and isinstance(vae, WanVAEDecoder) and isinstance(t5, UMT5Encoder)
        )
        text_encoder = TextEncoder(t5, tokenizer, preset.dit.text_len)
        return cls(preset, dit, vae, text_encoder).to(device, dtype, text_placement)

    @classmethod
    def random(
        cls,
        preset: ModelPreset,
        device: torch.device | str,
        dtype: torch.dtype = torch.bfloat16,
        seed: int = 0,
        text_placement: str = "device",
    ) -> ModelBundle:
        """Seeded random weights for every layer and the built-in tokenizer (tiny preset, benchmarks).

        Built on the meta device and drawn on `device` in their final dtype, then placed: drawing
        the 5.7B-parameter encoder on a GPU takes a second, in float32 on host cores minutes.
        """
        with torch.device("meta"):
            dit = CausalWanDiT(preset.dit)
            vae = WanVAEDecoder(preset.vae)
            t5 = UMT5Encoder(preset.text_encoder)
        for offset, module in enumerate((dit, vae, t5)):
            randomize_(module.to(dtype).to_empty(device=device), seed + offset)
        text_encoder = TextEncoder(t5, tiny_tokenizer(preset.dit.text_len), preset.dit.text_len)
        return cls(preset, dit, vae, text_encoder).to(device, dtype, text_placement)

    @classmethod
    def for_device(
        cls,
        preset: ModelPreset,
        model_dir: Path | None,
        device: torch.device | None = None,
        seed: int = 0,
        search_all_conv_algorithms: bool = True,
    ) -> ModelBundle:
        """Ready to render on `device` (default: the first GPU, else the CPU), from a local model
        folder, or with weights drawn from `seed` when `model_dir` is None.

        On a GPU: bf16, UMT5 offloaded to pinned host memory (it keeps generation, decode and cache
        within 20 GB; `ClipGenerator.keep_text_encoder_resident` moves it back where there is room) and
        the speed settings (`speed.py`; `search_all_conv_algorithms`: see SpeedConfig).
        On a CPU: float32, UMT5 beside the DiT.
        """
        device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        on_gpu = device.type == "cuda"
        dtype = torch.bfloat16 if on_gpu else torch.float32
        placement = "offload" if on_gpu else "device"
        if model_dir is None:
            bundle = cls.random(preset, device, dtype, seed, placement)
        else:
            bundle = cls.load(preset, model_dir, device, dtype, text_placement=placement)
            bundle.weights_sha256 = weights_digest(model_dir)
        if on_gpu:
            accelerate(bundle, SpeedConfig(vae_search_all_conv_algorithms=search_all_conv_algorithms))
        return bundle

    @property
    def text_encoder_bytes(self) -> int:
        """What the text encoder's weights take wherever they are (11.4 GB for UMT5-XXL in bf16)."""
        return sum(p.numel() * p.element_size() for p in self.text_encoder.parameters())

    @property
    def device_name(self) -> str | None:
        """The GPU's name (e.g. "NVIDIA H100 80GB HBM3"); None on a CPU."""
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.dtype

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def place_text_encoder(self, placement: str) -> None:
        """Move the text encoder to `placement` (one of TEXT_PLACEMENTS)."""
        if placement not in TEXT_PLACEMENTS:
            raise ValueError(f"text encoder placement {placement!r}; choose one of {list(TEXT_PLACEMENTS)}")
        self._pinned_text_weights.clear()
        if placement == "offload" and self.device.type == "cuda":
            table = self.text_encoder.encoder.token_embedding.weight  # looked up on the host: 512 rows travel
            for name, param in self.text_encoder.named_parameters():
                if param is table:
                    continue
                # Straight into page-locked memory, from the GPU or the host: one copy. Moving to pageable
                # memory first and pinning after took 19 s for the 11 GB drawn on an H200.
                pinned = torch.empty(param.shape, dtype=param.dtype, pin_memory=True)
                param.data = pinned.copy_(param.data)
                self._pinned_text_weights[name] = pinned
        # the rest (the embedding table, buffers) where the placement puts it; pinned weights stay put
        self.text_encoder.to(self.device if placement == "device" else "cpu")
        self.text_placement = placement

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """UMT5 embedding of one prompt, (1, text_len, text_dim), on the DiT's device."""
        return self.encode_prompts([prompt])

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """UMT5 embeddings of several prompts in one pass, (N, text_len, text_dim), on the DiT's device:
        an offloaded encoder's weights cross to the GPU once for all of them."""
        with self._text_encoder_on_device():
            return self.text_encoder.encode(list(prompts)).to(self.device)

    @contextmanager
    def _text_encoder_on_device(self) -> Iterator[None]:
        if not self._pinned_text_weights:  # "device" and "cpu": the encoder runs where it is
            yield
            return
        params = dict(self.text_encoder.named_parameters())
        for name, pinned in self._pinned_text_weights.items():  # 9.3 GB over PCIe per prompt
            params[name].data = pinned.to(self.device, non_blocking=True)
        try:
            yield
        finally:  # the weights never change: dropping the GPU copies is the whole move back
            for name, pinned in self._pinned_text_weights.items():
                params[name].data = pinned

    def to(
        self, device: torch.device | str, dtype: torch.dtype, text_placement: str = "device"
    ) -> ModelBundle:
        for module in (self.dit, self.vae, self.text_encoder):
            module.to(dtype=dtype).eval().requires_grad_(False)
        self.dit.to(device)
        self.vae.to(device)
        self.place_text_encoder(text_placement)
        return self
