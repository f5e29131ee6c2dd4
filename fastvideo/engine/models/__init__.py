"""Model families' own code, one sub-package per family: ``wan/`` and ``ltx2/``.

Contract: each sub-package states in its ``__init__`` docstring what it builds, what it loads and what it
refuses. Nothing here picks a family: :mod:`fastvideo.engine.families` does, from the folder's ``model_index.json``.
"""
