"""Offline builder (``fastvideo-build``): export specs, compiled artifacts and their manifests, and loading them.

``builder`` / ``cli`` build; ``backends`` is the registry of what each backend (inductor, aoti, tensorrt)
does at load and serve time; ``loading`` runs the ordered checks and loads programs; ``artifact_modules``
plugs them into a pipeline. Imports nothing from the runtime or serving layers (tests/test_layering.py).
"""
