"""
Corpus cleaning, Nordic Pile style (the GPT-SW3 training data: Öhman et al. 2023, arXiv:2303.17183):
normalise -> empty check -> document metrics + quality filters -> exact dedup (MD5) -> fuzzy dedup
(MinHash-LSH, dedup.py), with every removed document written to a side file and a per-step, per-language
report.

    python clean.py --input=corpus/ --out=out-clean                  # a folder of sv.txt, da.jsonl, ...
    python clean.py --input=sv.txt,more/da.jsonl --out=out-clean --min_chars=20

Input (--input takes files, folders and globs, comma-separated; see documents.py): *.txt with ONE DOCUMENT
PER LINE (a blank line is an empty document and is reported as one), *.jsonl[.gz|.zst] and *.parquet records
with a string `text` (--text_field), optional `lang`, `id`, `url`; other fields are carried through to the output.
The language is the `lang` field, else the file name (sv.txt, sv_wiki.jsonl -> sv), else the parent
folder (sv/wiki.jsonl -> sv), else 'unknown'. A document's id is its `id` field, else "FILE:LINE"; its `key`
is always "FILE:LINE" (LINE = the row of a Parquet file): unique, so `duplicate_of` names it. Ids used twice
are counted in the report (`duplicate_ids`).
Output in --out (built in a temporary folder and renamed into place: an existing non-empty --out is
refused unless --overwrite=True, which replaces it whole; an --out inside an input folder is refused, as a rerun
would read it): kept.jsonl, kept/<lang>/kept.jsonl,
removed.jsonl (every removed document or bad input record with `reason` = the step: bad_input | empty |
quality | exact_dup | fuzzy_dup; duplicates carry `duplicate_of` = the key of the kept document),
report.json (documents and bytes per step and language). Nothing is dropped silently.
Streamed: memory holds ~70 bytes per document that reaches fuzzy dedup (MD5, MinHash signature, key);
the texts wait in a temporary file in --out's build folder, which the verification reads back by offset.
"""
import hashlib
import json
import os
import re
import statistics
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

import tokenizer
from configurator import check_output_path, config_keys, configure
from dedup import DigestSet, fuzzy_duplicates, minhash_signatures
from documents import ON_BAD_INPUT, batched, building, expand, read_documents, replace_folder

# I/O
input = []  # comma-separated files, folders, globs: *.txt (a document per line), *.jsonl[.gz|.zst] / *.parquet records
text_field = "text"  # the text field of the records (also: "lang", "id", "url" are read when present)
out = "out-clean"  # output folder: kept.jsonl, kept/<lang>/kept.jsonl, removed.jsonl, report.json
overwrite = False  # True: replace an existing non-empty --out as a whole (False: refuse, nothing is read)
on_bad_input = "skip"  # bad records (documents.py): 'skip' (to removed.jsonl + report) | 'stop' | 'replace'
max_document_bytes = 8_000_000  # [1, inf) a longer line or row is bad input (never read whole): bounds memory
write_metrics = False  # also store each kept document's metrics in kept.jsonl (removed ones always have them)
# steps: each one a switch (the empty-document check always runs)
normalize = True  # GPT-SW3 normalisation, tokenizer.normalize (Nordic Pile step 1)
quality_filter = True  # the filters below (Nordic Pile step 3, "16 quality filters")
exact_dedup = True  # MD5 of the normalised text, first occurrence kept (Nordic Pile step 4)
fuzzy_dedup = True  # MinHash-LSH over all input files, first document of a cluster kept (Nordic Pile step 6)
# quality filters, in the order they are checked; a document is removed by the first it fails
skip_filters = []  # filter names to switch off, e.g. ['min_chars', 'min_stop_words']
max_char_repetition = 0.5  # [0, 1] ours: share of the most frequent non-space character ('aaaa', '----' = 1.0)
# (then 'alpha_present', the Nordic Pile's filter name: at least one letter; no threshold)
min_chars = 50  # [0, inf) a third-party Nordic Pile re-implementation: fewer than 50 characters
max_chars = 0  # [0, inf) ours: 0 = no limit (the Nordic Pile's upper length bound, if any, is unknown)
max_digit_fraction = 0.2  # [0, 1] the same re-implementation: digits / characters
min_mean_line_length = 9.0  # [0, inf) the same re-implementation: mean chars per line
min_median_line_length = 9.0  # [0, inf) same source: median chars per line
max_dup_line_fraction = 0.30  # [0, 1] Gopher (Rae et al. 2021, arXiv:2112.11446, Table A1): repeated lines / lines
max_dup_line_char_fraction = 0.20  # [0, 1] Gopher: characters in repeated lines / characters in lines
max_dup_para_fraction = 0.30  # [0, 1] Gopher: repeated paragraphs (split on blank lines) / paragraphs
max_dup_para_char_fraction = 0.20  # [0, 1] Gopher: characters in repeated paragraphs / characters
max_top_ngram_char_fraction = {2: 0.20, 3: 0.18, 4: 0.16}  # [0, 1] Gopher: chars in the most frequent word n-gram
max_dup_ngram_char_fraction = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}  # [0, 1] Gopher: in repeats
min_stop_words = 2  # [0, inf) Gopher's count, on the _STOP_WORDS lists below (a language without a list: not checked)
languages = []  # supported languages, [] = all (the Nordic Pile used fastText LID; we trust file name/field)
url_blacklist = []  # substrings of a JSONL `url` field (the Nordic Pile's URL blacklist is not published)
# fuzzy dedup (dedup.py), Nordic Pile parameters (step 6)
minhash_num_perm = 10  # [1, inf) hash functions per signature
minhash_shingle_size = 10  # [1, inf) characters per shingle
minhash_bands = 2  # [1, inf) LSH bands; rows per band = num_perm / bands
jaccard_threshold = 0.5  # (0, 1] a candidate pair is a duplicate when its Jaccard similarity is >= this
fuzzy_verify = "exact"  # ours: 'exact' = Jaccard of the shingle sets | 'estimate' = share of equal MinHashes
minhash_seed = 0  # [0, inf) seed of the hash functions

