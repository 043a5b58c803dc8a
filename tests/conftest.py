"""Test set-up: 8 simulated CPU devices (for mesh tests), float32 everywhere, quiet logs, one torch / BLAS thread
per process (``pytest -n 2`` runs two workers on two cores: more threads only contend), and one persistent XLA
compilation cache for the whole session (see ``pytest_configure``)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib.metadata
import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

XLA_CACHE_ENV = "SOVITS2_TEST_XLA_CACHE"  # a directory to use instead, or "off"


def _xla_cache_dir(config) -> Path | None:
    """The session's persistent XLA compilation cache: ``.pytest_cache/d/xla/jax-<v>-jaxlib-<v>`` (a temporary
    directory without the cache provider), or ``$SOVITS2_TEST_XLA_CACHE``; None when that is "off"."""
    chosen = os.environ.get(XLA_CACHE_ENV, "")
    if chosen == "off":
        return None
    if chosen:
        path = Path(chosen)
    else:
        version = f"jax-{importlib.metadata.version('jax')}-jaxlib-{importlib.metadata.version('jaxlib')}"
        cache = getattr(config, "cache", None)
        root = cache.mkdir("xla") if cache is not None else Path(tempfile.gettempdir()) / "sovits2_jax_test_xla"
        path = root / version
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_configure(config):
    """Every test process and every process a test starts (they inherit ``os.environ``) shares one persistent
    compilation cache, with no compile-time or size threshold: the two xdist workers, the trainer / CLI / server
    subprocesses and later runs load an executable another one compiled instead of compiling it again. The
    inference CLIs' own ``compile_cache.enable()`` default (``$SOVITS2_JAX_CACHE``) points there too. A test that
    is about the cache itself uses its own directory."""
    path = _xla_cache_dir(config)
    if path is None:
        return
    settings = {
        "JAX_COMPILATION_CACHE_DIR": str(path),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        "SOVITS2_JAX_CACHE": str(path),
    }
    for name, value in settings.items():
        os.environ.setdefault(name, value)
    if "jax" in sys.modules:  # imported before this hook: its config already read the environment
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# Test modules whose tests are independent, long end-to-end runs with no shared fixture: under `pytest -n N` they
# are spread over the workers test by test. Every other module runs on one worker (below).
SPREAD_MODULES = {"test_train_gan.py", "test_train_families_a.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``pytest -n N`` (xdist's default ``--dist load``) runs each test module on one worker, in collection order,
    except SPREAD_MODULES: a module's module-scoped fixtures (a model built in process, a reference run, a server
    process) are then built once instead of once per worker that runs one of its tests. An explicit ``--dist``
    keeps xdist's own scheduler."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if module.rsplit("/", 1)[-1] in SPREAD_MODULES else module

    config.option.loadscopereorder = False  # collection order: the long integration modules start first
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    gpu = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu is None:
                import jax

                gpu = any(d.platform == "gpu" for d in jax.devices())
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> Path:
    """The persistent compilation cache directory this session's processes share (for a CLI's --compile_cache);
    a fresh one when the shared cache is off."""
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(path) if path else tmp_path_factory.mktemp("xla")


@pytest.fixture(scope="session")
def torch_available():
    if not _has("torch"):
        pytest.skip("the parity extra (torch) is not installed")
    return True


TINY_FLOW_YAML = """
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    vocab_size: 6561
    spk_embed_dim: 192
    token_mel_ratio: 2
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        num_blocks: 1
        linear_units: 256
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            channels: [64]
            attention_head_dim: 32
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 2
"""


def build_once(tmp_path_factory, name: str, build) -> Path:
    """``build(path)`` run once per test session whatever the number of xdist workers (a module- or session-scoped
    fixture is otherwise built by every worker that runs one of its tests): the first worker to ask builds ``name``
    in the session's shared temporary directory under a file lock, the others wait for it and reuse it
    (read-only). A build that failed is retried by the next caller. Returns the path."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # .../pytest-N, shared by gw0, gw1
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            done.touch()
    return path


