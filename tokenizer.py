"""
Tokenizers: the GPT-SW3 SentencePiece recipe (Stollenwerk 2023, "Training and Evaluation of a Multilingual
Tokenizer for GPT-SW3", arXiv:2304.14780; settings from the authors' code, github.com/flxst/gpt-sw3-tokenizer,
files named below), one `Tokenizer` over SentencePiece and tiktoken, and the `train` command (tokeval.py holds
the per-language evaluation and the vocabulary analysis, with their commands).

    python tokenizer.py train --input=a.txt,b.txt --vocab_size=32000 --out=data/tok/multi [--key=value ...]

`python tokenizer.py train -h` lists the keys with defaults. Library use (data.py, sample.py):
`get_tokenizer(spec)`, `train_tokenizer(...)`, `normalize(text)`.
"""
import base64
import gzip
import hashlib
import os
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from unittest import mock

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from configurator import configure_command
from documents import ON_BAD_INPUT, read_documents

CODE_TOKENS = ["<|javascript|>", "<|python|>", "<|sql|>", "<|shell|>"]  # user_defined_symbols (CODE_TOKENS.csv)
WHITESPACE_TOKENS = ["▁" * n for n in range(2, 25)]  # 23 runs of 2..24 '▁', appended after training
# (src/helpers.py add_special_tokens)

# the exact SentencePieceTrainer.train arguments of the production GPT-SW3 tokenizer (gpt-sw3-tokenizer
# src/training/training_sp.py, train.sh)
GPTSW3_SETTINGS = dict(
    model_type="bpe",  # SentencePiece BPE
    normalization_rule_name="identity",  # no NFKC inside SP: normalize() below runs outside it
    remove_extra_whitespaces=False,  # keep runs of spaces (they become the whitespace tokens)
    add_dummy_prefix=True,  # a leading '▁' before each document, so its first word is word-initial
    split_digits=True,  # every digit its own piece
    byte_fallback=True,  # unknown characters as <0x..> byte pieces, never <unk>
    character_coverage=0.9999,  # (0, 1] share of characters kept as single-character pieces
    pad_id=0,  # [-1, inf) ids and pieces of the specials: <pad> 0, <unk> 1, <s> 2, <|endoftext|> 3
    unk_id=1,  # [0, inf) <unk>
    bos_id=2,  # [-1, inf) <s>
    eos_id=3,  # [-1, inf) <|endoftext|>, the document separator
    pad_piece="<pad>",  # the piece of pad_id
    unk_piece="<unk>",  # the piece of unk_id
    bos_piece="<s>",  # the piece of bos_id
    eos_piece="<|endoftext|>",  # the piece of eos_id
    user_defined_symbols=CODE_TOKENS,  # pieces never split (ids 4..7)
    max_sentence_length=2_000_000,  # [1, inf) bytes; one whole document is one "sentence"
    minloglevel=1,  # [0, 3] SentencePiece logging: 1 = warnings and errors only
    allow_whitespace_only_pieces=False,  # not set in GPT-SW3 -> SP default False
    # ours: GPT-SW3 left this at 0 = hold every document in memory. SentencePiece instead keeps a uniform
    # reservoir sample of this many documents from the stream (shuffle_input_sentence=True, its default),
    # so training memory stays bounded on any corpus; on fewer documents the vocabulary is the same as with 0
    input_sentence_size=1_000_000,  # [0, inf) ours (GPT-SW3: 0 = all): documents in SentencePiece's reservoir sample
)
# options of this file (not SentencePiece flags); any other key is passed to SentencePieceTrainer.train
TRAIN_OPTIONS = dict(
    add_whitespace_tokens=True,  # GPT-SW3 --add_whitespace_tokens 2 (src/helpers.py)
    gptsw3_repr_quirk=False,  # True: feed str([doc]) like GPT-SW3 did (helpers.py quirk); False: raw
    on_bad_input="stop",  # bad records (not UTF-8, NUL, lone surrogate, bad JSON): 'stop' | 'skip' | 'replace'
    text_field="text",  # the text field of .jsonl* records and the text column of .parquet files
    txt_unit="line",  # .txt files: 'line' = one document per line, 'file' = one document per file
    num_threads=os.cpu_count() or 1,  # [1, inf) SentencePiece training threads (default: all cores)
)

