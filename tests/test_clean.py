"""Tests for clean.py and dedup.py: Nordic-Pile-style cleaning (Öhman et al. 2023, arXiv:2303.17183): filters,
MD5 and MinHash-LSH dedup checked against brute-force Python set computations, outputs, report arithmetic and
bad input."""
import copy
import json
import random
import string
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

import clean
import dedup
from configurator import config_keys

ROOT = Path(__file__).resolve().parent.parent
GOOD_SV = ("Det här är ett vanligt stycke text som handlar om hur man sparar ett dokument i LibreOffice. "
           "Du kan välja Arkiv och sedan Spara som för att ange ett nytt namn på filen.")


def defaults(**overrides) -> dict:
    cfg = copy.deepcopy(config_keys(vars(clean)))
    cfg.update(overrides)
    return cfg


def shingles(text: str, k: int = 10) -> set[str]:
    """Reference: the set of k-character shingles (a shorter text is one shingle, as in clean.py)."""
    text = text.ljust(k, "\0")
    return {text[i:i + k] for i in range(len(text) - k + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def edit_words(text: str, n_edits: int, rng: random.Random) -> str:
    """Replace n_edits random words by made-up ones: a near-duplicate of `text`."""
    words = text.split()
    for i in rng.sample(range(len(words)), n_edits):
        words[i] = "".join(rng.choice(string.ascii_lowercase) for _ in range(len(words[i])))
    return " ".join(words)


@pytest.fixture(scope="module")
def paragraphs(corpora) -> list[str]:
    """300 real, long, mutually distinct Nordic paragraphs (pairwise Jaccard < 0.3, by brute force): the Swedish
    ones of corpora/text first, then Danish and Bokmål (the shipped heads hold about 110 long Swedish ones)."""
    lines = [line for lang in ("sv", "da", "nb")
             for line in (corpora / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()]
    out, sets = [], []
    for line in lines:
        if len(line) < 300:
            continue
        s = shingles(line)
        if all(len(s & t) / len(s | t) < 0.3 for t in sets):
            out.append(line)
            sets.append(s)
        if len(out) == 300:
            return out
    pytest.fail("sv/da/nb.txt hold fewer than 300 distinct long paragraphs")


# ---------------------------------------------------------------------------------------------------
# MinHash-LSH

def test_shingle_hashes_match_python_sets():
    texts = ["", "kort", "exakt tio!", "en lite längre text, en lite längre text", "åäö" * 7]
    h, doc = dedup.shingle_hashes(texts, 10)
    assert np.all(np.diff(doc) >= 0)
    for i, t in enumerate(texts):
        assert len(np.unique(h[doc == i])) == len(shingles(t))  # no collisions, boundaries respected
    # the same shingle hashes the same in any text
    h2, _ = dedup.shingle_hashes(["xx" + texts[3]], 10)
    assert set(h[doc == 3].tolist()) <= set(h2.tolist())


def test_exact_jaccard_matches_python_sets(paragraphs):
    rng = random.Random(0)
    texts = paragraphs[:20] + [edit_words(p, rng.randint(1, 12), rng) for p in paragraphs[:20]] + ["", "kort"]
    pairs = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts)) if rng.random() < 0.3]
    pairs = np.array(pairs + [(40, 41)])
    got = dedup.exact_jaccard(texts, pairs, 10, chunk_pairs=37)  # several chunks
    np.testing.assert_array_equal(dedup.exact_jaccard(texts, pairs, 10, chunk_chars=3000), got)  # by size
    want = [jaccard(texts[i], texts[j]) for i, j in pairs]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_minhash_estimate_is_unbiased(paragraphs):
    """P(min-hashes equal) = Jaccard: averaged over 200 pairs the 10-hash estimate matches the truth."""
    rng = random.Random(1)
    texts = paragraphs[:200] + [edit_words(p, rng.randint(1, 25), rng) for p in paragraphs[:200]]
    sig = dedup.minhash_signatures(texts, 10, 10, seed=0, chunk_chars=20_000)
    est = (sig[:200] == sig[200:]).mean(1)
    true = np.array([jaccard(a, b) for a, b in zip(texts[:200], texts[200:])])
    assert 0.2 < true.mean() < 0.9
    assert abs(est.mean() - true.mean()) < 0.03  # std of the mean ~ 0.01
    assert np.corrcoef(est, true)[0, 1] > 0.5
    # chunking does not change the signatures
    np.testing.assert_array_equal(sig, dedup.minhash_signatures(texts, 10, 10, seed=0))


