"""Stage 5, decode + write: latents -> frames -> resize -> MP4 (and latents/frames files) -> metadata.

Columns in: ``row``, ``latents``, ``generator``, ``fingerprint``, ``timings``. Columns out: ``outputs`` (JSON of
the written paths). The decode noise continues the last pass's generator (its state travelled with the row);
the 0.9.1 decoder's noise injection draws from a generator seeded with the row's seed. Frames never leave
this stage: they are encoded and written here. A failure while writing is reported as ``write``.
"""

from __future__ import annotations

import json
import time

import torch

from ..fingerprint import model_identity
from ..io.media import resize_frames
from ..io.outputs import write_outputs
from ..io.storage import Storage
from ..sampling.decode import decode_frames
from . import models
from .base import Stage, StageError
from .records import GENERATOR, LATENTS, TEXT, add_timing, row_of
from .tensors import restore_generator, unpack_tensors
from .sample import pass_size


class DecodeStage(Stage):
    name = "decode"
    inputs = ("row", LATENTS, GENERATOR)
    outputs = ("outputs",)
    components = ("vae",)
    drops = (TEXT, LATENTS, GENERATOR)  # nothing downstream needs the blobs: results stay small
    overlap_io = True  # the VAE runs under self.compute; the MP4 encode and upload outside it

    def setup(self) -> None:
        self.vae = models.load(self.job, "vae", dtype=self.dtype, device=self.device)
        self.storage = Storage(self.job.output, self.job.storage_options)
        self.tiling = self.job.recipe.vae_tiling
        self.model = model_identity(self.job)

    def process(self, records) -> None:
        for record in records:
            self._one(record)

    def _one(self, record) -> None:
        start, waited = time.perf_counter(), self.waited_seconds()
        row = row_of(record)
        recipe = self.job.recipe
        latents = unpack_tensors(record[LATENTS])["latents"]
        # the MP4 needs uint8 frames: made on the device, unless float frames are saved or must be resized
        final_size = pass_size(self.job, row, refine=self.job.multiscale)
        as_uint8 = "frames" not in self.job.save and final_size == (row.width, row.height)
        with self.model_work([record]) as admitted:
            if not admitted:  # its actor died in here too often: failed by model_work
                return
            frames = decode_frames(
                self.vae, latents, [restore_generator(record[GENERATOR])], decode_timestep=recipe.decode_timestep,
                decode_noise_scale=recipe.decode_noise_scale, dtype=self.dtype,
                injection_generators=[torch.Generator().manual_seed(row.seed)], tiling=self.tiling, as_uint8=as_uint8,
            )[0].numpy()  # fmt: skip
        if not as_uint8:
            frames = resize_frames(frames, row.width, row.height)
        sizes = {"base": list(pass_size(self.job, row, refine=False))}
        if self.job.multiscale:
            sizes["refine"] = list(pass_size(self.job, row, refine=True))
        try:
            meta = write_outputs(self.storage, self.job, row, frames=frames, latents=latents,
                                 fingerprint=record["fingerprint"], model=self._model(record),
                                 timings=lambda: self._seconds_so_far(record, start, waited),
                                 pass_sizes=sizes)  # fmt: skip
        except Exception as e:  # noqa: BLE001
            raise StageError("write", f"{type(e).__name__}: {e}") from e
        record["outputs"] = json.dumps({k: v["path"] for k, v in meta["outputs"].items()})

    def _model(self, record) -> dict:
        """The job's model identity (references as written) with the snapshots actually used, per component:
        hub commits for unpinned references, content digests for local checkpoints."""
        return {**self.model, "snapshots": {**json.loads(record["snapshots"]), **self.snapshots}}

    def _seconds_so_far(self, record, start: float, waited: float) -> dict[str, float]:
        """The row's per-stage seconds with this stage's so far (its files written), for the metadata."""
        probe = {"timings": record["timings"]}
        add_timing(probe, self.name, self.working_seconds(start, waited))
        return json.loads(probe["timings"])
