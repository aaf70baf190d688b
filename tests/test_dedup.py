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


# ---------------------------------------------------------------------------------------------------
# the hashes, signatures, chunks, union-find and DigestSet as documented (kill tests of the mutation run)

_M = 2**64


def _splitmix64_by_hand(x: int) -> int:
    """splitmix64's finaliser (Steele, Lea and Flood 2014; Vigna's splitmix64.c) with Python ints."""
    x = x ^ (x >> 30)
    x = x * 0xBF58476D1CE4E5B9 % _M
    x = x ^ (x >> 27)
    x = x * 0x94D049BB133111EB % _M
    return x ^ (x >> 31)


def _shingle_hashes_by_hand(text: str, k: int) -> list[int]:
    """The docstring's hash of each k-shingle of the NUL-padded text: splitmix64(sum_j code_j * P^(k-1-j) mod 2^64)."""
    text = text.ljust(k, "\0")
    out = []
    for i in range(len(text) - k + 1):
        h = 0
        for c in text[i:i + k]:
            h = (h * 1099511628211 + ord(c)) % _M
        out.append(_splitmix64_by_hand(h))
    return out


def test_mix64_is_the_splitmix64_finaliser():
    """_mix64 equals splitmix64's finaliser bit for bit: the published first outputs of splitmix64 seeded with 0
    (the finaliser of 1 and 2 times the golden gamma), and a hand computation on values with high bits set."""
    gamma = 0x9E3779B97F4A7C15
    got = dedup._mix64(np.array([gamma, 2 * gamma % _M], np.uint64)).tolist()
    assert got == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    xs = [0, 1, 2**63 + 12345, _M - 1, 0x0123456789ABCDEF]
    assert dedup._mix64(np.array(xs, np.uint64)).tolist() == [_splitmix64_by_hand(x) for x in xs]


def test_shingle_hashes_are_the_documented_rolling_hash_of_the_nul_padded_text():
    """Every shingle's hash equals the docstring's polynomial hash (P = FNV-1a's prime, mod 2^64) through
    splitmix64, in text order; a text shorter than k is padded with NUL on the right (not with spaces: 'ab' and
    'ab' plus spaces are different texts)."""
    texts = ["abcdefg", "ab", "åäö!", "", "ab   "]
    h, doc = dedup.shingle_hashes(texts, 5)
    want = [(i, v) for i, t in enumerate(texts) for v in _shingle_hashes_by_hand(t, 5)]
    assert list(zip(doc.tolist(), h.tolist())) == want
    assert h[doc == 1][0] != h[doc == 4][0]


def test_minhash_signatures_are_the_documented_hash_family():
    """sig[i, j] = min over text i's shingles s of ((a_j * s + b_j) mod 2^64) >> 32, with a_j (odd) and b_j drawn
    from numpy's default_rng(seed), one per hash function, as uint32; texts split over several chunks give the
    same rows; no texts give no rows."""
    texts = ["the quick brown fox", "jumps", "over the lazy dog!", "x" * 40]
    for seed in (0, 7):
        rng = np.random.default_rng(seed)
        a = [int(v) | 1 for v in rng.integers(0, 2**64, 6, dtype=np.uint64)]
        b = [int(v) for v in rng.integers(0, 2**64, 6, dtype=np.uint64)]
        want = [[min((aj * s + bj) % _M >> 32 for s in _shingle_hashes_by_hand(t, 4)) for aj, bj in zip(a, b)]
                for t in texts]
        sig = dedup.minhash_signatures(texts, num_perm=6, shingle_size=4, seed=seed, chunk_chars=20)
        assert sig.dtype == np.uint32 and sig.tolist() == want
    assert dedup.minhash_signatures([], num_perm=6).shape == (0, 6)


def test_chunks_are_consecutive_items_within_the_budget():
    """_chunks cuts before an item that would take the running sum over the budget (a sum equal to the budget
    stays in one chunk); an item larger than the budget is a chunk of its own; no items, no chunks."""
    assert list(dedup._chunks([3, 3, 3, 3], 6)) == [(0, 2), (2, 4)]
    assert list(dedup._chunks([3, 3, 3], 7)) == [(0, 2), (2, 3)]
    assert list(dedup._chunks([2, 9, 1, 1], 6)) == [(0, 1), (1, 2), (2, 4)]
    assert list(dedup._chunks([5], 1)) == [(0, 1)]
    assert list(dedup._chunks([], 5)) == []