def test_lsh_candidates_match_brute_force_buckets():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 3, (60, 6)).astype(np.uint32)  # few values: many shared buckets
    cand = dedup.lsh_candidate_pairs(sig, bands=3)
    assert np.all(cand[:, 0] < cand[:, 1])
    share = {(i, j) for i in range(60) for j in range(i + 1, 60)
             if any((sig[i, b * 2:b * 2 + 2] == sig[j, b * 2:b * 2 + 2]).all() for b in range(3))}
    assert {tuple(p) for p in cand.tolist()} <= share  # only pairs that share a bucket
    # ... and every sharing pair is connected through candidates of that band (star + chain)
    for b in range(3):
        band = dedup.lsh_candidate_pairs(sig[:, b * 2:b * 2 + 2], bands=1)
        parent = list(range(60))
        for i, j in band.tolist():
            parent[dedup._find(parent, j)] = dedup._find(parent, i)
        for i in range(60):
            for j in range(i + 1, 60):
                if (sig[i, b * 2:b * 2 + 2] == sig[j, b * 2:b * 2 + 2]).all():
                    assert dedup._find(parent, i) == dedup._find(parent, j)


def test_near_duplicates_found_distinct_kept(paragraphs):
    """Real paragraphs with a few edited words are found (and point at their original); distinct ones kept."""
    rng = random.Random(2)
    originals = paragraphs[:150]
    near = [edit_words(p, 1, rng) for p in paragraphs[:20]]  # Jaccard ~0.9 or more
    root, sim, stats = dedup.fuzzy_duplicates(originals + near)
    j = np.array([jaccard(p, q) for p, q in zip(paragraphs[:20], near)])
    assert j.min() > 0.75
    found = root[150:] == np.arange(20)
    # LSH with 2 bands of 5 rows finds a pair of Jaccard s with probability 1 - (1 - s^5)^2
    assert found.mean() >= np.mean(1 - (1 - j**5) ** 2) - 0.15
    np.testing.assert_allclose(sim[150:][found], j[found], atol=1e-12)
    assert np.all(root[:150] == np.arange(150))  # no distinct paragraph removed
    assert stats["clusters"] == found.sum()


def test_lsh_detection_rate_matches_theory(paragraphs):
    """Over 300 pairs of graded similarity, found fraction = mean of 1 - (1 - s^r)^b (b=2, r=5: the Nordic
    Pile's parameters)."""
    rng = random.Random(3)
    near = [edit_words(p, rng.randint(1, 20), rng) for p in paragraphs]
    root, _, _ = dedup.fuzzy_duplicates(paragraphs + near, threshold=0.01)
    s = np.array([jaccard(p, q) for p, q in zip(paragraphs, near)])
    found = root[300:] == np.arange(300)
    assert abs(found.mean() - np.mean(1 - (1 - s**5) ** 2)) < 0.1  # std ~ 0.03


def test_threshold_and_verification():
    a = "Öppna dialogrutan Format och välj fliken Tecken för att ändra teckensnittet i hela stycket."
    b = a.replace("hela stycket", "markeringen")
    s = jaccard(a, b)
    assert 0.5 < s < 0.9
    for verify in ("exact", "estimate"):
        root, sim, _ = dedup.fuzzy_duplicates([a, a + " ", b], threshold=0.5, verify=verify)
        assert root.tolist()[:2] == [0, 0]
        root, _, _ = dedup.fuzzy_duplicates([a, b], threshold=min(s + 0.05, 1.0), verify="exact")
        assert root.tolist() == [0, 1]  # candidate, but below the threshold


# ---------------------------------------------------------------------------------------------------
# metrics and filters

