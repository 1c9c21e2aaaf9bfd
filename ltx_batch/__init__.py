"""ltx_batch: batch video rendering with the LTX-Video models on Ray.

Public API: ``load_job`` (a job spec -> ``Job``), ``render_one`` (one row in-process), ``Renderer``.
"""

__version__ = "0.1.0"

from .job import Job, load_job  # noqa: E402
from .render import Renderer, RenderResult, render_one  # noqa: E402

__all__ = ["Job", "load_job", "Renderer", "RenderResult", "render_one", "__version__"]
