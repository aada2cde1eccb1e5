"""The Wan2.1 VAE decoder (latents -> pixels), streamed chunk by chunk, with the official parameter names.

We only decode, so only `conv2.*` and `decoder.*` of `Wan2.1_VAE.pth` are built (108 tensors); the
loader skips the encoder tensors by prefix. Architecture and numerics follow SF:wan/modules/vae.py
(docs/model.md §5). Read top-down: stream state, causal conv and norm, the ops between convs, residual
and attention blocks, resampling, decoder body, public module.

Time is causal: every 3-tap conv looks only at the current and two earlier frames, so a video can be
decoded in chunks of latent frames as the DiT produces them. A `DecodeStream` carries, per conv, the last
input frames the next chunk needs; chunked decoding equals decoding the whole video at once (and upstream's
one-latent-per-call loop). The first chunk of T latents gives 4T - 3 frames, later chunks 4T.

Memory layout: every op here keeps its input's layout, so after `use_channels_last()` the activations
stay channels-last (B, T, H, W, C in memory) from the first conv to the pixels. cuDNN's Conv3d is
fastest in that layout on Hopper, and in NCDHW it spends a quarter of the decode transposing
(benchmarks/README.md).

The convs run eagerly (cuDNN, with their stream state); what lies between two convs (bias, norm, SiLU,
the causal padding, the residual sum, the nearest upsampling) is a few pure functions, `Elementwise`,
which speed.py compiles into one kernel each. Pure functions of tensors trace once per channel width
(parameters keep static shapes; frames and sizes stay dynamic), where compiling whole blocks traced
every block's pieces between its convs again per width, layout and chunk kind: ~20 graphs whose
tracing was a third of a warm process's first clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spec.model import VAEConfig

# The official file also holds the encoder, `encoder.*` and its output conv `conv1.*`; we never build them.
VAE_IGNORED_PREFIXES = ("encoder.", "conv1.")


@dataclass
class DecodeStream:
    """Decoding state of one video; get a fresh one from `WanVAEDecoder.start_stream` for each video."""

    latent_mean: torch.Tensor  # (1, z_dim, 1, 1, 1), decoder dtype and device
    latent_inv_std: torch.Tensor  # (1, z_dim, 1, 1, 1): 1 / std, as upstream un-normalises z / (1/std) + mean
    # The decoder's ops between convs, eager or compiled, handed down with the state so that blocks need
    # no reference back to the decoder.
    ops: Elementwise
    conv_inputs: dict[CausalConv3d, torch.Tensor] = field(default_factory=dict)  # last input frames per conv
    latent_frames_decoded: int = 0

    @property
    def is_first_chunk(self) -> bool:
        return self.latent_frames_decoded == 0


# ---------------------------------------------------------------------------------------------------
# 1. Causal convolution and norm


class CausalConv3d(nn.Conv3d):
    """A 3D conv whose output frame t sees input frames t-k+1..t: all temporal padding is in front.

    The front padding is the previous chunk's last k-1 input frames (2 for every decoder conv: upstream's
    CACHE_T), or zeros at the start of a video. Space is padded symmetrically inside the conv.
    Only convs with a temporal kernel > 1 are CausalConv3d; 1x1x1 convs are plain nn.Conv3d.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int]):
        kt, kh, kw = kernel_size
        super().__init__(in_channels, out_channels, kernel_size, padding=(0, kh // 2, kw // 2))
        self.time_pad = kt - 1
        self.search_all_algorithms = False  # speed.py: cuDNN times all its kernels for steady chunks

    # The stream argument is the point of this class, hence the override Conv3d's signature cannot express.
    def forward(  # type: ignore[override]
        self, x: torch.Tensor, stream: DecodeStream, add_bias: bool = True
    ) -> torch.Tensor:
        """`add_bias=False` leaves the bias to the caller, who can fuse it into the next op."""
        return self.convolve(*causal_pad(x, self.history(x, stream)), stream, add_bias)

    # The two steps around `causal_pad`, for callers that pad inside a fused op (`Elementwise`).
    def history(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        """The input frames that precede x: the previous chunk's last ones, zeros at a video's start."""
        remembered = stream.conv_inputs.get(self)
        if remembered is not None:
            return remembered
        B, C, _, H, W = x.shape
        return x.new_zeros(B, C, self.time_pad, H, W).contiguous(memory_format=layout_of(x))

    def convolve(
        self, padded: torch.Tensor, remember: torch.Tensor, stream: DecodeStream, add_bias: bool = True
    ) -> torch.Tensor:
        stream.conv_inputs[self] = remember
        # A video's first chunk has shapes of its own, run once per clip: not worth the full search.
        search_all = self.search_all_algorithms and not stream.is_first_chunk
        with cudnn_benchmark_limit(0 if search_all else None):
            padding = cast(tuple[int, ...], self.padding)  # a tuple here; Conv3d also allows strings
            return conv3d(padded, self.weight, self.bias if add_bias else None, padding)


def conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, ...]
) -> torch.Tensor:
    """F.conv3d with stride and dilation 1, through oneDNN on CPUs. PyTorch's heuristic sends a batch-1
    input with fewer than 20480 values over (N, C, T, H) to its im2col kernel, which for the tiny preset's
    video convs is 3-10x slower (39 against 4 ms at full resolution on one core; tests decode with it)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.mkldnn_convolution(x, weight, bias, padding, (1, 1, 1), (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, padding=padding)


def causal_pad(x: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(history ‖ x, its last frames copied for the next chunk), as many as the history has."""
    padded = torch.cat([history, x], dim=2)  # (B, C, time_pad + T, H, W)
    # a copy: a slice would keep the whole padded input alive until the next chunk
    return padded, padded[:, :, -history.shape[2] :].clone()  # (B, C, time_pad, H, W)


@contextmanager
def cudnn_benchmark_limit(limit: int | None) -> Iterator[None]:
    """How many cuDNN algorithms a conv with a new shape times (0: all) while inside; None: unchanged.
    Only a shape's first call searches (torch.backends.cudnn.benchmark); later calls reuse its pick."""
    if limit is None:
        yield
        return
    previous = torch.backends.cudnn.benchmark_limit
    torch.backends.cudnn.benchmark_limit = limit
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark_limit = previous


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last_3d (videos) or channels_last (frames) for a tensor stored channels-last, else
    contiguous: new tensors follow x."""
    channels_last = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
    if not x.is_contiguous() and x.is_contiguous(memory_format=channels_last):
        return channels_last
    return torch.contiguous_format


def rms_norm(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """L2-normalise over channels (dim 1), times sqrt(C) and a per-channel gain; no bias, no eps term."""
    return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * gamma


class RMSNorm(nn.Module):
    def __init__(self, dim: int, trailing_dims: int):
        super().__init__()
        # (C, 1, 1, 1) for video tensors (B, C, T, H, W), (C, 1, 1) for frames (B, C, H, W)
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * trailing_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.gamma)


# ---------------------------------------------------------------------------------------------------
# 2. The ops between convs


def conv_input(
    x: torch.Tensor, gamma: torch.Tensor, history: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a block's causal conv convolves: x RMS-normalised and SiLU'd, after its history frames; and
    its last frames, copied for the next chunk."""
    return causal_pad(F.silu(rms_norm(x, gamma)), history)


# The convs' biases are added by the ops below, not by cuDNN: it adds a channels-last bias in a pass of
# its own at a third of memory speed (a tenth of the decode on an H100); here it fuses into the next
# op, or (`add_bias` alone) runs at memory speed.


def add_bias(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (N, C, ...) plus a per-channel bias (C,)."""
    return x + bias.view(-1, *(1,) * (x.ndim - 2))


def biased_conv_input(
    x: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor, history: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`conv_input` of x plus the previous conv's bias."""
    return conv_input(add_bias(x, bias), gamma, history)


def residual_sum(h: torch.Tensor, bias: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """A residual block's output: its second conv's output plus that conv's bias, plus the shortcut."""
    return add_bias(h, bias) + shortcut


def projected_residual_sum(
    h: torch.Tensor, bias: torch.Tensor, shortcut: torch.Tensor, shortcut_bias: torch.Tensor
) -> torch.Tensor:
    """`residual_sum` where the shortcut is a 1x1x1 conv's output, still without its bias."""
    return residual_sum(h, bias, add_bias(shortcut, shortcut_bias))


def upsample_nearest(frames: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), each value copied: eagerly a fifth of memory speed on channels-last."""
    return F.interpolate(frames, scale_factor=2.0, mode="nearest")


def interleave_phases(phases: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The four phase outputs of `UpsampleConv`'s phase conv, (N, 4C, H + 1, W + 1) in phase order
    (row, column) = (0, 0), (0, 1), (1, 0), (1, 1), into (N, C, 2H, 2W) plus the conv's bias: output
    pixel (2i + a, 2j + b) is phase (a, b) at (i + a, j + b). In the phases' layout."""
    N, _, H, W = phases.shape
    H, W = H - 1, W - 1
    by_phase = phases.unflatten(1, (2, 2, -1))  # (N, a, b, C, H + 1, W + 1)
    rows = [torch.stack([by_phase[:, a, b, :, a : a + H, b : b + W] for b in (0, 1)], -1) for a in (0, 1)]
    out = torch.stack(rows, dim=3).flatten(4, 5).flatten(2, 3)  # (N, C, H, 2, W, 2) -> (N, C, 2H, 2W)
    return add_bias(out, bias).contiguous(memory_format=layout_of(phases))


@dataclass(frozen=True)
class Elementwise:
    """The decoder's ops between convs; speed.py swaps in compiled ones (`WanVAEDecoder.elementwise`)."""

    # One function per kind of call, not one with options: each traces once per width, far below
    # dynamo's limit of 8 graphs per function past which it runs the rest eagerly.
    conv_input: Callable[..., tuple[torch.Tensor, torch.Tensor]] = conv_input
    biased_conv_input: Callable[..., tuple[torch.Tensor, torch.Tensor]] = biased_conv_input
    residual_sum: Callable[..., torch.Tensor] = residual_sum
    projected_residual_sum: Callable[..., torch.Tensor] = projected_residual_sum
    upsample_nearest: Callable[[torch.Tensor], torch.Tensor] = upsample_nearest
    add_bias: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = add_bias
    interleave_phases: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = interleave_phases


# ---------------------------------------------------------------------------------------------------
# 3. Residual and attention blocks


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Indices match the official names: residual.{0,3}.gamma, residual.{2,6}.{weight,bias}.
        self.residual = nn.Sequential(
            RMSNorm(in_dim, trailing_dims=3),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, (3, 3, 3)),
            RMSNorm(out_dim, trailing_dims=3),
            nn.SiLU(),
            nn.Dropout(0.0),  # upstream's dropout is 0 (never applied); the slot keeps the conv at index 6
            CausalConv3d(out_dim, out_dim, (3, 3, 3)),
        )
        self.shortcut = nn.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        # The norms, SiLUs and biases run in `stream.ops` (the modules above only name the weights).
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        assert isinstance(conv1, CausalConv3d) and isinstance(conv2, CausalConv3d)
        assert conv1.bias is not None and conv2.bias is not None
        ops = stream.ops
        h = conv1.convolve(*ops.conv_input(x, norm1.gamma, conv1.history(x, stream)), stream, add_bias=False)
        padded, remember = ops.biased_conv_input(h, conv1.bias, norm2.gamma, conv2.history(h, stream))
        h = conv2.convolve(padded, remember, stream, add_bias=False)
        if isinstance(self.shortcut, nn.Conv3d):  # 1x1x1, its bias added in the sum
            assert self.shortcut.bias is not None
            shortcut = conv3d(x, self.shortcut.weight, None, (0, 0, 0))
            return ops.projected_residual_sum(h, conv2.bias, shortcut, self.shortcut.bias)
        return ops.residual_sum(h, conv2.bias, x)


class AttentionBlock(nn.Module):
    """Single-head self-attention among the h*w positions of each frame, with a residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, trailing_dims=2)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H, W)  # (B*T, C, H, W)
        qkv = self.to_qkv(self.norm(frames))  # (B*T, 3C, H, W)
        # channels innermost, as SDPA's fused kernels want the head dim (free when channels-last)
        qkv = qkv.permute(0, 2, 3, 1).reshape(B * T, 1, H * W, 3 * C)  # (B*T, 1, H*W, 3C)
        q, k, v = qkv.chunk(3, dim=-1)  # 3 x (B*T, 1, H*W, C)
        out = F.scaled_dot_product_attention(q, k, v)  # (B*T, 1, H*W, C)
        out = out.view(B * T, H, W, C).permute(0, 3, 1, 2)  # (B*T, C, H, W), stored channels-last
        out = self.proj(out).unflatten(0, (B, T)).transpose(1, 2)  # (B, C, T, H, W)
        return x + out


# ---------------------------------------------------------------------------------------------------
# 4. Upsampling


# Which of a 3x3 kernel's rows (or columns) land on each low-resolution row for the two output phases of a
# 2x nearest upsample: phase 0 (output row 2i) sees input rows i-1, i, i; phase 1 (2i + 1) rows i, i, i+1.
# (phase, tap of the 2-tap kernel over rows i-1+phase and i+phase, row of the 3x3 kernel)
PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))


def phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv's weight (C_out, C_in, 3, 3) after a 2x nearest upsample, as the (4 C_out, C_in, 2, 2)
    weight of the equivalent conv on the input: each phase's taps summed in float32, rounded once."""
    taps = torch.tensor(PHASE_TAPS, dtype=torch.float32, device=weight.device)  # (phase, tap, row)
    folded = torch.einsum("atr,ocrs,bus->aboctu", taps, weight.float(), taps)  # (2, 2, C_out, C_in, 2, 2)
    return folded.flatten(0, 2).to(weight.dtype).contiguous(memory_format=layout_of(weight))


class UpsampleConv(nn.Sequential):
    """2x nearest upsample of frames (B*T, C, H, W), then a 3x3 conv to C/2 (official names resample.1.*).

    After `use_phase_weights` the same function runs as a conv on the input itself: the four output
    phases of the upsampled image each see a 2x2 window of the input, whose taps are sums of the 3x3
    kernel's, so one 2x2 conv to 4 x C/2 channels makes all of them (4 multiply-adds per output pixel
    and channel pair instead of 9), and `ops.interleave_phases` puts them in place with the bias.
    """

    def __init__(self, dim: int):
        super().__init__(
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(dim, dim // 2, 3, padding=1)
        )
        self.phase_weight: torch.Tensor | None
        self.register_buffer("phase_weight", None, persistent=False)  # not in the official files
        # weights loaded later (into this module or a parent) are folded again, never left stale
        self.register_load_state_dict_post_hook(refold_after_load)

    def use_phase_weights(self) -> None:
        """Run as the phase conv from now on (after the weights are laid out: the fold takes theirs)."""
        _, conv = self
        assert isinstance(conv, nn.Conv2d)
        self.phase_weight = phase_weights(conv.weight.detach())

    def forward(self, frames: torch.Tensor, ops: Elementwise) -> torch.Tensor:  # type: ignore[override]
        """The upsampling (or the phases' interleaving) and the conv's bias run in `ops` (compiled where
        the decoder is)."""
        _, conv = self
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        if self.phase_weight is not None:
            return ops.interleave_phases(F.conv2d(frames, self.phase_weight, padding=1), conv.bias)
        return ops.add_bias(
            F.conv2d(ops.upsample_nearest(frames), conv.weight, padding=conv.padding), conv.bias
        )


def refold_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """`UpsampleConv`'s load hook (a module-level function: modules with it still pickle)."""
    assert isinstance(module, UpsampleConv)
    if module.phase_weight is not None:
        module.use_phase_weights()


class Resample(nn.Module):
    """2x nearest upsample in space and a 3x3 conv halving the channels; `temporal` also doubles the frames.

    Nearest upsampling only copies values, so unlike upstream (which upsamples in float32 and casts back,
    an exact round trip) we upsample in the activation dtype and save the float32 copy of the largest maps.
    """

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = UpsampleConv(dim)
        # Each input frame gives two output frames, one per half of time_conv's 2*dim output channels.
        self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        if self.time_conv is not None:
            x = self.double_frames(x, stream)
        B, C, T, H, W = x.shape
        frames = self.resample(x.transpose(1, 2).reshape(B * T, C, H, W), stream.ops)
        return frames.unflatten(0, (B, T)).transpose(1, 2)  # (B*T, C/2, 2H, 2W) -> (B, C/2, T, 2H, 2W)

    def double_frames(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C, 2T, H, W), or 2T - 1 frames in a video's first chunk.

        Upstream decodes one latent per call and marks this module 'Rep' on the first call: the video's
        first frame skips time_conv and stays a single frame (the causal first frame); the next call
        runs time_conv with no history, i.e. zero padding. Over a whole chunk that means: frame 0 passes
        through, and frames 1.. go through time_conv as if they began the video, which equals feeding
        zeros for frame 0's time_conv input. Later chunks take history from the stream as usual.
        """
        if not stream.is_first_chunk:
            return self.time_doubled(x, stream)
        first, rest = x[:, :, :1], x[:, :, 1:]
        if rest.shape[2] == 0:  # a one-latent first chunk: time_conv first runs in the next chunk
            return first
        return torch.cat([first, self.time_doubled(rest, stream)], dim=2)  # (B, C, 1 + 2(T-1), H, W)

    def time_doubled(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        assert self.time_conv is not None
        B, C, T, H, W = x.shape
        pairs = self.time_conv(x, stream)  # (B, 2C, T, H, W)
        # interleave: output frame 2t + j is half j of time_conv's output at frame t
        out = torch.empty((B, C, 2 * T, H, W), dtype=x.dtype, device=x.device, memory_format=layout_of(x))
        out[:, :, 0::2] = pairs[:, :C]
        out[:, :, 1::2] = pairs[:, C:]
        return out  # (B, C, 2T, H, W)


# ---------------------------------------------------------------------------------------------------
# 5. Decoder body and the public module


class OutputHead(nn.Sequential):
    """Norm, SiLU and the causal conv to RGB; the indices give the official names head.0.gamma, head.2.*."""

    def __init__(self, dim: int):
        super().__init__(RMSNorm(dim, trailing_dims=3), nn.SiLU(), CausalConv3d(dim, 3, (3, 3, 3)))

    def forward(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:  # type: ignore[override]
        norm, _, conv = self  # the norm and SiLU run in stream.ops.conv_input
        assert isinstance(conv, CausalConv3d)
        return conv.convolve(*stream.ops.conv_input(x, norm.gamma, conv.history(x, stream)), stream)


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        mults = (config.dim_mult[-1], *reversed(config.dim_mult))
        dims = [config.dim * m for m in mults]  # stage widths, widest first: 384, 384, 384, 192, 96
        # 1. Latent channels to the widest width
        self.conv1 = CausalConv3d(config.z_dim, dims[0], (3, 3, 3))
        # 2. Middle: residual, per-frame attention, residual
        self.middle = nn.ModuleList(
            [ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0])]
        )
        # 3. Stages of residual blocks, each but the last followed by a Resample that halves the width
        upsamples: list[nn.Module] = []
        in_dim = dims[0]
        for stage, out_dim in enumerate(dims[1:]):
            for _ in range(config.num_res_blocks + 1):
                upsamples.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if stage < len(config.temporal_upsample):
                upsamples.append(Resample(out_dim, temporal=config.temporal_upsample[stage]))
                in_dim = out_dim // 2
        self.upsamples = nn.ModuleList(upsamples)
        # 4. Head: norm, SiLU, conv to RGB
        self.head = OutputHead(in_dim)

    def forward(self, x: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        # 1. Latent channels to the widest width
        x = self.conv1(x, stream)
        # 2. Middle
        first_block, attention, second_block = self.middle
        x = second_block(attention(first_block(x, stream)), stream)
        # 3. Stages
        for block in self.upsamples:
            x = block(x, stream)
        # 4. Head
        return self.head(x, stream)


class WanVAEDecoder(nn.Module):
    """Normalised latents (B, z_dim, T, h, w) -> pixels in [-1, 1], streamed chunk by chunk per video."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.conv2 = nn.Conv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder(config)
        self.channels_last = False
        self.elementwise = Elementwise()  # the ops between convs; speed.py compiles them

    def use_channels_last(self) -> None:
        """Store conv weights, and so every activation from here on, channels-last (see the module doc)."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d | nn.Conv2d):
                layout = torch.channels_last_3d if module.weight.ndim == 5 else torch.channels_last
                module.weight.data = module.weight.data.contiguous(memory_format=layout)
        self.channels_last = True

    def use_phase_weights(self) -> None:
        """Every upsample's conv runs on its input, as four phases (`UpsampleConv`); after loading and
        `use_channels_last`, whose layout the phase weights take."""
        for module in self.modules():
            if isinstance(module, UpsampleConv):
                module.use_phase_weights()

    def start_stream(self) -> DecodeStream:
        """A fresh, empty feature cache for a new video, on the decoder's current device and dtype.

        Its one small host-to-device copy (mean and std) happens here, once per video, not in `decode`.
        """
        weight = self.conv2.weight
        # float32 first, then the decoder dtype: the same rounding as upstream's float32 tensors cast at use
        mean = torch.tensor(self.config.latent_mean, device=weight.device).to(weight.dtype)
        std = torch.tensor(self.config.latent_std, device=weight.device).to(weight.dtype)
        return DecodeStream(
            latent_mean=mean.view(1, -1, 1, 1, 1),
            latent_inv_std=(1.0 / std).view(1, -1, 1, 1, 1),
            ops=self.elementwise,
        )

    # Inference mode, not just no_grad: the compiled ops are traced in it (generation runs there), and
    # tensors made outside it would fail their guards and trace them again.
    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, stream: DecodeStream) -> torch.Tensor:
        """Decode the next T latent frames of the stream's video into 4T - 3 (first call) or 4T frames.

        latents: (B, z_dim, T, h, w) as the DiT produces them. Returns (B, 3, T_out, 8h, 8w) in the
        decoder's dtype, clamped to [-1, 1].
        """
        weight = self.conv2.weight
        if latents.ndim != 5 or latents.shape[1] != self.config.z_dim or latents.shape[2] == 0:
            raise ValueError(
                f"latents of shape {tuple(latents.shape)} must be (B, {self.config.z_dim}, T, h, w), T >= 1"
            )
        if latents.device != weight.device:
            raise ValueError(
                f"latents are on {latents.device} but the VAE is on {weight.device}; move them first"
            )
        if stream.latent_mean.device != weight.device or stream.latent_mean.dtype != weight.dtype:
            raise ValueError(
                f"stream was started for {stream.latent_mean.dtype} on {stream.latent_mean.device}, but the "
                f"VAE is now {weight.dtype} on {weight.device}; call start_stream() after moving the VAE"
            )
        # 1. Un-normalise: z * std + mean, written as upstream's z / (1/std) + mean for the same rounding
        z = latents.to(weight.dtype) / stream.latent_inv_std + stream.latent_mean
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last_3d)
        # 2. Decode, carrying each causal conv's history in the stream
        pixels = self.decoder(conv3d(z, self.conv2.weight, self.conv2.bias, (0, 0, 0)), stream)
        stream.latent_frames_decoded += latents.shape[2]
        return pixels.clamp_(-1.0, 1.0)
