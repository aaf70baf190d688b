"""
The text path at scale: tokenisation throughput of data.py against the tokenizer's own batch encode, and
peak memory of `prepare` and `clean` on a corpus and on the same corpus x8 (measured, not assumed).

    nice python bench/bench_data.py                      # 1 MB of corpora/text, x1 and x8, own SP 4096 + gpt2
    nice python bench/bench_data.py --base_mb=1 --repeats=1 --tokenizers="['own']"

Throughput (on the base corpus, best of `repeats`): the baseline is the tokenizer's own batch encode of the
normalised documents in this process; "tokenize_to_file" is data.py's tokenising stage on the same list;
"prepare" is the whole command on the corpus as Parquet shards (read, normalise, dedup, tokenise, split,
shuffle, gather). Columns: tokens/s, its ratio to the baseline, the ratio per worker (per CPU core used by
workers), CPU seconds per million tokens and the baseline's CPU time over ours ("cpu eff."; 1.00 = no
overhead). SentencePiece's batch encode already uses a thread per core, so on 2 cores the baseline is not
single-threaded; the CPU-time ratio is the steadier figure on a shared machine.
Memory: each run is a fresh subprocess (num_proc=1, so all work is in it) that reports its peak resident
set (VmHWM of /proc/self/status, Linux: ru_maxrss would carry the forking parent's peak over the exec).
x8 is eight copies of the corpus in 8x as many shards of the same size (a bigger corpus has more shards,
not bigger ones), each document prefixed with its copy number so that exact dedup keeps them all
(clean's fuzzy dedup then removes 7 of 8 near-duplicates, after holding their signatures and reading their
texts back). Printed: the peak of each run, the ratio x8/x1 (target <= 1.3)
and the growth above a process that only imports the module (torch, for data.py, is most of the base).
Part "memory_short": the same for `prepare` on many short documents (each line of the base corpus one document,
x1 and x`short_scale`), where what grows is the state kept per document (dedup digests, offsets, the split).
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
from configurator import configure  # noqa: E402
from tokenizer import get_tokenizer, normalize, train_tokenizer  # noqa: E402

base_mb = 1.0  # base corpus: the first base_mb MB of lines of corpora/text (sv, da, en interleaved; 1.3 MB in all)
lines_per_doc = 8  # consecutive lines of one language per document (~0.9 KB; FineWeb's pages average ~3 KB)
scale = 8  # the large corpus = base x scale (distinct copies)
shards = 6  # Parquet shards of the base corpus (FineWeb layout: a folder of shards with a 'text' column)
row_group_rows = 1024  # rows per Parquet row group (a reader holds one row group of a column at a time)
tokenizers = ["own", "gpt2"]  # 'own' = a 4096 SentencePiece BPE trained here on the base (GPT-SW3 recipe)
workers = [1, 2]  # num_proc values to measure
repeats = 3  # best of n (wall clock)
short_scale = 12  # memory_short: the many-short-documents corpus = its base x short_scale
parts = ["throughput", "memory", "memory_short"]  # which measurements to run
config = configure(globals(), sys.argv[1:])


def base_docs() -> list[str]:
    """Documents of lines_per_doc lines of sv, da and en in turn until base_mb MB of UTF-8."""
    langs = []
    for lang in ("sv", "da", "en"):
        lines = [x for x in (data.CORPORA / "text" / f"{lang}.txt").read_text("utf-8").splitlines()
                 if x.strip()]
        langs.append(["\n".join(lines[i:i + lines_per_doc]) for i in range(0, len(lines), lines_per_doc)])
    out, size = [], 0
    for row in zip(*langs):
        for doc in row:
            if size < base_mb * 1e6:
                out.append(doc)
                size += len(doc.encode())
    return out


def write_parquet_shards(folder: Path, docs: list[str], n_shards: int) -> Path:
    """docs in n_shards Parquet files with a 'text' and an 'id' column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // n_shards)
    for s in range(n_shards):
        part = docs[s * per:(s + 1) * per]
        pq.write_table(pa.table({"text": part, "id": [f"{s}-{i}" for i in range(len(part))]}),
                       folder / f"shard_{s:05d}.parquet", row_group_size=row_group_rows)
    return folder


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
    print(f"  {name:<36} {n_tokens / wall / 1e6:6.2f} M tok/s  {base[0] / wall:5.2f}x  "
          f"{base[0] / wall / n:5.2f}x per worker  {cpu / n_tokens * 1e6:5.2f} CPU-s/M tok  "
          f"cpu eff. {base[1] / cpu:.2f}")


