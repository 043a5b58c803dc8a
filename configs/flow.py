"""CosyVoice2 flow (token -> mel) configs: ``--config=configs/flow.py:ARG`` with ARG in real, tiny.

``real`` is CosyVoice2-0.5B's flow (examples/libritts/cosyvoice2/conf/cosyvoice2.yaml); ``tiny`` the test size.
``config.model`` converts with ``FlowConfig.from_dict(config.model.to_dict())``.
"""

import ml_collections

from sovits2_jax.models.flow.config import named_config
from sovits2_jax.parallel.rules import mesh_config, sharding_config


def get_config(arg: str = "real") -> ml_collections.ConfigDict:
    size = arg or "real"
    config = ml_collections.ConfigDict()
    config.model_type = "flow"
    config.model = ml_collections.ConfigDict(named_config(size).to_dict())
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = f"out/flow_{size}"
    config.mel = ml_collections.ConfigDict(
        dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0.0, fmax=8000.0)
    )
    # CosyVoice2 LibriTTS recipe: Adam lr 1e-5 constant after 2500 warmup steps, grad clip 5, accumulation 2,
    # dynamic batches of at most 2000 frames.
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=8,
            max_frames_in_batch=2000,
            learning_rate=1e-5,
            warmup_steps=2500,
            grad_clip=5.0,
            accum_grad=2,
            dtype="float32",
        )
    )
    config.inference = ml_collections.ConfigDict(dict(n_timesteps=10, token_hop_len=25, streaming_bucket=50))
    config.parity = ml_collections.ConfigDict(dict(device="cpu", dtype="float32", size=size, tokens=100, batch=2))
    return config
