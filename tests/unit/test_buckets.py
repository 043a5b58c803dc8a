"""Padded lengths of the inference passes: powers of two for the LM's caches, eighths of an octave for the flow and
HiFT (whose cost grows with every padded frame)."""

from sovits2_jax.infer.generate import bucket, fine_bucket


def test_bucket_is_the_next_power_of_two_above_the_minimum():
    assert [bucket(n) for n in (1, 16, 17, 100, 128, 129)] == [16, 16, 32, 128, 128, 256]
    assert bucket(10, 64) == 64


def test_fine_bucket_pads_by_at_most_an_eighth_with_eight_shapes_per_octave():
    sizes = [fine_bucket(n) for n in range(1, 2049)]
    assert all(s >= max(n, 16) for n, s in zip(range(1, 2049), sizes))
    assert all((s - n) * 8 < s for n, s in zip(range(16, 2049), sizes[15:]))
    assert sizes == sorted(sizes)  # a longer request never gets a shorter shape
    for low in (64, 128, 256, 512, 1024):
        assert len({s for s in sizes if low < s <= 2 * low}) == 8
    assert fine_bucket(130) == 144 and fine_bucket(80) == 80 and fine_bucket(160, 64) == 160
    assert fine_bucket(10, 64) == 64
    assert [fine_bucket(n, 16, per_octave=4) for n in (17, 100, 130)] == [20, 112, 160]
