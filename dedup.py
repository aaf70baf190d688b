"""
Near-duplicate and exact-duplicate detection for corpus cleaning (clean.py runs them; data.py uses DigestSet):
MinHash signatures over character shingles, LSH banding into candidate pairs, verification by exact (or
estimated) Jaccard similarity and union-find clusters, as in the Nordic Pile's fuzzy deduplication (Öhman et
al. 2023, arXiv:2303.17183: 10 hash functions, 10-character shingles, 2 bands, Jaccard threshold 0.5); and
DigestSet, the compact set of MD5 digests behind exact deduplication.

    root, similarity, stats = fuzzy_duplicates(texts, num_perm=10, shingle_size=10, bands=2, threshold=0.5)
    first = DigestSet().first_of([hashlib.md5(t.encode()).digest() for t in texts])  # -1 = first occurrence
"""
import numpy as np

# -----------------------------------------------------------------------------------------------------
# MinHash-LSH. Everything is numpy over all shingles of a chunk of documents at once; no Python loop per
# shingle.

_P = np.uint64(1099511628211)  # FNV-1a 64-bit prime, the base of the rolling shingle hash


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al. 2014): scrambles the bits of a uint64 array (mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingle_hashes(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every k-character shingle of every text -> (hashes (S,), text index (S,)), in text
    order. A text shorter than k (also an empty one) is padded with NUL to one shingle."""
    padded = [t if len(t) >= k else t.ljust(k, "\0") for t in texts]
    lengths = np.fromiter(map(len, padded), np.int64, len(padded))
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), np.uint32).astype(np.uint64)  # (C,)
    w = codes.size - k + 1  # windows over the concatenation, some across text boundaries
    h = np.zeros(w, np.uint64)
    for j in range(k):  # polynomial rolling hash, mod 2^64: h = sum_j code[i+j] * P^(k-1-j)
        h = h * _P + codes[j:j + w]
    doc = np.repeat(np.arange(len(padded)), lengths)[:w]  # (W,) text of each window start
    starts = np.cumsum(lengths) - lengths
    inside = np.arange(w) - starts[doc] <= lengths[doc] - k
    return _mix64(h[inside]), doc[inside]


def minhash_signatures(texts: list[str], num_perm: int = 10, shingle_size: int = 10, seed: int = 0,
                       chunk_chars: int = 1 << 18) -> np.ndarray:
    """MinHash signatures (N, num_perm) uint32: for hash function j, min over shingles s of
    h_j(s) = (a_j * s + b_j) mod 2^64 >> 32 (multiply-add-shift, a_j odd; Dietzfelbinger 1996)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)  # (P,)
    b = rng.integers(0, 2**64, num_perm, dtype=np.uint64, endpoint=False)
    sig = np.empty((len(texts), num_perm), np.uint32)
    for lo, hi in _chunks(list(map(len, texts)), chunk_chars):
        h, doc = shingle_hashes(texts[lo:hi], shingle_size)  # (S,), every text has >= 1 shingle
        perm = ((h[:, None] * a + b) >> np.uint64(32)).astype(np.uint32)  # (S, P)
        first = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])  # start of each text's shingles
        sig[lo:hi] = np.minimum.reduceat(perm, first, axis=0)
    return sig


def _chunks(lengths: list[int], budget: int):
    """(lo, hi) ranges of consecutive items whose lengths sum to about `budget` (at least one item)."""
    lo, total = 0, 0
    for i, n in enumerate(lengths):
        if total and total + n > budget:
            yield lo, i
            lo, total = i, 0
        total += n
    if lo < len(lengths):
        yield lo, len(lengths)


