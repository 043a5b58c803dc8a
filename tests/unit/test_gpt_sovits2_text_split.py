"""GPT-SoVITS's text_split_method names (cut0..cut5) as the GPT-SoVITS2 server splits a text into fragments."""

import pytest

from sovits2_jax.infer.gpt_sovits2.text_split import METHODS, split

TEXT = "Hello there, how are you? I am fine. Pi is 3.14 today!! 你好。世界。"


@pytest.mark.parametrize(
    "method, fragments",
    [
        ("cut0", [TEXT]),
        ("cut1", ["Hello there, how are you? I am fine. Pi is 3.14 today!! 你好。", "世界。"]),  # 4 sentences each
        ("cut2", ["Hello there, how are you? I am fine. Pi is 3.14 today!!", "你好。世界。"]),  # >= 50 characters
        ("cut3", ["Hello there, how are you? I am fine. Pi is 3.14 today!! 你好。", "世界。"]),  # at 。
        ("cut4", ["Hello there, how are you? I am fine.", "Pi is 3.14 today!! 你好。世界。"]),  # at . (not 3.14)
        ("cut5", ["Hello there,", "how are you?", "I am fine.", "Pi is 3.14 today!!", "你好。", "世界。"]),
    ],
)
def test_each_method_cuts_where_its_name_says(method, fragments):
    assert split(TEXT, method) == fragments


def test_punctuation_alone_is_not_a_fragment_and_unknown_methods_are_refused():
    assert split("Yes. ... !", "cut5") == ["Yes....!"]
    assert split("?!") == [] and split("   ") == []
    assert len(METHODS) == 6
    with pytest.raises(ValueError, match="text_split_method: cut9 is not supported"):
        split("Hi.", "cut9")
