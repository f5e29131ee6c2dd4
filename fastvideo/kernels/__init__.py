"""Kernels: attention and fused DiT ops, chosen once through :mod:`fastvideo.kernels.registry`.

Every kernel here has a torch reference twin and a parity test. Model code never calls a
kernel directly: it asks the registry for a backend at load time and calls what it got.
"""
