"""Fused stages: several stages in one actor, for models they share or hops they save.

``base_refine`` runs base sample, latent upsample and refine in one actor (one transformer and VAE copy for
both passes: ``stages.models`` caches per process); ``refine_decode`` saves the hop of the final latents.
Each inner stage still reports its own name when a row fails.
"""

from __future__ import annotations

from .base import Stage, to_batch, to_records


class FusedStage(Stage):
    parts: tuple[type[Stage], ...] = ()

    @classmethod
    def concurrent_io(cls) -> bool:
        return any(part.overlap_io for part in cls.parts)

    def __init__(self, job, attempts=None, eager: bool = False):
        # each part counts its own tries (under its own name) inside its model work
        self.stages = [part(job, attempts) for part in self.parts]
        self.name = self.stages[0].name
        self.drops = tuple(c for st in self.stages for c in st.drops)
        super().__init__(job, attempts, eager)
        for stage in self.stages:  # parts share one lock: only the I/O of an overlap_io part runs beside them
            stage.compute = self.compute

    def ensure_setup(self) -> None:
        for stage in self.stages:
            stage.ensure_setup()

    def __call__(self, batch):
        records = to_records(batch)
        for stage in self.stages:
            records = stage(records)
        return records if isinstance(batch, list) else to_batch(records)


def fuse(*parts: type[Stage]) -> type[FusedStage]:
    """A fused stage class named after its parts (the Ray dashboard shows the class name)."""
    name = "".join(p.__name__.removesuffix("Stage") for p in parts) + "Stage"
    return type(name, (FusedStage,), {"parts": tuple(parts), "__module__": __name__})
