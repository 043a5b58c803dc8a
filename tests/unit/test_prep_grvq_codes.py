"""The grvq_codes stage: a checkpoint of a tiny ssl_grvq VITS turns each row's SSL features into its K rows of codes
(what the model's extract_codes gives that row alone), rows without features stay null, and the gpt_sovits2 data
task accepts the result."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
from flax import nnx

from sovits2_jax.configs import data as data_configs
from sovits2_jax.configs import vits2
from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.data import code_columns, pipeline
from sovits2_jax.data.prep import grvq_codes, ssl_features, synthetic
from sovits2_jax.models import grvq
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn


def _features(rows, dim):
    rng = np.random.default_rng(0)
    # 50 Hz SSL frames for the 25 Hz tokens; row 1 has none
    return [None if i == 1 else rng.standard_normal((2 * len(r["speech_token"]), dim)).astype(np.float16)
            for i, r in enumerate(rows)]  # fmt: skip


def test_codes_are_the_models_and_the_data_task_reads_them(tmp_path):
    small = dict(posterior_layers=1, n_flows=1, flow_layers=1, resblock_kernel_sizes=(3,),
                 resblock_dilation_sizes=((1,),))  # fmt: skip
    cfg = vits2.model_config("grvq2_tiny").replace(**small)
    model = SynthesizerTrn(cfg, rngs=nnx.Rngs(0))
    rows = synthetic.make_rows(8, num_speakers=2, min_seconds=1.0, max_seconds=1.5, seed=2)
    feats = _features(rows, cfg.ssl_dim)
    # k-means on the corpus's features gives the codebooks
    frames = np.concatenate([f for f in feats if f is not None])[None].astype(np.float32)
    state = grvq.state_to_dict(grvq.init_state(cfg.grvq_config()))
    state = grvq.state_to_dict(model.quantize(jnp.asarray(frames), state, jax.random.key(0), training=True).state)
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    path = tmp_path / "vits"
    ckpt.save_checkpoint(path, params, {"format": "gpt_sovits", "part": "vits", "config": cfg.to_dict()},
                         buffers={"grvq": jax.tree.map(np.asarray, state)})  # fmt: skip

    data_list = synthetic.write_corpus(str(tmp_path / "data"), rows, rows_per_file=4)
    for shard in Path(data_list).read_text().split():
        table = pq.read_table(shard)
        lists, dims = ssl_features.feature_columns([feats[int(u[-5:])] for u in table.column("utt").to_pylist()],
                                                   cfg.ssl_dim)  # fmt: skip
        pq.write_table(table.append_column("ssl_feature", lists).append_column("ssl_feature_dim", dims), shard)

    loaded, loaded_state, loaded_cfg = grvq_codes.load_vits(str(path))
    info = dict(num_codebooks=loaded_cfg.num_codebooks, codebook_size=loaded_cfg.codebook_size, model=str(path))
    missing = grvq_codes.add_codes(data_list, grvq_codes.extractor(loaded, loaded_state, batch_size=3), info=info)
    assert missing == 1
    got = {}
    for shard in Path(data_list).read_text().split():
        table = pq.read_table(shard)
        got.update(zip(table.column("utt").to_pylist(), table.column(code_columns.COLUMN).to_pylist()))
    for i, r in enumerate(rows):
        if feats[i] is None:
            assert got[r["utt"]] is None
            continue
        alone = model.extract_codes(jnp.asarray(feats[i], jnp.float32)[None], state)[:, 0]
        np.testing.assert_array_equal(code_columns.codes(got[r["utt"]]), np.asarray(alone))
        assert np.asarray(alone).shape == (2, len(r["speech_token"])) and np.asarray(alone).min() >= 0
    assert len({tuple(c[0]) for c in got.values() if c is not None}) > 1  # codes depend on the features

    cfg_data = data_configs.get_config("gpt_sovits2").data
    for key, v in dict(worker_count=0, num_epochs=1, read_threads=1, bucket_lengths=[300], max_frames_in_batch=600,
                       num_codebooks=2, speech_token_size=cfg.codebook_size).items():  # fmt: skip
        setattr(cfg_data, key, v)
    batches = pipeline.make_batches(cfg_data, data_list=data_list, process_index=0, process_count=1)
    assert sum(int(b["num_segments"].sum()) for b in batches) == len(rows) - 1
    assert batches.skipped["no multi-codebook codes"] == 1  # known from the column, before loading

    # demo.code_usage: per-codebook use over the column, with the codebook size from the shards' metadata
    from sovits2_jax.demo import code_usage

    usage = code_usage.count([data_list])
    counts = sum(grvq.code_counts(np.asarray(c), cfg.codebook_size) for c in got.values() if c is not None)
    assert usage["codebook_size"] == cfg.codebook_size and usage["utterances"] == len(rows) - 1
    assert usage["frames"] == int(counts[0].sum()) and usage["codebooks"] == grvq.code_usage(counts)
