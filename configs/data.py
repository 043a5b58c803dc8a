"""Input pipeline configs: ``--config=configs/data.py:KIND`` with KIND in llm, flow, hift, gpt_sovits2.

Other config files embed ``pipeline_config(kind)`` as their ``data`` section. Values follow CosyVoice2's
``cosyvoice2.yaml`` (filter, resample, Matcha mel, truncate, f0, max_frames_in_batch 2000, shuffle/sort).
"""

import ml_collections

from sovits2_jax.parallel.rules import mesh_config, sharding_config

KINDS = ("llm", "flow", "hift", "gpt_sovits2")

# Bucket lengths in the unit each pipeline batches by: speech tokens (llm), 50 Hz mel frames (flow),
# packed positions (gpt_sovits2); hift crops to one fixed length. Up to 40 s, as CosyVoice2's 2000-frame budget
# admits; longer utterances are skipped and counted. data.num_buckets=N fits N lengths to the corpus instead.
BUCKETS = {
    "llm": [25, 32, 40, 50, 64, 80, 100, 128, 160, 200, 250, 320, 400, 500, 640, 800, 1000],
    "flow": [100, 128, 160, 200, 256, 320, 400, 500, 640, 800, 1000, 1280, 1600, 2000],
    "hift": [51],
    "gpt_sovits2": [2048],
}
# CosyVoice2 batches 2000 mel frames (50 Hz); the LM counts 25 Hz speech tokens, so 1000 is the same budget.
BUDGET = {"llm": 1000, "flow": 2000, "hift": 2000, "gpt_sovits2": 16384}


def pipeline_config(kind: str) -> ml_collections.ConfigDict:
    if kind not in KINDS:
        raise ValueError(f"unknown data pipeline {kind!r}; choose one of {', '.join(KINDS)}")
    c = ml_collections.ConfigDict()
    c.kind = kind
    c.data_list = ""  # path of a data.list (one parquet per line); the CLI's --data_list overrides it
    c.seed = 0
    c.num_epochs = -1  # -1 = repeat forever
    # parquet row groups shuffled together per process (0 = all of them: only when cache_mb holds them all,
    # since a row costs its whole row group on a cache miss)
    c.window_groups = 4
    c.drop_remainder = kind == "hift"  # GAN crops: full batches only (no all-zero rows shown to the discriminator)
    # batching: (batch, length) buckets with batch * length <= max_frames_in_batch (per process)
    c.bucket_lengths = list(BUCKETS[kind])
    c.max_frames_in_batch = BUDGET[kind]
    # > 0 (llm, flow): ignore bucket_lengths and fit this many lengths to the corpus (least padding)
    c.num_buckets = 0
    c.batch_multiple = 1  # local batch sizes are rounded down to a multiple (the local data-parallel devices)
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
    c.flow_prompt = kind == "flow"  # host-drawn condition prefix lengths (cond_len) as the reference draws them
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
    return c


def get_config(arg: str = "flow") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = pipeline_config(arg or "flow")
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    return config
