"""Built-in strategies: one folder per method (adaptlang.plugins imports each one).

A method's folder holds everything only that method uses: ``vocab/`` its tokenizer merge,
FOCUS and report section, ``replay/`` its buffer policies. Its ``__init__.py`` defines and
registers the strategy. The four methods that run an avalanche-lib plugin share one folder,
``avalanche/``, with the bridge they all use. A folder imports nothing from another
folder (tests/test_method_folders.py); what two methods share lives outside ``strategies/``
(``adaptlang.instructions.streams`` for xling and mlm). A new built-in method is one
folder here plus ``configs/strategy/<name>.yaml``.

They live under the adaptlang namespace (``adaptlang.strategies``) so that no generic
top-level module name is installed into site-packages.
"""