_STEPS = ("bad_input", "empty", "quality", "exact_dup", "fuzzy_dup")
_FILTERS = ("max_char_repetition", "alpha_present", "min_chars", "max_chars", "max_digit_fraction",
           "min_mean_line_length", "min_median_line_length", "max_dup_line_fraction",
           "max_dup_line_char_fraction", "max_dup_para_fraction", "max_dup_para_char_fraction",
           "max_top_ngram_char_fraction", "max_dup_ngram_char_fraction", "min_stop_words", "languages",
           "url_blacklist")
# Stop words per language: the lists the bundled multilingual corpus was language-filtered with (its
# SOURCES.md, appendix; words that are also English removed). 'no' is the Nordic Pile's code for Norwegian
# and uses the Bokmål list.
_STOP_WORDS = {lang: frozenset(words.split()) for lang, words in {
    "sv": (
        "alla andra annan annat att av bara blev blir både de dem den denna deras dessa dessutom det "
        "detta dig din dina ditt dock du där därför då efter eftersom ej eller en enligt ett finns från "
        "få får för genom ha hade han har hela hon hos hur här ifall inga ingen inget innan inte jag kan "
        "kommer kunde kunna med medan mellan men mer mest mot många måste nu när någon något några och "
        "också om oss på redan samma samt sedan sig sin sina sitt själv ska skall skulle som så till upp "
        "ur ut utan vad var vara varit varje vi vid vilka vilken vilket vår våra vårt är även över"
    ),
    "da": (
        "af alle allerede anden andet andre blev blive bliver både da de dem den denne der derefter "
        "deres derfor det dette dig din dine disse dit dog du efter eller en er et findes fordi fra få "
        "får gennem han har havde hos hun hvad hver hvert hvilke hvilken hvilket hvis hvor hvordan "
        "hvorfor ifølge ikke ind inden ingen intet jeg kan kun kunne mange med mellem men mens mere mest "
        "mod må nogen noget nogle nu når og også om op os på samme selv sig sin sine sit skal skulle som "
        "så således til ud uden var ved vi ville vores være været"
    ),
    "nb": (
        "alle allerede andre annen annet av blant ble bli blir både da de deg dem den denne der deres "
        "deretter derfor det dette din dine disse ditt du ei eller en er et etter finnes fordi fra få "
        "får før gjennom hadde han har hos hun hva hver hvert hvilke hvilken hvilket hvis hvor hvordan "
        "hvorfor ifølge ikke ingen inn jeg kan kun kunne likevel mange med mellom men mens mer mest mot "
        "må noe noen nå når og også om opp oss på samme seg selv sin sine sitt skal skulle slik som så "
        "til ut uten var ved vi ville vår våre vårt være vært"
    ),
    "nn": (
        "alle allereie andre anna av berre blant bli blir både deg dei deira den denne der deretter "
        "dersom desse det dette difor din dine ditt du dykk då eg ei ein eit eller er etter finst fordi "
        "frå få får før gjennom hadde han har hjå ho ikkje ingen inn kan kor korleis kunne kva kvar "
        "kvart kven kvifor likevel mange med medan meir mellom men mest mot må noko nokon nokre når og "
        "også om opp oss på same seg sin sine sitt sjølv skal skulle slik som så til ut utan var vart "
        "ved vert verte vi ville vore vår våre vårt òg"
    ),
    "is": (
        "af alla allar allt annað að aðeins aðra ef eftir einnig eins ekkert ekki en engin enginn er eru "
        "eða frá fyrir fyrst gegnum geta getur hafa hann hefur henni hjá honum hvar hvað hver hvernig "
        "hvort hér hún inn líka meira mest með meðan milli mjög má neinn niður nokkrar nokkur nú og "
        "okkar sama sem sinn sitt skal sé sína sínu síðan til um undir upp var vegna vera verið verður "
        "við yfir á án í öll öllum önnur úr út þar þarf þau það þegar þeim þeir þess þessa þessi þessu "
        "þetta þinn þitt því þær þína þínu þó þú"
    ),
    "en": (
        "a about after also an and any are as because been before being between both can could did do "
        "does each every following from has have he here his how if into is it it's its just like may "
        "more most must my not of on one only or other our she should some such than that the their them "
        "then there these they this those through upon used using very was we were what when where "
        "whether which while who will with within without would yes you your"
    ),
}.items()}
_STOP_WORDS["no"] = _STOP_WORDS["nb"]
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")  # a run of letters, optionally one apostrophe (SOURCES.md)
_LANG_NAME = re.compile(r"^([a-z]{2})(?:[_.-]|$)")  # two letters: sv.txt, sv_wiki.jsonl, folder sv/


