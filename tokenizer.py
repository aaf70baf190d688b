"""
Tokenizers: the GPT-SW3 SentencePiece recipe, one `Tokenizer` over SentencePiece and tiktoken, and the
GPT-SW3 per-language evaluation (../shared/papers/tokenizer_gptsw3.md, cited below as "tok §N").

    python tokenizer.py train --input a.txt b.txt --vocab_size 32000 --out data/tok/multi [--key value ...]
    python tokenizer.py evaluate --tokenizer data/tok/multi.model gpt2 --data sv=sv.txt en=en.txt --out out/ev
    python tokenizer.py analyze --tokenizer data/tok/multi.model --out out/an [--data ... --prune_sizes ...]

Library use (data.py, sample.py): `get_tokenizer(spec)`, `train_tokenizer(...)`, `normalize(text)`.
"""
import argparse
import ast
import base64
import csv
import gzip
import hashlib
import os
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from documents import ON_BAD_INPUT, read_documents

CODE_TOKENS = ["<|javascript|>", "<|python|>", "<|sql|>", "<|shell|>"]  # tok §2 user_defined_symbols
WHITESPACE_TOKENS = ["▁" * n for n in range(2, 25)]  # tok §3: 23 runs of 2..24 '▁', appended after training

# tok §2: the exact SentencePieceTrainer.train arguments of the production GPT-SW3 tokenizer
GPTSW3_SETTINGS = dict(
    model_type="bpe",
    normalization_rule_name="identity",  # no NFKC inside SP: normalize() below runs outside it (tok §4)
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    split_digits=True,
    byte_fallback=True,
    character_coverage=0.9999,
    pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="<|endoftext|>",
    user_defined_symbols=CODE_TOKENS,
    train_extremely_large_corpus=True,
    max_sentence_length=2_000_000,  # bytes; one whole document is one "sentence"
    minloglevel=1,
    allow_whitespace_only_pieces=False,  # not set in GPT-SW3 -> SP default False (tok §2)
    # ours: GPT-SW3 left this at 0 = hold every document in memory. SentencePiece instead keeps a uniform
    # reservoir sample of this many documents from the stream (shuffle_input_sentence=True, its default),
    # so training memory stays bounded on any corpus; on fewer documents the vocabulary is the same as with 0
    input_sentence_size=1_000_000,
)
# options of this file (not SentencePiece flags); any other key is passed to SentencePieceTrainer.train
TRAIN_OPTIONS = dict(
    add_whitespace_tokens=True,  # tok §3 post-processing (GPT-SW3 --add_whitespace_tokens 2)
    gptsw3_repr_quirk=False,  # True: feed str([doc]) like GPT-SW3 did (tok §2 quirk); False: raw text
    on_bad_input="stop",  # bad records (not UTF-8, NUL, lone surrogate, bad JSON): 'stop' | 'skip' | 'replace'
    text_field="text",  # the text field of .jsonl* records and the text column of .parquet files
    txt_unit="line",  # .txt files: 'line' = one document per line, 'file' = one document per file
    num_threads=os.cpu_count() or 1,
)

# ----------------------------------------------------------------------------------------------------
# GPT-SW3 text normalisation (tok §4), applied outside SentencePiece to training data and at encode time

_NON_PRINTING = [*range(0, 9), *range(11, 32), *range(127, 160), 160, 173, 8203]  # keeps \t (9), \n (10)
_WHITESPACES = [0x20, 0x2009, 0x200A, 0x202F, 0x2005, 0x3000, 0x2002, 0x2008, 0x2003, 0xFFFC, 0x0084]
# step 1 (delete) runs before step 2 (-> space), so a code point in both (U+0084) is deleted
_NORMALIZE_TABLE = {c: " " for c in _WHITESPACES} | {c: None for c in _NON_PRINTING}


def normalize(text: str) -> str:
    """GPT-SW3 preprocessing (tok §4): drop non-printing chars, unify whitespace to U+0020, then NFC."""
    return unicodedata.normalize("NFC", text.translate(_NORMALIZE_TABLE))


