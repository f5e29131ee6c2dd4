"""FastVideo's NVIDIA Dynamo backend: a video-generation worker behind ``python -m dynamo.frontend``.

Contract: ``python -m fastvideo.serving.dynamo [--model-path DIR] [--served-model-name NAME] ...``
starts one worker that registers a ``ModelType.Videos`` model with Dynamo (1.6.1) and answers
``POST /v1/videos`` requests routed to it by Dynamo's frontend. The package mirrors the layout of
Dynamo's own backends (``args``, ``protocol``, ``handler``, ``health``, ``register``, ``main``) and
is the example integrators copy: it imports only public ``fastvideo`` / ``fastvideo.api`` symbols,
``dynamo.*``, ``fsspec`` and the standard library (a test enforces this). Importing this package
imports nothing heavy; only ``main.serve`` and ``register`` import Dynamo.
"""
