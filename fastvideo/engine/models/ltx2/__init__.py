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

- Not here yet: video VAE, audio VAE and vocoder, text connectors, the sampler/pipeline; nothing in the engine
  chooses this family yet (the family registry, issue 15 item 1, will).
- Importing this package imports torch (it is engine code); ``fastvideo.api`` never imports it.
"""

from fastvideo.engine.models.ltx2.config import LTX2DiTConfig
from fastvideo.engine.models.ltx2.loading import load_ltx2_transformer, read_ltx2_config
from fastvideo.engine.models.ltx2.transformer import LTX2Transformer

__all__ = ["LTX2DiTConfig", "LTX2Transformer", "load_ltx2_transformer", "read_ltx2_config"]
