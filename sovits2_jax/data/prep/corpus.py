"""Built-in multi-speaker corpus: espeak-ng speech in the LibriTTS layout, at 24 kHz, deterministic for a seed.

    python -m sovits2_jax.data.prep.corpus --out DIR --hours 0.5 --speakers 8 --languages en,fr,de,es \\
        [--code_switch 0.3] --seed 0

Speakers are espeak-ng voice variants with their own rate, pitch and pitch range, each reading sentences of one
language. With ``--code_switch F`` and several languages, a fraction F of the utterances switch language inside
the utterance: the speaker's sentence, then a sentence of another of the corpus's languages in the same voice
variant (espeak-ng SSML ``<voice>``); the transcript is the plain text of both, with no language tag. The
sentences in ``sentences/*.txt`` were written for this project and are dedicated to the public domain. Layout:
``DIR/SPEAKER/CHAPTER/SPEAKER_CHAPTER_PARA_SENT.{wav,normalized.txt,original.txt}`` plus ``DIR/speakers.tsv`` and
``DIR/utterances.tsv`` (utterance, its languages such as ``en`` or ``en+fr``, its segments as JSON).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from importlib import resources

import numpy as np
from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.audio.io import write_wav
from sovits2_jax.audio.loudness import TARGET_LUFS, normalize_loudness
from sovits2_jax.audio.resample import resample

SAMPLE_RATE = 24000
ESPEAK_VOICE = {"en": "en-us", "fr": "fr", "de": "de", "es": "es"}
# Natural-sounding variants (robotic, whispering and novelty variants left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "Alex", "Alicia", "Andrea",
    "Andy", "Annie", "Denis", "Diogo", "Henrique", "Hugo", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen",
    "Reed", "adam", "anika", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward",
    "gustave", "ian", "iven", "john", "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul",
    "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph", "travis", "victor", "zac",
)  # fmt: skip
UTTS_PER_CHAPTER = 25
PASS_RATE_OFFSETS = (0, 15, -15, 30, -30)  # words/minute added on each pass through the sentences
PEAK_LIMIT = 0.99
CHUNK = 16  # utterances synthesised per fresh worker process (see Espeak's docstring)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Speaker:
    id: str
    language: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int


@dataclasses.dataclass(frozen=True)
class Job:
    utt: str
    path: str  # relative to the corpus root, without extension
    text: str
    speaker: Speaker
    segments: tuple[tuple[str, str], ...] = ()  # (language, text) when the utterance switches language

    @property
    def languages(self) -> str:
        """``en``, or ``en+fr`` for an utterance that switches from en to fr."""
        langs = [lang for lang, _ in self.segments] or [self.speaker.language]
        return "+".join(dict.fromkeys(langs))


def to_ssml(segments, speaker: Speaker) -> str:
    """SSML for espeak-ng: each segment not in the speaker's language in that language's voice with the speaker's
    variant (its timbre), the others in the speaker's own voice."""
    from xml.sax.saxutils import escape, quoteattr

    variant = speaker.voice.partition("+")[2]
    parts = []
    for lang, text in segments:
        if lang == speaker.language:
            parts.append(escape(text))
        else:
            name = ESPEAK_VOICE[lang] + (f"+{variant}" if variant else "")
            parts.append(f"<voice name={quoteattr(name)}>{escape(text)}</voice>")
    return "<speak>" + " ".join(parts) + "</speak>"


def load_sentences(language: str) -> list[str]:
    """The built-in sentences of a language (one per line)."""
    try:
        text = resources.files("sovits2_jax.data.prep").joinpath("sentences", f"{language}.txt").read_text("utf-8")
    except FileNotFoundError:
        raise ValueError(f"corpus: no built-in sentences for language {language!r}; have {languages()}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def languages() -> list[str]:
    files = resources.files("sovits2_jax.data.prep").joinpath("sentences").iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".txt") and f.name[:-4] in ESPEAK_VOICE)


def make_speakers(num_speakers: int, langs: list[str], seed: int) -> list[Speaker]:
    """Distinct (variant, rate, pitch) speakers, languages assigned round-robin."""
    if num_speakers < 1:
        raise ValueError(f"corpus: --speakers must be >= 1, got {num_speakers}")
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(VARIANTS))
    speakers = []
    for k in range(num_speakers):
        lang = langs[k % len(langs)]
        variant = VARIANTS[order[k % len(VARIANTS)]]
        speakers.append(
            Speaker(
                id=str(1000 + k),
                language=lang,
                voice=f"{ESPEAK_VOICE[lang]}+{variant}",
                rate=int(rng.integers(140, 200)),
                pitch=int(rng.integers(25, 80)),
                pitch_range=int(rng.integers(30, 90)),
            )
        )
    return speakers


