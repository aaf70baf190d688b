"""
Tokenizer evaluation and vocabulary analysis as in the GPT-SW3 tokenizer paper (Stollenwerk 2023, "Training and
Evaluation of a Multilingual Tokenizer for GPT-SW3", arXiv:2304.14780), whose definitions come from the authors'
code (github.com/flxst/gpt-sw3-tokenizer, files named below): per-language unknown rate, closeness to character
level (ctcl), fertility and proportion of continued words; token classes, piece lengths, vocabulary-size curves
by pruning merges, and the overlap of a multilingual vocabulary with monolingual ones, with their commands
(tokenizer.py holds the tokenizers and `train`).

    python tokeval.py evaluate --tokenizer=data/tok/multi.model,gpt2 --data=sv=sv.txt,en=en.txt --out=out/ev
    python tokeval.py analyze --tokenizer=data/tok/multi.model --out=out/an --data=sv=sv.txt --prune_sizes=800,1000
"""
import csv
import re
import string
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import sentencepiece as spm

from configurator import configure_command
from documents import read_documents
from tokenizer import Tokenizer, get_tokenizer, load_model_proto

# ----------------------------------------------------------------------------------------------------
# evaluation: GPT-SW3 metrics per language (gpt-sw3-tokenizer src/evaluation/evaluate.py)

_PUNCTUATION = str.maketrans("", "", string.punctuation)  # ASCII only: – “ ” « » are kept (evaluate.py)


def _word_initial(tok: Tokenizer) -> np.ndarray:
    """(V,) bool: piece starts a word: '▁' for SentencePiece, 'Ġ' (leading space byte) for byte-level BPE."""
    mark = "▁" if tok.sp is not None else "Ġ"
    return np.array([p.startswith(mark) for p in tok.pieces()], dtype=bool)


