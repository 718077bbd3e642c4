"""The methods that run an avalanche-lib plugin (``ewc``, ``lwf``, ``si``, ``agem``), one module
each, and the bridge they share (``bridge.py``: the stand-in for Avalanche's training template).

The bridge serves these four and nothing else, so it lives here with them rather than at the
package root. Every module of this folder is imported (each method's registers its strategy),
so a fifth Avalanche method is one new module here plus its YAML.
"""
from ...plugins import import_all

import_all(__name__)
