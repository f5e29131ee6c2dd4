"""Model families' own code, one sub-package per family (``ltx2/``; Wan still lives in ``engine/dit.py``).

Contract: each sub-package states in its ``__init__`` docstring what it builds, what it loads and what it
refuses. Nothing here picks a family; the family registry (issue 15 item 1) will.
"""