# -----------------------------------------------------------------------------------------------------
# reading: one record per input line; bad lines become removed records (reason 'bad_input')

def language_of(path: Path) -> str:
    """Language code from the file name, else the parent folder, else 'unknown'."""
    for name in (path.name, path.parent.name):
        m = _LANG_NAME.match(name)
        if m:
            return m.group(1)
    return "unknown"


def _record(doc, file_no: dict, on_bad_input: str) -> dict:
    """A documents.Document -> the record written out: {"id", "key", "lang", "source", "line", ...fields,
    "text"} (+ "_bad", "error" for a bad one). A non-string `lang` makes the record bad input."""
    lang, key = language_of(Path(doc.source)), doc.key
    rec = {"id": key, "key": key, "lang": lang, "source": doc.source, "line": doc.line}
    rec.update({k: v for k, v in doc.fields.items() if v is not None})
    rec["id"], rec["key"], rec["text"] = str(rec["id"]), key, doc.text
    rec["_packed"] = file_no.setdefault(doc.source, len(file_no)) << 40 | doc.line  # key as one int64
    if doc.error is not None:
        rec.update(_bad=True, error=doc.error)
    elif not isinstance(rec["lang"], str):
        rec.update(_bad=True, error=f"{key}: field 'lang' must be a string such as \"sv\", got {rec['lang']!r}")
        if on_bad_input == "stop":
            raise ValueError(rec["error"])
    return rec


def _unpack_key(packed: int, files: list[str]) -> str:
    return f"{files[packed >> 40]}:{packed & ((1 << 40) - 1)}"


# -----------------------------------------------------------------------------------------------------
# document metrics and quality filters (Nordic Pile step 2-3; repetition statistics as in Gopher)

