"""Offline stand-ins for campplus.onnx and speech_tokenizer_v2.onnx, fitted on the user's own data.

    python -m sovits2_jax.data.prep.offline_models tokenizer --dir data/train --out exp/offline_tokenizer.onnx
    python -m sovits2_jax.data.prep.offline_models speaker --dir data/train --out exp/offline_speaker.onnx

* Speech tokenizer: k-means over whisper log-mel frames stacked 4 at a time (25 Hz, the S3 v2 token rate),
  saved as ONNX with the S3 signature (``feats`` [B, 128, T] float32, ``feats_length`` [B] int32 ->
  ``indices`` [B, ceil(T / 4)] int64), so the same extractor runs it.
* Speaker encoder: a statistical embedding with campplus's signature (``input`` [B, T, 80] mean-normalised
  fbank -> ``output`` [B, dim]): per-bin spread, energy-weighted mean spectrum and mean |delta| (240 stats),
  standardised and projected by LDA over the speakers.

* ``resemblyzer``: resemblyzer's pretrained speaker encoder exported to ONNX (256-d; see resemblyzer_encoder.py).

All are weaker than the real models; use the real ONNX files whenever you have them.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from absl import app, flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.audio.fbank import campplus_features
from sovits2_jax.audio.io import AudioError, load_audio
from sovits2_jax.audio.whisper_mel import log_mel_spectrogram
from sovits2_jax.data.prep.kaldi import read_kaldi_dir

log = logging.getLogger(__name__)

STACK = 4  # whisper frames (100 Hz) per token (25 Hz)
N_MELS = 128
FBANK_BINS = 80
ENERGY_SHARPNESS = 2.0  # softmax temperature of the energy-weighted mean spectrum
OPSET = 17
LDA_FLOOR = 0.05  # weight floor of non-discriminative directions
IR_VERSION = 8  # readable by older onnxruntime releases too


# ---- ONNX helpers --------------------------------------------------------------------------------------------


def _save_model(graph, path: str, doc: str) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sovits2_jax")
    model.ir_version = IR_VERSION
    model.doc_string = doc
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)


def _const(name: str, value) -> object:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


# ---- speech tokenizer ----------------------------------------------------------------------------------------


def stack_frames(mel: np.ndarray) -> np.ndarray:
    """[128, T] log-mel -> [ceil(T / 4), 512] (zero-padded at the end, frames consecutive)."""
    t = mel.shape[1]
    padded = np.pad(mel, ((0, 0), (0, (-t) % STACK)))
    return padded.T.reshape(-1, STACK * mel.shape[0])


def kmeans(x: np.ndarray, k: int, *, iters: int = 25, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns centroids [k, D] float32."""
    rng = np.random.default_rng(seed)
    x = x.astype(np.float32)
    n = x.shape[0]
    if n < k:
        raise ValueError(f"offline tokenizer: {n} frames cannot fit {k} centroids; use --codebook_size <= {n}")
    sq = (x * x).sum(1)
    centroids = [x[rng.integers(n)]]
    closest = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        c = x[rng.choice(n, p=closest / closest.sum())]
        centroids.append(c)
        closest = np.minimum(closest, sq - 2 * x @ c + c @ c)
        closest = np.maximum(closest, 0) + 1e-12
    c = np.stack(centroids)
    for _ in range(iters):
        labels = assign(x, c)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        empty = counts == 0
        c = np.where(empty[:, None], c, sums / np.maximum(counts, 1)[:, None])
    return c.astype(np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, block: int = 8192) -> np.ndarray:
    half_norm = 0.5 * (centroids * centroids).sum(1)
    return np.concatenate(
        [np.argmax(x[i : i + block] @ centroids.T - half_norm, axis=1) for i in range(0, len(x), block)]
    )


