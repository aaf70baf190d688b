"""Tests for tokenizer.py and tokeval.py: the GPT-SW3 recipe (Stollenwerk 2023, arXiv:2304.14780; the authors'
gpt-sw3-tokenizer code), offline tiktoken, the authors' evaluation metrics (src/evaluation/evaluate.py)."""
import csv
import json
import random
import string
import struct
import sys
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

import tokenizer as T
import tokeval as E
from tokenizer import get_tokenizer, normalize, train_tokenizer

N_LINES = 1500  # per language: a tokenizer trains on this in well under a second
VOCAB = 1000


@pytest.fixture(scope="module")
def corpus(corpora, tmp_path_factory) -> dict[str, Path]:
    """Small slices of the real text: training head and evaluation tail per language."""
    d = tmp_path_factory.mktemp("corpus")
    out = {}
    for lang in ("sv", "en"):
        lines = (corpora / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        (d / f"{lang}.txt").write_text("\n".join(lines[:N_LINES]) + "\n", encoding="utf-8")
        (d / f"{lang}_eval.txt").write_text("\n".join(lines[-300:]) + "\n", encoding="utf-8")
        out[lang], out[f"{lang}_eval"] = d / f"{lang}.txt", d / f"{lang}_eval.txt"
    return out


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory) -> str:
    prefix = tmp_path_factory.mktemp("tok") / "multi"
    return train_tokenizer([str(corpus["sv"]), str(corpus["en"])], VOCAB, str(prefix))


def test_training_passes_no_deprecated_flag(corpus, tmp_path, capfd):
    """Training logs no deprecation (SentencePiece >= 0.2 logs, from C++ to fd 2, that GPT-SW3's
    train_extremely_large_corpus is deprecated and ignored) and no Python DeprecationWarning."""
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        train_tokenizer([str(corpus["sv"])], VOCAB, str(tmp_path / "m"))
    err = capfd.readouterr().err
    assert "deprecated" not in err.lower(), err


# ---------------------------------------------------------------------------------------------------
# normalisation (transformers' GPTSw3Tokenizer.preprocess_text)


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
# training and the vocabulary layout (src/training/training_sp.py, src/helpers.py)


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
    proto = T.load_model_proto(model).pieces
    assert [p.score for p in proto[-23:]] == [proto[-24].score - 1] * 23
    spec = T.load_model_proto(model).trainer_spec  # SentencePiece samples the stream, never loads it all
    assert spec.input_sentence_size == 1_000_000 and spec.shuffle_input_sentence
    vocab = Path(model).with_suffix(".vocab").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in vocab] == pieces
    tok = get_tokenizer(model)
    assert (tok.eot, tok.bos, tok.vocab_size, tok.name) == (3, 2, VOCAB, model)
    assert tok.encode("\n") == [sp.piece_to_id("▁"), 8 + 0x0A]  # newline never seen: byte fallback, 18


# The hand-written protobuf wire-format reader/writer that tokenizer.py used before it switched to
# sentencepiece_model_pb2, frozen here verbatim as the reference the new code must reproduce byte for byte.
def _old_read_varint(buf, i):
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def _old_varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _old_fields(buf):
    i = 0
    while i < len(buf):
        start = i
        key, i = _old_read_varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _old_read_varint(buf, i)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = buf[i:i + n], i + n
        elif wire == 2:
            n, i = _old_read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        yield key >> 3, value, buf[start:i]


def _old_read_model_proto(data):
    pieces, rest = [], bytearray()
    for fld, value, raw in _old_fields(data):
        if fld != 1:
            rest += raw
            continue
        p = ["", 0.0, 1]
        for f, v, _ in _old_fields(value):
            if f == 1:
                p[0] = v.decode("utf-8")
            elif f == 2:
                p[1] = struct.unpack("<f", v)[0]
            elif f == 3:
                p[2] = v
        pieces.append(p)
    return pieces, bytes(rest)


