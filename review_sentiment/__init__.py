"""Flipkart review sentiment: the pipeline's stages, one subpackage each.

data → modeling → tracking → training; orchestration and serving on top, neither importing the
other, and serving never importing training. `pyproject.toml` states these rules as import-linter
contracts and CI checks them.
"""

__version__ = "0.9.0"  # the one place the version is written: pyproject.toml and the API's /docs read it