def test_metrics_by_hand():
    m = clean.document_metrics("ab cd ab cd ab cd efgh ijkl\nrad två\nrad två\n12", "sv")
    assert m["lines"] == 4 and m["words"] == 13 and m["chars"] == 46
    assert m["dup_line_fraction"] == 1 / 4 and m["dup_line_char_fraction"] == 7 / (27 + 7 + 7 + 2)
    assert m["top_2gram_char_fraction"] == pytest.approx(3 * 4 / 34)  # ('ab', 'cd') x3 / word chars
    assert m["digit_fraction"] == 2 / 46 and m["median_line_length"] == 7.0
    assert m["stop_words"] == 0 and clean.document_metrics(GOOD_SV, "sv")["stop_words"] >= 5
    assert clean.document_metrics(GOOD_SV, "xx")["stop_words"] is None


def test_good_document_passes_every_filter():
    assert clean.quality_failure(clean.document_metrics(GOOD_SV, "sv"), {"lang": "sv"}, defaults()) is None


LINES = "\n".join(f"rad nummer {w} i listan" for w in ("ett", "två", "tre", "fyra", "fem", "sex"))
CASES = [  # filter, text, extra record fields, config overrides
    ("max_char_repetition", "a" * 80, {}, {}),
    ("max_char_repetition", "-" * 80, {}, {}),
    ("alpha_present", string.punctuation * 3, {}, {}),
    ("min_chars", "Detta är en kort text.", {}, {}),
    ("max_chars", GOOD_SV, {}, {"max_chars": 100}),
    ("max_digit_fraction", "Kvitto 2023-11-28 nr 4711-0815-9999, summan 12345,50 kr, kund 88213.", {}, {}),
    ("min_mean_line_length", "\n".join(["och", "men", "den", "det", "har", "att", "som", "kan", "var", "vid",
                                        "ska", "får", "hur"]), {}, {}),
    ("min_median_line_length", "ab\ncd\nef\ngh\nij\n" + GOOD_SV, {}, {}),
    ("max_dup_line_fraction", "\n".join(["samma rad igen och igen"] * 5 + LINES.split("\n")[:5]), {}, {}),
    ("max_dup_line_char_fraction", "\n".join([GOOD_SV, LINES, GOOD_SV]), {}, {}),
    ("max_dup_para_fraction", "\n\n".join([LINES, "rad ett\nrad två", "rad ett\nrad två"]), {},
     {"skip_filters": ["max_dup_line_fraction", "max_dup_line_char_fraction"]}),
    ("max_dup_para_char_fraction", "\n\n".join([GOOD_SV, LINES, "Kort stycke.", "Ett till.", GOOD_SV]), {},
     {"skip_filters": ["max_dup_line_fraction", "max_dup_line_char_fraction"]}),
    ("max_top_ngram_char_fraction", GOOD_SV + " och sedan och sedan och sedan och sedan och sedan", {}, {}),
    ("max_dup_ngram_char_fraction", GOOD_SV + " " + GOOD_SV[:120], {}, {}),
    ("min_stop_words", "Röda bilar kör snabbt längs kusten, gröna båtar seglar förbi fyren.", {}, {}),
    ("languages", GOOD_SV, {}, {"languages": ["da", "nb"]}),
    ("url_blacklist", GOOD_SV, {"url": "https://spam.example/sida"}, {"url_blacklist": ["spam.example"]}),
]