def _old_write_model_proto(pieces, rest):
    out = bytearray()
    for piece, score, type_ in pieces:
        s = piece.encode("utf-8")
        msg = b"\x0a" + _old_varint(len(s)) + s + b"\x15" + struct.pack("<f", score) + b"\x18" + _old_varint(type_)
        out += b"\x0a" + _old_varint(len(msg)) + msg
    return bytes(out + rest)


def _old_add_whitespace_tokens(data: bytes) -> tuple[bytes, str]:
    pieces, rest = _old_read_model_proto(data)
    lowest = pieces[-1][1]
    for k, p in enumerate(p for p in pieces if p[0] in T.WHITESPACE_TOKENS):
        p[0], p[1] = f"UNPRIORITIZED_{k}", lowest - 2
    pieces += [[w, lowest - 1, 1] for w in T.WHITESPACE_TOKENS]
    return _old_write_model_proto(pieces, rest), "".join(f"{piece}\t{score:g}\n" for piece, score, _ in pieces)


@pytest.mark.parametrize("whitespace_pieces", [False, True])
def test_whitespace_tokens_byte_identical_to_the_old_hand_written_protobuf(corpus, tmp_path, whitespace_pieces):
    """add_whitespace_tokens through sentencepiece_model_pb2 writes the same .model and .vocab bytes as the
    frozen hand-written writer; with allow_whitespace_only_pieces SentencePiece learns '▁▁'-style pieces,
    so the renaming branch (UNPRIORITIZED_k) is covered too."""
    code = [" " * (4 * (i % 5)) + f"x{i} = y  +  z" for i in range(2000)]  # runs of spaces
    docs = _lines(corpus["sv"]) + (code if whitespace_pieces else [])
    raw = train_tokenizer([], 700, str(tmp_path / "raw"), documents=docs, add_whitespace_tokens=False,
                          allow_whitespace_only_pieces=whitespace_pieces)
    before = Path(raw).read_bytes()
    expected_model, expected_vocab = _old_add_whitespace_tokens(before)
    T.add_whitespace_tokens(raw)
    assert Path(raw).read_bytes() == expected_model
    assert Path(raw).with_suffix(".vocab").read_text(encoding="utf-8") == expected_vocab
    renamed = [p for p in get_tokenizer(raw).pieces() if p.startswith("UNPRIORITIZED_")]
    assert bool(renamed) == whitespace_pieces
    proto = T.load_model_proto(raw)
    assert proto.SerializeToString() == expected_model and len(proto.pieces) == 700 + 23


def test_pruned_model_byte_identical_to_the_old_hand_written_protobuf(model):
    pieces, rest = _old_read_model_proto(Path(model).read_bytes())
    merges = E.vocab_classes([p[0] for p in pieces])["merge"]
    for i in range(merges[-1] - 99, merges[-1] + 1):
        pieces[i][0] = E.PRUNED_PIECE.format(i)
    old = spm.SentencePieceProcessor(model_proto=_old_write_model_proto(pieces, rest))
    new = E.prune_merges(model, VOCAB - 100).sp
    assert old.serialized_model_proto() == new.serialized_model_proto()


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
    # the repr quirk: every training document looked like "['...']", so "['" is a frequent merge
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


def _lines(path) -> list[str]:
    return [x for x in Path(path).read_text(encoding="utf-8").split("\n") if x.strip()]