# ----------------------------------------------------------------------------------------------------
# GPT-SW3 text normalisation (transformers' GPTSw3Tokenizer.preprocess_text), applied outside SentencePiece to
# training data and at encode time

_NON_PRINTING = [*range(0, 9), *range(11, 32), *range(127, 160), 160, 173, 8203]  # keeps \t (9), \n (10)
_WHITESPACES = [0x20, 0x2009, 0x200A, 0x202F, 0x2005, 0x3000, 0x2002, 0x2008, 0x2003, 0xFFFC, 0x0084]
# step 1 (delete) runs before step 2 (-> space), so a code point in both (U+0084) is deleted
_NORMALIZE_TABLE = {c: " " for c in _WHITESPACES} | {c: None for c in _NON_PRINTING}


def normalize(text: str) -> str:
    """GPT-SW3 preprocessing (tokenization_gpt_sw3.py): drop non-printing chars, unify whitespace to U+0020,
    then NFC."""
    return unicodedata.normalize("NFC", text.translate(_NORMALIZE_TABLE))


# ----------------------------------------------------------------------------------------------------
# editing a trained model: SentencePiece's ModelProto through the protobuf module it ships
# (sentencepiece_model_pb2); parse + serialize reproduces the file byte for byte (tests)

NORMAL = model_pb2.ModelProto.SentencePiece.NORMAL


def load_model_proto(model_file: str) -> model_pb2.ModelProto:
    """The parsed SentencePiece model file; ValueError naming the file when it is not one."""
    from google.protobuf.message import DecodeError
    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(model_file).read_bytes())
    except DecodeError as e:
        raise ValueError(f"{model_file} is not a SentencePiece model ({e}): give a .model file written by "
                         f"`python tokenizer.py train` or SentencePiece") from None
    return proto


def _write_vocab(proto: model_pb2.ModelProto, path: str) -> None:
    # same format as SentencePiece's .vocab: "piece<TAB>score" (C++ ostream default = Python's :g)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces)


def add_whitespace_tokens(model_file: str) -> None:
    """GPT-SW3's `add_special_tokens` (src/helpers.py): disable existing '▁'-only pieces that collide with the targets
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
# training (src/training/training_sp.py)


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
    """The iterator SentencePiece pulls documents from (one document per "sentence", normalised; GPT-SW3 fed
    str([doc]), the repr quirk of its src/helpers.py get_training_corpus_combined; we default to the raw text).
    An exception raised while reading is kept in .error: SentencePiece would turn it into a RuntimeError."""

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
    default = Path(__file__).resolve().parent / "corpora" / "tiktoken"  # shipped: corpora/tiktoken/README.md
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
    SentencePiece models get normalize() before encoding, as GPT-SW3's HF tokenizer does."""

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
        # slower than this loop on 2 busy cores (77k lines of the bundled multilingual corpus)
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