@pytest.mark.parametrize("name,text,fields,overrides", CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_each_filter(name, text, fields, overrides):
    rec = {"lang": "sv", **fields}
    cfg = defaults(**overrides)
    fail = clean.quality_failure(clean.document_metrics(text, "sv"), rec, cfg)
    assert fail is not None and fail["filter"] == name, fail
    cfg["skip_filters"] = cfg["skip_filters"] + [name]  # switched off, this filter no longer removes it
    fail = clean.quality_failure(clean.document_metrics(text, "sv"), rec, cfg)
    assert fail is None or fail["filter"] != name


def test_every_filter_has_a_case():
    assert {c[0] for c in CASES} == set(clean._FILTERS)


# ---------------------------------------------------------------------------------------------------
# the pipeline: outputs, report, bad input

@pytest.fixture
def corpus(tmp_path, paragraphs) -> Path:
    d = tmp_path / "in"
    (d / "da").mkdir(parents=True)
    nfd = unicodedata.normalize("NFD", paragraphs[3])
    rng = random.Random(4)
    sv = [paragraphs[0], paragraphs[1], paragraphs[0],  # 3: exact dup of 1
          "", "x" * 70, "För kort.",  # 4 empty, 5 one repeated character, 6 short
          paragraphs[3] + "\u200b", nfd,  # 8: equal to 7 after normalisation
          edit_words(paragraphs[1], 1, rng), "\u00a0\u2009"]  # 9: near dup of 2; 10: only spaces
    (d / "sv.txt").write_text("\n".join(sv) + "\n", encoding="utf-8")
    da = [json.dumps({"text": paragraphs[5], "id": "a", "url": "https://x.dk"}),
          '{"text": "broken',
          json.dumps({"txt": "no text field"}),
          json.dumps({"text": paragraphs[6], "lang": "nb"}),
          json.dumps({"text": paragraphs[5], "id": "b"})]
    (d / "da" / "web.jsonl").write_bytes(("\n".join(da) + "\n").encode() + b"bad \xff byte\n")
    return d


def test_pipeline_outputs_and_report(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    report = clean.main([f"--input={corpus / 'sv.txt'},{corpus / 'da'}", "--out", str(out),
                         "--min_chars", "20"])
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text(encoding="utf-8").splitlines()]
    removed = [json.loads(x) for x in (out / "removed.jsonl").read_text(encoding="utf-8").splitlines()]
    sv, da = str(corpus / "sv.txt"), str(corpus / "da" / "web.jsonl")
    why = {r["id"]: r for r in removed}
    assert [r["id"] for r in kept] == [f"{sv}:1", f"{sv}:2", f"{sv}:7", "a", f"{da}:4"]
    by_lang = {p.parent.name: [json.loads(x)["id"] for x in p.read_text(encoding="utf-8").splitlines()]
               for p in (out / "kept").glob("*/kept.jsonl")}  # data.py's sources=<out>/kept layout
    assert by_lang == {lang: [r["id"] for r in kept if r["lang"] == lang] for lang in ("sv", "da", "nb")}
    assert {r["lang"] for r in kept} == {"sv", "da", "nb"}
    assert kept[2]["text"] == unicodedata.normalize("NFC", kept[2]["text"])
    assert "\u200b" not in kept[2]["text"]
    assert kept[3]["url"] == "https://x.dk"  # extra fields carried through
    assert why[f"{sv}:3"]["reason"] == "exact_dup" and why[f"{sv}:3"]["duplicate_of"] == f"{sv}:1"
    assert all(r["key"] == f"{r['source']}:{r['line']}" for r in kept + removed)  # unique: FILE:LINE
    assert why[f"{sv}:8"]["reason"] == "exact_dup" and why[f"{sv}:8"]["duplicate_of"] == f"{sv}:7"
    assert why["b"]["reason"] == "exact_dup" and why["b"]["duplicate_of"] == f"{da}:1"  # the key, not the id
    assert why[f"{sv}:9"]["reason"] == "fuzzy_dup" and why[f"{sv}:9"]["duplicate_of"] == f"{sv}:2"
    assert why[f"{sv}:4"]["reason"] == "empty" and why[f"{sv}:10"]["reason"] == "empty"
    assert why[f"{sv}:5"]["filter"] == "max_char_repetition" and why[f"{sv}:6"]["filter"] == "min_chars"
    assert why[f"{sv}:6"]["metrics"]["chars"] == 9
    bad = {r["line"]: r["error"] for r in removed if r["reason"] == "bad_input"}
    assert set(bad) == {2, 3, 6}
    assert f"{da}:2: invalid JSON" in bad[2] and "'text'" in bad[3]
    offset = (corpus / "da" / "web.jsonl").read_bytes().index(b"\xff")
    assert f"{da}:6, byte offset {offset}: not UTF-8" in bad[6]
    printed = capsys.readouterr()
    assert f"warning: {da}: 3 bad record(s) skipped" in printed.err and "3 bad input record(s)" in printed.out
    assert report["files"][da] == {"documents": 3, "skipped": 3, "repaired": 0}
    assert len(kept) + len(removed) == 16
    # report: kept + removed = input, per language, in documents and bytes (normalisation changes bytes)
    assert set(report["languages"]) == {"sv", "da", "nb"}
    for c in [report["total"], *report["languages"].values()]:
        gone = c["removed"]
        assert c["input"]["docs"] == c["kept"]["docs"] + sum(s["docs"] for s in gone.values())
        assert c["input"]["bytes"] + c["normalize"]["bytes_delta"] == \
            c["kept"]["bytes"] + sum(s["bytes"] for s in gone.values())
        assert gone["quality"]["docs"] == sum(f["docs"] for f in c["quality_filters"].values())
    sv_counts = report["languages"]["sv"]
    assert sv_counts["input"]["docs"] == 10 and sv_counts["normalize"]["changed_docs"] == 3
    assert {k: v["docs"] for k, v in sv_counts["removed"].items()} == \
        {"bad_input": 0, "empty": 2, "quality": 2, "exact_dup": 2, "fuzzy_dup": 1}
    assert report["total"]["removed"]["bad_input"]["docs"] == 3
    assert json.loads((out / "report.json").read_text())["total"] == report["total"]


def test_steps_switch_off(corpus, tmp_path):
    report = clean.main(["--input", str(corpus / "sv.txt"), "--out", str(tmp_path / "o"), "--normalize=False",
                         "--quality_filter=False", "--exact_dedup", "False", "--fuzzy_dedup=false"])
    removed = report["total"]["removed"]
    assert removed["empty"]["docs"] == 2  # always on (str.isspace covers no-break and thin spaces)
    assert sum(v["docs"] for v in removed.values()) == 2 and report["total"]["normalize"]["changed_docs"] == 0


def test_bad_input_stop_mode_writes_nothing(corpus, tmp_path):
    with pytest.raises((ValueError, OSError), match=r"web\.jsonl:2: invalid JSON"):
        clean.main(["--input", str(corpus), "--out", str(tmp_path / "o"), "--on_bad_input=stop"])
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))  # no partial output left


