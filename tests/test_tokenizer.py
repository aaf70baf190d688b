"""Tests for tokenizer.py: GPT-SW3 recipe (tokenizer_gptsw3.md §2-§4), offline tiktoken, §6 metrics."""
import csv
import json
import random
import string
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

import tokenizer as T
from tokenizer import get_tokenizer, normalize, train_tokenizer

N_LINES = 1500  # per language: a tokenizer trains on this in well under a second
VOCAB = 1000


@pytest.fixture(scope="module")
def corpus(shared_dir, tmp_path_factory) -> dict[str, Path]:
    """Small slices of the real text: training head and evaluation tail per language."""
    d = tmp_path_factory.mktemp("corpus")
    out = {}
    for lang in ("sv", "en"):
        lines = (shared_dir / "data" / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        (d / f"{lang}.txt").write_text("\n".join(lines[:N_LINES]) + "\n", encoding="utf-8")
        (d / f"{lang}_eval.txt").write_text("\n".join(lines[-300:]) + "\n", encoding="utf-8")
        out[lang], out[f"{lang}_eval"] = d / f"{lang}.txt", d / f"{lang}_eval.txt"
    return out


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory) -> str:
    prefix = tmp_path_factory.mktemp("tok") / "multi"
    return train_tokenizer([str(corpus["sv"]), str(corpus["en"])], VOCAB, str(prefix))


# ---------------------------------------------------------------------------------------------------
# normalisation (§4)


def test_normalize_steps():
    assert normalize("a\u00a0b\u00adc\u200bd") == "abcd"  # NBSP, soft hyphen, ZWSP deleted
    assert normalize("a\u2009b\u3000c\ufffcd") == "a b c d"  # unusual whitespace -> U+0020
    assert normalize("a\u0084b") == "ab"  # in both lists: deletion runs first
    assert normalize("x\ty\nz\r\x07") == "x\ty\nz"  # tab and LF kept, CR and BEL deleted
    assert normalize("a\u0308") == "ä" and len(normalize("a\u0308")) == 1  # NFC


def test_normalize_matches_hf_gptsw3(model):
    hf = pytest.importorskip("transformers.models.gpt_sw3.tokenization_gpt_sw3")
    ref = hf.GPTSw3Tokenizer(vocab_file=model)
    rng = random.Random(0)
    pool = [chr(c) for c in [*range(0, 40), *range(120, 180), 0x2002, 0x2003, 0x2005, 0x2008, 0x2009, 0x200A,
                             0x200B, 0x202F, 0x3000, 0xFFFC, 0x0308, 0x0301]] + list("aeoäöåé ")
    for _ in range(200):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        assert normalize(text) == ref.preprocess_text(text)
    text = "Svenska är\u00a0kul!  Det  var\u2009en fuktig, grå sommardag."
    assert get_tokenizer(model).encode(text) == ref.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------------------------------------------
# training and the vocabulary layout (§2, §3)


def test_layout(model):
    sp = spm.SentencePieceProcessor(model_file=model)  # plain sentencepiece loads it
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert len(pieces) == VOCAB
    assert pieces[:8] == ["<pad>", "<unk>", "<s>", "<|endoftext|>", *T.CODE_TOKENS]
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert all(sp.is_control(i) for i in (0, 2, 3)) and sp.is_unknown(1)
    assert pieces[8:264] == [f"<0x{b:02X}>" for b in range(256)] and all(sp.is_byte(i) for i in range(8, 264))
    assert pieces[-23:] == ["▁" * n for n in range(2, 25)]
    assert sum(set(p) == {"▁"} for p in pieces) == 24  # '▁' plus the 23 appended runs, nothing else
    # score of the appended pieces = lowest - 1 (lowest = last piece SentencePiece produced)
    proto, _ = T.read_model_proto(Path(model).read_bytes())
    assert [p[1] for p in proto[-23:]] == [proto[-24][1] - 1] * 23
    vocab = Path(model).with_suffix(".vocab").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in vocab] == pieces
    tok = get_tokenizer(model)
    assert (tok.eot, tok.bos, tok.vocab_size, tok.name) == (3, 2, VOCAB, model)
    assert tok.encode("\n") == [sp.piece_to_id("▁"), 8 + 0x0A]  # newline never seen: byte fallback, 18