def test_jsonl_zst_and_parquet_input_train_the_same_tokenizer(corpus, tmp_path):
    """One reader for every format: the same documents as .txt, .jsonl.zst or .parquet (field 'content')
    give byte-identical models (apart from the input options SentencePiece records in the model)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    docs = _lines(corpus["sv"])
    body = "".join(json.dumps({"content": d}, ensure_ascii=False) + "\n" for d in docs).encode()
    (tmp_path / "sv.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    pq.write_table(pa.table({"content": docs}), tmp_path / "sv.parquet", row_group_size=100)
    models = [train_tokenizer([str(p)], 600, str(tmp_path / f"m{i}"), text_field="content")
              for i, p in enumerate((corpus["sv"], tmp_path / "sv.jsonl.zst", tmp_path / "sv.parquet"))]
    pieces = [get_tokenizer(m).pieces() for m in models]
    assert pieces[0] == pieces[1] == pieces[2]
    (tmp_path / "kept.jsonl").write_text('{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"kept.jsonl:1: no string field 'text'.*--text_field"):
        train_tokenizer([str(tmp_path / "kept.jsonl")], 600, str(tmp_path / "t"))


def test_bad_input_stop_skip_replace(corpus, tmp_path):
    good = corpus["sv"].read_bytes()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(good + "gr\u00e5\n".encode("latin-1") + b"\x00\x01\x02binary\n" + good)
    offset = len(good) + 2  # the latin-1 byte of 'å'
    msg = rf"latin1.txt:{N_LINES + 1}, byte offset {offset}: not UTF-8.*on_bad_input='skip'"
    with pytest.raises(ValueError, match=msg):
        train_tokenizer([str(bad)], 600, str(tmp_path / "t"))
    assert Path(train_tokenizer([str(bad)], 600, str(tmp_path / "t"), on_bad_input="skip")).is_file()
    assert Path(train_tokenizer([str(bad)], 600, str(tmp_path / "r"), on_bad_input="replace")).is_file()
    # a lone surrogate in JSONL (an escaped half of an emoji) is bad input with FILE:LINE, not a crash
    js = tmp_path / "emoji.jsonl"
    js.write_text("".join(json.dumps({"text": d}) + "\n" for d in _lines(corpus["sv"])[:500])
                  + '{"text": "half \\ud83e emoji"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"emoji.jsonl:501: unpaired UTF-16 surrogate"):
        train_tokenizer([str(js)], 600, str(tmp_path / "e"))
    assert Path(train_tokenizer([str(js)], 600, str(tmp_path / "e"), on_bad_input="replace")).is_file()


def test_empty_input_file(corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty.txt has no non-empty documents"):
        train_tokenizer([str(corpus["sv"]), str(empty)], 600, str(tmp_path / "t"))
    with pytest.raises(ValueError, match=r"empty.txt \(sv\) is empty"):
        E.main(["evaluate", "--tokenizer", "gpt2", "--data", f"sv={empty}", "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------------------------------------------
# tiktoken, offline


def test_tiktoken_offline(monkeypatch):
    import tiktoken.load

    def no_network(*args, **kwargs):
        raise AssertionError("tiktoken tried to fetch a file")

    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_network)
    # reference ids from corpora/tiktoken/README.md ("Verified" table, tiktoken 0.14.0)
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


def test_tiktoken_rank_file_path(corpora, tmp_path):
    ranks_dir = corpora / "tiktoken"
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
# the authors' metrics (src/evaluation/evaluate.py)


class _FixedTokenizer:
    """A known tokenization: each (punctuation-stripped) text maps to given SentencePiece-style pieces."""
    sp, unk = True, 1

    def __init__(self, vocab: list[str], docs: dict[str, list[str]]):
        self.vocab, self.docs = vocab, docs

    def pieces(self) -> list[str]:
        return self.vocab

    def encode_batch(self, texts: list[str], preprocess: bool = True) -> list[list[int]]:
        assert not preprocess  # evaluate.py: no GPT-SW3 preprocessing in the evaluation
        return [[self.vocab.index(p) for p in self.docs[t]] for t in texts]


def test_metrics_hand_made():
    vocab = ["<pad>", "<unk>", "▁hej", "▁vä", "rld", "▁a", "b", "c", "▁", "▁▁"]
    docs = {"hej värld": ["▁hej", "▁vä", "rld"],  # 2 words, 1 continued
            "bc a": ["b", "c", "▁a"],  # first piece not word-initial: the authors' quirk adds 1 to PCW
            "xy": ["▁", "<unk>"],  # '▁' + non-initial: a continued word; one unknown
            "  hej": ["▁▁", "▁hej"]}  # a whitespace run counts as a word
    raw = ["hej, värld!", "(bc) a...", "x-y", "  hej"]  # ASCII punctuation is stripped before encoding
    m = E.evaluation_metrics(_FixedTokenizer(vocab, docs), raw)
    n_tok, n_chars, n_words, n_cont = 10, 9 + 4 + 2 + 5, 6, 3
    assert m["unk_rate"] == pytest.approx(1 / n_tok)
    assert m["ctcl"] == pytest.approx(n_tok / n_chars)
    assert m["fertility"] == pytest.approx(n_tok / n_words)
    assert m["pcw"] == pytest.approx(n_cont / n_words)
    assert (m["n_tokens"], m["n_chars"], m["n_words"], m["n_docs"]) == (n_tok, n_chars, n_words, 4)
    assert m["tokens_per_ws_word"] == pytest.approx(n_tok / 6)  # hej värld | bc a | xy | hej


def test_metrics_non_ascii_punctuation_is_kept():
    vocab = ["<pad>", "<unk>", "▁«", "hej", "»"]
    m = E.evaluation_metrics(_FixedTokenizer(vocab, {"«hej»": ["▁«", "hej", "»"]}), ["«hej»."])
    assert (m["n_chars"], m["fertility"], m["pcw"]) == (5, 3.0, 1.0)


def test_metrics_gpt2_byte_level():
    # gpt2: "hello world" -> ['hello', 'Ġworld']: 2 tokens, 1 word (Ġ), first piece non-initial (quirk)
    m = E.evaluation_metrics(get_tokenizer("gpt2"), ["hello world!"])
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
    m = E.evaluation_metrics(get_tokenizer(model), docs)
    ref = _authors_eval(spm.SentencePieceProcessor(model_file=model), docs)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, rel=1e-12), k


def test_cli_evaluate(model, corpus, tmp_path):
    out = tmp_path / "eval"
    E.main(["evaluate", f"--tokenizer={model},gpt2", f"--data=sv={corpus['sv_eval']},en={corpus['en_eval']}",
            "--out", str(out)])
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert list(rows[0])[:6] == ["tokenizer", "language", "unk_rate", "ctcl", "fertility", "pcw"]
    assert [(r["tokenizer"], r["language"]) for r in rows] == [(model, "sv"), (model, "en"), ("gpt2", "sv"),
                                                               ("gpt2", "en")]
    sv = E.evaluation_metrics(get_tokenizer(model), _lines(corpus["sv_eval"]))
    assert float(rows[0]["fertility"]) == pytest.approx(sv["fertility"])
    assert "| multi.model | sv |" in (out / "metrics.md").read_text()
    with pytest.raises(ValueError, match="LANG=FILE"):
        E.main(["evaluate", "--tokenizer", "gpt2", "--data", str(corpus["sv_eval"]), "--out", str(out)])


# ---------------------------------------------------------------------------------------------------
# vocabulary analysis


def test_vocab_classes():
    pieces = ["<pad>", "<unk>", "<s>", "<|endoftext|>", "<|python|>", "<0x0A>", "▁t", "he", "a", "▁",
              E.PRUNED_PIECE.format(10), "▁▁", "▁▁▁", "<0xZZ>"]
    c = E.vocab_classes(pieces)
    assert c == dict(special=[0, 1, 2, 3], code=[4], byte=[5], pruned=[10], single_character=[8, 9],
                     whitespace=[11, 12], merge=[6, 7, 13])


def test_prune_merges(model, corpus):
    full = get_tokenizer(model)
    merges = E.vocab_classes(full.pieces())["merge"]
    k = 200
    pruned = E.prune_merges(model, VOCAB - k)
    classes = E.vocab_classes(pruned.pieces())
    assert classes["pruned"] == merges[-k:]  # the k lowest-priority merges, up to the last regular one
    assert pruned.pieces()[-23:] == full.pieces()[-23:] and pruned.vocab_size == VOCAB
    docs = corpus["sv_eval"].read_text(encoding="utf-8").splitlines()
    ids = pruned.encode_batch(docs, preprocess=False)
    assert not {i for x in ids for i in x} & set(merges[-k:])  # pruned ids are never produced
    assert sum(map(len, ids)) > sum(map(len, full.encode_batch(docs, preprocess=False)))
    assert E.prune_merges(model, VOCAB).encode_batch(docs) == full.encode_batch(docs)
    with pytest.raises(ValueError, match="choose a size between"):
        E.prune_merges(model, VOCAB - len(merges) - 1)


def test_pruning_equals_retraining_smaller(model, corpus, tmp_path):
    # SentencePiece BPE learns merges greedily in order, so keeping the first merges of a 1000-piece model
    # must tokenize exactly like a model trained with 800 pieces on the same text (the reference)
    small = train_tokenizer([str(corpus["sv"]), str(corpus["en"])], 800, str(tmp_path / "small"))
    pruned, ref = E.prune_merges(model, 800), get_tokenizer(small)
    docs = corpus["sv_eval"].read_text(encoding="utf-8").splitlines()
    as_pieces = lambda tok: [[tok.sp.id_to_piece(i) for i in x] for x in tok.encode_batch(docs)]  # noqa: E731
    assert as_pieces(pruned) == as_pieces(ref)


def test_vocab_overlap():
    multi = ["<pad>", "▁a", "b", "Ġc", "d"]
    mono = ["<pad>", "▁c", "x"]  # V2 = 3
    rows = E.vocab_overlap(multi, mono, [1, 2, 4, 5])
    assert [r["overlap_abs"] for r in rows] == [1, 1, 2, 2]  # 'Ġc' is mapped to '▁c'
    assert rows[2]["overlap_rel"] == pytest.approx(2 / 3) and rows[0]["v2"] == 3


def test_cli_analyze(model, corpus, tmp_path):
    mono = train_tokenizer([str(corpus["sv"])], 600, str(tmp_path / "sv"))
    out = tmp_path / "an"
    E.main(["analyze", "--tokenizer", model, "--data", f"sv={corpus['sv_eval']}",
            "--prune_sizes=800,1000", "--mono", f"sv={mono}", "--overlap_sizes=300,1000", "--out", str(out)])
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
    E._plot(tmp_path / "x.png", "t", "x", "y", {"": ([1], [2])})
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
    for tok in (get_tokenizer(model), get_tokenizer("gpt2"), E.prune_merges(model, 900)):
        copy = pickle.loads(pickle.dumps(tok))
        assert (copy.name, copy.eot, copy.vocab_size) == (tok.name, tok.eot, tok.vocab_size)
        assert copy.encode("Hej  världen!\n  x") == tok.encode("Hej  världen!\n  x")


def test_cli_analyze_size_lists(model, tmp_path):
    """`--prune_sizes=800` (one item) and `--prune_sizes=800,1000` both give ints; pruning without --data
    stops before any work instead of silently skipping the curves."""
    assert E._ints("prune_sizes", ["800"]) == [800] and E._ints("prune_sizes", (800, 1000)) == [800, 1000]
    with pytest.raises(ValueError, match="comma-separated integers"):
        E._ints("prune_sizes", ["8x", 1.5])
    with pytest.raises(ValueError, match="--prune_sizes needs --data"):
        E.main(["analyze", f"--tokenizer={model}", "--prune_sizes=800", f"--out={tmp_path / 'an'}"])
    assert not (tmp_path / "an").exists()


# ---------------------------------------------------------------------------------------------------
# the published recipe, pinned: GPT-SW3 tokenizer (Stollenwerk 2023, arXiv:2304.14780), the authors' code
# gpt-sw3-tokenizer src/training/training_sp.py and train.sh (the production 64k run)

GPTSW3_PUBLISHED = dict(
    model_type="bpe", normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
    split_digits=True, byte_fallback=True, character_coverage=0.9999, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="<|endoftext|>",
    user_defined_symbols=["<|javascript|>", "<|python|>", "<|sql|>", "<|shell|>"],
    max_sentence_length=2_000_000, minloglevel=1, allow_whitespace_only_pieces=False,
)  # and train_extremely_large_corpus=True: SentencePiece >= 0.2 always counts in 64 bits and deprecates the flag


def test_gptsw3_settings_are_the_published_ones(model):
    """Every SentencePiece flag of the recipe equals the authors' call; the one deviation (input_sentence_size:
    a reservoir sample instead of GPT-SW3's 0 = all) is the only other key besides a deprecated one. The trained
    model's own proto records the same flags, so nothing between the dict and SentencePiece drops one."""
    ours = {"input_sentence_size", "train_extremely_large_corpus"}
    assert {k: v for k, v in T.GPTSW3_SETTINGS.items() if k not in ours} == GPTSW3_PUBLISHED
    assert set(T.GPTSW3_SETTINGS) - set(GPTSW3_PUBLISHED) <= ours
    assert T.GPTSW3_SETTINGS.get("train_extremely_large_corpus", True) is True
    assert T.WHITESPACE_TOKENS == ["▁" * n for n in range(2, 25)]  # --add_whitespace_tokens 2: 23 pieces
    assert T.TRAIN_OPTIONS["add_whitespace_tokens"] is True
    proto = T.load_model_proto(model)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    assert spec.model_type == spec.BPE and spec.split_digits and spec.byte_fallback
    assert spec.character_coverage == pytest.approx(0.9999) and spec.max_sentence_length == 2_000_000
    assert not spec.allow_whitespace_only_pieces
    assert (spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id) == (0, 1, 2, 3)
    assert (spec.pad_piece, spec.unk_piece, spec.bos_piece, spec.eos_piece) == ("<pad>", "<unk>", "<s>",
                                                                                  "<|endoftext|>")
    assert list(spec.user_defined_symbols) == GPTSW3_PUBLISHED["user_defined_symbols"]
    assert norm.name == "identity" and not norm.remove_extra_whitespaces and norm.add_dummy_prefix
    assert [p.piece for p in proto.pieces[-23:]] == T.WHITESPACE_TOKENS  # appended after training