def document_metrics(text: str, lang: str, top_ngrams=(2, 3, 4), dup_ngrams=(5, 6, 7, 8, 9, 10)) -> dict:
    """Length, character-class and repetition statistics of one document."""
    counts = Counter(text)
    nonspace = {c: k for c, k in counts.items() if not c.isspace()}
    lines = [s for s in (line.strip() for line in text.split("\n")) if s]
    paras = [s for s in (p.strip() for p in re.split(r"\n\s*\n", text)) if s]
    words = text.split()
    stops = _STOP_WORDS.get(lang)
    m = {
        "chars": len(text), "bytes": len(text.encode("utf-8")), "words": len(words), "lines": len(lines),
        "alpha_chars": sum(k for c, k in nonspace.items() if c.isalpha()),
        "digit_fraction": sum(k for c, k in nonspace.items() if c.isdigit()) / max(len(text), 1),
        "char_repetition": max(nonspace.values(), default=0) / max(sum(nonspace.values()), 1),
        "mean_line_length": statistics.fmean(map(len, lines)) if lines else 0.0,
        "median_line_length": float(statistics.median(map(len, lines))) if lines else 0.0,
        "stop_words": None if stops is None else sum(w in stops for w in _WORD.findall(text.lower())),
    }
    m["dup_line_fraction"], m["dup_line_char_fraction"] = _dup_fractions(lines)
    m["dup_para_fraction"], m["dup_para_char_fraction"] = _dup_fractions(paras)
    for n in top_ngrams:
        m[f"top_{n}gram_char_fraction"] = _top_ngram_char_fraction(words, n)
    for n in sorted(dup_ngrams):  # a repeated n-gram holds a repeated (n-1)-gram: stop at the first zero
        m[f"dup_{n}gram_char_fraction"] = 0.0 if m.get(f"dup_{n - 1}gram_char_fraction") == 0.0 \
            else _dup_ngram_char_fraction(words, n)
    return m


def _dup_fractions(items: list[str]) -> tuple[float, float]:
    """Gopher: share of items that repeat an earlier one, and their share of the characters."""
    seen, dup, dup_chars = set(), 0, 0
    for s in items:
        if s in seen:
            dup, dup_chars = dup + 1, dup_chars + len(s)
        seen.add(s)
    return dup / max(len(items), 1), dup_chars / max(sum(map(len, items)), 1)


