"""adaptlang: continual language adaptation of decoder LLMs with composable strategies."""
from ._version import __version__  # noqa: E402

from .config import load_config  # noqa: E402
from .errors import UserError  # noqa: E402
from .composition import compose  # noqa: E402
from .strategy import Strategy, register_strategy  # noqa: E402


def make_plan(cfg, composed=None):
    """Check a resolved config and return its plan (see adaptlang.plan.make_plan)."""
    from .plan import make_plan as _make_plan

    return _make_plan(cfg, composed)


def run(cfg, composed=None):
    """Run a resolved config (see adaptlang.pipeline.run)."""
    from .pipeline import run as _run

    return _run(cfg, composed)


def resume(folder, composed=None):
    """Continue the interrupted run in ``folder`` (runs/NAME); see adaptlang.pipeline.resume."""
    from .pipeline import resume as _resume

    return _resume(folder, composed)


__all__ = ["Strategy", "UserError", "compose", "load_config", "make_plan", "register_strategy", "resume", "run",
           "__version__"]
