"""
MinHash-LSH dedup throughput (dedup.fuzzy_duplicates, Nordic Pile parameters: 10 hashes, 10-char shingles,
2 bands, Jaccard 0.5) on the shipped text (corpora/text), and how it scales with the number of documents.

    python bench/bench_dedup.py      # all of corpora/text, then a 2 MB sample x1, x4, x16
    python bench/bench_dedup.py --base_mb=4 --scales="[1, 4, 16, 32]" --verify=estimate

Scaling: the sample is repeated with small edits (one word of each copy replaced), so a k-times corpus has
about k-1 near-duplicates of every document. Signatures + LSH must scale ~k (quadratic would be k^2);
verification costs a constant time per candidate pair, and there are at most 2 pairs per document and band
(dedup.lsh_candidate_pairs), so the whole is linear in documents (x1 has few pairs, hence its low total).
Baseline in the same run: brute-force pairwise Jaccard over Python shingle sets, on small document counts.
Peak memory is traced separately (tracemalloc, numpy included) so that it does not slow the timed runs.
Times are CPU seconds of this process (time.process_time; the work is single-threaded numpy), because the
2-core machine is shared and wall time depends on the load; wall seconds are printed beside them.
"""
import random
import string
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dedup  # noqa: E402
from configurator import configure  # noqa: E402

text_dir = str(ROOT / "corpora" / "text")  # one document per line, *.txt
base_mb = 2.0  # size of the sample that is repeated for the scaling runs
scales = [1, 4, 16]  # corpus = sample x k (copies with one word edited)
verify = "exact"  # 'exact' | 'estimate' (clean.py's fuzzy_verify)
brute_docs = [150, 300, 600]  # document counts for the brute-force pairwise baseline
seed = 0


def load_docs(folder: str) -> list[str]:
    docs = []
    for f in sorted(Path(folder).glob("*.txt")):
        docs += [line for line in f.read_text(encoding="utf-8").split("\n") if line]
    return docs


def sample(docs: list[str], mb: float, rng: random.Random) -> list[str]:
    """Documents in a random order until `mb` MB of UTF-8."""
    out, size = [], 0
    for d in rng.sample(docs, len(docs)):
        if size >= mb * 1e6:
            break
        out.append(d)
        size += len(d.encode("utf-8"))
    return out


def repeat_with_edits(docs: list[str], k: int, rng: random.Random) -> list[str]:
    """docs followed by k-1 copies in which one word of each document is replaced by a random one."""
    out = list(docs)
    for _ in range(k - 1):
        for d in docs:
            words = d.split(" ")
            i = rng.randrange(len(words))
            words[i] = "".join(rng.choice(string.ascii_lowercase) for _ in range(max(len(words[i]), 3)))
            out.append(" ".join(words))
    return out


def timed(fn, *args):
    """-> (result, CPU seconds, wall seconds)."""
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - c0, time.perf_counter() - w0


def peak_mb(fn, *args) -> float:
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def run_dedup(docs: list[str]):
    return dedup.fuzzy_duplicates(docs, verify=verify)


def brute_force(docs: list[str]) -> int:
    """All pairs, exact Jaccard of Python shingle sets: the O(N^2) reference."""
    sets = [{d[i:i + 10] for i in range(max(len(d) - 9, 1))} for d in docs]
    return sum(len(a & b) >= 0.5 * len(a | b) for i, a in enumerate(sets) for b in sets[i + 1:])


def row(name: str, docs: list[str], cpu: float, wall: float, mem: float, extra: str = "") -> str:
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    return (f"{name:<28}{len(docs):>9,}{mb:>7.1f}{cpu:>8.2f}{wall:>8.2f}{len(docs) / cpu:>10,.0f}"
            f"{mb / cpu:>7.2f}{mem:>8.0f}  {extra}")


def main() -> None:
    configure(globals(), sys.argv[1:])
    rng = random.Random(seed)
    docs = load_docs(text_dir)
    head = (f"{'run':<28}{'docs':>9}{'MB':>7}{'cpu s':>8}{'wall s':>8}{'docs/s':>10}{'MB/s':>7}{'peak MB':>8}"
            "  notes (docs/s, MB/s per CPU second)")
    print(f"MinHash-LSH dedup, verify={verify}, 10 hashes, 10-char shingles, 2 bands, Jaccard >= 0.5")
    print(head + "\n" + "-" * len(head))
    (root, _, stats), t, w = timed(run_dedup, docs)
    n_dup = int((root != range(len(docs))).sum())
    print(row("corpora/text (all, x1)", docs, t, w, peak_mb(run_dedup, docs),
              f"{n_dup:,} near-dups, {stats['candidate_pairs']:,} candidate pairs"))
    base = sample(docs, base_mb, rng)
    t1 = None
    for k in scales:
        corpus = repeat_with_edits(base, k, rng)
        (root, _, stats), t, w = timed(run_dedup, corpus)
        sig, t_sig, _ = timed(dedup.minhash_signatures, corpus)
        cand, t_lsh, _ = timed(dedup.lsh_candidate_pairs, sig, 2)
        _, t_ver, _ = timed(dedup.exact_jaccard, corpus, cand)
        t1 = t1 or (t_sig + t_lsh, k)
        removed = int((root != range(len(corpus))).sum())
        print(row(f"sample {base_mb:g} MB x{k}", corpus, t, w, peak_mb(run_dedup, corpus),
                  f"signatures+LSH {t_sig + t_lsh:.2f} s = {(t_sig + t_lsh) / t1[0]:.1f}x first for "
                  f"x{k // t1[1]} docs; exact verify of {stats['candidate_pairs']:,} cand. pairs "
                  f"{1e6 * t_ver / max(len(cand), 1):.0f} us/pair; removed {removed:,} "
                  f"({len(corpus) - len(base):,} planted)"))
    b1 = None
    for n in brute_docs:
        _, t, w = timed(brute_force, base[:n])
        _, tm, _ = timed(run_dedup, base[:n])
        b1 = b1 or (t, n)
        print(row(f"brute force pairs, {n} docs", base[:n], t, w, peak_mb(brute_force, base[:n]),
                  f"cpu/first = {t / b1[0]:.1f} for x{n // b1[1]} docs; MinHash-LSH: {tm:.3f} s"))


if __name__ == "__main__":
    main()