def _top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Gopher: characters (of words, spaces not counted) in all occurrences of the most frequent word
    n-gram, over all word characters; 0 when no n-gram occurs twice."""
    grams = Counter(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return 0.0 if count < 2 else count * sum(map(len, gram)) / sum(map(len, words))


def _dup_ngram_char_fraction(words: list[str], n: int) -> float:
    """Gopher: characters of the words covered by repeated occurrences (2nd, 3rd, ...) of any word n-gram,
    each word counted once, over all word characters."""
    grams = list(zip(*(words[i:] for i in range(n))))
    if len(set(grams)) == len(grams):
        return 0.0
    seen, covered = set(), bytearray(len(words))
    for i, g in enumerate(grams):
        if g in seen:
            covered[i:i + n] = b"\1" * n
        seen.add(g)
    return sum(len(w) for w, c in zip(words, covered) if c) / sum(map(len, words))


def quality_checks(m: dict, rec: dict, cfg: dict):
    """Yield (filter, metric, value, threshold, failed) for every enabled filter, in order."""
    c, on = cfg, set(_FILTERS) - set(cfg["skip_filters"])
    checks = [  # (filter, metric, threshold, kind): the document fails when metric > max or < min
        ("max_char_repetition", "char_repetition", c["max_char_repetition"], "max"),
        ("alpha_present", "alpha_chars", 1, "min"),
        ("min_chars", "chars", c["min_chars"], "min"),
        ("max_chars", "chars", c["max_chars"] or None, "max"),
        ("max_digit_fraction", "digit_fraction", c["max_digit_fraction"], "max"),
        ("min_mean_line_length", "mean_line_length", c["min_mean_line_length"], "min"),
        ("min_median_line_length", "median_line_length", c["min_median_line_length"], "min"),
        ("max_dup_line_fraction", "dup_line_fraction", c["max_dup_line_fraction"], "max"),
        ("max_dup_line_char_fraction", "dup_line_char_fraction", c["max_dup_line_char_fraction"], "max"),
        ("max_dup_para_fraction", "dup_para_fraction", c["max_dup_para_fraction"], "max"),
        ("max_dup_para_char_fraction", "dup_para_char_fraction", c["max_dup_para_char_fraction"], "max"),
        *[("max_top_ngram_char_fraction", f"top_{n}gram_char_fraction", t, "max")
          for n, t in sorted(c["max_top_ngram_char_fraction"].items())],
        *[("max_dup_ngram_char_fraction", f"dup_{n}gram_char_fraction", t, "max")
          for n, t in sorted(c["max_dup_ngram_char_fraction"].items())],
        ("min_stop_words", "stop_words", c["min_stop_words"], "min"),  # value None: no list for the language
    ]
    for name, metric, t, kind in checks:
        v = m[metric]
        if name in on and v is not None and t is not None:
            yield name, metric, v, t, (v > t if kind == "max" else v < t)
    if "languages" in on and c["languages"]:
        yield "languages", "lang", rec["lang"], c["languages"], rec["lang"] not in c["languages"]
    url = rec.get("url")
    if "url_blacklist" in on and c["url_blacklist"] and isinstance(url, str):
        yield "url_blacklist", "url", url, c["url_blacklist"], any(s in url for s in c["url_blacklist"])


def quality_failure(m: dict, rec: dict, cfg: dict) -> dict | None:
    """The first filter the document fails as {"filter", "metric", "value", "threshold"}, or None."""
    for name, metric, value, threshold, failed in quality_checks(m, rec, cfg):
        if failed:
            return {"filter": name, "metric": metric, "value": value, "threshold": threshold}
    return None


# -----------------------------------------------------------------------------------------------------
# the pipeline and its report

BATCH_DOCS = 2048  # documents per step batch: bounds memory, amortises numpy calls


def clean(cfg: dict, out_dir: Path) -> dict:
    """Stream the input through the enabled steps into the (empty) folder out_dir -> report.
    Pass 1 (one read of the input): bad input, normalise, empty, quality, exact dedup; removed records go to
    removed.jsonl at once, survivors to a temporary file (their MinHash signatures stay in memory).
    Fuzzy dedup: LSH on the signatures, candidate pairs verified on texts read back from that file.
    Pass 2: the temporary file -> kept.jsonl, kept/<lang>/kept.jsonl, and the fuzzy duplicates."""
    report = {"total": _new_counts(), "languages": {}, "time_s": Counter(), "files": {},
              "duplicate_ids": {"records": 0, "examples": []}}
    file_no, ids = {}, DigestSet()
    exact = DigestSet() if cfg["exact_dedup"] else None
    store = out_dir / ".survivors.jsonl"
    offsets, packed, sigs = array("q", [0]), array("q"), []  # per survivor: where its record is, its key
    docs = read_documents(cfg["input"], cfg["text_field"], "line", cfg["on_bad_input"], report["files"],
                          fields=True, yield_bad=True, max_document_bytes=cfg["max_document_bytes"])
    progress = tqdm(desc="clean", unit=" docs", file=sys.stderr, mininterval=2, disable=None)
    with open(out_dir / "removed.jsonl", "w", encoding="utf-8") as removed, open(store, "wb") as f_store:
        for batch in batched(docs, BATCH_DOCS):
            progress.update(len(batch))
            progress.set_postfix_str(f"{report['total']['input']['bytes'] / 1e6:,.0f} MB, {batch[-1].source}",
                                     refresh=False)
            recs = [_record(d, file_no, cfg["on_bad_input"]) for d in batch]
            alive = _first_steps(recs, cfg, report, removed, ids, exact, list(file_no))
            for rec in alive:
                line = (json.dumps(rec, ensure_ascii=False, default=str) + "\n").encode("utf-8")
                f_store.write(line)
                offsets.append(offsets[-1] + len(line))
                packed.append(rec["_packed"])
            if cfg["fuzzy_dedup"] and alive:
                t0 = time.perf_counter()
                sigs.append(minhash_signatures([r["text"] for r in alive], cfg["minhash_num_perm"],
                                               cfg["minhash_shingle_size"], cfg["minhash_seed"]))
                report["time_s"]["fuzzy_dup"] += time.perf_counter() - t0
    progress.close()
    files = list(file_no)
    exact = ids = None  # pass 1's dedup state is not needed any more: free it before fuzzy dedup's peak
    texts = _StoredTexts(store, np.frombuffer(offsets, np.int64))
    root = sim = None  # fuzzy dedup off: every survivor is kept
    if cfg["fuzzy_dedup"]:
        t0 = time.perf_counter()
        sig = np.concatenate(sigs) if sigs else None
        sigs.clear()
        root, sim, report["fuzzy"] = fuzzy_duplicates(
            texts, cfg["minhash_num_perm"], cfg["minhash_shingle_size"], cfg["minhash_bands"],
            cfg["jaccard_threshold"], cfg["fuzzy_verify"], cfg["minhash_seed"], sig=sig)
        report["time_s"]["fuzzy_dup"] += time.perf_counter() - t0
    _write_survivors(store, root, sim, np.frombuffer(packed, np.int64), files, cfg, report, out_dir)
    store.unlink()
    if report["duplicate_ids"]["records"]:
        print(f"warning: {report['duplicate_ids']['records']} record(s) reuse an id of an earlier record "
              f"(e.g. {report['duplicate_ids']['examples'][0]}); `key` (FILE:LINE) tells them apart",
              file=sys.stderr)
    report["time_s"] = {k: round(v, 3) for k, v in report["time_s"].items()}
    return report


def _first_steps(recs: list[dict], cfg: dict, report: dict, removed, ids: DigestSet, exact: DigestSet | None,
                 files: list[str]) -> list[dict]:
    """bad input, normalise, empty, quality, exact dedup on one batch -> the records still alive.
    files: the input files by number (a packed key is file number << 40 | line)."""
    alive = []
    for rec in recs:
        _count(report, rec, "input", len(rec["text"].encode("utf-8")))
        if rec.pop("_bad", False):
            _remove(report, removed, rec, "bad_input")
        else:
            alive.append(rec)
    _check_ids([r for r in alive if r["id"] != r["key"]], ids, report, files)
    t0 = time.perf_counter()
    for rec in alive if cfg["normalize"] else ():
        text = tokenizer.normalize(rec["text"])
        if text != rec["text"]:
            _count(report, rec, "normalize", len(text.encode("utf-8")) - len(rec["text"].encode("utf-8")))
            rec["text"] = text
    report["time_s"]["normalize"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    alive = _step(report, removed, alive, "empty", [{} if not r["text"].strip() else None for r in alive], t0)
    if cfg["quality_filter"] or cfg["write_metrics"]:
        t0 = time.perf_counter()
        for rec in alive:
            rec["metrics"] = document_metrics(rec["text"], rec["lang"],
                                              tuple(cfg["max_top_ngram_char_fraction"]),
                                              tuple(cfg["max_dup_ngram_char_fraction"]))
        if cfg["quality_filter"]:
            alive = _step(report, removed, alive, "quality",
                          [quality_failure(r["metrics"], r, cfg) for r in alive], t0)
    if exact is not None:  # MD5 of the normalised text (Nordic Pile step 4), first occurrence kept
        t0 = time.perf_counter()
        digests = [hashlib.md5(r["text"].encode("utf-8")).digest() for r in alive]
        first = exact.first_of(digests, [r["_packed"] for r in alive])
        why = [None if f < 0 else {"duplicate_of": _unpack_key(f, files), "md5": d.hex()}
               for f, d in zip(first.tolist(), digests)]
        alive = _step(report, removed, alive, "exact_dup", why, t0)
    return alive


def _step(report: dict, removed, alive: list, step: str, why: list, t0: float) -> list:
    """Apply one step: why[i] is None to keep alive[i], else the fields that explain its removal (the
    record goes to the open file `removed`)."""
    kept = []
    for rec, fields in zip(alive, why):
        if fields is None:
            kept.append(rec)
        else:
            rec.update(fields)
            _remove(report, removed, rec, step)
    report["time_s"][step] += time.perf_counter() - t0
    return kept


def _check_ids(recs: list[dict], ids: DigestSet, report: dict, files: list[str]) -> None:
    """Count records whose own `id` an earlier record already used (the first 10 as examples)."""
    first = ids.first_of([hashlib.md5(r["id"].encode("utf-8", "replace")).digest() for r in recs],
                         [r["_packed"] for r in recs])
    dup = report["duplicate_ids"]
    for rec, f in zip(recs, first.tolist()):
        if f >= 0:
            dup["records"] += 1
            if len(dup["examples"]) < 10:
                dup["examples"].append({"id": rec["id"], "key": rec["key"], "first_key": _unpack_key(f, files)})


class _StoredTexts:
    """texts[i] of the survivors file, read back by byte offset (the texts never sit in memory together)."""

    def __init__(self, path: Path, offsets: np.ndarray):
        self.path, self.offsets = path, offsets
        self.sizes = np.diff(offsets)  # (N,) bytes of each record: an upper bound of its characters

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        with open(self.path, "rb") as f:
            return json.loads(os.pread(f.fileno(), b - a, a))["text"]


def _write_survivors(store: Path, root: np.ndarray | None, sim: np.ndarray | None, packed: np.ndarray,
                     files: list[str],
                     cfg: dict, report: dict, out_dir: Path) -> None:
    """Pass 2: each survivor is kept (kept.jsonl and kept/<lang>/kept.jsonl, data.py's sources=<out>/kept
    layout) or, when fuzzy dedup put it in another document's cluster, removed as fuzzy_dup."""
    t0, by_lang = time.perf_counter(), {}
    with open(store, "rb") as f_store, open(out_dir / "kept.jsonl", "w", encoding="utf-8") as kept, \
            open(out_dir / "removed.jsonl", "a", encoding="utf-8") as removed:
        try:
            for i, line in enumerate(f_store):
                rec = json.loads(line)
                r = i if root is None else int(root[i])
                if r != i:
                    rec.update(duplicate_of=_unpack_key(int(packed[r]), files), similarity=round(float(sim[i]), 4))
                    _remove(report, removed, rec, "fuzzy_dup")
                    continue
                if not cfg["write_metrics"]:
                    rec.pop("metrics", None)
                rec.pop("_packed")
                _count(report, rec, "kept", len(rec["text"].encode("utf-8")))
                out = json.dumps(rec, ensure_ascii=False, default=str) + "\n"
                kept.write(out)
                lang = rec.get("lang") or "und"
                if lang not in by_lang:
                    (out_dir / "kept" / lang).mkdir(parents=True, exist_ok=True)
                    by_lang[lang] = open(out_dir / "kept" / lang / "kept.jsonl", "w", encoding="utf-8")
                by_lang[lang].write(out)
        finally:
            for f in by_lang.values():
                f.close()
    report["time_s"]["write"] += time.perf_counter() - t0