def throughput(docs: list[str], corpus: Path, tmp: Path, specs: dict) -> None:
    normed = [normalize(d) for d in docs]
    for name, spec in specs.items():
        tok = get_tokenizer(spec)
        n_tokens = sum(map(len, tok.encode_batch(normed))) + len(normed)  # + one EOT per document
        print(f"\n{name} (vocab {tok.vocab_size}): {n_tokens:,} tokens")
        base = _best(lambda: tok.encode_batch(normed))
        _row("tokenizer batch encode (baseline)", n_tokens, base, base)
        dtype = data.token_dtype(tok.vocab_size)
        for n in workers:
            run = _best(lambda: data.tokenize_to_file(iter(normed), tok, tmp / "out.bin", dtype, num_proc=n))
            assert os.path.getsize(tmp / "out.bin") == n_tokens * dtype.itemsize
            _row(f"tokenize_to_file, {n} worker{'s' * (n > 1)}", n_tokens, run, base, n)
        for n in workers:
            def prepare():
                folder = data.prepare_dataset(f"{name}{n}", data_root=tmp / "runs", input=str(corpus),
                                              tokenizer=spec, num_proc=n, dedup=False, val_fraction=0.01)
                shutil.rmtree(folder)  # so the next repeat builds again
            run = _best(prepare)
            _row(f"prepare (Parquet shards), {n} worker{'s' * (n > 1)}", n_tokens, run, base, n)


_CHILD = """
import re, sys, json
sys.path.insert(0, {root!r})
job, corpus, out, spec = sys.argv[1:5]
if job == "prepare":
    import data
    if corpus != "-":
        data.prepare_dataset("d", data_root=out, input=corpus, tokenizer=spec, num_proc=1)
elif job == "clean":
    import clean
    if corpus != "-":
        clean.main(["--input", corpus, "--out", out])
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())  # this process's own peak
print(json.dumps(int(hwm.group(1)) / 1024))
"""


def peak_rss_mb(job: str, corpus: str, out: Path, spec: str) -> float:
    """Peak RSS (MB) of a fresh process that runs `job` on corpus ('-': only imports the module)."""
    r = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT)), job, corpus, str(out), spec],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"{job} on {corpus} failed:\n{r.stderr[-3000:]}")
    return float(json.loads(r.stdout.strip().splitlines()[-1]))


def memory(docs: list[str], x1: Path, tmp: Path, spec: str) -> None:
    big = [f"{k}: {d}" for k in range(scale) for d in docs]
    xn = write_parquet_shards(tmp / f"x{scale}", big, shards * scale)
    mb = [sum(len(d.encode()) for d in c) / 1e6 for c in (docs, big)]
    print(f"\npeak RSS (MB) of one process, num_proc=1: corpus {mb[0]:.1f} MB ({len(docs):,} documents) vs "
          f"x{scale} {mb[1]:.1f} MB ({len(big):,} documents), Parquet shards")
    print(f"  {'job':<28}{'import only':>12}{'x1':>9}{f'x{scale}':>9}{'ratio':>8}{'growth above import':>24}")
    for job in ("prepare", "clean"):
        base = peak_rss_mb(job, "-", tmp / "none", spec)
        runs = [peak_rss_mb(job, str(c), tmp / f"{job}_{c.name}", spec) for c in (x1, xn)]
        name = f"{job} ({'tokenizer ' + Path(spec).name if job == 'prepare' else 'defaults'})"
        print(f"  {name:<28}{base:>12.0f}{runs[0]:>9.0f}{runs[1]:>9.0f}{runs[1] / runs[0]:>7.2f}x"
              f"{runs[0] - base:>11.0f} -> {runs[1] - base:.0f} MB")


def memory_short(docs: list[str], tmp: Path, spec: str) -> None:
    lines = [line for d in docs for line in d.split("\n")]
    corpora = [write_parquet_shards(tmp / f"short_x{k}", [f"{c}: {x}" for c in range(k) for x in lines], shards * k)
               for k in (1, short_scale)]
    base = peak_rss_mb("prepare", "-", tmp / "none", spec)
    runs = [peak_rss_mb("prepare", str(c), tmp / f"prepare_{c.name}", spec) for c in corpora]
    print(f"\npeak RSS (MB), prepare on short documents (one line each): {len(lines):,} vs "
          f"{len(lines) * short_scale:,} documents: import only {base:.0f}, x1 {runs[0]:.0f}, x{short_scale} "
          f"{runs[1]:.0f}, ratio {runs[1] / runs[0]:.2f}x (target <= 1.3), growth above import {runs[0] - base:.0f} -> "
          f"{runs[1] - base:.0f} MB ({(runs[1] - runs[0]) * 2**20 / (len(lines) * (short_scale - 1)):.0f} "
          f"bytes per added document)")


def main() -> None:
    docs = base_docs()
    tmp = Path(tempfile.mkdtemp())
    x1 = write_parquet_shards(tmp / "x1", docs, shards)
    print(f"corpus: {len(docs):,} documents of {lines_per_doc} line(s), {sum(map(len, docs)) / 1e6:.1f} M chars, "
          f"{shards} Parquet shards; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"best of {repeats}")
    own = train_tokenizer([], 4096, str(tmp / "own"), documents=docs, minloglevel=2)
    specs = {name: own if name == "own" else name for name in tokenizers}
    if "throughput" in parts:
        throughput(docs, x1, tmp, specs)
    if "memory" in parts:
        memory(docs, x1, tmp, own)
    if "memory_short" in parts:
        memory_short(docs, tmp, own)


if __name__ == "__main__":
    main()