# ----------------------------------------------------------------------------------------------------
# editing a trained model: SentencePiece's ModelProto through the protobuf module it ships
# (sentencepiece_model_pb2); parse + serialize reproduces the file byte for byte (tests)

NORMAL = model_pb2.ModelProto.SentencePiece.NORMAL


def load_model_proto(model_file: str) -> model_pb2.ModelProto:
    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return proto


def _write_vocab(proto: model_pb2.ModelProto, path: str) -> None:
    # same format as SentencePiece's .vocab: "piece<TAB>score" (C++ ostream default = Python's :g)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces)


def add_whitespace_tokens(model_file: str) -> None:
    """tok §3 (GPT-SW3 `add_special_tokens`): disable existing '▁'-only pieces that collide with the targets
    (renamed UNPRIORITIZED_k, score lowest-2), append '▁'*2..24 with score lowest-1 (type NORMAL), and
    rewrite model_file and the .vocab beside it."""
    proto = load_model_proto(model_file)
    lowest = proto.pieces[-1].score
    for k, p in enumerate(p for p in proto.pieces if p.piece in WHITESPACE_TOKENS):
        p.piece, p.score = f"UNPRIORITIZED_{k}", lowest - 2
    for w in WHITESPACE_TOKENS:
        proto.pieces.add(piece=w, score=lowest - 1, type=NORMAL)
    for p in proto.pieces:  # score and type present on every piece (SentencePiece omits type NORMAL), as
        p.score, p.type = p.score, p.type  # our model files have always been written: same bytes as before
    Path(model_file).write_bytes(proto.SerializeToString())
    _write_vocab(proto, str(model_file)[: -len(".model")] + ".vocab")


# ----------------------------------------------------------------------------------------------------
# training (tok §2, §3, §11)


def train_tokenizer(input_files: list[str], vocab_size: int, out_prefix: str,
                    documents: Iterable[str] | None = None, **overrides) -> str:
    """Train a SentencePiece BPE tokenizer with the GPT-SW3 recipe; returns PREFIX.model.
    input_files: files, folders or globs of any documents.py format (a document per .txt line, the
    `text_field` of .jsonl*/.parquet records), streamed; or documents: any iterable of texts instead.
    SentencePiece keeps a reservoir sample of input_sentence_size documents, so memory is bounded.
    vocab_size is the final size: SentencePiece gets vocab_size - 23 and the whitespace tokens fill the
    rest. overrides: any GPTSW3_SETTINGS / TRAIN_OPTIONS key or other SentencePieceTrainer flag.
    Raises ValueError for a bad setting, bad input (FILE:LINE) or a failed training."""
    opts = TRAIN_OPTIONS | {k: v for k, v in overrides.items() if k in TRAIN_OPTIONS}
    settings = GPTSW3_SETTINGS | {k: v for k, v in overrides.items() if k not in TRAIN_OPTIONS}
    n_ws = len(WHITESPACE_TOKENS) if opts["add_whitespace_tokens"] else 0
    code = settings["user_defined_symbols"]
    n_code = len(code.split(",") if isinstance(code, str) else code)  # SP also takes "a,b,c"
    n_fixed = 4 + n_code + (256 if settings["byte_fallback"] else 0) + n_ws
    if vocab_size <= n_fixed:
        raise ValueError(f"vocab_size {vocab_size} is too small: the GPT-SW3 layout alone takes {n_fixed} "
                         f"ids (4 specials + {n_code} code tokens + 256 bytes + {n_ws} whitespace tokens) "
                         f"before any character or merge; use --vocab_size of at least {n_fixed + 100} "
                         f"(GPT-SW3 used 64000)")
    if opts["on_bad_input"] not in ON_BAD_INPUT:
        raise ValueError(f"on_bad_input must be one of {ON_BAD_INPUT}, got {opts['on_bad_input']!r}")
    report = {}
    if documents is None:
        documents = _file_texts(input_files, opts, report)
    stream = _TrainingStream(documents, opts["gptsw3_repr_quirk"])
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=stream, model_prefix=out_prefix,
                                       vocab_size=vocab_size - n_ws, num_threads=opts["num_threads"],
                                       **settings)
    except (RuntimeError, ValueError) as e:
        if stream.error is not None:  # bad input met while SentencePiece read the stream
            raise stream.error from None
        raise ValueError(f"SentencePiece training failed for vocab_size {vocab_size} (SentencePiece got "
                         f"{vocab_size - n_ws}) on {stream.n} documents: {e}. Fix: if the vocabulary is too "
                         f"high for this much text, lower --vocab_size (to SentencePiece's limit + {n_ws}) "
                         f"or add text; if a field or value is unknown, check the --key value overrides"
                         ) from None
    model_file = out_prefix + ".model"
    if n_ws:
        add_whitespace_tokens(model_file)
    skipped = sum(c["skipped"] for c in report.values())
    repaired = sum(c["repaired"] for c in report.values())
    print(f"trained {model_file}: vocab {vocab_size}, {stream.n} documents, {skipped} bad records skipped, "
          f"{repaired} repaired")
    return model_file