def lsh_candidate_pairs(sig: np.ndarray, bands: int) -> np.ndarray:
    """Pairs (i, j), i < j, that share a bucket in at least one band -> (Q, 2) int64, unique, sorted.
    In a bucket every member is paired with the bucket's first document (star) and with its neighbour
    (chain): linear in the bucket size instead of all m(m-1)/2 pairs."""
    n, p = sig.shape
    r = p // bands
    pairs = [np.empty((0, 2), np.int64)]
    for band in range(bands):
        key = np.zeros(n, np.uint64)
        for col in sig[:, band * r:(band + 1) * r].T.astype(np.uint64):
            key = _mix64(key * _P + col)  # (N,) one 64-bit key for the band's r values
        order = np.argsort(key, kind="stable")  # equal keys stay in document order
        new = np.r_[True, key[order][1:] != key[order][:-1]]
        first = order[new][np.cumsum(new) - 1]  # (N,) first document of each position's bucket
        pairs.append(np.stack([first[~new], order[~new]], 1))
        pairs.append(np.stack([order[:-1][~new[1:]], order[1:][~new[1:]]], 1))
    return np.unique(np.concatenate(pairs), axis=0)


def exact_jaccard(texts: list[str], pairs: np.ndarray, shingle_size: int = 10,
                  chunk_pairs: int = 2_000, chunk_chars: int = 1 << 17) -> np.ndarray:
    """Jaccard similarity |A ∩ B| / |A ∪ B| of the shingle sets of each pair. A shingle is its hash cut to 40
    bits (a collision inside one pair has probability ~ n^2 / 2^41, below 1e-6 for 1,000 shingles); a
    single uint64 key (owner << 40 | hash) then replaces a two-key lexsort, several times faster.
    Pairs are verified in chunks of at most chunk_pairs pairs and ~chunk_chars characters of their texts
    (about 100 bytes of arrays per character: ~13 MB), so memory does not depend on the corpus or document
    size (a chunk of 1 << 19 characters measured the same speed and 36 MB more peak memory)."""
    out = np.empty(len(pairs))
    sizes = texts.sizes if hasattr(texts, "sizes") else None  # (N,) a file-backed store knows them
    cost = sizes[pairs].sum(1) if sizes is not None and len(pairs) else \
        np.array([len(texts[a]) + len(texts[b]) for a, b in pairs.tolist()], np.int64)
    total = np.cumsum(cost)
    s = 0
    while s < len(pairs):
        budget = (total[s - 1] if s else 0) + chunk_chars
        e = min(s + chunk_pairs, max(s + 1, int(np.searchsorted(total, budget, side="right"))))
        pc = pairs[s:e]
        docs, inv = np.unique(pc.ravel(), return_inverse=True)
        h, d = shingle_hashes([texts[i] for i in docs], shingle_size)
        key = np.sort((d.astype(np.uint64) << np.uint64(40)) | (h >> np.uint64(24)))
        key = key[np.r_[True, key[1:] != key[:-1]]]  # each text's set (np.unique hashes: slower here)
        d, h = (key >> np.uint64(40)).astype(np.int64), key & np.uint64(2**40 - 1)
        size = np.bincount(d, minlength=len(docs))
        start = np.cumsum(size) - size
        ia, ib = inv.reshape(-1, 2).T
        m = len(pc)
        pid = np.r_[np.repeat(np.arange(m), size[ia]), np.repeat(np.arange(m), size[ib])]
        hv = np.r_[h[_ranges(start[ia], size[ia])], h[_ranges(start[ib], size[ib])]]
        both = np.sort((pid.astype(np.uint64) << np.uint64(40)) | hv)  # (pair, hash), equal = in A and B
        inter = np.bincount((both[1:][both[1:] == both[:-1]] >> np.uint64(40)).astype(np.int64), minlength=m)
        out[s:s + m] = inter / (size[ia] + size[ib] - inter)
        s = e
    return out


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + size) for each (start, size), vectorised."""
    return np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())


def fuzzy_duplicates(texts, num_perm: int = 10, shingle_size: int = 10, bands: int = 2,
                     threshold: float = 0.5, verify: str = "exact", seed: int = 0,
                     sig: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """MinHash-LSH near-duplicate clusters. Candidate pairs from the bands are verified (Jaccard >= threshold,
    exact or estimated), joined by union-find; each cluster keeps its first text.
    texts: a list, or any sequence whose texts[i] reads text i (e.g. clean.py's file-backed store); sig: their
    signatures (N, num_perm) when already computed (then texts are read only for the verification).
    Returns (root (N,): index of the kept text of each text's cluster, similarity (N,): Jaccard of each
    text to its root (1.0 for roots), stats)."""
    if len(texts) < 2:
        return np.arange(len(texts)), np.ones(len(texts)), {"candidate_pairs": 0, "verified_pairs": 0,
                                                            "clusters": 0}
    sig = minhash_signatures(texts, num_perm, shingle_size, seed) if sig is None else sig
    cand = lsh_candidate_pairs(sig, bands)
    sim = _similarity(texts, sig, cand, shingle_size, verify)
    edges = cand[sim >= threshold]
    parent = np.arange(len(texts))  # (N,) 8 bytes per text, not a Python list of ints
    for lo in range(0, len(edges), 1 << 16):  # Python ints for a block of edges at a time, not all of them
        for i, j in edges[lo:lo + (1 << 16)].tolist():  # union-find; the smaller root wins, so a cluster's
            ri, rj = _find(parent, i), _find(parent, j)  # root is its first text
            parent[max(ri, rj)] = min(ri, rj)
    root = parent
    while True:  # pointer jumping: every parent is smaller than its child, so this ends at the roots
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    dup = np.flatnonzero(root != np.arange(len(texts)))
    similarity = np.ones(len(texts))
    similarity[dup] = _similarity(texts, sig, np.stack([root[dup], dup], 1), shingle_size, verify)
    stats = {"candidate_pairs": len(cand), "verified_pairs": len(edges),
             "clusters": int(np.count_nonzero(np.bincount(root[dup], minlength=1)))}
    return root, similarity, stats


def _similarity(texts, sig, pairs, shingle_size, verify):
    if verify == "exact":
        return exact_jaccard(texts, pairs, shingle_size)
    return (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(1)  # MinHash estimate of the Jaccard similarity


def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = int(parent[x])
    return x


# -----------------------------------------------------------------------------------------------------
# exact dedup state: 24 bytes per distinct document, whatever the corpus size


class DigestSet:
    """The distinct 16-byte digests (MD5) seen so far, each with a 64-bit value (e.g. where it was first
    seen), in sorted numpy runs that merge like a binary counter (O(log N) runs, O(N log N) work in all),
    instead of a Python set at ~100 bytes per entry. values=False keeps the digests alone (16 bytes per entry,
    runs merged by an in-place sort: at most ~32 bytes per entry at a merge), and first_of gives 0 for a digest
    seen before."""

    def __init__(self, values: bool = True):
        self.values = values
        self.runs: list[tuple[np.ndarray, np.ndarray | None]] = []  # (keys (n,) S16 sorted, values (n,) int64)

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self.runs)

    def first_of(self, digests: list[bytes], values=None) -> np.ndarray:
        """For each digest in order: the value (>= 0) stored with its first occurrence (earlier, or earlier
        in this batch), or -1 if it is new, in which case it is added with its value (default 0)
        -> (B,) int64."""
        keys = np.array(digests, dtype="S16")
        values = np.zeros(len(keys), np.int64) if values is None else np.asarray(values, np.int64)
        out = np.full(len(keys), -1, np.int64)
        if not len(keys):
            return out
        for run_keys, run_values in self.runs:
            i = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = run_keys[i] == keys
            out[hit] = 0 if run_values is None else run_values[i[hit]]
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        first = first[inv.ravel()]  # (B,) position of each digest's first occurrence in this batch
        later = (first != np.arange(len(keys))) & (out < 0)
        out[later] = values[first[later]]
        new = out < 0
        self._add(keys[new], values[new])
        return out

    def _add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if not len(keys):
            return
        if not self.values:
            self.runs.append((np.sort(keys), None))
            while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
                k = np.concatenate([self.runs.pop()[0], self.runs.pop()[0]])
                k.sort()  # in place
                self.runs.append((k, None))
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], values[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, v1), (k2, v2) = self.runs.pop(), self.runs.pop()
            k, v = np.concatenate([k2, k1]), np.concatenate([v2, v1])
            order = np.argsort(k, kind="stable")
            self.runs.append((k[order], v[order]))
