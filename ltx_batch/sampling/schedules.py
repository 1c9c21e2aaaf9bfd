"""Flow-matching noise schedules: the sigma/timestep arrays the LTX pipelines sample along.

Contract: every function here returns exactly (bit for bit on a CPU) the arrays diffusers'
``FlowMatchEulerDiscreteScheduler.set_timesteps`` leaves behind for the same inputs, as the LTX pipelines
call it:

- ``base_schedule``: ``LTXPipeline`` / ``LTXImageToVideoPipeline`` (sigmas ``linspace(1, 1/N, N)``, ``mu``
  from the latent token count, dynamic shifting, ``shift_terminal`` stretching);
- ``condition_schedule``: ``LTXConditionPipeline`` (explicit timesteps: the linear-quadratic schedule times
  1000 by default, or a user list such as the distilled ``[1000, 993, ..., 0.03]``);
- ``sigma_schedule``: explicit sigmas, the primitive behind ``base_schedule``;
- ``Schedule.truncate``: ``LTXConditionPipeline.get_timesteps`` (``denoise_strength``).

The arithmetic runs in numpy with the same dtypes as diffusers (inputs cast to float32 first, shifts in
float32, timesteps passed through unchanged), because a float64 detour changes the last bits and the
sigmas feed every Euler step. Timesteps are on the training scale (0..num_train_timesteps) and are what the
transformer receives; sigmas are in [0, 1] and end with an appended terminal 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ltx_batch.models.config import ConfigError, config_from_dict

# Every key of diffusers' FlowMatchEulerDiscreteScheduler config (0.32 to 0.42) is a field below, so there is
# nothing to ignore: an unknown key means a scheduler we have not checked, and is an error.
_IGNORED_KEYS: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerConfig:
    """A checkpoint's ``scheduler/scheduler_config.json`` (defaults: diffusers' scheduler defaults)."""

    num_train_timesteps: int = 1000
    """Timestep scale: timestep = sigma * num_train_timesteps."""
    shift: float = 1.0
    """Static shift s: sigma -> s*sigma / (1 + (s-1)*sigma). Ignored with dynamic shifting."""
    use_dynamic_shifting: bool = False
    """Shift by ``mu`` from the token count (0.9.0/0.9.1). ``LTXConditionPipeline`` cannot run it."""
    base_shift: float | None = 0.5
    """``mu`` at ``base_image_seq_len`` tokens."""
    max_shift: float | None = 1.15
    """``mu`` at ``max_image_seq_len`` tokens (linear in between and beyond)."""
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    """Mochi only; unsupported."""
    shift_terminal: float | None = None
    """Stretch the shifted sigmas so the last one equals this (0.9.0/0.9.1: 0.1). 0 or None: off."""
    use_karras_sigmas: bool = False
    """Unsupported (no LTX checkpoint uses it)."""
    use_exponential_sigmas: bool = False
    """Unsupported."""
    use_beta_sigmas: bool = False
    """Unsupported."""
    time_shift_type: Literal["exponential", "linear"] = "exponential"
    """How ``mu`` shifts: exp(mu)/(exp(mu) + 1/sigma - 1), or mu/(mu + 1/sigma - 1)."""
    stochastic_sampling: bool = False
    """Unsupported: it would draw noise inside every step."""

    def __post_init__(self) -> None:
        for name in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                     "stochastic_sampling"):
            if getattr(self, name):
                raise ConfigError(f"SchedulerConfig: {name}=True is not supported (no LTX-Video checkpoint uses it)")
        if self.time_shift_type not in ("exponential", "linear"):
            raise ConfigError(f"SchedulerConfig: time_shift_type must be 'exponential' or 'linear', "
                              f"got {self.time_shift_type!r}")
        if self.num_train_timesteps <= 0:
            raise ConfigError(f"SchedulerConfig: num_train_timesteps must be positive, got {self.num_train_timesteps}")
        if self.use_dynamic_shifting and (self.base_shift is None or self.max_shift is None):
            raise ConfigError("SchedulerConfig: use_dynamic_shifting needs base_shift and max_shift")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "scheduler_config.json") -> SchedulerConfig:
        class_name = raw.get("_class_name")
        if class_name not in (None, "FlowMatchEulerDiscreteScheduler"):
            raise ConfigError(f"{where}: _class_name {class_name!r} is not FlowMatchEulerDiscreteScheduler")
        return config_from_dict(cls, raw, ignore=_IGNORED_KEYS, where=where)


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """What a denoise loop walks: step i feeds ``timesteps[i]`` and moves from ``sigmas[i]`` to ``sigmas[i+1]``."""

    timesteps: torch.Tensor
    """(n,) float32, on the training scale; given to the transformer as is."""
    sigmas: torch.Tensor
    """(n + 1,) float32; the last is the terminal 0."""
    ladder: torch.Tensor
    """The scheduler's whole sigma array, untouched by ``truncate``: per-token steps search it for the next
    lower sigma (diffusers keeps the scheduler's full array when ``denoise_strength`` trims the loop)."""
    num_train_timesteps: int

    def truncate(self, strength: float) -> Schedule:
        """Keep the last ``int(n * strength)`` steps, as ``LTXConditionPipeline.get_timesteps`` does.

        diffusers calls it only for ``denoise_strength < 1``; for strength >= 1 it is the identity. The
        latents then start at ``sigmas[0]`` (noised by ``forward_noise`` with that sigma).
        """
        n = len(self.timesteps)
        start = max(n - min(int(n * strength), n), 0)
        return dataclasses.replace(self, timesteps=self.timesteps[start:], sigmas=self.sigmas[start:])

    def to(self, device: torch.device | str) -> Schedule:
        return dataclasses.replace(self, timesteps=self.timesteps.to(device), sigmas=self.sigmas.to(device),
                                   ladder=self.ladder.to(device))


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """``mu`` for dynamic shifting: linear in the token count through (base_seq_len, base_shift) and
    (max_seq_len, max_shift). Python floats, evaluated in diffusers' order (m, then b, then mu)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def linear_quadratic_schedule(num_steps: int, threshold_noise: float = 0.025,
                              linear_steps: int | None = None) -> torch.Tensor:
    """LTX-Video's default sigmas (float32, length ``num_steps``, starting at 1, no terminal 0):
    a slow linear descent to ``1 - threshold_noise`` over the first half, then a quadratic to 0."""
    if linear_steps is None:
        linear_steps = num_steps // 2
    if num_steps < 2:
        return torch.tensor([1.0], dtype=torch.float32)
    linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    step_diff = linear_steps - threshold_noise * num_steps
    quadratic_steps = num_steps - linear_steps
    quad_coef = step_diff / (linear_steps * quadratic_steps**2)
    lin_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
    const = quad_coef * (linear_steps**2)
    quadratic = [quad_coef * (i**2) + lin_coef * i + const for i in range(linear_steps, num_steps)]
    # The schedule is built as noise levels then flipped; the trailing 1.0 (-> 0) is dropped again.
    schedule = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.tensor(schedule[:-1], dtype=torch.float32)


def _shift(config: SchedulerConfig, sigmas: np.ndarray, mu: float | None) -> np.ndarray:
    # Expressions mirror diffusers' so numpy picks the same dtypes (python scalars stay weak: float32 in).
    if config.use_dynamic_shifting:
        if mu is None:
            raise ValueError("this scheduler uses dynamic shifting: mu (from the token count) is required")
        with np.errstate(divide="ignore"):  # a sigma of 0 shifts to 0 through 1/0 = inf, as in diffusers
            if config.time_shift_type == "exponential":
                sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
            else:
                sigmas = mu / (mu + (1 / sigmas - 1) ** 1.0)
    else:
        sigmas = config.shift * sigmas / (1 + (config.shift - 1) * sigmas)
    if config.shift_terminal:
        one_minus_z = 1 - sigmas
        if one_minus_z[-1] == 0:  # diffusers divides 0 by 0 here and samples NaNs
            raise ValueError("shift_terminal cannot stretch a schedule whose last sigma is 1 "
                             "(a single step from pure noise); use at least 2 steps")
        scale_factor = one_minus_z[-1] / (1 - config.shift_terminal)
        sigmas = 1 - (one_minus_z / scale_factor)
    return sigmas


def _as_array(values: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    # diffusers' np.array(...) on a tensor gives the same values as .numpy(), minus a numpy deprecation warning.
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.array(values)


def _finish(config: SchedulerConfig, sigmas: np.ndarray, timesteps: np.ndarray | None) -> Schedule:
    sig = torch.from_numpy(np.ascontiguousarray(sigmas)).to(torch.float32)
    if timesteps is None:
        ts = sig * config.num_train_timesteps
    else:
        ts = torch.from_numpy(np.ascontiguousarray(timesteps)).to(torch.float32)
    sig = torch.cat([sig, torch.zeros(1, dtype=torch.float32)])
    return Schedule(timesteps=ts, sigmas=sig, ladder=sig, num_train_timesteps=config.num_train_timesteps)


def sigma_schedule(config: SchedulerConfig, sigmas: Sequence[float] | np.ndarray | torch.Tensor,
                   *, mu: float | None = None) -> Schedule:
    """``set_timesteps(sigmas=...)``: cast to float32, shift, stretch to ``shift_terminal``, append 0;
    timesteps = sigmas * num_train_timesteps (in float32)."""
    arr = _as_array(sigmas).astype(np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D sequence, got shape {arr.shape}")
    return _finish(config, _shift(config, arr, mu), None)


def timestep_schedule(config: SchedulerConfig, timesteps: Sequence[float] | np.ndarray | torch.Tensor,
                      *, mu: float | None = None) -> Schedule:
    """``set_timesteps(timesteps=...)``: the timesteps are kept as given (float32) while the sigmas are
    timesteps / num_train_timesteps, shifted like any sigmas (identical to timesteps/1000 with the
    0.9.5+ scheduler, whose shift is 1 and which has no terminal stretch)."""
    ts = _as_array(timesteps).astype(np.float32)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D sequence, got shape {ts.shape}")
    return _finish(config, _shift(config, ts / config.num_train_timesteps, mu), ts)


def base_schedule(config: SchedulerConfig, *, num_inference_steps: int, video_seq_len: int) -> Schedule:
    """``LTXPipeline`` / ``LTXImageToVideoPipeline``: sigmas ``linspace(1, 1/N, N)`` (float64, then float32
    in the scheduler) and ``mu = calculate_shift(video_seq_len, ...)`` with ``video_seq_len`` = latent
    frames * latent height * latent width. ``mu`` only matters with dynamic shifting.

    diffusers' base pipelines cannot take custom timesteps (they always pass sigmas too, which
    ``retrieve_timesteps`` refuses), so neither can this.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
    mu = None
    if config.use_dynamic_shifting:  # diffusers computes mu always and the scheduler ignores it otherwise
        mu = calculate_shift(video_seq_len, config.base_image_seq_len, config.max_image_seq_len,
                             config.base_shift, config.max_shift)
    return sigma_schedule(config, sigmas, mu=mu)


def condition_schedule(config: SchedulerConfig, *, num_inference_steps: int | None = None,
                       timesteps: Sequence[float] | None = None) -> Schedule:
    """``LTXConditionPipeline``: ``timesteps`` as given, else ``linear_quadratic_schedule(N) * 1000``
    (a float32 tensor). Apply ``Schedule.truncate(denoise_strength)`` afterwards when strength < 1."""
    if config.use_dynamic_shifting:
        # diffusers fails here too (set_timesteps without mu); this scheduler belongs to pipeline: base.
        raise ValueError("LTXConditionPipeline semantics need a scheduler without dynamic shifting "
                         "(0.9.0/0.9.1 checkpoints use the base pipeline)")
    if timesteps is None:
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1 when no timesteps are given, got {num_inference_steps}")
        return timestep_schedule(config, linear_quadratic_schedule(num_inference_steps) * 1000)
    return timestep_schedule(config, timesteps)
