"""Wan (2.1 T2V / I2V / FLF2V, 2.2 T2V / I2V A14B, 2.2 TI2V-5B and VAE) models: our own code, equal to diffusers.

Contract
--------
- ``transformer.py``: :class:`WanTransformer3DModel` (config :class:`WanDiTConfig`), same state-dict keys and forward
  as diffusers' ``WanTransformer3DModel``, with the embed / blocks / head split the step cache and runtime use.
- ``vae.py``: :class:`WanVAE` (``AutoencoderKLWan``, Wan2.1 and Wan2.2 configs), decode and encode.
- ``text_encoder.py``: UMT5 prompts -> embeddings through ``transformers``.
- ``image_conditioning.py``: CLIP image tokens and the I2V/FLF2V condition latents (Wan2.2 I2V A14B: the latents
  only).
- ``experts.py``: Wan2.2 A14B's high/low-noise expert switch.
- ``pipeline.py``: :class:`WanT2VPipeline`, the loaded components and the stages the runtime core calls
  (encode prompts, initial noise, image condition, sampler, decode).
- Nothing here picks a family: :mod:`fastvideo.engine.families` does, from ``model_index.json``.
- Importing this package does not import its modules (torch-heavy); import them by name.
"""