def test_model_proto_roundtrip_is_byte_exact(model):
    data = Path(model).read_bytes()
    assert T.write_model_proto(*T.read_model_proto(data)) == data


def test_indentation_is_one_whitespace_token(model):
    tok = get_tokenizer(model)
    pieces = [tok.sp.id_to_piece(i) for i in tok.encode("\n        x")]
    after_newline = pieces[pieces.index("<0x0A>") + 1:]
    runs = [p for p in after_newline if set(p) == {"▁"}]
    assert len(runs) == 1 and len(runs[0]) >= 7, pieces
    assert "".join(after_newline) == "▁" * 8 + "x"
    tok_ids = tok.encode("def f():\n        return 1")
    assert tok.sp.piece_to_id("▁" * 7) in tok_ids or tok.sp.piece_to_id("▁" * 8) in tok_ids


def test_roundtrip_arbitrary_unicode(model):
    tok = get_tokenizer(model)
    rng = random.Random(1)
    blocks = [(0x20, 0x7E), (0xA1, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F), (0x10000, 0x1007F)]
    texts = ["\t  indented\n\nnew  paragraph ", "日本語 🤖 ∑ ℵ", "ÆØÅ æøå þðí"]
    for _ in range(60):
        texts.append("".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 40))))
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == normalize(text)
        assert ids == tok.sp.encode(normalize(text))  # normalize() then plain SentencePiece
    assert any(8 <= i < 264 for i in tok.encode("🤖"))  # unseen character -> byte pieces
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_cli_train_with_overrides(corpus, tmp_path):
    prefix = str(tmp_path / "quirk")
    T.main(["train", "--input", str(corpus["sv"]), "--vocab_size", "600", "--out", prefix,
            "--gptsw3_repr_quirk", "True", "--character_coverage=1.0"])
    pieces = get_tokenizer(prefix + ".model").pieces()
    assert len(pieces) == 600 and pieces[-1] == "▁" * 24
    # the repr quirk: every training document looked like "['...']", so "['" is a frequent merge (§2)
    assert any(p.startswith("▁['") for p in pieces)
    assert not any("['" in p for p in get_tokenizer(_train_plain(corpus, tmp_path)).pieces())


def _train_plain(corpus, tmp_path) -> str:
    return train_tokenizer([str(corpus["sv"])], 600, str(tmp_path / "plain"), character_coverage=1.0)


def test_vocab_too_small(corpus, tmp_path):
    msg = r"vocab_size 280 is too small.*4 specials.*256 bytes.*23 whitespace"
    with pytest.raises(ValueError, match=msg):
        train_tokenizer([str(corpus["sv"])], 280, str(tmp_path / "t"))


