"""Input pipeline configs: ``--config=configs/data.py:KIND`` with KIND a module of ``sovits2_jax/data/tasks/``
(llm, flow, hift, gpt_sovits2).

Other config files embed ``configs.common.pipeline_config(kind)`` as their ``data`` section. Values follow CosyVoice2's
``cosyvoice2.yaml`` (filter, resample, Matcha mel, truncate, f0, max_frames_in_batch 2000, shuffle/sort); each
family's bucket lengths and frame budget are its task's ``defaults``.
"""

import ml_collections

from sovits2_jax.configs.common import mesh_config, pipeline_config, sharding_config


def get_config(arg: str = "flow") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = pipeline_config(arg or "flow")
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    return config
