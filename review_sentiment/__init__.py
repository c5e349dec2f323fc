"""Flipkart review sentiment: the pipeline's stages, one subpackage each.

data → modeling → tracking → training; orchestration and serving on top, neither importing the
other, and serving never importing training. `pyproject.toml` states these rules as import-linter
contracts and CI checks them.
"""
