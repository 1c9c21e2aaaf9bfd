"""Condition media (images and videos from any fsspec URL) and the final frame resize.

Condition media is prepared as diffusers' ``VideoProcessor`` does for the LTX pipelines: each frame resized
to the row's size with PIL's LANCZOS filter, scaled to [-1, 1], as (1, 3, F, H, W). An image or a video is
told apart by its file extension.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import torch
from PIL import Image

from .rows import media_kind


def read_uri(uri: str, storage_options: dict | None = None) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
        return fh.read()


def _frames_to_tensor(frames: list[Image.Image], width: int, height: int) -> torch.Tensor:
    arrays = [
        np.asarray(f.convert("RGB").resize((width, height), resample=Image.LANCZOS), dtype=np.float32) / 255.0
        for f in frames
    ]
    x = torch.from_numpy(np.stack(arrays))  # (F, H, W, 3)
    x = x.permute(3, 0, 1, 2).unsqueeze(0)  # (F, H, W, 3) -> (1, 3, F, H, W)
    return 2.0 * x - 1.0


def decode_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def decode_video_frames(data: bytes, max_frames: int | None = None) -> list[Image.Image]:
    import imageio_ffmpeg

    fd, path = tempfile.mkstemp(suffix=".mp4")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = next(reader)
        w, h = meta["size"]
        frames = []
        for buf in reader:
            frames.append(Image.frombuffer("RGB", (w, h), bytes(buf), "raw", "RGB", 0, 1))
            if max_frames is not None and len(frames) >= max_frames:
                break
        reader.close()
    finally:
        os.unlink(path)
    if not frames:
        raise ValueError("video has no frames")
    return frames


def trim_frames(num_media_frames: int, frame_index: int, num_frames: int, temporal: int = 8) -> int:
    """Frames of a condition video that are used: at most up to the end of the output, then 8k+1."""
    n = min(num_media_frames, num_frames - frame_index)
    return (n - 1) // temporal * temporal + 1


def load_condition(uri: str, *, width: int, height: int, frame_index: int, num_frames: int,
                   storage_options: dict | None = None, temporal: int = 8) -> torch.Tensor:  # fmt: skip
    """A condition's pixels (1, 3, F, H, W) in [-1, 1]: one frame for an image, 8k+1 frames for a video."""
    kind = media_kind(uri)
    data = read_uri(uri, storage_options)
    if kind == "image":
        return _frames_to_tensor([decode_image(data)], width, height)
    frames = decode_video_frames(data, max_frames=num_frames - frame_index)
    keep = trim_frames(len(frames), frame_index, num_frames, temporal)
    return _frames_to_tensor(frames[:keep], width, height)


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """float (F, H, W, 3) -> (F, height, width, 3), per frame with PIL's bicubic filter (what ``Image.resize``
    uses by default, as in diffusers' multi-scale docs), on float channels so nothing is quantised early."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.float32)
    for i, frame in enumerate(frames):
        for c in range(3):
            ch = Image.fromarray(np.ascontiguousarray(frame[..., c], dtype=np.float32), mode="F")
            out[i, ..., c] = np.asarray(ch.resize((width, height), resample=Image.BICUBIC))
    return np.clip(out, 0.0, 1.0)
