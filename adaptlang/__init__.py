"""adaptlang: continual language adaptation of decoder LLMs with composable strategies."""
__version__ = "0.1.0"

from .config import load_config  # noqa: E402
from .errors import UserError  # noqa: E402
from .strategy import Strategy, compose, register_strategy  # noqa: E402


def run(cfg, composed=None):
    """Run a resolved config (see adaptlang.pipeline.run)."""
    from .pipeline import run as _run

    return _run(cfg, composed)


__all__ = ["Strategy", "UserError", "compose", "load_config", "register_strategy", "run", "__version__"]
