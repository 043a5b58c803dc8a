"""The report's per-language breakdown: utterances grouped by the languages the corpus index gives them."""

import math
from pathlib import Path

from sovits2_jax.demo import report


def _rows(values):
    nan = math.nan
    return [{"utt": u, **{m: nan for m in report.TABLE}, "mcd": mcd, "similarity": sim} for u, mcd, sim in values]


def test_metrics_are_grouped_by_the_utterances_languages(tmp_path):
    split = tmp_path / "dev"
    split.mkdir()
    (split / "utterances.tsv").write_text(
        "utt\tlanguages\tsegments\n"
        '1000_10_000000_000000\ten\t[["en", "A."]]\n'
        '1000_10_000001_000000\ten+fr\t[["en", "A."], ["fr", "B."]]\n'
        '1001_10_000000_000000\tfr\t[["fr", "C."]]\n'
        '1001_10_000001_000000\tfr\t[["fr", "D."]]\n',
        encoding="utf-8",
    )
    languages = report.utterance_languages(split)
    assert languages["1000_10_000001_000000"] == "en+fr"
    rows = _rows([("1000_10_000000_000000", 8.0, 0.5), ("1000_10_000001_000000", 10.0, 0.7),
                  ("1001_10_000000_000000", 6.0, 0.9), ("1001_10_000001_000000", 8.0, math.nan)])  # fmt: skip
    groups = report.by_language(rows, languages)
    assert list(groups) == ["en", "en+fr", "fr"]
    assert groups["fr"]["count"] == 2 and groups["fr"]["mcd"] == 7.0 and groups["fr"]["similarity"] == 0.9
    assert groups["en+fr"]["mcd"] == 10.0 and groups["en"]["wer"] is None

    md = report.markdown(
        dict(family="gpt_sovits2", size="tiny", stage_times={}, total_seconds=1.0, synthesis={}, metrics={}, aims={},
             by_language=groups, training={}, plots=dict(curves={}, mels={})),
        [], tmp_path, tmp_path,
    )  # fmt: skip
    assert "## By language" in md and "| en+fr | 1 | 10.000 | 0.700 |" in md


def test_speakers_languages_stand_in_without_an_index_and_one_language_gives_no_table(tmp_path):
    split = tmp_path / "dev"
    split.mkdir()
    (split / "speakers.tsv").write_text(
        "speaker\tlanguage\tvoice\trate\tpitch\trange\n1000\ten\ten-us+m1\t170\t40\t60\n1001\tde\tde+f1\t160\t50\t50\n",
        encoding="utf-8",
    )
    languages = report.utterance_languages(split)
    rows = _rows([("1000_10_000000_000000", 8.0, 0.5), ("1001_10_000000_000000", 6.0, 0.7)])
    assert set(report.by_language(rows, languages)) == {"en", "de"}
    assert report.by_language(rows[:1], languages) == {}  # one language: the overall table says it all
    assert report.utterance_languages(Path(tmp_path / "missing")) == {}
