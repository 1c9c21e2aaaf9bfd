"""MP4 encoding: frames and rate survive a round trip through ffmpeg; ffmpeg's own errors are reported."""

from __future__ import annotations

import numpy as np
import pytest

from ltx_batch.io.video import encode_mp4, read_video


def test_round_trip_keeps_frames_size_and_an_ntsc_rate(tmp_path):
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    frames = np.broadcast_to(ramp[None, None, :, None], (9, 32, 64, 3)).copy()
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(frames, 24000 / 1001))
    back, meta = read_video(str(path))
    assert back.shape == (9, 32, 64, 3)
    assert meta["fps"] == pytest.approx(24000 / 1001, abs=0.005)  # ffmpeg prints it rounded: 23.98
    assert np.abs(back.astype(np.float32) / 255 - frames).mean() < 0.02  # crf 18 on a smooth ramp


def test_ffmpeg_failure_carries_its_message():
    with pytest.raises(RuntimeError, match=r"ffmpeg exited with .*crf"):
        encode_mp4(np.zeros((2, 16, 16, 3), np.uint8), 25, crf=-5)


def test_odd_sizes_are_refused_before_ffmpeg_runs():
    with pytest.raises(ValueError, match="even H and W"):
        encode_mp4(np.zeros((2, 15, 16, 3), np.uint8), 25)


def test_device_quantisation_matches_numpy_bit_for_bit():
    import torch

    from ltx_batch.io.video import quantize
    from ltx_batch.sampling.decode import quantize_frames

    rng = np.random.default_rng(0)
    halves = (np.arange(256, dtype=np.float32) + 0.5) / 255  # values that land on .5 after scaling
    edges = np.array([0.0, 1.0, -0.0, -0.1, 1.1], dtype=np.float32)
    noise = rng.random(3 * 2 * 40 * 40 - 261, dtype=np.float32) * 1.2 - 0.1
    video = torch.from_numpy(np.concatenate([halves, edges, noise]).reshape(1, 3, 2, 40, 40))  # (B, 3, F, H, W)
    expected = quantize(video.permute(0, 2, 3, 4, 1).numpy())
    np.testing.assert_array_equal(quantize_frames(video).numpy(), expected)


def test_long_videos_reach_ffmpeg_whole(tmp_path):
    # more frames than one pipe write holds: every byte must arrive, not a count of frames taken as bytes
    frames = np.zeros((4500, 16, 16, 3), np.uint8)
    frames[:, :, :, 0] = (np.arange(4500) % 256).astype(np.uint8)[:, None, None]
    path = tmp_path / "long.mp4"
    path.write_bytes(encode_mp4(frames, 25))
    assert read_video(str(path))[0].shape[0] == 4500