def test_vocab_too_large_for_text(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("abc abd\nabc\n")
    with pytest.raises(ValueError, match="SentencePiece training failed.*too high.*lower --vocab_size"):
        train_tokenizer([str(f)], 5000, str(tmp_path / "t"))
    with pytest.raises(ValueError, match="unknown field name \"vocab_sizee\".*check the --key value"):
        train_tokenizer([str(f)], 300, str(tmp_path / "t"), vocab_sizee=300)


def test_jsonl_input_reads_the_text_field(corpus, tmp_path):
    docs = T.read_documents(corpus["sv"])[0]
    path = tmp_path / "kept.jsonl"
    path.write_text("".join(json.dumps({"text": d, "lang": "sv"}) + "\n" for d in docs), encoding="utf-8")
    assert T.read_documents(path)[0] == docs
    path.write_text('{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"kept.jsonl: line 1: not a JSON object with a 'text' field"):
        T.read_documents(path)


def test_bad_input_stop_and_skip(corpus, tmp_path):
    good = corpus["sv"].read_bytes()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(good + "gr\u00e5\n".encode("latin-1") + b"\x00\x01\x02binary\n" + good)
    offset = len(good) + 2  # the latin-1 byte of 'å'
    msg = rf"latin1.txt: line {N_LINES + 1}, byte offset {offset}.*--on_bad_input skip"
    with pytest.raises(ValueError, match=msg):
        train_tokenizer([str(bad)], 600, str(tmp_path / "t"))
    docs, skipped = T.read_documents(bad, on_bad_input="skip")
    assert skipped == 2 and len(docs) == 2 * len(T.read_documents(corpus["sv"])[0])
    assert Path(train_tokenizer([str(bad)], 600, str(tmp_path / "t"), on_bad_input="skip")).is_file()


def test_empty_input_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty.txt has no non-empty lines"):
        train_tokenizer([str(empty)], 600, str(tmp_path / "t"))
    with pytest.raises(ValueError, match=r"empty.txt \(sv\) is empty"):
        T.main(["evaluate", "--tokenizer", "gpt2", "--data", f"sv={empty}", "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------------------------------------------
# tiktoken, offline


def test_tiktoken_offline(monkeypatch):
    import tiktoken.load

    def no_network(*args, **kwargs):
        raise AssertionError("tiktoken tried to fetch a file")

    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_network)
    # reference ids from ../shared/data/tiktoken/README.md ("Verified" table, tiktoken 0.14.0)
    for name, ids, eot, n_vocab in [("gpt2", [31373, 995], 50256, 50257),
                                    ("r50k_base", [31373, 995], 50256, 50257),
                                    ("cl100k_base", [15339, 1917], 100257, 100277),
                                    ("o200k_base", [24912, 2375], 199999, 200019)]:
        tok = get_tokenizer(name)
        assert (tok.encode("hello world"), tok.eot, tok.vocab_size) == (ids, eot, n_vocab)
        assert (tok.bos, tok.name) == (None, name)
        text = "Det var en fuktig, grå sommardag i slutet av juni. 🤖 <|endoftext|>"
        assert tok.decode(tok.encode(text)) == text  # special-token text stays ordinary text
        assert tok.encode_batch([text, "hello world"]) == [tok.encode(text), ids]


def test_tiktoken_rank_file_path(shared_dir, tmp_path):
    ranks_dir = shared_dir / "data" / "tiktoken"
    tok = get_tokenizer(str(ranks_dir / "cl100k_base.tiktoken.gz"))
    assert tok.encode("hello world") == [15339, 1917] and tok.eot == 100257
    r50k = (ranks_dir / "r50k_base.tiktoken").read_bytes()
    (tmp_path / "gpt2.tiktoken").write_bytes(r50k)  # a copy elsewhere: read from there, hash checked
    (tmp_path / "mine.tiktoken").write_bytes(r50k)  # unknown name: GPT-2 regex, <|endoftext|> after the ranks
    for f in ("gpt2.tiktoken", "mine.tiktoken"):
        tok = get_tokenizer(str(tmp_path / f))
        assert (tok.encode("hello world"), tok.eot, tok.vocab_size) == ([31373, 995], 50256, 50257)
    (tmp_path / "r50k_base.tiktoken").write_bytes(r50k.replace(b" 995\n", b" 996\n", 1))
    with pytest.raises(ValueError, match="sha256 differs.*corrupt"):
        get_tokenizer(str(tmp_path / "r50k_base.tiktoken"))


def test_unknown_tiktoken_names(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown tokenizer 'gpt5'.*cl100k_base.*\.model"):
        get_tokenizer("gpt5")
    msg = r"p50k_base.tiktoken and p50k_base.tiktoken.gz in .*nothing is downloaded"
    with pytest.raises(FileNotFoundError, match=msg):
        get_tokenizer("p50k_base")  # a real tiktoken name whose ranks are not stored here
    monkeypatch.setenv("TIKTOKEN_RANKS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"cl100k_base.tiktoken.gz in {tmp_path}"):
        get_tokenizer("cl100k_base")
    with pytest.raises(FileNotFoundError, match="missing.model not found"):
        get_tokenizer(str(tmp_path / "missing.model"))


# ---------------------------------------------------------------------------------------------------
# §6 metrics


class _FixedTokenizer:
    """A known tokenization: each (punctuation-stripped) text maps to given SentencePiece-style pieces."""
    sp, unk = True, 1

    def __init__(self, vocab: list[str], docs: dict[str, list[str]]):
        self.vocab, self.docs = vocab, docs

    def pieces(self) -> list[str]:
        return self.vocab

    def encode_batch(self, texts: list[str], preprocess: bool = True) -> list[list[int]]:
        assert not preprocess  # §6: no GPT-SW3 preprocessing in the evaluation
        return [[self.vocab.index(p) for p in self.docs[t]] for t in texts]


def test_metrics_hand_made():
    vocab = ["<pad>", "<unk>", "▁hej", "▁vä", "rld", "▁a", "b", "c", "▁", "▁▁"]
    docs = {"hej värld": ["▁hej", "▁vä", "rld"],  # 2 words, 1 continued
            "bc a": ["b", "c", "▁a"],  # first piece not word-initial: the authors' quirk adds 1 to PCW
            "xy": ["▁", "<unk>"],  # '▁' + non-initial: a continued word; one unknown
            "  hej": ["▁▁", "▁hej"]}  # a whitespace run counts as a word
    raw = ["hej, värld!", "(bc) a...", "x-y", "  hej"]  # ASCII punctuation is stripped before encoding
    m = T.evaluation_metrics(_FixedTokenizer(vocab, docs), raw)
    n_tok, n_chars, n_words, n_cont = 10, 9 + 4 + 2 + 5, 6, 3
    assert m["unk_rate"] == pytest.approx(1 / n_tok)
    assert m["ctcl"] == pytest.approx(n_tok / n_chars)
    assert m["fertility"] == pytest.approx(n_tok / n_words)
    assert m["pcw"] == pytest.approx(n_cont / n_words)
    assert (m["n_tokens"], m["n_chars"], m["n_words"], m["n_docs"]) == (n_tok, n_chars, n_words, 4)
    assert m["tokens_per_ws_word"] == pytest.approx(n_tok / 6)  # hej värld | bc a | xy | hej


def test_metrics_non_ascii_punctuation_is_kept():
    vocab = ["<pad>", "<unk>", "▁«", "hej", "»"]
    m = T.evaluation_metrics(_FixedTokenizer(vocab, {"«hej»": ["▁«", "hej", "»"]}), ["«hej»."])
    assert (m["n_chars"], m["fertility"], m["pcw"]) == (5, 3.0, 1.0)


def test_metrics_gpt2_byte_level():
    # gpt2: "hello world" -> ['hello', 'Ġworld']: 2 tokens, 1 word (Ġ), first piece non-initial (quirk)
    m = T.evaluation_metrics(get_tokenizer("gpt2"), ["hello world!"])
    assert (m["n_tokens"], m["n_words"], m["n_chars"]) == (2, 1, 11)
    assert (m["unk_rate"], m["ctcl"], m["fertility"], m["pcw"]) == (0.0, 2 / 11, 2.0, 1.0)
    assert m["tokens_per_ws_word"] == 1.0


def _authors_eval(sp, docs):
    """Reference: the authors' per-document loop (src/evaluation/evaluate.py) on plain sentencepiece."""
    n_unk = n_tok = n_chars = b_total = i_prop = 0
    for t in docs:
        t = t.translate(str.maketrans("", "", string.punctuation))
        ids, pcs = sp.encode(t, out_type=int), sp.encode(t, out_type=str)
        n_tok, n_unk, n_chars = n_tok + len(ids), n_unk + ids.count(1), n_chars + len(t)
        mask = [1 if p.startswith("▁") else 0 for p in pcs]
        b_total += sum(mask)
        prop = [m for j, m in enumerate(mask) if j == 0 or m == 1 or (m == 0 and mask[j - 1] == 1)]
        i_prop += len(prop) - sum(prop)
    return dict(unk_rate=n_unk / n_tok, ctcl=n_tok / n_chars, fertility=n_tok / b_total, pcw=i_prop / b_total)


def test_metrics_match_authors_loop(model, corpus):
    docs = corpus["sv_eval"].read_text(encoding="utf-8").splitlines()
    docs += ["  x", "ööö 2023", "🤖🤖 q"]  # whitespace run, split digits, byte fallback
    m = T.evaluation_metrics(get_tokenizer(model), docs)
    ref = _authors_eval(spm.SentencePieceProcessor(model_file=model), docs)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, rel=1e-12), k


def test_cli_evaluate(model, corpus, tmp_path):
    out = tmp_path / "eval"
    T.main(["evaluate", "--tokenizer", model, "--tokenizer", "gpt2", "--data", f"sv={corpus['sv_eval']}",
            f"en={corpus['en_eval']}", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert list(rows[0])[:6] == ["tokenizer", "language", "unk_rate", "ctcl", "fertility", "pcw"]
    assert [(r["tokenizer"], r["language"]) for r in rows] == [(model, "sv"), (model, "en"), ("gpt2", "sv"),
                                                               ("gpt2", "en")]
    sv = T.evaluation_metrics(get_tokenizer(model), T.read_documents(corpus["sv_eval"])[0])
    assert float(rows[0]["fertility"]) == pytest.approx(sv["fertility"])
    assert "| multi.model | sv |" in (out / "metrics.md").read_text()
    with pytest.raises(SystemExit, match="LANG=FILE"):
        T.main(["evaluate", "--tokenizer", "gpt2", "--data", str(corpus["sv_eval"]), "--out", str(out)])


# ---------------------------------------------------------------------------------------------------
# vocabulary analysis


def test_vocab_classes():
    pieces = ["<pad>", "<unk>", "<s>", "<|endoftext|>", "<|python|>", "<0x0A>", "▁t", "he", "a", "▁",
              T.PRUNED_PIECE.format(10), "▁▁", "▁▁▁", "<0xZZ>"]
    c = T.vocab_classes(pieces)
    assert c == dict(special=[0, 1, 2, 3], code=[4], byte=[5], pruned=[10], single_character=[8, 9],
                     whitespace=[11, 12], merge=[6, 7, 13])


def test_prune_merges(model, corpus):
    full = get_tokenizer(model)
    merges = T.vocab_classes(full.pieces())["merge"]
    k = 200
    pruned = T.prune_merges(model, VOCAB - k)
    classes = T.vocab_classes(pruned.pieces())
    assert classes["pruned"] == merges[-k:]  # the k lowest-priority merges, up to the last regular one
    assert pruned.pieces()[-23:] == full.pieces()[-23:] and pruned.vocab_size == VOCAB
    docs = corpus["sv_eval"].read_text(encoding="utf-8").splitlines()
    ids = pruned.encode_batch(docs, preprocess=False)
    assert not {i for x in ids for i in x} & set(merges[-k:])  # pruned ids are never produced
    assert sum(map(len, ids)) > sum(map(len, full.encode_batch(docs, preprocess=False)))
    assert T.prune_merges(model, VOCAB).encode_batch(docs) == full.encode_batch(docs)
    with pytest.raises(ValueError, match="choose a size between"):
        T.prune_merges(model, VOCAB - len(merges) - 1)


def test_pruning_equals_retraining_smaller(model, corpus, tmp_path):
    # SentencePiece BPE learns merges greedily in order, so keeping the first merges of a 1000-piece model
    # must tokenize exactly like a model trained with 800 pieces on the same text (the reference)
    small = train_tokenizer([str(corpus["sv"]), str(corpus["en"])], 800, str(tmp_path / "small"))
    pruned, ref = T.prune_merges(model, 800), get_tokenizer(small)
    docs = corpus["sv_eval"].read_text(encoding="utf-8").splitlines()
    as_pieces = lambda tok: [[tok.sp.id_to_piece(i) for i in x] for x in tok.encode_batch(docs)]  # noqa: E731
    assert as_pieces(pruned) == as_pieces(ref)


def test_vocab_overlap():
    multi = ["<pad>", "▁a", "b", "Ġc", "d"]
    mono = ["<pad>", "▁c", "x"]  # V2 = 3
    rows = T.vocab_overlap(multi, mono, [1, 2, 4, 5])
    assert [r["overlap_abs"] for r in rows] == [1, 1, 2, 2]  # 'Ġc' is mapped to '▁c'
    assert rows[2]["overlap_rel"] == pytest.approx(2 / 3) and rows[0]["v2"] == 3


def test_cli_analyze(model, corpus, tmp_path):
    mono = train_tokenizer([str(corpus["sv"])], 600, str(tmp_path / "sv"))
    out = tmp_path / "an"
    T.main(["analyze", "--tokenizer", model, "--data", f"sv={corpus['sv_eval']}",
            "--prune_sizes", "800", "1000",
            "--mono", f"sv={mono}", "--overlap_sizes", "300", "1000", "--out", str(out)])
    rows = {r["cls"]: r for r in csv.DictReader(open(out / "vocab_classes.csv"))}
    assert (rows["special"]["count"], rows["byte"]["first_id"]) == ("4", "8")
    assert rows["whitespace"]["last_id"] == str(VOCAB - 1)
    assert sum(int(r["count"]) for r in rows.values()) == VOCAB
    pr = list(csv.DictReader(open(out / "pruning.csv")))
    assert float(pr[0]["fertility"]) > float(pr[1]["fertility"])  # fewer merges -> more pieces per word
    ov = list(csv.DictReader(open(out / "overlap.csv")))
    assert [int(r["v1"]) for r in ov] == [300, 1000]
    assert int(ov[0]["overlap_abs"]) <= int(ov[1]["overlap_abs"])
    assert (out / "analysis.md").is_file()
    assert {"length_hist.png", "pruning_fertility.png", "overlap.png"} <= {p.name for p in out.iterdir()}


def test_plots_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    T._plot(tmp_path / "x.png", "t", "x", "y", {"": ([1], [2])})
    assert "matplotlib is not installed: skipping x.png" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()


def test_encode_applies_normalize_only_for_sentencepiece(model):
    tok = get_tokenizer(model)
    assert tok.encode("a\u00a0b\u2009c") == tok.sp.encode("ab c")
    assert tok.encode("a\u00a0b", preprocess=False) == tok.sp.encode("a\u00a0b")
    gpt2 = get_tokenizer("gpt2")
    assert gpt2.decode(gpt2.encode("a\u00a0b")) == "a\u00a0b"
    assert unicodedata.is_normalized("NFC", tok.decode(tok.encode("a\u0308")))
    assert np.all(np.array(tok.encode("x" * 10)) < tok.vocab_size)


def test_tokenizer_pickles_for_worker_processes(model):
    import pickle
    for tok in (get_tokenizer(model), get_tokenizer("gpt2"), T.prune_merges(model, 900)):
        copy = pickle.loads(pickle.dumps(tok))
        assert (copy.name, copy.eot, copy.vocab_size) == (tok.name, tok.eot, tok.vocab_size)
        assert copy.encode("Hej  världen!\n  x") == tok.encode("Hej  världen!\n  x")
