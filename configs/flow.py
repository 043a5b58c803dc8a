"""CosyVoice2 flow (token -> mel) configs: ``--config=configs/flow.py:ARG`` with ARG in real, tiny.

``real`` is CosyVoice2-0.5B's flow (examples/libritts/cosyvoice2/conf/cosyvoice2.yaml); ``tiny`` the test size.
``config.model`` converts with ``FlowConfig.from_dict(config.model.to_dict())``. ``flow_config(size)`` is the
section configs/cosyvoice2.py can mount as its ``flow`` part ("" = real).
"""

import ml_collections

from sovits2_jax.models.flow.config import named_config
from sovits2_jax.parallel.rules import mesh_config, sharding_config


def flow_config(size: str = "") -> ml_collections.ConfigDict:
    """model (FlowConfig fields), mel frontend, LibriTTS-recipe training, inference / streaming settings."""
    size = size or "real"
    return ml_collections.ConfigDict(
        dict(
            model=named_config(size).to_dict(),
            mel=dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0.0, fmax=8000.0),
            # Adam lr 1e-5 constant after 2500 warm-up steps, grad clip 5, accumulation 2, dynamic batches of at
            # most 2000 frames (cosyvoice2.yaml train_conf)
            train=dict(
                batch_size=8,
                max_frames_in_batch=2000,
                lr=1e-5,
                warmup_steps=2500,
                grad_clip=5.0,
                accum_grad=2,
                dtype="float32",
            ),
            inference=dict(n_timesteps=10, token_hop_len=25, streaming_bucket=50, streaming_cache=True),
        )
    )


def get_config(arg: str = "real") -> ml_collections.ConfigDict:
    size = arg or "real"
    section = flow_config(size)
    config = ml_collections.ConfigDict()
    config.model_type = "flow"
    config.model = section.model
    config.mel = section.mel
    config.train = section.train
    config.inference = section.inference
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = f"out/flow_{size}"
    config.parity = ml_collections.ConfigDict(dict(device="cpu", dtype="float32", size=size, tokens=100, batch=2))
    return config