def test_out_is_checked_before_training_and_a_junk_model_is_refused(tmp_path, monkeypatch):
    """`tokenizer.py train` refuses an --out it cannot write (OUT.model a folder, a file on the path) before
    SentencePiece trains; a file that is no SentencePiece model is a ValueError naming it (not SentencePiece's
    RuntimeError), for get_tokenizer and for the model-file reader alike."""
    text = tmp_path / "t.txt"
    text.write_text("ett två tre fyra fem sex sju åtta nio tio\n" * 20)

    def trains(**kwargs):
        raise AssertionError("SentencePiece was started before --out was checked")
    monkeypatch.setattr(spm.SentencePieceTrainer, "train", trains)
    (tmp_path / "tok.model").mkdir()
    with pytest.raises(ValueError, match=r"--out=.*tok: .*tok.model is a folder"):
        T.main(["train", f"--input={text}", "--vocab_size=400", f"--out={tmp_path / 'tok'}"])
    with pytest.raises(ValueError, match=rf"--out=.*: {text} is a file, not a folder"):
        T.main(["train", f"--input={text}", "--vocab_size=400", f"--out={text}/sub/tok"])
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x08\x96\x01 not a model")
    for load in (get_tokenizer, T.load_model_proto):
        with pytest.raises(ValueError, match=rf"{junk} is not a SentencePiece model"):
            load(str(junk))
