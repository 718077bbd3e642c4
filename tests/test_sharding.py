"""train.fsdp in the plan: strategies whose per-parameter tensors are not sharded are refused
in one line before anything runs; the others plan as usual (the sharded runs themselves:
tests/test_multiprocess.py)."""
import importlib.util
import os

import pytest

import adaptlang
from adaptlang import UserError

from conftest import QUICK


@pytest.mark.skipif(importlib.util.find_spec("avalanche") is None and not os.environ.get("CI"),
                    reason="avalanche-lib not installed (the README's test command installs it)")
def test_strategies_with_whole_parameter_tensors_are_refused_sharded():
    with pytest.raises(UserError, match=r"train.fsdp=true: strategy agem, ewc, si cannot run sharded") as refused:
        adaptlang.make_plan(adaptlang.load_config(QUICK + ["strategy=lwf+ewc+si+agem", "train.fsdp=true"]))
    assert "\n" not in str(refused.value) and "lwf" not in str(refused.value)
    adaptlang.make_plan(adaptlang.load_config(QUICK + ["strategy=lwf+ewc+si+agem"]))  # unsharded: as before


@pytest.mark.parametrize("strategy", ["af+vocab+lora+merge+replay", "lwf", "xling", "mlm"])
def test_the_other_strategies_plan_sharded(strategy):
    adaptlang.make_plan(adaptlang.load_config(QUICK + [f"strategy={strategy}", "train.fsdp=true"]))
