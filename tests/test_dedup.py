"""dedup.py at its boundaries: a candidate pair whose exact Jaccard similarity equals the threshold is a
duplicate (>=), one a hair below is not; shingles of texts shorter than the shingle size."""
import numpy as np
import pytest

import dedup


def _jaccard(a: str, b: str, k: int) -> float:
    """|A ∩ B| / |A ∪ B| of the k-character shingle sets, by hand."""
    def shingles(t: str) -> set:
        t = t if len(t) >= k else t.ljust(k, "\0")
        return {t[i:i + k] for i in range(len(t) - k + 1)}
    a, b = shingles(a), shingles(b)
    return len(a & b) / len(a | b)


def test_exact_jaccard_equals_the_hand_computed_sets():
    texts = ["abcdefghij", "abcdefghiX", "ab", "ab", "zzzz"]
    pairs = np.array([[0, 1], [2, 3], [0, 4], [1, 2]])
    got = dedup.exact_jaccard(texts, pairs, shingle_size=3)
    assert got.tolist() == pytest.approx([_jaccard(texts[a], texts[b], 3) for a, b in pairs.tolist()])
    assert got[1] == 1.0 and got[2] == 0.0  # a text shorter than k is one NUL-padded shingle


@pytest.mark.parametrize("delta, is_duplicate", [(0.0, True), (-1e-9, True), (1e-9, False)])
def test_a_pair_at_the_threshold_is_a_duplicate(delta, is_duplicate):
    a = "the quick brown fox jumps over the lazy dog " * 3
    b = a[:-12] + "lazy cat now"
    j = _jaccard(a, b, 5)
    assert 0.5 < j < 1
    # 64 hashes in 64 bands of one row: a pair this similar is a candidate for certain in practice
    root, sim, _ = dedup.fuzzy_duplicates([a, b], num_perm=64, shingle_size=5, bands=64, threshold=j + delta)
    assert bool(root[1] == 0) is is_duplicate
    if is_duplicate:
        assert sim[1] == pytest.approx(j)
