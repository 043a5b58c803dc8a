"""What every config file shares: the mesh and sharding sections, the top-level layout and preset lookup."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import ml_collections

from sovits2_jax.data import tasks
from sovits2_jax.parallel.rules import SHARDING_RULES

SIZES = ("tiny", "small", "release")  # the presets every model file defines
RECIPE_DEVICES = 8  # data-parallel devices per process the release / small presets are sized for


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """The device mesh section (-1: the devices left over)."""
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def sharding_config() -> ml_collections.ConfigDict:
    """The logical-axis -> mesh-axis rules section."""
    return ml_collections.ConfigDict(dict(rules=SHARDING_RULES))


def lookup(presets: Mapping[str, Any], name: str, what: str, aliases: Mapping[str, str] | None = None) -> Any:
    """``presets[name]`` (after ``aliases``), or a ValueError listing the choices."""
    key = (aliases or {}).get(name, name)
    if key not in presets:
        choices = sorted({*presets, *(aliases or {})} - {""})
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")
    return presets[key]


def base_config(family: str, workdir: str, model, **sections) -> ml_collections.ConfigDict:
    """The one config shape: ``family``, ``model``, the family's own ``sections``, ``mesh``, ``sharding``, ``seed``
    and ``workdir`` (``training_sections`` adds ``train``, ``data`` and ``init``)."""
    config = ml_collections.ConfigDict()
    config.family = family
    config.model = model
    for name, section in sections.items():
        config[name] = section
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = workdir
    return config


SIZES = ("", "small", "tiny")  # release, CPU quality runs, tests


def part_config(parts: Mapping[str, Any], arg: str, default: str, where: str) -> ml_collections.ConfigDict:
    """``parts[part](size)`` for the config argument ``<part>[_<size>]`` of the file ``where``, or a ValueError
    listing every argument that file takes (and the nearest one)."""
    part, size = split_arg(arg, default)
    if part in parts and size in SIZES:
        return parts[part](size)
    choices = [f"{p}_{s}" if s else p for p in parts for s in SIZES]
    near = difflib.get_close_matches(arg, choices, n=1)
    hint = f" (did you mean {where}:{near[0]}?)" if near else ""
    raise ValueError(f"unknown config {where}:{arg}{hint}; it takes one of {', '.join(choices)}")


def split_arg(arg: str, default: str) -> tuple[str, str]:
    """``<part>[_<size>]`` -> (part, size); size "" = release."""
    part, _, size = (arg or default).partition("_")
    return part, size


def speech_lm_model(
    backbone: ml_collections.ConfigDict, *, layout: str, speech_token_size: int, text_feature_dim: int
) -> ml_collections.ConfigDict:
    """A speech LM's model section (SpeechLMConfig fields)."""
    return ml_collections.ConfigDict(
        dict(
            backbone=backbone,
            speech_token_size=speech_token_size,
            layout=layout,
            mix_ratio=(5, 15),
            lsm_weight=0.0,
            length_normalized_loss=True,
            text_feature_dim=text_feature_dim,
            loss_on_references=False,
        )
    )


def sampling_config() -> ml_collections.ConfigDict:
    """SamplingConfig's defaults: CosyVoice2's RAS (ras_sampling: top_p 0.8, top_k 25, window 10, tau_r 0.1)."""
    from sovits2_jax.models.sampling_config import SamplingConfig

    return ml_collections.ConfigDict(SamplingConfig().to_dict())


def generation_config() -> ml_collections.ConfigDict:
    """Speech-LM decoding: min / max speech tokens = ratio x text tokens (Qwen2LM.inference), prompt buckets."""
    return ml_collections.ConfigDict(
        dict(min_token_text_ratio=2.0, max_token_text_ratio=20.0, prompt_bucket=16, chunk=25)
    )


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
    """One player's optimizer section (see sovits2_jax/train/optim.py): Adam, constant lr after a linear warm-up."""
    section = ml_collections.ConfigDict(
        dict(
            name="adam",  # adam | adamw
            lr=1e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,  # adamw only
            schedule="constant_warmup",  # constant_warmup | warmup_lr | cosine
            warmup_steps=0,
            decay_steps=0,  # cosine: 0 = config.train.num_steps
            end_lr_fraction=0.0,  # cosine: final lr / lr
            grad_clip=0.0,  # global-norm clipping; 0 = off
            lr_scale={},  # param group label (Player.param_labels) -> lr multiplier
            freeze=(),  # regular expressions: parameters whose "/"-joined path matches one are never updated
        )
    )
    section.update(overrides)
    return section


def training_sections(family: str, data_kind: str | None, optimizer: dict | None = None, **train) -> dict:
    """The trainer's sections: ``family``, ``train`` (loop, checkpoints, optimizer), ``data`` (the Grain pipeline
    of ``data_kind`` with train_list / dev_list; None: the family makes its own batches) and ``init``."""
    section = ml_collections.ConfigDict(
        dict(
            num_steps=1000,
            log_every=10,
            eval_every=500,  # 0 = never
            eval_batches=0,  # 0 = one pass over data.dev_list
            checkpoint_every=500,
            keep_last=3,
            keep_best=0,  # best N by eval loss; 0 = off
            accum_steps=1,
            optimizer=optimizer_config(**(optimizer or {})),
            skip_nonfinite=True,
            spike_factor=0.0,  # > 0: skip a step whose loss exceeds this x the running mean
            spike_warmup=20,
            profile_steps="",  # "a,b": jax.profiler trace of steps a..b
            dtype="float32",  # compute dtype (params stay float32)
            remat="",  # "" = the model config's remat policy
            prefetch=2,
            peak_flops=0.0,  # 0 = by device kind (sovits2_jax/train/mfu.py)
        )
    )
    section.update(train)
    out = dict(family=family, train=section, init=ml_collections.ConfigDict(dict(path="", player="")))
    if data_kind is not None:
        data = pipeline_config(data_kind)
        data.train_list = ""
        data.dev_list = ""
        out["data"] = data
    return out


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
    c.drop_remainder = False  # full batches only
    # batching: (batch, length) buckets with batch * length <= max_frames_in_batch (per shard), lengths in the
    # unit the family batches by; longer utterances are skipped and counted
    c.bucket_lengths = list(defaults["bucket_lengths"])
    c.max_frames_in_batch = defaults["max_frames_in_batch"]
    # > 0 (llm, flow): ignore bucket_lengths and fit this many lengths to the corpus (least padding)
    c.num_buckets = 0
    # each shard's batch rows are a multiple of this: 0 = what the mesh, the processes and train.accum_steps need
    # (resolved when the config is validated)
    c.batch_multiple = 0
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
    # command-line overrides take tuples, not lists: --config.data.k='(1, 2)'
    return ml_collections.ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