def split_sentences(sentences: list[str], split: str) -> list[str]:
    """All sentences, or a disjoint train / dev (last 10%, at least 2) partition of them."""
    n_dev = max(2, len(sentences) // 10)
    if split == "all":
        return sentences
    if split == "train":
        return sentences[:-n_dev]
    if split == "dev":
        return sentences[-n_dev:]
    raise ValueError(f"corpus: split must be all, train or dev, got {split!r}")


def plan(
    speakers: list[Speaker], seed: int, split: str = "all", extra_sentences: int = 0, code_switch: float = 0.0
) -> Iterator[Job]:
    """Endless utterance plan: speakers take turns; each reads its language's sentences in its own order.

    After a speaker has read every sentence it starts again slightly faster or slower (rate offsets cycle through
    ``PASS_RATE_OFFSETS``), so repeated texts are not identical audio. ``extra_sentences`` composed English
    sentences (``sentence_maker``) join the English pool of the train and all splits, never dev. ``code_switch``:
    the fraction of utterances followed, inside the utterance, by a sentence of another of the speakers' languages
    (of the same split).
    """
    if not 0.0 <= code_switch <= 1.0:
        raise ValueError(f"corpus: --code_switch is a fraction in [0, 1], got {code_switch}")
    langs = sorted({s.language for s in speakers})
    if code_switch > 0 and len(langs) < 2:
        raise ValueError(f"corpus: --code_switch needs speakers of two or more languages, got {langs}")
    sentences = {lang: split_sentences(load_sentences(lang), split) for lang in langs}
    if extra_sentences > 0 and split != "dev":
        if "en" not in sentences:
            raise ValueError("corpus: --extra_sentences composes English sentences; no speaker reads en")
        from sovits2_jax.data.prep.sentence_maker import compose

        known = set(load_sentences("en"))
        sentences["en"] = sentences["en"] + [s for s in compose(extra_sentences, seed) if s not in known]
    orders = [
        np.random.default_rng([seed, 2, k]).permutation(len(sentences[s.language])) for k, s in enumerate(speakers)
    ]
    index = 0
    while True:
        for k, spk in enumerate(speakers):
            pool = sentences[spk.language]
            text = pool[orders[k][index % len(pool)]]
            offset = PASS_RATE_OFFSETS[(index // len(pool)) % len(PASS_RATE_OFFSETS)]
            reader = dataclasses.replace(spk, rate=spk.rate + offset)
            chapter = str(10 + index // UTTS_PER_CHAPTER)
            utt = f"{spk.id}_{chapter}_{index % UTTS_PER_CHAPTER:06d}_000000"
            segments = ()
            draw = np.random.default_rng([seed, 3, k, index])
            if code_switch > 0 and draw.random() < code_switch:
                other = [lang for lang in langs if lang != spk.language][int(draw.integers(len(langs) - 1))]
                second = sentences[other][int(draw.integers(len(sentences[other])))]
                segments = ((spk.language, text), (other, second))
                text = f"{text} {second}"
            yield Job(utt=utt, path=os.path.join(spk.id, chapter, utt), text=text, speaker=reader, segments=segments)
        index += 1


def _synthesize_chunk(jobs: list[Job], loudness_lufs: float | None = None) -> list[np.ndarray]:
    from sovits2_jax.data.prep.espeak import Espeak

    engine = Espeak()
    out = []
    for job in jobs:
        s = job.speaker
        text, ssml = job.text, "+" in job.languages
        if ssml:
            text = to_ssml(job.segments, s)
        wav = engine.synthesize(text, s.voice, rate=s.rate, pitch=s.pitch, pitch_range=s.pitch_range, ssml=ssml)
        wav = resample(wav.astype(np.float32) / 32768.0, engine.sample_rate, SAMPLE_RATE)
        if loudness_lufs is not None:
            wav = normalize_loudness(wav, SAMPLE_RATE, loudness_lufs)
            peak = float(np.abs(wav).max())
            if peak > PEAK_LIMIT:  # never clip: stay quieter than the target instead
                wav = wav * np.float32(PEAK_LIMIT / peak)
        out.append(wav)
    return out


def render(jobs: list[Job], loudness_lufs: float | None = TARGET_LUFS) -> list[np.ndarray]:
    """The 24 kHz audio of ``jobs`` rendered as the corpus renders utterances (in a fresh worker process)."""
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
        return pool.submit(_synthesize_chunk, jobs, loudness_lufs).result()


def read_speakers(path: str) -> dict[str, Speaker]:
    """id -> Speaker of a corpus split's ``speakers.tsv``."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()][1:]
    return {r[0]: Speaker(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5])) for r in lines}


def read_utterances(path: str) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """utt -> (languages, segments) of a corpus split's ``utterances.tsv`` ({} when the file is absent)."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()][1:]
    return {r[0]: (r[1], tuple(tuple(seg) for seg in json.loads(r[2]))) for r in rows}


def _chunks(jobs: Iterator[Job]) -> Iterator[list[Job]]:
    while True:
        yield [next(jobs) for _ in range(CHUNK)]


def build_corpus(
    out_dir: str,
    *,
    hours: float | None = 0.5,
    utterances: int | None = None,
    num_speakers: int = 8,
    langs: list[str] | None = None,
    seed: int = 0,
    workers: int = 2,
    split: str = "all",
    loudness_lufs: float | None = TARGET_LUFS,
    extra_sentences: int = 0,
    code_switch: float = 0.0,
) -> dict:
    """Synthesise the corpus into ``out_dir``; stops after ``utterances`` or once ``hours`` of audio exist.

    ``split`` "train" / "dev" keeps the same speakers (same seed) but disjoint sentences (dev: the last 10%).
    Each utterance is normalised to ``loudness_lufs`` (GPT-SoVITS2's -23 LUFS; None keeps espeak's level).
    """
    langs = langs or ["en"]
    unknown = [lang for lang in langs if lang not in ESPEAK_VOICE]
    if unknown:
        raise ValueError(f"corpus: unsupported languages {unknown}; supported {sorted(ESPEAK_VOICE)}")
    if utterances is None and (hours is None or hours <= 0):
        raise ValueError("corpus: give --hours > 0 or --utterances")
    speakers = make_speakers(num_speakers, langs, seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "speakers.tsv"), "w", encoding="utf-8") as f:
        f.write("speaker\tlanguage\tvoice\trate\tpitch\trange\n")
        for s in speakers:
            f.write(f"{s.id}\t{s.language}\t{s.voice}\t{s.rate}\t{s.pitch}\t{s.pitch_range}\n")
    target_s = None if utterances is not None else hours * 3600.0
    total_s, count = 0.0, 0
    bar = tqdm(total=utterances if utterances is not None else round(target_s), unit="utt" if utterances else "s",
               desc="corpus", disable=None, dynamic_ncols=True)  # fmt: skip
    # forkserver + one task per child: each chunk runs in a fresh process forked from one that never
    # synthesised, so the audio is reproducible (see Espeak's docstring).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sovits2_jax.data.prep.corpus"])  # numpy etc. imported once; espeak-ng not loaded
    chunks = _chunks(plan(speakers, seed, split, extra_sentences, code_switch))
    index = open(os.path.join(out_dir, "utterances.tsv"), "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    index.write("utt\tlanguages\tsegments\n")
    pending: collections.deque = collections.deque()
    with concurrent.futures.ProcessPoolExecutor(max(1, workers), mp_context=ctx, max_tasks_per_child=1) as pool:
        done = False
        while not done:
            while len(pending) < 2 * max(1, workers):
                jobs = next(chunks)
                pending.append((jobs, pool.submit(_synthesize_chunk, jobs, loudness_lufs)))
            jobs, future = pending.popleft()
            for job, wav in zip(jobs, future.result()):
                _write_utterance(out_dir, job, wav)
                segments = [list(seg) for seg in job.segments] or [[job.speaker.language, job.text]]
                index.write(f"{job.utt}\t{job.languages}\t{json.dumps(segments, ensure_ascii=False)}\n")
                count += 1
                total_s += len(wav) / SAMPLE_RATE
                bar.update(1 if utterances is not None else min(len(wav) / SAMPLE_RATE, bar.total - bar.n))
                done = (utterances is not None and count >= utterances) or (
                    target_s is not None and total_s >= target_s
                )
                if done:
                    break
        for _, future in pending:
            future.cancel()
    index.close()
    bar.close()
    log.info("corpus: %d utterances, %.2f h, %d speakers in %s", count, total_s / 3600, len(speakers), out_dir)
    return {"utterances": count, "hours": total_s / 3600, "speakers": len(speakers)}


def _write_utterance(root: str, job: Job, wav: np.ndarray) -> None:
    base = os.path.join(root, job.path)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    write_wav(base + ".wav", wav, SAMPLE_RATE)
    for suffix in (".normalized.txt", ".original.txt"):
        with open(base + suffix, "w", encoding="utf-8") as f:
            f.write(job.text)


def main(argv: list[str]) -> None:
    """CLI: the built-in corpus in ``--out``."""
    cli.command(argv)
    f = flags.FLAGS
    build_corpus(  # logs its one summary line
        f.out, hours=f.hours, utterances=f.utterances, num_speakers=f.speakers,
        langs=[s.strip() for s in f.languages.split(",") if s.strip()], seed=f.seed, workers=f.workers,
        split=f.split, loudness_lufs=None if np.isnan(f.loudness) else f.loudness, extra_sentences=f.extra_sentences,
        code_switch=f.code_switch,
    )  # fmt: skip


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "output directory (LibriTTS layout)", required=True)
    flags.DEFINE_float("hours", 0.5, "stop once this much audio exists")
    flags.DEFINE_integer("utterances", None, "exact number of utterances (overrides --hours)")
    flags.DEFINE_integer("speakers", 8, "number of speakers")
    flags.DEFINE_string("languages", "en", f"comma-separated, from {sorted(ESPEAK_VOICE)}")
    flags.DEFINE_integer("seed", 0, "seed of speakers and sentence order")
    flags.DEFINE_integer("workers", 2, "synthesis processes")
    flags.DEFINE_float("loudness", TARGET_LUFS, "LUFS per utterance (nan: no change)")
    flags.DEFINE_enum("split", "all", ["all", "train", "dev"], "disjoint sentence sets")
    flags.DEFINE_integer("extra_sentences", 0, "composed English sentences added to the train / all pool")
    flags.DEFINE_float("code_switch", 0.0, "fraction of utterances that switch to another of --languages inside")
    cli.run_logged(main)
