"""English sentences composed from templates and word lists: more text for the built-in corpus.

The built-in corpus renders speech for free but has 246 English sentences; an LM trained on the 222 of its train
split memorises them and does not learn to read a new one. Composed sentences add as many distinct training texts
as wanted (the dev split keeps the natural held-out sentences). Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NAMES = _words(
    """
    Anna Peter Maria Thomas Clara Jonas Helen Victor Nora Oscar Julia Samuel Ruth Daniel Irene Felix
    Laura Martin Sofia Edward
    """
)
ADJECTIVES = _words(
    """
    quiet bright heavy narrow golden broken gentle ancient sudden muddy crowded distant frozen tiny
    yellow careful silver empty friendly crooked wooden noisy patient purple shallow curious warm bitter
    clever rusty
    """
)
NOUNS = _words(
    """
    garden river window teacher basket mountain engine letter kitchen bridge market pencil village
    doctor blanket forest captain ladder island drawer camera bottle station farmer pocket meadow
    painter hammer cottage violin
    """
)
PLACES = ("the harbour", "the old mill", "the library", "the train station", "the hillside", "the square",
          "the riverbank", "the school yard", "the bakery", "the lighthouse", "the orchard", "the museum")  # fmt: skip
VERBS_PAST = _words(
    """
    carried painted found repaired watched followed opened counted cleaned described borrowed noticed
    dropped measured collected visited lifted ordered remembered washed
    """
)
VERBS_BASE = _words(
    """
    carry paint find repair watch follow open count clean describe borrow notice measure collect visit
    lift order remember wash explain
    """
)
ADVERBS = ("slowly", "quickly", "quietly", "twice", "again", "carefully", "happily", "at once", "without a word",
           "by accident")  # fmt: skip
TIMES = ("this morning", "last night", "on Sunday", "before lunch", "after the storm", "in the spring",
         "every evening", "at noon", "yesterday", "two days ago")  # fmt: skip
NUMBERS = _words(
    """
    two three four five six seven eight nine ten twelve twenty forty
    """
)

TEMPLATES = (
    "The {adj} {noun} was {adv2} {place}.",
    "{name} {past} the {adj} {noun} {time}.",
    "Did {name} {base} the {noun} near {place}?",
    "We {past} {number} {adj} {noun}s {time}.",
    "After the {noun} {past2} the {noun2}, {name} left {adv}.",
    "Please {base} the {adj} {noun} before {name} comes back.",
    "{name} and {name2} {past} a {adj} {noun} at {place}.",
    "Nobody {past} the {noun} that {name} had left {place2}.",
)
_ADV2 = ("found near", "left at", "seen by", "kept in", "built beside", "hidden behind")
_PLACE2 = ("outside", "upstairs", "by the door", "in the rain", "on the table", "under the bridge")


def compose(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct sentences (fewer only if the templates run out, which they do not below millions)."""
    if count < 0:
        raise ValueError(f"sentence count must be >= 0, got {count}")
    rng = np.random.default_rng([seed, 7])

    def pick(words):
        return words[int(rng.integers(len(words)))]

    out: dict[str, None] = {}
    attempts = 0
    while len(out) < count and attempts < 20 * count + 100:
        attempts += 1
        name = pick(NAMES)
        sentence = pick(TEMPLATES).format(
            adj=pick(ADJECTIVES), noun=pick(NOUNS), noun2=pick(NOUNS), place=pick(PLACES), place2=pick(_PLACE2),
            past=pick(VERBS_PAST), past2=pick(VERBS_PAST), base=pick(VERBS_BASE), adv=pick(ADVERBS),
            adv2=pick(_ADV2), time=pick(TIMES), number=pick(NUMBERS), name=name,
            name2=pick([n for n in NAMES if n != name]),
        )  # fmt: skip
        out[sentence] = None
    return list(out)
