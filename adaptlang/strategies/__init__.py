"""Built-in strategies, one module each; every module here is imported (adaptlang.plugins).

They live under the adaptlang namespace (``adaptlang.strategies``) so that no generic
top-level module name is installed into site-packages.
"""