def _write_tiny_cosyvoice2(root: Path) -> None:
    import dataclasses

    import torch

    from sovits2_jax.convert import cosyvoice2, cosyvoice2_flow, cosyvoice2_hift
    from sovits2_jax.parity.reference_models import export_campplus_like, export_s3_tokenizer
    from sovits2_jax.parity.references import flow as parity_flow
    from sovits2_jax.parity.references import hift as parity_hift
    from sovits2_jax.parity.references import llm as parity_llm

    backbone = dataclasses.replace(parity_llm.TINY_BACKBONE, vocab_size=151936)
    parity_llm.write_tiny_model_dir(root, seed=0, backbone=backbone, speech_token_size=6561)
    with open(root / "cosyvoice2.yaml", "a") as f:
        f.write(TINY_FLOW_YAML + parity_hift.hift_yaml(base_channels=32, cond_channels=32))
    cfg = cosyvoice2.read_yaml(root)
    flow = parity_flow.build_reference(cosyvoice2_flow.config_from_yaml(cfg), seed=1)
    torch.save(flow.state_dict(), root / "flow.pt")
    hift = parity_hift.build_reference(cosyvoice2_hift.config_from_yaml(cfg), seed=2)
    torch.save(hift.state_dict(), root / "hift.pt")
    export_s3_tokenizer(str(root / "speech_tokenizer_v2.onnx"), version="v2")
    export_campplus_like(str(root / "campplus.onnx"))
    gen = torch.Generator().manual_seed(3)
    torch.save({s: {"embedding": torch.randn(1, 192, generator=gen)} for s in ("spk_a", "spk_b")}, root / "spk2info.pt")


@pytest.fixture(name="build_once", scope="session")
def build_once_fixture(tmp_path_factory):
    """``build_once(name, build) -> path``: ``build(path)`` creates the directory ``path`` once for the whole session
    (see ``build_once``); for module fixtures whose result is files, e.g. a subprocess run several tests check."""
    return lambda name, build: build_once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def tiny_cosyvoice2_dir(tmp_path_factory, torch_available):
    """A complete random-init CosyVoice2 model directory with the real vocabularies (every Qwen2 text id, 6561
    speech tokens) and tiny widths: cosyvoice2.yaml, llm.pt, flow.pt, hift.pt, CosyVoice-BlankEN/, an S3-v2
    speech tokenizer and a campplus-like speaker model (ONNX), spk2info.pt with two sft speakers. Built once per
    session (``build_once``) and shared by the frontend parity, infer CLI, server and vocode tests: read-only."""
    return build_once(tmp_path_factory, "CosyVoice2-tiny", _write_tiny_cosyvoice2)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Synthetic Parquet train / dev lists in CosyVoice's schema (real WAV audio, 4 speakers, 1-3 s): ``.train_list``
    (24 rows), ``.dev_list`` (8 rows), ``.rows`` (the train rows), ``.dev_rows``; shared by the trainer tests."""
    import types

    from sovits2_jax.data.prep import synthetic

    rows = synthetic.make_rows(32, num_speakers=4, min_seconds=1.0, max_seconds=3.0, seed=5)

    def write(root):  # once per session: a trainer test may compare its run with another worker's reference run
        synthetic.write_corpus(str(root / "train"), rows[:24], rows_per_file=4)
        synthetic.write_corpus(str(root / "dev"), rows[24:], rows_per_file=4)

    root = build_once(tmp_path_factory, "tiny_corpus", write)
    train, dev = (str(root / split / "data.list") for split in ("train", "dev"))
    return types.SimpleNamespace(train_list=train, dev_list=dev, rows=rows[:24], dev_rows=rows[24:])


@pytest.fixture(scope="session")
def write_trainer_steps():
    """``write(workdir, {step: {player: params}}, meta, eval_losses={step: loss | None}, keep_best=10)``: steps saved
    by the trainer's own ``Checkpoints`` (every item of its layout), and metrics.jsonl records as the trainer logs
    them (eval steps carry ``eval/loss``; train_state keeps the last eval's loss, as the trainer's counters do)."""
    import json

    import numpy as np

    def write(workdir, players_by_step: dict, meta: dict, eval_losses: dict | None = None, keep_best: int = 10):
        import grain

        from sovits2_jax.train.checkpoint import Checkpoints

        losses = eval_losses or {}
        batches = iter(grain.MapDataset.range(8).to_iter_dataset())
        ckpts = Checkpoints(str(workdir), keep_last=100, keep_best=keep_best, async_save=False)
        last = None
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as log:
            for step, players in players_by_step.items():
                loss = losses.get(step)
                last = loss if loss is not None else last
                counters = {"step": step, "family": meta.get("family", "test"), "eval_loss": last}
                opt_state = {name: {"count": np.int32(step)} for name in players}
                ckpts.save(step, players, opt_state, counters, batches, {**meta, "step": step}, eval_loss=loss)
                ckpts.wait()
                log.write(json.dumps({"step": step, "train/loss": 9.0, **({} if loss is None else {"eval/loss": 7.0})}))
                log.write("\n")
                if loss is not None:  # a resumed run logs the step again: its last record counts
                    log.write(json.dumps({"step": step, "train/loss": 9.0, "eval/loss": loss}) + "\n")
        ckpts.close()

    return write
