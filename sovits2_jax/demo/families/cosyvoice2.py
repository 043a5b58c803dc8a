"""Demo synthesis with a CosyVoice2 model directory (``TTS``): the first same-speaker utterance is the prompt (its
transcript + its audio), batched through the engine."""

from __future__ import annotations

from sovits2_jax.demo.pairs import batches

MULTI_REFERENCE = False  # one prompt utterance per target


def synthesize(model_dir, rows, pairs, *, batch_size=8, seed=0, skips=None):
    """utt -> audio with ``TTS`` (prompt text + prompt audio), ``batch_size`` requests per engine call; and the
    sample rate."""
    from sovits2_jax.infer.cosyvoice2.frontend import FrontendError
    from sovits2_jax.infer.cosyvoice2.tts import TTS

    skips = {} if skips is None else skips
    tts = TTS.from_pretrained(model_dir)
    out, segments = {}, 0
    for chunk in batches(pairs, batch_size):
        kept, requests = [], []
        for p in chunk:
            prompt = rows[p.prompts[0]]
            try:
                requests.append(tts.inputs("zero_shot", rows[p.utt]["text"], prompt_text=prompt["text"],
                                           prompt_wav=prompt["audio_data"]))  # fmt: skip
                kept.append(p)
            except FrontendError as e:
                skips[p.utt] = str(e)
        if requests:
            for p, wav in zip(kept, tts.run_many(requests, seed + segments)):
                out[p.utt] = wav
            segments += sum(len(r) for r in requests)
        print(f"synthesize: {len(out)} of {len(pairs)} utterances", flush=True)
    return out, tts.sample_rate