class CharTokenizer:
    """nanoGPT's character-level tokenizer (its data/shakespeare_char/prepare.py): the `stoi`/`itos` tables
    of a dataset folder's meta.pkl. No end-of-text or begin token. Raises ValueError for a meta.pkl without
    those tables, and on encode for a character outside them."""

    def __init__(self, meta_pkl: str | Path):
        import pickle
        with open(meta_pkl, "rb") as f:
            meta = pickle.load(f)
        if not isinstance(meta, dict) or not {"stoi", "itos"} <= set(meta):
            raise ValueError(f"{meta_pkl} has no character tables (stoi, itos), so its ids cannot be decoded: "
                             f"pass --tokenizer=SPEC (nanoGPT's GPT-2 data: gpt2)")
        self.name, self.stoi, self.itos = str(meta_pkl), meta["stoi"], meta["itos"]
        self.vocab_size, self.eot, self.bos, self.sp, self.enc = len(self.itos), None, None, None, None

    def encode(self, text: str, preprocess: bool = True) -> list[int]:
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"characters {unknown[:5]} are not in {self.name}: use only the training text's "
                             f"characters")
        return [self.stoi[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)


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
    o200k_base (offline: the rank files of the bundled data folder's tiktoken/, or $TIKTOKEN_RANKS_DIR)."""
    spec = str(spec)
    if spec.endswith(".model"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"SentencePiece model {spec} not found: train one with "
                                    f"`python tokenizer.py train --input=FILE --vocab_size=N --out=PREFIX`")
        try:
            return Tokenizer(spec, sp=spm.SentencePieceProcessor(model_file=spec))
        except RuntimeError as e:  # SentencePiece: "INTERNAL: could not parse ModelProto from ..."
            raise ValueError(f"{spec} is not a SentencePiece model ({str(e).strip()[:100]}): give a .model file "
                             f"written by `python tokenizer.py train` or SentencePiece") from None
    return Tokenizer(spec, enc=_tiktoken_encoding(spec))


# ----------------------------------------------------------------------------------------------------
# CLI: the keys of `train` (`python tokenizer.py train -h` lists them with these comments)

TRAIN_DEFAULTS = dict(
    input=[],  # comma-separated files, folders or globs: .txt (a document per line), .jsonl[.gz|.zst], .parquet
    vocab_size=0,  # [0, inf) final vocabulary size, the 23 whitespace tokens included (GPT-SW3: 64000)
    out="",  # output prefix: writes OUT.model and OUT.vocab
    spm_args={},  # other SentencePieceTrainer.train flags, e.g. --spm_args="{'seed_sentencepiece_size': 10**5}"
    **TRAIN_OPTIONS,
    **GPTSW3_SETTINGS,
)
def check_out_prefix(out: str) -> None:
    """OUT.model and OUT.vocab can be written: checked before training (which can take hours) by creating a
    temporary file in the nearest existing folder on the path. Raises ValueError naming --out and the fix."""
    for f in (Path(out + ".model"), Path(out + ".vocab")):
        if f.is_dir():
            raise ValueError(f"--out={out}: {f} is a folder, and training writes that file: choose another --out")
    existing = next(p for p in Path(out).absolute().parents if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out={out}: {existing} is a file, not a folder: choose another --out")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise ValueError(f"--out={out}: cannot write in {existing} ({e.strerror or e}): choose a writable "
                         f"--out") from None


def main(argv: list[str] | None = None) -> None:
    """`python tokenizer.py train [config.py ...] [--key=value ...]` (evaluate and analyze: tokeval.py)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("evaluate", "analyze"):
        raise ValueError(f"{argv[0]} is in tokeval.py: python tokeval.py {argv[0]} -h lists its keys")
    command, cfg = configure_command({"train": TRAIN_DEFAULTS}, argv, __file__)
    missing = [k for k in ("input", "vocab_size", "out") if not cfg[k]]
    if missing:
        raise ValueError(f"{command}: give " + " ".join(f"--{k}=..." for k in missing) +
                         f" (python tokenizer.py {command} -h lists the keys)")
    cfg = dict(cfg)
    input_files, vocab_size, out, spm_args = (cfg.pop(k) for k in ("input", "vocab_size", "out", "spm_args"))
    clash = sorted(set(spm_args) & (set(TRAIN_DEFAULTS) | {"model_prefix", "sentence_iterator"}))
    if clash:
        raise ValueError(f"--spm_args sets {clash}: set a key of this script with --KEY=VALUE; model_prefix "
                         f"is --out")
    check_out_prefix(out)
    train_tokenizer(input_files, vocab_size, out, **cfg, **spm_args)


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `tokenizer.py: problem: fix`, exit 1
    run_cli("tokenizer.py", main)