def _new_counts() -> dict:
    zero = {"docs": 0, "bytes": 0}
    return {"input": dict(zero), "normalize": {"changed_docs": 0, "bytes_delta": 0},
            "removed": {s: dict(zero) for s in _STEPS}, "quality_filters": {}, "kept": dict(zero)}


def _count(report: dict, rec: dict, what: str, nbytes: int) -> None:
    """Add one document to `what` ('input', 'normalize', 'kept' or a step) for its language and the total."""
    for c in (report["total"], report["languages"].setdefault(rec["lang"], _new_counts())):
        if what == "normalize":
            c["normalize"]["changed_docs"] += 1
            c["normalize"]["bytes_delta"] += nbytes
            continue
        slot = c["removed"][what] if what in _STEPS else c[what]
        slot["docs"] += 1
        slot["bytes"] += nbytes
        if what == "quality":
            f = c["quality_filters"].setdefault(rec["filter"], {"docs": 0, "bytes": 0})
            f["docs"] += 1
            f["bytes"] += nbytes


def _remove(report: dict, removed, rec: dict, step: str) -> None:
    _count(report, rec, step, len(rec["text"].encode("utf-8")))
    rec["reason"] = step
    rec.pop("_packed", None)
    removed.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")


def format_report(report: dict) -> str:
    """The report as a table: documents per step (rows) for every language (columns), plus total MB."""
    langs = sorted(report["languages"])
    cols = [report["total"]] + [report["languages"][g] for g in langs]
    rows = [("input", [c["input"]["docs"] for c in cols], report["total"]["input"]["bytes"]),
            ("normalize (changed)", [c["normalize"]["changed_docs"] for c in cols],
             report["total"]["normalize"]["bytes_delta"])]
    for step in _STEPS:
        rows.append((f"- {step}", [c["removed"][step]["docs"] for c in cols],
                     report["total"]["removed"][step]["bytes"]))
        if step == "quality":
            for f in _FILTERS:
                if f in report["total"]["quality_filters"]:
                    rows.append((f"    {f}", [c["quality_filters"].get(f, {"docs": 0})["docs"] for c in cols],
                                 report["total"]["quality_filters"][f]["bytes"]))
    rows.append(("= kept", [c["kept"]["docs"] for c in cols], report["total"]["kept"]["bytes"]))
    head = f"{'documents':<32}" + "".join(f"{h:>9}" for h in ["all", *langs]) + f"{'MB (all)':>11}"
    lines = [head, "-" * len(head)]
    for name, docs, nbytes in rows:
        lines.append(f"{name:<32}" + "".join(f"{d:>9,}" for d in docs) + f"{nbytes / 1e6:>11.3f}")
    return "\n".join(lines)


