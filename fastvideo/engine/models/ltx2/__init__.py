"""LTX-2 (audio + video) model family: our own code, numerically equal to diffusers 0.42.

Contract
--------
- Built so far (issue 15 item 2, first piece): the audio+video DiT.

  * :class:`LTX2DiTConfig` (``config.py``): the diffusers ``transformer/config.json`` as a typed dataclass;
    unknown keys and the LTX-2.3/2.5 extensions are refused naming the field.
  * :class:`LTX2Transformer` (``transformer.py``): same state-dict keys as ``LTX2VideoTransformer3DModel``, same
    forward arguments, returns ``(video, audio)`` token predictions; attention through the engine's registry.
  * ``rope.py``: the coordinate-based video/audio RoPE and the a2v/v2a cross-modal tables.
  * :func:`load_ltx2_transformer` (``loading.py``): meta-device build + safetensors load of a ``transformer/``
    folder (sharded or not) through :mod:`fastvideo.engine.loader`.

- Audio and text side (equal to diffusers' ``AutoencoderKLLTX2Audio``, ``LTX2Vocoder``, ``LTX2TextConnectors``):

  * :class:`LTX2AudioVAE` (``audio_vae.py``): mel <-> audio latents, plus the pipeline's audio-latent rules
    (:func:`audio_latent_length`, pack/unpack, (de)normalize); :class:`LTX2Vocoder` (``vocoder.py``): mel ->
    waveform (:class:`LTX2VocoderBWE`, ``vocoder_bwe.py``: LTX-2.3's bandwidth-extension vocoder), and
    :func:`mel_to_waveform`, the pipeline's audio tail.
  * :class:`LTX2Connectors` (``connectors.py``): packed Gemma-3 layers -> video / audio text embeddings;
    :class:`LTX2TextEncoder` (``text_encoding.py``): prompts -> those, Gemma-3 through ``transformers``.
  * ``load_ltx2_audio_vae`` / ``load_ltx2_vocoder`` / ``load_ltx2_connectors`` (``components.py`` plumbing):
    meta-device build + safetensors load of the diffusers sub-folders, configs refused by field name.

- Video VAE (equal to diffusers' ``AutoencoderKLLTX2Video``):

  * :class:`LTX2VideoVAE` (``vae.py``, config :class:`LTX2VideoVAEConfig` in ``vae_config.py``): video <-> raw
    latents, encode (posterior; ``mode()`` for conditioning) and decode (optionally timestep-conditioned);
    :func:`load_ltx2_video_vae`: meta-device build + safetensors load of a ``vae/`` folder.
  * ``latents.py``: the pipeline's video-latent rules, :func:`normalize_latents` / :func:`denormalize_latents`
    (VAE statistics and ``scaling_factor``) and :func:`pack_latents` / :func:`unpack_latents` (DiT tokens).

- Text-to-video+audio pipeline (equal to diffusers' ``LTX2Pipeline``, ``pipeline.py``):
  :func:`load_ltx2_pipeline` loads a diffusers LTX-2 folder into :class:`LTX2Components`, whose ``generate``
  returns frames, waveform and sample rate, and whose step-wise ``prepare`` / ``denoise_step`` / ``decode`` the
  runtime core will call; the schedule (:func:`ltx2_sigmas`, dynamic shift) feeds our flow-Euler sampler.

- Not here yet: nothing in the engine chooses this family yet (the family registry, issue 15 item 1, will).
- Importing this package imports torch (it is engine code); ``fastvideo.api`` never imports it.
"""

from fastvideo.engine.models.ltx2.audio_vae import (LTX2AudioVAE, LTX2AudioVAEConfig, audio_latent_length,
                                                    denormalize_audio_latents, load_ltx2_audio_vae,
                                                    normalize_audio_latents, pack_audio_latents, unpack_audio_latents)
from fastvideo.engine.models.ltx2.config import LTX2DiTConfig
from fastvideo.engine.models.ltx2.latents import denormalize_latents, normalize_latents, pack_latents, unpack_latents
from fastvideo.engine.models.ltx2.connectors import LTX2Connectors, LTX2ConnectorsConfig, load_ltx2_connectors
from fastvideo.engine.models.ltx2.loading import load_ltx2_transformer, read_ltx2_config
from fastvideo.engine.models.ltx2.pipeline import (LTX2Components, LTX2Condition, LTX2Guidance, LTX2Output,
                                                   LTX2Request, LTX2State, load_ltx2_pipeline, ltx2_sigmas)
from fastvideo.engine.models.ltx2.text_encoding import LTX2PromptEmbeddings, LTX2TextEncoder
from fastvideo.engine.models.ltx2.transformer import LTX2Transformer
from fastvideo.engine.models.ltx2.vae import LTX2VideoVAE, LTX2VideoVAEConfig, load_ltx2_video_vae
from fastvideo.engine.models.ltx2.vocoder import LTX2Vocoder, LTX2VocoderConfig, load_ltx2_vocoder, mel_to_waveform
from fastvideo.engine.models.ltx2.vocoder_bwe import LTX2VocoderBWE, LTX2VocoderBWEConfig

__all__ = [
    "LTX2AudioVAE", "LTX2AudioVAEConfig", "LTX2Components", "LTX2Condition", "LTX2Connectors", "LTX2ConnectorsConfig",
    "LTX2DiTConfig",
    "LTX2Guidance", "LTX2Output", "LTX2PromptEmbeddings", "LTX2Request", "LTX2State", "LTX2TextEncoder",
    "LTX2Transformer", "LTX2VideoVAE", "LTX2VideoVAEConfig", "LTX2Vocoder", "LTX2VocoderBWE", "LTX2VocoderBWEConfig",
    "LTX2VocoderConfig", "audio_latent_length", "denormalize_audio_latents", "denormalize_latents",
    "load_ltx2_audio_vae", "load_ltx2_connectors", "load_ltx2_pipeline", "load_ltx2_transformer", "load_ltx2_video_vae",
    "load_ltx2_vocoder", "ltx2_sigmas", "mel_to_waveform", "normalize_audio_latents", "normalize_latents",
    "pack_audio_latents", "pack_latents", "read_ltx2_config", "unpack_audio_latents", "unpack_latents",
]
