"""MP4 encoding (H.264, yuv420p) through the ffmpeg binary that imageio-ffmpeg ships, and reading back.

Frames are quantised as diffusers' ``output_type="pil"`` does: ``round(x * 255)`` of values in [0, 1].
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from fractions import Fraction

import numpy as np


def quantize(frames: np.ndarray) -> np.ndarray:
    """float (F, H, W, 3) in [0, 1] -> uint8, as diffusers' numpy_to_pil."""
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def encode_mp4(frames: np.ndarray, frame_rate: float, *, crf: int = 18) -> bytes:
    """uint8 or float frames (F, H, W, 3) -> MP4 bytes at ``frame_rate``.

    One ffmpeg process fed the raw frames in a single write and waited on (no polling loop), so the
    calling thread sleeps in the kernel while x264 works: the decode stage encodes one row while the
    next decodes. ffmpeg's error text becomes the exception's message.
    """
    import imageio_ffmpeg

    if frames.dtype != np.uint8:
        frames = quantize(frames)
    f, h, w, c = frames.shape
    if c != 3 or h % 2 or w % 2 or f < 1:
        raise ValueError(f"encode_mp4: need (F, H, W, 3) frames with even H and W, got {frames.shape}")
    rate = Fraction(frame_rate).limit_denominator()  # 24000/1001 stays exact
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{w}x{h}",
        "-pix_fmt", "rgb24", "-r", str(rate), "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p",
        "-v", "error", "-crf", str(crf), "-preset", "medium", "-movflags", "+faststart", path,
    ]  # fmt: skip
    try:
        # a flat byte view: subprocess writes a multi-dimensional memoryview in chunks counted in items,
        # not bytes, and would cut long videos short
        raw = memoryview(np.ascontiguousarray(frames)).cast("B")
        done = subprocess.run(cmd, input=raw, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg exited with {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def read_video(path: str) -> tuple[np.ndarray, dict]:
    """A video file -> (uint8 frames (F, H, W, 3), ffmpeg's metadata incl. ``fps`` and ``size``)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3) for buf in reader]
    return (np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)), meta