# -----------------------------------------------------------------------------------------------------
# command line

def check_config(cfg: dict) -> None:
    """Fail fast, naming the key to change."""
    if not cfg["input"]:
        raise ValueError("no input: give --input FILE|DIR|GLOB [...] (*.txt one document per line, *.jsonl, "
                         "*.jsonl.gz, *.jsonl.zst, *.parquet)")
    if cfg["on_bad_input"] not in ON_BAD_INPUT:
        raise ValueError(f"on_bad_input must be one of {ON_BAD_INPUT}, got {cfg['on_bad_input']!r}")
    unknown = set(cfg["skip_filters"]) - set(_FILTERS)
    if unknown:
        raise ValueError(f"skip_filters: unknown filter(s) {sorted(unknown)}; "
                         f"the filters are {list(_FILTERS)}")
    if cfg["minhash_num_perm"] % cfg["minhash_bands"]:
        raise ValueError(f"minhash_num_perm={cfg['minhash_num_perm']} must be a multiple of "
                         f"minhash_bands={cfg['minhash_bands']}")
    if not 0 < cfg["jaccard_threshold"] <= 1:
        raise ValueError(f"jaccard_threshold must be in (0, 1], got {cfg['jaccard_threshold']}")
    if cfg["fuzzy_verify"] not in ("exact", "estimate"):
        raise ValueError(f"fuzzy_verify must be 'exact' or 'estimate', got {cfg['fuzzy_verify']!r}")
    if cfg["minhash_shingle_size"] < 1:
        raise ValueError(f"minhash_shingle_size must be >= 1, got {cfg['minhash_shingle_size']}")


