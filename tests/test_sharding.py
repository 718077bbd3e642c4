"""train.fsdp in the plan: every built-in strategy plans sharded (the sharded runs themselves:
tests/test_multiprocess.py)."""
import importlib.util
import os

import pytest

import adaptlang

from conftest import QUICK


@pytest.mark.skipif(importlib.util.find_spec("avalanche") is None and not os.environ.get("CI"),
                    reason="avalanche-lib not installed (the README's test command installs it)")
def test_the_avalanche_strategies_plan_sharded():
    adaptlang.make_plan(adaptlang.load_config(QUICK + ["strategy=lwf+ewc+si+agem", "train.fsdp=true"]))


@pytest.mark.parametrize("strategy", ["af+vocab+lora+merge+replay", "lwf", "xling", "mlm"])
def test_the_other_strategies_plan_sharded(strategy):
    adaptlang.make_plan(adaptlang.load_config(QUICK + [f"strategy={strategy}", "train.fsdp=true"]))
