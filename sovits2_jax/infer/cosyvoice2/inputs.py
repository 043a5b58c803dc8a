"""One synthesis request as the models consume it (CosyVoice's frontend ``model_input``), in numpy.

The frontend turns a mode's user inputs (text, prompt wav, prompt text, speaker id, instruct text, source wav)
into a ``ModelInput``; the engine batches any mix of them through one LM decode, one flow call and one HiFT call.
Lengths are the arrays' own; empty arrays mean "absent" (cross_lingual has no prompt text / LLM prompt tokens,
sft has no prompt at all, vc skips the LM and re-voices ``source_speech_token``).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _ints(x=()) -> np.ndarray:
    return np.asarray(x, np.int32).reshape(-1)


@dataclasses.dataclass
class ModelInput:
    text: np.ndarray = dataclasses.field(default_factory=_ints)  # int32 [Lt]: text token ids (to synthesise)
    prompt_text: np.ndarray = dataclasses.field(default_factory=_ints)  # int32 [Lp]: prompt / instruct text ids
    llm_prompt_speech_token: np.ndarray = dataclasses.field(default_factory=_ints)  # int32 [Ls]
    flow_prompt_speech_token: np.ndarray = dataclasses.field(default_factory=_ints)  # int32 [Lf]
    prompt_speech_feat: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 80), np.float32)
    )  # float32 [2 * Lf, 80]: 24 kHz Matcha mel of the prompt
    llm_embedding: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((192,), np.float32))
    flow_embedding: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((192,), np.float32))
    source_speech_token: np.ndarray | None = None  # vc: the tokens to re-voice; the LM is skipped

    def __post_init__(self):
        for name in ("text", "prompt_text", "llm_prompt_speech_token", "flow_prompt_speech_token"):
            setattr(self, name, _ints(getattr(self, name)))
        self.prompt_speech_feat = np.asarray(self.prompt_speech_feat, np.float32).reshape(-1, 80)
        if self.source_speech_token is not None:
            self.source_speech_token = _ints(self.source_speech_token)

    @property
    def is_vc(self) -> bool:
        return self.source_speech_token is not None
