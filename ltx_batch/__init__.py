"""ltx_batch: batch video rendering with the LTX-Video models on Ray.

Public API: ``load_job`` (a job spec -> ``Job``), ``render_one`` (one row in-process), ``Renderer``, and
``DeviceLost`` (what they raise when the GPU is lost to the process).
"""

__version__ = "0.1.0"

from .job import Job, load_job  # noqa: E402
from .stages.errors import DeviceLost  # noqa: E402

_RENDER = ("Renderer", "RenderResult", "render_one")


def __getattr__(name: str):
    # the renderer brings torch and the models: imported on first use, so the CLI's other verbs and the
    # ``run`` driver start without them
    if name in _RENDER:
        from . import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DeviceLost", "Job", "load_job", "Renderer", "RenderResult", "render_one", "__version__"]
