"""
Tokenisation throughput of data.py (tokens/s) with 1 and 2 worker processes, against calling the
tokenizer's own batch encode directly in one process (the baseline, measured in the same run; SPEC §10).

    python bench/bench_data.py                                  # Shakespeare lines, own SP BPE 4096 + gpt2
    python bench/bench_data.py --corpus=multilingual --repeats=5

Columns: wall-clock tokens/s and its ratio to the baseline; CPU seconds (this process + workers) per
million tokens and the baseline's CPU time over ours ("cpu eff."; 1.00 = no overhead). On a shared machine
the wall-clock ratios move with the load, the CPU-time ratios much less. Both batch encoders use threads
(SentencePiece: one per core; tiktoken: a pool of 8), so the baseline may already use every core; the
"encode loop" line is the single-threaded reference.
"""
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
from configurator import configure  # noqa: E402
from tokenizer import get_tokenizer, normalize, train_tokenizer  # noqa: E402

corpus = "shakespeare"  # 'shakespeare' (a document per line, 5 MB) | 'multilingual' (shared/data/text, 12 MB)
tokenizers = ["own", "gpt2"]  # 'own' = a 4096 SentencePiece BPE trained here on the corpus (GPT-SW3 recipe)
workers = [1, 2]  # data.py num_proc values to measure
repeats = 5  # best of n (wall clock)
config = configure(globals(), sys.argv[1:])


def _files() -> list:
    if corpus == "shakespeare":
        return data.shakespeare_files()
    return [data.SHARED / "data" / "text" / f"{lang}.txt" for lang in data.MULTILINGUAL_LANGUAGES]


def _docs() -> list[str]:
    return [normalize(line) for f in _files() for line in f.read_text().splitlines() if line.strip()]


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime  # children count once reaped (pool closed)


def _best(fn) -> tuple[float, float]:
    """-> (best wall seconds, CPU seconds of that run)."""
    runs = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        fn()
        runs.append((time.perf_counter() - t0, _cpu_seconds() - c0))
    return min(runs)


def _row(name: str, n_tokens: int, run: tuple[float, float], base: tuple[float, float], n: int = 1) -> None:
    wall, cpu = run
    per_worker = f" ({base[0] / wall / n:.2f}x per worker)" if n > 1 else ""
    print(f"  {name:<34} {n_tokens / wall / 1e6:6.2f} M tok/s  {base[0] / wall:5.2f}x{per_worker:<22} "
          f"{cpu / n_tokens * 1e6:5.2f} CPU-s/M tok  cpu eff. {base[1] / cpu:.2f}")


def main() -> None:
    docs = _docs()
    tmp = Path(tempfile.mkdtemp())
    print(f"corpus {corpus}: {len(docs):,} documents, {sum(map(len, docs)) / 1e6:.1f} M chars, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, best of {repeats}")
    for name in tokenizers:
        spec = train_tokenizer([str(f) for f in _files()], 4096, str(tmp / "own"), minloglevel=2) \
            if name == "own" else name
        tok = get_tokenizer(spec)
        n_tokens = sum(map(len, tok.encode_batch(docs))) + len(docs)  # + one EOT per document, as data.py
        print(f"\n{name} (vocab {tok.vocab_size}): {n_tokens:,} tokens")
        base = _best(lambda: tok.encode_batch(docs))
        _row("tokenizer batch encode (baseline)", n_tokens, base, base)
        _row("tokenizer encode loop (1 thread)", n_tokens, _best(lambda: [tok.encode(d) for d in docs]), base)
        for n in workers:
            dtype = data.token_dtype(tok.vocab_size)
            run = _best(lambda: data.tokenize_to_file(docs, spec, tmp / "out.bin", dtype, num_proc=n))
            assert os.path.getsize(tmp / "out.bin") == n_tokens * dtype.itemsize
            _row(f"data.py, {n} worker{'s' * (n > 1)}", n_tokens, run, base, n)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak RSS: this process {self_mb:.0f} MB, largest worker {child_mb:.0f} MB")


if __name__ == "__main__":
    main()