def test_exact_jaccard_verifies_in_greedy_chunks_of_chunk_chars_and_chunk_pairs(monkeypatch):
    """Pairs are verified in consecutive chunks, each as long as possible with the sum of len(a) + len(b) at most
    chunk_chars (a sum equal to it included) and at most chunk_pairs pairs; a pair over chunk_chars alone is a
    chunk of its own. The Jaccard values equal the hand-computed ones."""
    costs = [10, 11, 9, 25, 6, 6, 6, 2]  # len(a) + len(b) of each pair; b is a's first third
    texts = []
    for i, c in enumerate(costs):
        a = "".join(chr(ord("a") + (i + j) % 26) for j in range(c - c // 3))
        texts += [a, a[:c // 3]]
    pairs = np.arange(len(texts)).reshape(-1, 2)  # pair i = texts 2i, 2i + 1
    chunk_sizes, hashes = [], dedup.shingle_hashes
    monkeypatch.setattr(dedup, "shingle_hashes", lambda t, k: (chunk_sizes.append(len(t) // 2), hashes(t, k))[1])
    got = dedup.exact_jaccard(texts, pairs, shingle_size=3, chunk_pairs=3, chunk_chars=20)
    # totals 10, 21, 30, 55, 61, 67, 73, 75: [10] [11, 9 (= 20 exactly)] [25 alone] [6, 6, 6 (chunk_pairs)] [2]
    assert chunk_sizes == [1, 2, 1, 3, 1]
    assert got.tolist() == pytest.approx([_jaccard(texts[a], texts[b], 3) for a, b in pairs.tolist()])


def test_exact_jaccard_on_clean_py_store_takes_the_cost_from_its_sizes(tmp_path):
    """On clean.py's file-backed store (which knows each record's size) each text is read once per chunk: the
    chunk cost comes from the store's sizes, not from reading every text an extra time; the values equal the list's."""
    import json

    import clean
    texts = ["en liten text om katter", "en liten text om hundar", "helt annat", "en liten text om katter!"]
    path, offsets = tmp_path / "store.jsonl", [0]
    with open(path, "wb") as f:
        for t in texts:  # as clean.py writes its survivors' store
            line = (json.dumps({"text": t}, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            offsets.append(offsets[-1] + len(line))

    class Counting(clean._StoredTexts):
        reads = 0

        def __getitem__(self, i):
            self.reads += 1
            return super().__getitem__(i)

    store = Counting(path, np.array(offsets, np.int64))
    pairs = np.array([[0, 1], [0, 3], [1, 3], [2, 3]])
    got = dedup.exact_jaccard(store, pairs, shingle_size=4)
    assert store.reads == 4  # one chunk, four distinct texts
    np.testing.assert_array_equal(got, dedup.exact_jaccard(texts, pairs, shingle_size=4))


def _edited_pairs(n: int, keep: float) -> list[str]:
    """n pairs (text, the text with each of its 14 words replaced with probability 1 - keep), seeded."""
    rng = np.random.default_rng(0)
    words, texts = [f"w{i}" for i in range(400)], []
    for _ in range(n):
        base = list(rng.choice(words, 14))
        texts += [" ".join(base), " ".join(w if rng.random() < keep else str(rng.choice(words)) for w in base)]
    return texts


def test_defaults_are_the_nordic_pile_settings_and_clean_py_seed():
    """A direct caller gets the published fuzzy-dedup settings (Öhman et al. 2023, arXiv:2303.17183: 10 hash
    functions, 10-character shingles, 2 bands, Jaccard threshold 0.5; exact verification as clean.py's default)
    and clean.py's seed 0: the defaults give the result of these values passed explicitly, on pairs of edited
    texts where the seed changes the candidate pairs."""
    import inspect

    import clean
    assert (clean.minhash_num_perm, clean.minhash_shingle_size, clean.minhash_bands, clean.jaccard_threshold,
            clean.fuzzy_verify, clean.minhash_seed) == (10, 10, 2, 0.5, "exact", 0)
    params = inspect.signature(dedup.fuzzy_duplicates).parameters
    assert {k: params[k].default for k in ("num_perm", "shingle_size", "bands", "threshold", "verify", "seed")} == \
        dict(num_perm=10, shingle_size=10, bands=2, threshold=0.5, verify="exact", seed=0)
    texts = _edited_pairs(40, keep=0.9)
    root, sim, stats = dedup.fuzzy_duplicates(texts)
    want = dedup.fuzzy_duplicates(texts, 10, 10, 2, 0.5, "exact", 0)
    np.testing.assert_array_equal(root, want[0])
    np.testing.assert_array_equal(sim, want[1])
    assert stats == want[2] and stats["verified_pairs"] > 0
    assert stats != dedup.fuzzy_duplicates(texts, seed=1)[2]  # the seed matters here
    np.testing.assert_array_equal(dedup.minhash_signatures(texts), dedup.minhash_signatures(texts, 10, 10, 0))
    pairs = np.arange(len(texts)).reshape(-1, 2)
    np.testing.assert_array_equal(dedup.exact_jaccard(texts, pairs), dedup.exact_jaccard(texts, pairs, 10))


def test_fuzzy_duplicates_of_fewer_than_two_texts():
    """No texts or one text: each text is its own root with similarity 1 and every count is 0."""
    for texts in ([], ["alone"]):
        root, sim, stats = dedup.fuzzy_duplicates(texts)
        assert root.tolist() == list(range(len(texts))) and sim.tolist() == [1.0] * len(texts)
        assert stats == {"candidate_pairs": 0, "verified_pairs": 0, "clusters": 0}


def test_union_find_roots_estimate_and_counts_on_given_signatures():
    """Signatures built so that the candidate pairs are (0, 3), (1, 2), (1, 3) (each in two bands of 5 rows
    once): the union-find leaves 2 -> 1 -> 0, pointer jumping sends every text to root 0; 'estimate' similarity
    is the share of equal MinHashes to the root; the counts are the candidate and verified pairs and the clusters."""
    band0, band1 = [1, 2, 2, 1], [4, 3, 5, 3]
    sig = np.array([[u] * 5 + [v] * 5 for u, v in zip(band0, band1)], np.uint32)  # (4, 10)
    assert dedup.lsh_candidate_pairs(sig, bands=2).tolist() == [[0, 3], [1, 2], [1, 3]]  # unique, sorted
    root, sim, stats = dedup.fuzzy_duplicates(["a", "b", "c", "d"], threshold=0.5, verify="estimate", sig=sig)
    assert root.tolist() == [0, 0, 0, 0]
    assert sim.tolist() == [1.0, 0.0, 0.0, 0.5]  # 1 and 2 share no MinHash with 0, 3 shares band 0's five
    assert stats == {"candidate_pairs": 3, "verified_pairs": 3, "clusters": 1}


def test_fuzzy_duplicates_signatures_use_the_given_seed():
    """seed reaches the MinHash functions: the result equals the one from signatures made with that seed (and, on
    these pairs of edited texts, differs from seed 0's)."""
    texts = _edited_pairs(20, keep=0.7)
    kw = dict(shingle_size=5, bands=10, threshold=0.0, verify="estimate")
    got = dedup.fuzzy_duplicates(texts, seed=5, **kw)
    want = dedup.fuzzy_duplicates(texts, sig=dedup.minhash_signatures(texts, 10, 5, seed=5), **kw)
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]
    assert not np.array_equal(got[1], dedup.fuzzy_duplicates(texts, seed=0, **kw)[1])


def test_union_find_takes_every_block_of_edges():
    """More than 2^16 verified pairs (the union-find's block of edges): 70,000 pairs (2i, 2i + 1), each its own
    cluster, all joined."""
    n = 70_000
    sig = np.repeat(np.arange(n, dtype=np.uint32), 2)[:, None].repeat(2, 1)  # (2n, 2): rows 2i, 2i+1 equal
    root, _, stats = dedup.fuzzy_duplicates([""] * (2 * n), num_perm=2, bands=1, verify="estimate", sig=sig)
    np.testing.assert_array_equal(root, np.repeat(np.arange(0, 2 * n, 2), 2))
    assert stats == {"candidate_pairs": n, "verified_pairs": n, "clusters": n}


def test_digest_set_value_0_of_an_earlier_batch_holds_for_every_repeat():
    """A digest stored with value 0 (the first document) keeps answering 0 when it comes twice in a later batch,
    also for its second occurrence there (not that batch's value of its first occurrence)."""
    ds = dedup.DigestSet()
    d = bytes(range(16))
    assert ds.first_of([d], [0]).tolist() == [-1]
    assert ds.first_of([d, d, bytes(16), bytes(16)], [7, 8, 9, 10]).tolist() == [0, 0, -1, 9]