def evaluation_metrics(tok: Tokenizer, docs: list[str]) -> dict[str, float]:
    """Corpus-level (micro) metrics of the authors' evaluate.py over documents of one language:
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
    # extra (not in evaluate.py): tokens per whitespace-separated word, the same denominator for every tokenizer.
    # the authors' N_words depends on the tokenizer: byte-level BPE has no dummy prefix, so the first word of each
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
            raise ValueError(f"--data expects comma-separated LANG=FILE pairs (e.g. --data=sv=sv.txt,en=en.txt), "
                             f"got {p!r}")
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
    """One row per (tokenizer, language) with the evaluation_metrics."""
    rows = []
    for spec in tokenizers:
        tok = get_tokenizer(spec)
        for lang, docs in data.items():
            rows.append(dict(tokenizer=spec, language=lang, **evaluation_metrics(tok, docs)))
    return rows


# ----------------------------------------------------------------------------------------------------
# vocabulary analysis (gpt-sw3-tokenizer src/analysis.py, src/evaluation/prune_vocab_size.py, notebooks/plots.py)

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
    """Vocabulary-size effect without retraining (prune_vocab_size.py): overwrite the V - vocab_size
    lowest-priority merges (those just before and including the last regular merge id) with never-matching
    strings."""
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
    """As the authors' notebooks/plots.py get_intersections: overlap_abs = |set(multi[:V1]) & set(mono[:V2])|
    with V2 = len(mono), overlap_rel = overlap_abs / |set(multi[:V2])|. 'Ġ' is mapped to '▁' so byte-level
    vocabularies compare."""
    multi, mono = [p.replace("Ġ", "▁") for p in multi], set(p.replace("Ġ", "▁") for p in mono)
    v2, denom = len(mono), len(set(multi[:len(mono)]))
    return [dict(v1=v1, v2=v2, overlap_abs=len(set(multi[:v1]) & mono),
                 overlap_rel=len(set(multi[:v1]) & mono) / denom) for v1 in sizes]


SAMPLE_SENTENCES = {  # the authors' qualitative examples (src/analysis.py)
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
# the commands: the keys of each (`python tokeval.py COMMAND -h` lists them with these comments)

EVALUATE_DEFAULTS = dict(
    tokenizer=[],  # comma-separated: PREFIX.model | FILE.tiktoken | gpt2 | r50k_base | cl100k_base | o200k_base
    data=[],  # comma-separated LANG=FILE pairs (FILE: file, folder or glob; .txt = a document per line)
    out="",  # writes OUT/metrics.csv and OUT/metrics.md
    on_bad_input="stop",  # bad records (not UTF-8, NUL, lone surrogate, bad JSON): 'stop' | 'skip' | 'replace'
    text_field="text",  # the text field of .jsonl* records and the text column of .parquet files
)
ANALYZE_DEFAULTS = dict(
    tokenizer="",  # the (multilingual) tokenizer to analyze
    out="",  # output folder: analysis.md, CSV tables and PNG plots
    data=[],  # comma-separated LANG=FILE pairs for the pruning curves
    prune_sizes=[],  # [1, inf) comma-separated vocabulary sizes to prune merges to (needs --data and a .model)
    mono=[],  # comma-separated LANG=MODEL monolingual tokenizers for the vocabulary overlap
    overlap_sizes=[],  # [1, inf) comma-separated V1 values for the overlap ([] = 8 steps up to the vocabulary size)
    on_bad_input="stop",  # bad records (not UTF-8, NUL, lone surrogate, bad JSON): 'stop' | 'skip' | 'replace'
    text_field="text",  # the text field of .jsonl* records and the text column of .parquet files
)


def evaluate_command(cfg: dict) -> None:
    """`tokeval.py evaluate`: cfg["tokenizer"] x cfg["data"] languages -> OUT/metrics.csv, OUT/metrics.md."""
    data = _load_languages(cfg["data"], cfg["on_bad_input"], cfg["text_field"])
    print(_write_table(evaluate(cfg["tokenizer"], data), Path(cfg["out"]), "metrics", "Tokenizer evaluation"))


def analyze_command(cfg: dict) -> None:
    """`tokeval.py analyze`: the analysis of cfg["tokenizer"] -> OUT/analysis.md, CSV and PNG files."""
    sizes = {k: _ints(k, cfg[k]) for k in ("prune_sizes", "overlap_sizes")}
    if sizes["prune_sizes"] and not cfg["data"]:
        raise ValueError("--prune_sizes needs --data=LANG=FILE[,...] to compute the metrics on")
    data = _load_languages(cfg["data"], cfg["on_bad_input"], cfg["text_field"])
    print(analyze(cfg["tokenizer"], Path(cfg["out"]), data, sizes["prune_sizes"], _lang_files(cfg["mono"]),
                  sizes["overlap_sizes"]))


def _ints(key: str, values: list) -> list[int]:
    """A list key of sizes as ints: the command line gives ints (`--key=800,1000`), a config file may give
    digit strings (['800']); anything else is an error naming the key."""
    bad = [v for v in values if isinstance(v, bool) or not (isinstance(v, int) or str(v).strip().isdigit())]
    if bad:
        raise ValueError(f"--{key} takes comma-separated integers (e.g. --{key}=800,1000), got {bad}")
    return [int(v) for v in values]


def main(argv: list[str] | None = None) -> None:
    """`python tokeval.py evaluate|analyze [config.py ...] [--key=value ...]`."""
    command, cfg = configure_command({"evaluate": EVALUATE_DEFAULTS, "analyze": ANALYZE_DEFAULTS},
                                     sys.argv[1:] if argv is None else argv, __file__)
    missing = [k for k in ("tokenizer", "out", "data") if not cfg[k] and not (command == "analyze" and k == "data")]
    if missing:
        raise ValueError(f"{command}: give " + " ".join(f"--{k}=..." for k in missing) +
                         f" (python tokeval.py {command} -h lists the keys)")
    (evaluate_command if command == "evaluate" else analyze_command)(cfg)


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `tokeval.py: problem: fix`, exit 1
    run_cli("tokeval.py", main)
