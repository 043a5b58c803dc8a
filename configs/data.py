"""Input pipeline configs: ``--config=configs/data.py:KIND`` with KIND a module of ``sovits2_jax/data/tasks/``
(llm, flow, hift, gpt_sovits2).

Other config files embed ``pipeline_config(kind)`` as their ``data`` section. Values follow CosyVoice2's
``cosyvoice2.yaml`` (filter, resample, Matcha mel, truncate, f0, max_frames_in_batch 2000, shuffle/sort); each
family's bucket lengths and frame budget are its task's ``defaults``.
"""

import copy

import ml_collections

from configs.common import mesh_config, sharding_config
from sovits2_jax.data import tasks


def pipeline_config(kind: str) -> ml_collections.ConfigDict:
    defaults = tasks.get(kind).defaults  # ValueError naming the kinds for an unknown one
    c = ml_collections.ConfigDict()
    c.kind = kind
    c.data_list = ""  # path of a data.list (one parquet per line); the CLI's --data_list overrides it
    c.seed = 0
    c.num_epochs = -1  # -1 = repeat forever
    # parquet row groups shuffled together per process (0 = all of them: only when cache_mb holds them all,
    # since a row costs its whole row group on a cache miss)
    c.window_groups = 4
    # logical data shards (0 = one per process): the global batch of a step is the same for any process count
    # dividing num_shards, so a job can resume on another number of hosts with the same data stream
    c.num_shards = 0
    # full batches only (hift: no all-zero rows shown to the discriminator)
    c.drop_remainder = defaults.get("drop_remainder", False)
    # batching: (batch, length) buckets with batch * length <= max_frames_in_batch (per shard), lengths in the
    # unit the family batches by; longer utterances are skipped and counted
    c.bucket_lengths = list(defaults["bucket_lengths"])
    c.max_frames_in_batch = defaults["max_frames_in_batch"]
    # > 0 (llm, flow): ignore bucket_lengths and fit this many lengths to the corpus (least padding)
    c.num_buckets = 0
    c.batch_multiple = 1  # shard batch sizes are rounded down to a multiple (of the local data-parallel devices)
    c.text_ratio = 0.5  # llm: text tokens padded to max(text_min_pad, ceil(text_ratio * speech bucket length))
    c.text_min_pad = 16
    c.dpo = False  # llm: also batch the rejected speech tokens (column reject_speech_token) for DPO
    # processor steps (CosyVoice ``filter`` lengths are in 10 ms frames)
    c.tokenizer = "cosyvoice2"
    c.filter = ml_collections.ConfigDict(
        dict(
            max_length=40960,
            min_length=100,
            token_max_length=200,
            token_min_length=1,
            min_output_input_ratio=0.0005,
            max_output_input_ratio=1.0,
        )
    )
    c.sample_rate = 24000
    c.min_sample_rate = 16000
    c.mel = ml_collections.ConfigDict(dict(n_fft=1920, num_mels=80, hop_size=480, win_size=1920, fmin=0.0, fmax=8000.0))
    c.token_mel_ratio = 2
    c.embedding_dim = 192
    c.normalize_embedding = True
    c.use_spk_embedding = False
    c.online_tokenization = False  # True: add whisper log-mel (128 bins, 16 kHz) for the S3 tokenizer
    c.whisper_mels = 128
    c.truncate_length = 24480  # hift: samples per random crop (51 mel frames)
    # flow: host-drawn condition prefix lengths (cond_len) as the reference draws them
    c.flow_prompt = defaults.get("flow_prompt", False)
    c.min_prompts = 1  # gpt_sovits2: same-speaker references per target
    c.max_prompts = 3
    c.speech_token_size = 6561
    # reading / prefetch
    c.worker_count = 2  # mp_prefetch processes (0 = in this process)
    c.worker_buffer_size = 2
    c.read_threads = 2
    c.prefetch_batches = 4
    c.cache_mb = 1024.0
    c.batch_axes = ("data", "fsdp")
    for key, value in defaults.items():  # the family's own keys, and its values of the shared ones
        c[key] = copy.deepcopy(value)
    return c


def get_config(arg: str = "flow") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = pipeline_config(arg or "flow")
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    return config