def export_tokenizer(path: str, mean: np.ndarray, std: np.ndarray, centroids: np.ndarray) -> None:
    """ONNX graph: pad T to a multiple of 4, stack frames, standardise, nearest centroid."""
    from onnx import TensorProto, helper

    dim = STACK * N_MELS
    nodes = [
        helper.make_node("Shape", ["feats"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["t"], axis=0),
        helper.make_node("Neg", ["t"], ["neg_t"]),
        helper.make_node("Mod", ["neg_t", "stack"], ["pad_t"], fmod=0),  # (-T) mod 4, non-negative
        helper.make_node("Concat", ["zeros5", "pad_t"], ["pads"], axis=0),
        helper.make_node("Pad", ["feats", "pads"], ["padded"], mode="constant"),
        helper.make_node("Transpose", ["padded"], ["frames"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["frames", "stacked_shape"], ["stacked"]),
        helper.make_node("Sub", ["stacked", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("MatMul", ["normed", "centroids_t"], ["dots"]),
        helper.make_node("Sub", ["dots", "half_norm"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["indices"], axis=2, keepdims=0),
    ]
    inits = [
        _const("two", np.array([2], np.int64)),
        _const("stack", np.array([STACK], np.int64)),
        _const("zeros5", np.zeros(5, np.int64)),
        _const("stacked_shape", np.array([0, -1, dim], np.int64)),
        _const("mean", mean.astype(np.float32)),
        _const("std", std.astype(np.float32)),
        _const("centroids_t", centroids.T.astype(np.float32)),
        _const("half_norm", (0.5 * (centroids * centroids).sum(1)).astype(np.float32)),
    ]
    graph = helper.make_graph(
        nodes,
        "offline_speech_tokenizer",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", N_MELS, "frames"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, ["batch"]),
        ],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "tokens"])],
        inits,
    )
    _save_model(graph, path, f"k-means speech tokenizer, {len(centroids)} codes, 25 Hz, S3 signature")


def tokenizer_features(mel: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (stack_frames(mel) - mean) / std


def fit_tokenizer(
    data_dir: str, out_path: str, *, codebook_size: int = 512, max_vectors: int = 60000, seed: int = 0
) -> str:
    """Fit k-means on the utterances of a Kaldi data dir and save the S3-signature ONNX model."""
    data = read_kaldi_dir(data_dir)
    vectors = []
    items = data.utt2wav.items()
    for utt, path in tqdm(items, desc="tokenizer features", unit="utt", disable=None, dynamic_ncols=True):
        try:
            wav, _ = load_audio(path, target_sr=16000)
        except AudioError as exc:
            log.warning("offline tokenizer: skipped %s: %s", utt, exc)
            continue
        if 320 <= len(wav) <= 30 * 16000:
            vectors.append(stack_frames(log_mel_spectrogram(wav)))
    if not vectors:
        raise ValueError(f"offline tokenizer: no usable audio in {data_dir}")
    x = np.concatenate(vectors)
    if len(x) > max_vectors:
        x = x[np.random.default_rng(seed).choice(len(x), max_vectors, replace=False)]
    mean, std = x.mean(0), x.std(0) + 1e-3
    centroids = kmeans((x - mean) / std, min(codebook_size, len(x)), seed=seed)
    export_tokenizer(out_path, mean, std, centroids)
    log.info("offline tokenizer: %d codes fitted on %d vectors -> %s", len(centroids), len(x), out_path)
    return out_path


# ---- speaker encoder -----------------------------------------------------------------------------------------


def speaker_stats(feats: np.ndarray) -> np.ndarray:
    """240 statistics of one utterance's campplus features [T, 80] (T >= 2), as the ONNX graph computes them."""
    x = feats.astype(np.float32)
    mean = x.mean(0)
    std = np.sqrt(((x - mean) ** 2).mean(0) + 1e-5)
    energy = x.mean(1) * ENERGY_SHARPNESS
    w = np.exp(energy - energy.max())
    weighted = (x * (w / w.sum())[:, None]).sum(0)
    delta = np.abs(x[1:] - x[:-1]).mean(0)
    return np.concatenate([std, weighted, delta])


def fit_projection(stats: np.ndarray, labels: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, W [240, dim]): LDA directions (within-speaker whitened), each weighted by sqrt(ratio + floor).

    The weights make speaker-discriminative directions dominate cosine similarity while the rest keep a little
    weight (useful for speakers not seen in fitting).
    """
    import scipy.linalg

    mu, sigma = stats.mean(0), stats.std(0) + 1e-6
    z = (stats - mu) / sigma
    within = np.zeros((z.shape[1], z.shape[1]))
    between = np.zeros_like(within)
    for s in np.unique(labels):
        zs = z[labels == s]
        centred = zs - zs.mean(0)
        within += centred.T @ centred
        between += len(zs) * np.outer(zs.mean(0), zs.mean(0))
    within = within / len(z) + 1e-2 * np.eye(z.shape[1])
    between /= len(z)
    ratios, vecs = scipy.linalg.eigh(between, within)  # vecs^T within vecs = I
    order = np.argsort(ratios)[::-1][: min(dim, z.shape[1])]
    directions = vecs[:, order] * np.sqrt(np.maximum(ratios[order], 0.0) + LDA_FLOOR)
    if directions.shape[1] < dim:  # fewer statistics than output dims: pad with zero columns
        directions = np.pad(directions, ((0, 0), (0, dim - directions.shape[1])))
    return mu.astype(np.float32), sigma.astype(np.float32), directions.astype(np.float32)


def export_speaker_encoder(path: str, mu: np.ndarray, sigma: np.ndarray, w: np.ndarray) -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["input", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1], keepdims=0),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("ReduceMean", ["input"], ["frame_energy"], axes=[2], keepdims=1),
        helper.make_node("Mul", ["frame_energy", "sharpness"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["weights"], axis=1),
        helper.make_node("Mul", ["input", "weights"], ["weighted_frames"]),
        helper.make_node("ReduceSum", ["weighted_frames", "axis1"], ["weighted"], keepdims=0),
        helper.make_node("Slice", ["input", "one", "big", "axis1"], ["later"]),
        helper.make_node("Slice", ["input", "zero", "minus_one", "axis1"], ["earlier"]),
        helper.make_node("Sub", ["later", "earlier"], ["delta"]),
        helper.make_node("Abs", ["delta"], ["abs_delta"]),
        helper.make_node("ReduceMean", ["abs_delta"], ["delta_mean"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["std", "weighted", "delta_mean"], ["stats"], axis=1),
        helper.make_node("Sub", ["stats", "mu"], ["stats_c"]),
        helper.make_node("Div", ["stats_c", "sigma"], ["stats_z"]),
        helper.make_node("MatMul", ["stats_z", "w"], ["output"]),
    ]
    inits = [
        _const("eps", np.float32(1e-5)),
        _const("sharpness", np.float32(ENERGY_SHARPNESS)),
        _const("axis1", np.array([1], np.int64)),
        _const("zero", np.array([0], np.int64)),
        _const("one", np.array([1], np.int64)),
        _const("minus_one", np.array([-1], np.int64)),
        _const("big", np.array([np.iinfo(np.int64).max], np.int64)),
        _const("mu", mu),
        _const("sigma", sigma),
        _const("w", w),
    ]
    graph = helper.make_graph(
        nodes,
        "offline_speaker_encoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "frames", FBANK_BINS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", w.shape[1]])],
        inits,
    )
    _save_model(graph, path, f"statistical speaker embedding ({w.shape[1]}-d), campplus signature")


def fit_speaker_encoder(data_dir: str, out_path: str, *, dim: int = 192) -> str:
    """Fit the statistical speaker encoder on a Kaldi data dir (needs >= 2 speakers) and save it as ONNX."""
    data = read_kaldi_dir(data_dir)
    stats, labels = [], []
    for utt, path in tqdm(data.utt2wav.items(), desc="speaker stats", unit="utt", disable=None, dynamic_ncols=True):
        try:
            feats = campplus_features(load_audio(path, target_sr=16000)[0])
        except AudioError as exc:
            log.warning("offline speaker encoder: skipped %s: %s", utt, exc)
            continue
        if feats.shape[0] >= 2:
            stats.append(speaker_stats(feats))
            labels.append(data.utt2spk[utt])
    if len(set(labels)) < 2:
        raise ValueError(f"offline speaker encoder: need utterances of >= 2 speakers in {data_dir}")
    mu, sigma, w = fit_projection(np.stack(stats), np.array(labels), dim)
    export_speaker_encoder(out_path, mu, sigma, w)
    log.info(
        "offline speaker encoder: fitted on %d utterances, %d speakers -> %s", len(stats), len(set(labels)), out_path
    )
    return out_path


def main(argv: list[str]) -> None:
    """CLI: fit ``tokenizer`` / ``speaker`` on ``--dir``, or export ``resemblyzer``, to ``--out``."""
    what = cli.command(argv, ("tokenizer", "speaker", "resemblyzer"))
    f = flags.FLAGS
    if what == "resemblyzer":
        from sovits2_jax.data.prep.resemblyzer_encoder import export_resemblyzer

        export_resemblyzer(f.out)
        print(f"wrote {f.out}")
    elif not f.dir:
        raise app.UsageError(f"{what} needs --dir")
    elif what == "tokenizer":
        fit_tokenizer(f.dir, f.out, codebook_size=f.codebook_size, seed=f.seed)
    else:
        fit_speaker_encoder(f.dir, f.out, dim=f.dim)  # the fits log their one summary line


if __name__ == "__main__":
    flags.DEFINE_string("dir", None, "Kaldi data dir to fit on (tokenizer, speaker)")
    flags.DEFINE_string("out", None, "output .onnx path", required=True)
    flags.DEFINE_integer("codebook_size", 512, "tokenizer: k-means codebook size")
    flags.DEFINE_integer("dim", 192, "speaker: embedding size")
    flags.DEFINE_integer("seed", 0, "tokenizer: k-means seed")
    cli.run_logged(main)
