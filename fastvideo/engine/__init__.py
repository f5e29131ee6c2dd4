"""Engine: our model code (Wan DiT, Wan VAE, UMT5 text encoder), samplers, loading and the pipeline.

Pure compute: no servers, no IO beyond reading weights. Numerically equal to the diffusers reference.
"""
