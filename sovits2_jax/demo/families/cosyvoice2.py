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


def ladder(model_dir, rows, pairs, *, seed=0, batch_size=8, skips=None):
    """Yields (utt, scores, {folder: (audio, sample rate)}): resynthesis (the truth's tokens + the prompt through
    the flow and HiFT; the flow's mel against the truth's, frame by frame; that mel through Griffin-Lim) and the LM's
    sampled tokens against the truth's (``pairs``: (utt, prompt utts))."""
    import numpy as np

    from sovits2_jax.audio.griffin_lim import log_mel_to_audio
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np
    from sovits2_jax.demo.ladder import token_scores
    from sovits2_jax.eval.mel_distance import frame_distances
    from sovits2_jax.infer.cosyvoice2.engine import row_keys
    from sovits2_jax.infer.cosyvoice2.frontend import FrontendError
    from sovits2_jax.infer.cosyvoice2.tts import TTS

    skips = {} if skips is None else skips
    tts = TTS.from_pretrained(model_dir)
    cfg = MelConfig()
    for start, chunk in zip(range(0, len(pairs), batch_size), batches(pairs, batch_size)):
        group, tts_in, vc_in = [], [], []
        for utt, prompts in chunk:
            target, cue = rows[utt], rows[prompts[0]]
            try:
                tts_in.append(tts.inputs("zero_shot", target["text"], prompt_text=cue["text"],
                                         prompt_wav=cue["audio_data"])[0])  # fmt: skip
                vc_in.append(tts.inputs("vc", source_wav=target["audio_data"], prompt_wav=cue["audio_data"])[0])
                group.append(utt)
            except FrontendError as e:
                skips[utt] = str(e)
        if not group:
            continue
        sampled = tts.engine.speech_tokens(tts_in, seed + start)
        tokens = [x.source_speech_token for x in vc_in]
        audio = tts.engine.token2wav(vc_in, tokens, row_keys(seed + start, len(group)))
        mels = tts._mels(vc_in, tokens)
        for k, utt in enumerate(group):
            truth, _ = load_audio(rows[utt]["audio_data"], target_sr=cfg.sampling_rate)
            scores = token_scores(sampled[k], rows[utt]["speech_token"])
            distances = frame_distances(mels[k], mel_spectrogram_np(truth, cfg))
            scores.update({f"flow_{name}": value for name, value in distances.items()})
            scores["tokens_match_data"] = bool(np.array_equal(tokens[k], rows[utt]["speech_token"]))
            gl = log_mel_to_audio(mels[k], cfg)
            yield utt, scores, {"resynthesis": (audio[k], tts.sample_rate), "resynthesis_gl": (gl, cfg.sampling_rate)}
