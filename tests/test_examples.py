"""Every script in examples/ runs as a user runs it: ``python examples/<name>.py`` from the
repository root, in its own process, and exits 0. Each writes its runs under
$ADAPTLANG_EXAMPLE_OUT (here a temporary folder), so the tests leave nothing in the repository.
A new example joins this test by being a file in examples/; real_checkpoint.py runs in
tests/test_real_checkpoint.py, whose checks of a real checkpoint read its run folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.stem != "real_checkpoint")


def test_there_are_examples():
    assert EXAMPLES, "examples/*.py is empty"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(script, tmp_path):
    env = {**os.environ, "ADAPTLANG_EXAMPLE_OUT": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    default_out = ROOT / "runs" / "examples"
    existed = default_out.exists()
    done = subprocess.run([sys.executable, str(script.relative_to(ROOT))], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (f"{script.name} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    assert existed or not default_out.exists(), f"{script.name} wrote into {default_out}, not $ADAPTLANG_EXAMPLE_OUT"