def _file_texts(input_files, opts: dict, report: dict) -> Iterator[str]:
    """Non-empty documents of the input files; a file without any stops the run (nothing to train on)."""
    per_file = Counter()
    for doc in read_documents(input_files, opts["text_field"], opts["txt_unit"], opts["on_bad_input"], report):
        if doc.text.strip():
            per_file[doc.source] += 1
            yield doc.text
    empty = [f for f in report if not per_file[f]]
    if empty:
        raise ValueError(f"input file {empty[0]} has no non-empty documents: nothing to train on; remove it "
                         f"from --input or fill it")


class _TrainingStream:
    """The iterator SentencePiece pulls documents from (one document per "sentence", normalised, tok §4;
    GPT-SW3 fed str([doc]), the repr quirk of tok §2; we default to the raw text). An exception raised while
    reading is kept in .error: SentencePiece would turn it into a RuntimeError."""

    def __init__(self, texts: Iterable[str], repr_quirk: bool):
        self.texts, self.repr_quirk, self.n, self.error = iter(texts), repr_quirk, 0, None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            text = normalize(next(self.texts))
        except StopIteration:
            raise
        except Exception as e:
            self.error = e
            raise
        self.n += 1
        return str([text]) if self.repr_quirk else text


# ----------------------------------------------------------------------------------------------------
# one Tokenizer interface over SentencePiece models and (offline) tiktoken encodings


def _tiktoken_dir() -> Path:
    default = Path(__file__).resolve().parent.parent / "shared" / "data" / "tiktoken"
    return Path(os.environ.get("TIKTOKEN_RANKS_DIR", default))


