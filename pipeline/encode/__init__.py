"""Video encoding: frame chunks streamed into ffmpeg (`encoder.py`), and the binary itself (`ffmpeg.py`)."""

from pipeline.encode.encoder import EncodedVideo, VideoEncoder
from pipeline.encode.ffmpeg import EncodeError, EncoderSettings, find_ffmpeg

__all__ = ["EncodeError", "EncodedVideo", "EncoderSettings", "VideoEncoder", "find_ffmpeg"]