def check_out(cfg: dict) -> None:
    """--out must be new or empty, unless overwrite=True (then it is replaced whole, atomically), and outside every
    input folder (a rerun would read its own output)."""
    check_output_path("out", cfg["out"], cfg["input"])
    out = Path(cfg["out"])
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder")
    if out.is_dir() and any(out.iterdir()) and not cfg["overwrite"]:
        raise ValueError(f"--out {out} exists and is not empty: choose another --out, or pass --overwrite=True "
                         f"to replace it as a whole (no file of the old output is kept)")


def main(argv: list[str] | None = None) -> dict:
    """`python clean.py [config.py ...] --input=FILE|DIR|GLOB[,...] --out=DIR [--key=value ...]`; `python data.py
    clean` calls it. Bad input raises ValueError/OSError (run_cli prints it as one line)."""
    cfg = configure(config_keys(globals()), sys.argv[1:] if argv is None else argv, source=__file__,
                    exit_on_error=False)
    check_config(cfg)
    check_out(cfg)
    expand(cfg["input"])  # every input exists and has a known format, before anything is read
    with building(cfg["out"]) as tmp:  # .<out>.building.XXXX, renamed to --out when complete
        report = {"config": cfg, **clean(cfg, tmp)}
        (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_folder(tmp, cfg["out"])
    print(format_report(report))
    n_bad = report["total"]["removed"]["bad_input"]["docs"]
    n_kept = report["total"]["kept"]["docs"]
    n_removed = report["total"]["input"]["docs"] - n_kept
    print(f"wrote {cfg['out']}/kept.jsonl ({n_kept:,}), removed.jsonl ({n_removed:,}), report.json"
          + (f"; {n_bad} bad input record(s), see removed.jsonl (reason 'bad_input')" if n_bad else ""))
    return report


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `clean.py: problem: fix`, exit 1
    run_cli("clean.py", main)