def _read_ranks(path: Path, expected_hash: str | None = None) -> dict[bytes, int]:
    """A tiktoken rank file (plain or .gz): a `base64(token) rank` pair per line; sha256 checked if given."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
        raise ValueError(f"{path}: sha256 differs from tiktoken's expected {expected_hash}: corrupt file")
    pairs = (line.split() for line in data.splitlines() if line)
    return {base64.b64decode(tok): int(rank) for tok, rank in pairs}


def _local_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for tiktoken.load.load_tiktoken_bpe: reads <dir>/<name>.tiktoken[.gz] instead of the URL."""
    name, d = url.rsplit("/", 1)[-1], _tiktoken_dir()
    path = next((p for p in (d / name, d / (name + ".gz")) if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no local rank file for tiktoken {name!r}: looked for {name} and {name}.gz "
                                f"in {d} (set TIKTOKEN_RANKS_DIR to another folder, or use gpt2, r50k_base, "
                                f"cl100k_base, o200k_base); nothing is downloaded")
    return _read_ranks(path, expected_hash)


def _tiktoken_encoding(spec: str):
    """A tiktoken Encoding by name or from a rank file, built with tiktoken's own constructor (regex, special
    tokens, expected sha256) but with the rank loader swapped for a local one, so nothing is downloaded."""
    import tiktoken
    from tiktoken_ext import openai_public
    from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS

    path, is_file = Path(spec), spec.endswith((".tiktoken", ".tiktoken.gz"))
    name = path.name.split(".")[0] if is_file else spec
    # GPT-2 = the r50k_base ranks + <|endoftext|> = 50256 (tiktoken's own gpt2 reads vocab.bpe: not stored)
    name = "r50k_base" if name == "gpt2" else name
    if is_file and not path.is_file():
        raise FileNotFoundError(f"tiktoken rank file {spec} not found")
    if not is_file and name not in ENCODING_CONSTRUCTORS:
        raise ValueError(f"unknown tokenizer {spec!r}: not a file, and not a tiktoken encoding name "
                         f"(known: {', '.join(sorted(ENCODING_CONSTRUCTORS))}; rank files are looked for "
                         f"in {_tiktoken_dir()}); pass a SentencePiece .model, a .tiktoken file or one of "
                         f"those names")
    known = name in ENCODING_CONSTRUCTORS

    def read_given_file(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return _read_ranks(path, expected_hash if known else None)  # a renamed file has no known hash

    loader = read_given_file if is_file else _local_bpe
    with mock.patch.object(openai_public, "load_tiktoken_bpe", loader):  # never the network
        ctor = ENCODING_CONSTRUCTORS.get(name, openai_public.r50k_base)()  # unknown file name: GPT-2 regex
    if not known:
        ctor["special_tokens"] = {"<|endoftext|>": len(ctor["mergeable_ranks"])}
    ctor.pop("explicit_n_vocab", None)
    ctor["name"] = spec
    return tiktoken.Encoding(**ctor)


class Tokenizer:
    """encode/decode over a SentencePiece processor (sp) or a tiktoken Encoding (enc); exactly one is set.
    SentencePiece models get normalize() (tok §4) before encoding, as GPT-SW3's HF tokenizer does."""

    def __init__(self, name: str, sp: spm.SentencePieceProcessor | None = None, enc=None):
        self.name, self.sp, self.enc = name, sp, enc
        if sp is not None:
            self.vocab_size = sp.get_piece_size()
            self.eot = sp.eos_id() if sp.eos_id() >= 0 else None
            self.bos = sp.bos_id() if sp.bos_id() >= 0 else None
            self.unk = sp.unk_id()
        else:
            self.vocab_size, self.eot, self.bos, self.unk = enc.n_vocab, enc.eot_token, None, None

    def encode(self, text: str, preprocess: bool = True) -> list[int]:
        if self.sp is not None:
            return self.sp.encode(normalize(text) if preprocess else text)
        return self.enc.encode_ordinary(text)  # special-token text like "<|endoftext|>" stays plain text

    def encode_batch(self, texts: list[str], preprocess: bool = True) -> list[list[int]]:
        if self.sp is not None:
            return self.sp.encode([normalize(t) for t in texts] if preprocess else list(texts))
        # a plain loop: encode_ordinary_batch dispatches every text to a thread pool, which measured 1.5-2.5x
        # slower than this loop on 2 busy cores (77k lines of ../shared/data/text)
        return [self.enc.encode_ordinary(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids)) if self.sp is not None else self.enc.decode(list(ids))

    def pieces(self) -> list[str]:
        """The vocabulary as strings in id order; tiktoken tokens in HF byte-level form (' ' -> 'Ġ')."""
        if self.sp is not None:
            return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        b2u = _bytes_to_unicode()
        out = []
        for i in range(self.vocab_size):
            try:
                out.append("".join(b2u[b] for b in self.enc.decode_single_token_bytes(i)))
            except KeyError:  # unused ids between the ranks and the special tokens
                out.append("")
        return out

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, eot={self.eot}, bos={self.bos})"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable char map (so a space byte shows as 'Ġ'), as in HF byte-level BPE."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def get_tokenizer(spec: str) -> Tokenizer:
    """spec: path to a SentencePiece .model | path to a .tiktoken[.gz] file | gpt2 | r50k_base | cl100k_base |
    o200k_base (offline from ../shared/data/tiktoken, or $TIKTOKEN_RANKS_DIR)."""
    spec = str(spec)
    if spec.endswith(".model"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"SentencePiece model {spec} not found: train one with "
                                    f"`python tokenizer.py train --input FILE --vocab_size N --out PREFIX`")
        return Tokenizer(spec, sp=spm.SentencePieceProcessor(model_file=spec))
    return Tokenizer(spec, enc=_tiktoken_encoding(spec))


# ----------------------------------------------------------------------------------------------------
# evaluation: GPT-SW3 metrics per language (tok §6, the authors' src/evaluation/evaluate.py)

_PUNCTUATION = str.maketrans("", "", string.punctuation)  # ASCII only: – “ ” « » are kept (tok §6 step 1)


def _word_initial(tok: Tokenizer) -> np.ndarray:
    """(V,) bool: piece starts a word: '▁' for SentencePiece, 'Ġ' (leading space byte) for byte-level BPE."""
    mark = "▁" if tok.sp is not None else "Ġ"
    return np.array([p.startswith(mark) for p in tok.pieces()], dtype=bool)


def evaluation_metrics(tok: Tokenizer, docs: list[str]) -> dict[str, float]:
    """Corpus-level (micro) metrics of tok §6 over documents of one language:
    unk_rate = N_unk / N_tok; ctcl = N_tok / N_chars (punctuation-stripped chars); fertility = N_tok / N_words
    with N_words = #word-initial pieces; pcw = #continued words / N_words, a continued word being a
    word-initial piece followed by a non-initial one (plus the authors' quirk: a document whose FIRST piece
    is not word-initial adds one to the numerator). Encoded WITHOUT normalize(), as the authors did."""
    texts = [d.translate(_PUNCTUATION) for d in docs]
    ids = [x for x in tok.encode_batch(texts, preprocess=False) if x]
    if not ids:
        raise ValueError("no tokens to evaluate: every document is empty after removing ASCII punctuation")
    flat = np.fromiter((i for x in ids for i in x), dtype=np.int64)  # (N_tok,)
    starts = np.cumsum([0] + [len(x) for x in ids[:-1]])  # (n_docs,) index of each document's first piece
    b = _word_initial(tok)[flat]  # (N_tok,) b_i
    follows = np.ones(len(flat), dtype=bool)  # piece j has a piece j-1 in the same document
    follows[starts] = False
    cont = ~b & np.roll(b, 1) & follows  # word start directly followed by a continuation
    n_tok, n_words = len(flat), int(b.sum())
    n_cont = int(cont.sum()) + int((~b[starts]).sum())  # + the first-piece quirk
    n_unk = int((flat == tok.unk).sum()) if tok.unk is not None else 0  # tiktoken has no <unk>
    n_chars = sum(len(t) for t in texts)
    # extra (not in tok §6): tokens per whitespace-separated word, the same denominator for every tokenizer.
    # §6's N_words depends on the tokenizer: byte-level BPE has no dummy prefix, so the first word of each
    # document (and each word after a newline) is not 'Ġ'-initial and is missing from its N_words.
    n_ws_words = sum(len(t.split()) for t in texts)
    nan = float("nan")  # the authors wrote -1 on a zero denominator
    return dict(unk_rate=n_unk / n_tok, ctcl=n_tok / n_chars, fertility=n_tok / n_words if n_words else nan,
                pcw=n_cont / n_words if n_words else nan, chars_per_token=n_chars / n_tok,
                tokens_per_ws_word=n_tok / n_ws_words if n_ws_words else nan,
                n_docs=len(docs), n_chars=n_chars, n_tokens=n_tok, n_words=n_words)


def _lang_files(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        lang, sep, path = p.partition("=")
        if not sep or not lang or not path:
            raise SystemExit(f"--data expects LANG=FILE pairs (e.g. sv=sv.txt), got {p!r}")
        out[lang] = path
    return out


def _load_languages(pairs: list[str], on_bad_input: str, text_field: str = "text") -> dict[str, list[str]]:
    """LANG=PATH pairs -> {lang: non-empty documents}; PATH is any documents.py input (file, folder, glob)."""
    data = {}
    for lang, path in _lang_files(pairs).items():
        data[lang] = [d.text for d in read_documents(path, text_field, on_bad_input=on_bad_input)
                      if d.text.strip()]
        if not data[lang]:
            raise ValueError(f"language file {path} ({lang}) is empty: it needs one document per line")
    return data


def _short(spec: str) -> str:
    return Path(spec).name if spec.endswith((".model", ".tiktoken", ".gz")) else spec


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else _short(str(v))


def _write_table(rows: list[dict], out: Path, stem: str, title: str) -> str:
    """rows -> out/stem.csv and out/stem.md; returns the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0])
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    md = "\n".join([f"| {' | '.join(cols)} |", "|" + "---|" * len(cols),
                    *(f"| {' | '.join(_cell(r[c]) for c in cols)} |" for r in rows)])
    (out / f"{stem}.md").write_text(f"# {title}\n\n{md}\n")
    return md


def evaluate(tokenizers: list[str], data: dict[str, list[str]]) -> list[dict]:
    """One row per (tokenizer, language) with the tok §6 metrics."""
    rows = []
    for spec in tokenizers:
        tok = get_tokenizer(spec)
        for lang, docs in data.items():
            rows.append(dict(tokenizer=spec, language=lang, **evaluation_metrics(tok, docs)))
    return rows


# ----------------------------------------------------------------------------------------------------
# vocabulary analysis (tok §6 "other vocabulary analysis", the authors' src/analysis.py, prune_vocab_size.py)

PRUNED_PIECE = "a!?x$$▁!!xyz.masdf_{}"  # the authors' never-matching string, made unique by the id
_SPECIALS = {"<pad>", "<unk>", "<s>", "<|endoftext|>"}


def vocab_classes(pieces: list[str]) -> dict[str, list[int]]:
    """ids per class, in the authors' order of precedence: special, code (<|*|>), byte (<0x..>), pruned,
    single_character (incl. '▁'), whitespace ('▁'*n, n>=2), merge (everything else)."""
    names = ("special", "code", "byte", "pruned", "single_character", "whitespace", "merge")
    classes = {k: [] for k in names}
    for i, p in enumerate(pieces):
        if p in _SPECIALS:
            classes["special"].append(i)
        elif re.fullmatch(r"<\|.+\|>", p):
            classes["code"].append(i)
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", p):
            classes["byte"].append(i)
        elif p.startswith(PRUNED_PIECE[:-2]):
            classes["pruned"].append(i)
        elif len(p) == 1:
            classes["single_character"].append(i)
        elif set(p) == {"▁"}:
            classes["whitespace"].append(i)
        else:
            classes["merge"].append(i)
    return classes


def prune_merges(model_file: str, vocab_size: int) -> Tokenizer:
    """Vocabulary-size effect without retraining (tok §6): overwrite the V - vocab_size lowest-priority merges
    (those just before and including the last regular merge id) with never-matching strings."""
    proto = load_model_proto(model_file)
    pieces = proto.pieces
    merges = vocab_classes([p.piece for p in pieces])["merge"]
    n_drop = len(pieces) - vocab_size
    if not 0 <= n_drop <= len(merges):
        raise ValueError(f"cannot prune {model_file} ({len(pieces)} pieces, {len(merges)} merges) to "
                         f"vocab_size {vocab_size}: choose a size between {len(pieces) - len(merges)} and "
                         f"{len(pieces)}")
    last = merges[-1]
    for i in range(last - n_drop + 1, last + 1):  # authors: last - (V - V') < i <= last
        pieces[i].piece = PRUNED_PIECE.format(i)
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    return Tokenizer(f"{model_file}@{vocab_size}", sp=sp)


def vocab_overlap(multi: list[str], mono: list[str], sizes: list[int]) -> list[dict]:
    """tok §6 (plots.get_intersections): overlap_abs = |set(multi[:V1]) & set(mono[:V2])| with V2 = len(mono),
    overlap_rel = overlap_abs / |set(multi[:V2])|. 'Ġ' is mapped to '▁' so byte-level vocabularies compare."""
    multi, mono = [p.replace("Ġ", "▁") for p in multi], set(p.replace("Ġ", "▁") for p in mono)
    v2, denom = len(mono), len(set(multi[:len(mono)]))
    return [dict(v1=v1, v2=v2, overlap_abs=len(set(multi[:v1]) & mono),
                 overlap_rel=len(set(multi[:v1]) & mono) / denom) for v1 in sizes]


SAMPLE_SENTENCES = {  # tok §6 qualitative examples
    "sv": "Det var en fuktig, grå sommardag i slutet av juni.",
    "code": "def fibRec(n):\n    if n < 2:\n        return n\n    return fibRec(n - 1) + fibRec(n - 2)\n",
    # special-token TEXT is not parsed into the special ids (they are control pieces): insert ids instead
    "chat_as_text": "<|endoftext|><s>User: Jag tycker träd är fina<s>Bot: ",
}


def _plot(out_png: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list, list]],
          bar: bool = False) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {out_png.name} (pip install matplotlib for plots)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in series.items():
        (ax.bar if bar else ax.plot)(x, y, label=label, **({} if bar else dict(marker="o")))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def analyze(spec: str, out: Path, data: dict[str, list[str]] | None = None, prune_sizes: list[int] = (),
            mono: dict[str, str] | None = None, overlap_sizes: list[int] = ()) -> str:
    """Token classes, length histogram, examples; with data + prune_sizes the pruning curves; with mono
    (lang -> monolingual tokenizer) the vocabulary overlap. Writes CSV/Markdown/PNG to out; returns the
    Markdown."""
    tok, out = get_tokenizer(spec), Path(out)
    pieces = tok.pieces()
    classes = vocab_classes(pieces)
    rows = [dict(cls=k, count=len(v), first_id=v[0] if v else -1, last_id=v[-1] if v else -1)
            for k, v in classes.items()]
    md = [f"## Vocabulary of {_short(spec)} ({tok.vocab_size} ids)",
          _write_table(rows, out, "vocab_classes", "classes")]
    lengths = [len(pieces[i]) for i in classes["merge"] + classes["single_character"]]  # chars per piece
    hist = sorted(Counter(lengths).items())
    _write_table([dict(length=k, count=v) for k, v in hist], out, "length_hist", "length histogram")
    md.append(f"\nmean piece length (merges + single characters, '▁' counts as a char): "
              f"{np.mean(lengths):.2f}; longest {max(lengths)}")
    _plot(out / "length_hist.png", f"piece lengths, {_short(spec)}", "characters", "pieces",
          {"": ([k for k, _ in hist], [v for _, v in hist])}, bar=True)
    md.append("\n### Examples\n")
    for name, text in SAMPLE_SENTENCES.items():
        md.append(f"- {name}: `{' '.join(pieces[i] for i in tok.encode(text)).replace(chr(10), '↵')}`")
    if data and prune_sizes:
        if tok.sp is None:
            raise ValueError("pruning merges needs a SentencePiece .model (tiktoken ranks are not pruned)")
        prow = []
        for v in sorted(prune_sizes):
            pruned = prune_merges(spec, v)
            prow += [dict(vocab_size=v, language=lang, **evaluation_metrics(pruned, docs))
                     for lang, docs in data.items()]
        md += ["\n## Vocabulary size by pruning merges\n", _write_table(prow, out, "pruning", "pruning")]
        for m in ("fertility", "pcw", "ctcl"):
            _plot(out / f"pruning_{m}.png", f"{m} vs vocabulary size (pruned merges)", "vocab size", m,
                  {lang: ([r["vocab_size"] for r in prow if r["language"] == lang],
                          [r[m] for r in prow if r["language"] == lang]) for lang in data})
    if mono:
        sizes = sorted(overlap_sizes) or [round(tok.vocab_size * k / 8) for k in range(1, 9)]
        orow = [dict(language=lang, **r) for lang, m in mono.items()
                for r in vocab_overlap(pieces, get_tokenizer(m).pieces(), sizes)]
        md += ["\n## Overlap with monolingual vocabularies\n", _write_table(orow, out, "overlap", "overlap")]
        curves = {lang: ([r["v1"] for r in orow if r["language"] == lang],
                         [r["overlap_rel"] for r in orow if r["language"] == lang]) for lang in mono}
        _plot(out / "overlap.png", "multilingual vs monolingual vocabulary", "V1 (first ids of multilingual)",
              "overlap_rel", curves)
    text = "\n".join(md) + "\n"
    (out / "analysis.md").write_text(text)
    return text


# ----------------------------------------------------------------------------------------------------
# CLI


def _add_eval_subcommands(sub) -> None:
    e = sub.add_parser("evaluate", help="unk rate, ctcl, fertility, pcw per language and tokenizer (tok §6)")
    e.add_argument("--tokenizer", nargs="+", action="extend", required=True,
                   help="PREFIX.model | .tiktoken file | gpt2 | r50k_base | cl100k_base | o200k_base")
    e.add_argument("--data", nargs="+", action="extend", required=True, help="LANG=FILE, a document per line")
    e.add_argument("--out", required=True, help="writes DIR/metrics.csv and DIR/metrics.md")
    e.add_argument("--on_bad_input", choices=ON_BAD_INPUT, default="stop", help="bad records (documents.py)")
    e.add_argument("--text_field", default="text", help="text field of .jsonl*/.parquet inputs")
    a = sub.add_parser("analyze", help="token classes, lengths, pruning curves, multi/monolingual overlap")
    a.add_argument("--tokenizer", required=True, help="the (multilingual) tokenizer to analyze")
    a.add_argument("--out", required=True, help="output folder (CSV, Markdown, PNG)")
    a.add_argument("--data", nargs="+", action="extend", default=[], help="LANG=FILE for the pruning curves")
    a.add_argument("--prune_sizes", nargs="+", type=int, default=[], help="vocab sizes to prune merges to")
    a.add_argument("--mono", nargs="+", action="extend", default=[], help="LANG=MODEL monolingual tokenizers")
    a.add_argument("--overlap_sizes", nargs="+", type=int, default=[], help="V1 values (default: 8 steps)")
    a.add_argument("--on_bad_input", choices=ON_BAD_INPUT, default="stop", help="bad records (documents.py)")
    a.add_argument("--text_field", default="text", help="text field of .jsonl*/.parquet inputs")


def _run_eval_command(args: argparse.Namespace) -> None:
    data = _load_languages(args.data, args.on_bad_input, args.text_field)
    if args.command == "evaluate":
        print(_write_table(evaluate(args.tokenizer, data), Path(args.out), "metrics", "Tokenizer evaluation"))
    else:
        print(analyze(args.tokenizer, Path(args.out), data, args.prune_sizes, _lang_files(args.mono),
                      args.overlap_sizes))


def _parse_overrides(args: list[str]) -> dict:
    """['--key', 'value', '--k2=v2'] -> {'key': literal(value), ...} (ast.literal_eval, else the string)."""
    out, i = {}, 0
    while i < len(args):
        if not args[i].startswith("--"):
            raise SystemExit(f"unexpected argument {args[i]!r}: overrides are --key value or --key=value")
        key, sep, value = args[i][2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise SystemExit(f"override --{key} needs a value")
            i, value = i + 1, args[i + 1]
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
        i += 1
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a GPT-SW3-style SentencePiece BPE tokenizer",
                       epilog="overrides (--key value): " + ", ".join([*GPTSW3_SETTINGS, *TRAIN_OPTIONS]) +
                       ", or any other SentencePieceTrainer flag")
    t.add_argument("--input", nargs="+", required=True,
                   help="files, folders or globs: .txt (a document per line), .jsonl[.gz|.zst], .parquet")
    t.add_argument("--vocab_size", type=int, required=True, help="final size incl. the 23 whitespace tokens")
    t.add_argument("--out", required=True, help="output prefix: writes PREFIX.model and PREFIX.vocab")
    _add_eval_subcommands(sub)
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        train_tokenizer(args.input, args.vocab_size, args.out, **_parse_overrides(rest))
    else:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        _run_eval_command(args)


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `tokenizer.py: problem: fix`, exit 1
    run_cli("tokenizer.py", main)