@pytest.mark.parametrize("argv,message", [
    ([], "no input: give --input"),
    (["--input", "nowhere.txt"], "nowhere.txt not found"),
    (["--input", "{tmp}/notes.md"], "notes.md: unsupported file type"),
    (["--input", "x.txt", "--on_bad_input=report"], "on_bad_input must be one of"),
    (["--input", "x.txt", "--skip_filters=['min_char']"], "unknown filter"),
    (["--input", "x.txt", "--minhash_num_perm=9"], "multiple of minhash_bands"),
    (["--input", "x.txt", "--fuzzy_verify=roughly"], "'exact' or 'estimate'"),
])
def test_bad_config(argv, message, tmp_path):
    (tmp_path / "notes.md").write_text("# notes\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises((ValueError, OSError), match=message):
        clean.main(argv + ["--out", str(tmp_path / "o")])


def test_command_line(corpus, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, str(ROOT / "clean.py"), "--input", str(corpus / "sv.txt"),
                        f"--out={out}", "--min_chars=20"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "= kept" in r.stdout and "fuzzy_dup" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["input"] == [str(corpus / "sv.txt")] and report["total"]["kept"]["docs"] == 3


def test_batches_do_not_change_the_output(corpus, tmp_path, monkeypatch):
    """Streaming in batches of 3 documents (dedup state carried across batches, texts read back from the
    survivors file) gives the same kept/removed files as one batch."""
    outs = []
    for n in (3, 10_000):
        monkeypatch.setattr(clean, "BATCH_DOCS", n)
        out = tmp_path / f"b{n}"
        clean.main(["--input", str(corpus), "--out", str(out), "--min_chars", "20"])
        outs.append([sorted((out / f).read_text(encoding="utf-8").splitlines()) if f == "removed.jsonl" else
                     (out / f).read_text(encoding="utf-8") for f in ("kept.jsonl", "removed.jsonl")])
    assert outs[0] == outs[1]  # removed.jsonl: the same records (their order follows the batches)
    assert {json.loads(r)["reason"] for r in outs[0][1]} == set(clean._STEPS)


def test_existing_out_is_refused_or_replaced_whole(corpus, tmp_path):
    """No stale per-language file of an earlier run can mix into a later output (data.py sources=<out>/kept)."""
    out = tmp_path / "out"
    clean.main(["--input", str(corpus), "--out", str(out), "--min_chars", "20"])
    assert (out / "kept" / "nb" / "kept.jsonl").is_file()  # from da/web.jsonl's "lang": "nb" record
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises((ValueError, OSError), match="exists and is not empty.*--overwrite=True"):
        clean.main(["--input", str(corpus / "sv.txt"), "--out", str(out)])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    clean.main(["--input", str(corpus / "sv.txt"), "--out", str(out), "--overwrite=True", "--min_chars", "20"])
    assert sorted(p.name for p in (out / "kept").iterdir()) == ["sv"]  # nb and da are gone
    assert not list(tmp_path.glob(".out.*"))  # no build or old folder left beside it


def test_stale_build_folder_of_a_killed_run_is_removed(corpus, tmp_path):
    stale = tmp_path / ".out.building.x1y2"
    (stale / "kept").mkdir(parents=True)
    (stale / ".lock").write_text("")  # its run was killed: nobody holds the lock
    clean.main(["--input", str(corpus / "sv.txt"), "--out", str(tmp_path / "out")])
    assert not stale.exists() and (tmp_path / "out" / "kept.jsonl").is_file()


def test_lone_surrogate_is_bad_input_not_a_crash(tmp_path, paragraphs):
    """A JSON-escaped half of an emoji used to crash the writer with UnicodeEncodeError."""
    src = tmp_path / "sv.jsonl"
    lines = [json.dumps({"text": p, "id": f"d{i}"}) for i, p in enumerate(paragraphs[:4])]
    lines[2] = json.dumps({"text": paragraphs[2] + " @@", "id": "d2"}).replace("@@", "\\ud83e")
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = clean.main(["--input", str(src), "--out", str(tmp_path / "skip")])
    removed = [json.loads(x) for x in (tmp_path / "skip" / "removed.jsonl").read_text("utf-8").splitlines()]
    assert [(r["key"], r["reason"]) for r in removed] == [(f"{src}:3", "bad_input")]
    assert f"{src}:3: unpaired UTF-16 surrogate" in removed[0]["error"]
    assert report["total"]["kept"]["docs"] == 3
    report = clean.main(["--input", str(src), "--out", str(tmp_path / "rep"), "--on_bad_input=replace"])
    kept = [json.loads(x) for x in (tmp_path / "rep" / "kept.jsonl").read_text("utf-8").splitlines()]
    assert kept[2]["text"].endswith(" \ufffd") and report["files"][str(src)]["repaired"] == 1


def test_duplicate_ids_are_reported(tmp_path, paragraphs, capsys):
    src = tmp_path / "sv.jsonl"
    ids = ["a", "b", "a", "c", "b"]
    src.write_text("".join(json.dumps({"text": p, "id": i}) + "\n" for p, i in zip(paragraphs, ids)),
                   encoding="utf-8")
    report = clean.main(["--input", str(src), "--out", str(tmp_path / "o")])
    assert report["duplicate_ids"] == {"records": 2, "examples": [
        {"id": "a", "key": f"{src}:3", "first_key": f"{src}:1"},
        {"id": "b", "key": f"{src}:5", "first_key": f"{src}:2"}]}
    assert "2 record(s) reuse an id" in capsys.readouterr().err


@pytest.mark.parametrize("with_values", [True, False])
def test_digest_set_matches_a_python_dict(with_values):
    rng = random.Random(0)
    digests, seen = dedup.DigestSet(values=with_values), {}
    for b in range(200):
        keys = [bytes([rng.randrange(4)]) * 15 + bytes([rng.randrange(256)]) for _ in range(rng.randrange(60))]
        values = list(range(1000 * b, 1000 * b + len(keys)))
        expected = [seen.setdefault(k, v) if k in seen else seen.setdefault(k, v) * 0 - 1
                    for k, v in zip(keys, values)]
        if not with_values:  # the digests alone: 0 for one seen before
            expected = [min(e, 0) for e in expected]
            values = None
        assert digests.first_of(keys, values).tolist() == expected
    assert len(digests) == len(seen) and len(digests.runs) <= 1 + np.log2(len(seen))


class _Only(dict):
    """Metrics with one value set; every other metric reads None (its filter is then not applied)."""
    def __missing__(self, key):
        return None


def _failed(cfg: dict, metric: str, value: float) -> dict[str, bool]:
    return {name: failed for name, m, _, _, failed in clean.quality_checks(_Only({metric: value}), {}, cfg)
            if m == metric}


def test_every_quality_filter_at_its_threshold():
    """At, just below and just above each threshold: a 'max' filter removes a document only above it, a
    'min' filter only below it (the value at the threshold is kept)."""
    cfg = copy.deepcopy(config_keys(vars(clean)))
    cfg["max_chars"] = 1000  # 0 = no limit: give it one to test
    cases = [(name, metric, t, kind) for name, metric, t, kind in [
        ("max_char_repetition", "char_repetition", cfg["max_char_repetition"], "max"),
        ("alpha_present", "alpha_chars", 1, "min"),
        ("min_chars", "chars", cfg["min_chars"], "min"),
        ("max_chars", "chars", cfg["max_chars"], "max"),
        ("max_digit_fraction", "digit_fraction", cfg["max_digit_fraction"], "max"),
        ("min_mean_line_length", "mean_line_length", cfg["min_mean_line_length"], "min"),
        ("min_median_line_length", "median_line_length", cfg["min_median_line_length"], "min"),
        ("max_dup_line_fraction", "dup_line_fraction", cfg["max_dup_line_fraction"], "max"),
        ("max_dup_line_char_fraction", "dup_line_char_fraction", cfg["max_dup_line_char_fraction"], "max"),
        ("max_dup_para_fraction", "dup_para_fraction", cfg["max_dup_para_fraction"], "max"),
        ("max_dup_para_char_fraction", "dup_para_char_fraction", cfg["max_dup_para_char_fraction"], "max"),
        ("min_stop_words", "stop_words", cfg["min_stop_words"], "min"),
        *[("max_top_ngram_char_fraction", f"top_{n}gram_char_fraction", t, "max")
          for n, t in cfg["max_top_ngram_char_fraction"].items()],
        *[("max_dup_ngram_char_fraction", f"dup_{n}gram_char_fraction", t, "max")
          for n, t in cfg["max_dup_ngram_char_fraction"].items()]]]
    for name, metric, t, kind in cases:
        eps = 1 if isinstance(t, int) else 1e-9
        at, below, above = (_failed(cfg, metric, v)[name] for v in (t, t - eps, t + eps))
        assert not at, (name, t)
        assert (above, below) == ((True, False) if kind == "max" else (False, True)), (name, kind, t)
    every = _Only({metric: 0.0 for _, metric, _, _ in cases})  # every numeric filter clean.py applies
    assert {(n, m) for n, m, *_ in clean.quality_checks(every, {}, cfg)} == {(n, m) for n, m, _, _ in cases}


def test_a_document_over_max_document_bytes_is_bad_input_named_by_file_and_line(tmp_path):
    """One huge line (the whole corpus on one line) is never read whole: under on_bad_input='skip' it goes to
    removed.jsonl as bad_input with its FILE:LINE, the other documents are cleaned; under 'stop' the run stops
    naming FILE:LINE and the key to raise."""
    src = tmp_path / "sv.txt"
    other = "Du kan också skriva ut filen, men då måste du först välja en skrivare och trycka på knappen."
    src.write_text(f"{GOOD_SV}\n{'Ett ord till. ' * 2000}\n{other}\n", encoding="utf-8")
    report = clean.main(["--input", str(src), "--out", str(tmp_path / "o"), "--max_document_bytes=10000"])
    removed = [json.loads(line) for line in (tmp_path / "o" / "removed.jsonl").read_text().splitlines()]
    assert [(r["key"], r["reason"]) for r in removed] == [(f"{src}:2", "bad_input")]
    assert "28,001 bytes, over the limit of 10,000" in removed[0]["error"]
    assert report["total"]["kept"]["docs"] == 2 and report["total"]["removed"]["bad_input"]["docs"] == 1
    with pytest.raises(ValueError, match=rf"{src}:2: document of .* over the limit .* raise max_document_bytes"):
        clean.main(["--input", str(src), "--out", str(tmp_path / "o2"), "--max_document_bytes=10000",
                    "--on_bad_input=stop"])
    assert not (tmp_path / "o2").exists()
