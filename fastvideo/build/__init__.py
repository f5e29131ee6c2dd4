"""Offline builder (``fastvideo-build``): export specs, compiled artifacts and their manifests."""
