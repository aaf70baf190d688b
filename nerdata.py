"""
NER data files: CoNLL (columns detected from the content), pretokenized CSV and standard JSONL with char
spans, read into word-level examples, with seeded splits and subsets. Words are split with bert.pretokenize
(exact char offsets); tag schemes and scores are in nertags.py, the modelling in ner.py.

Conventions follow nerblackbox (nerblackbox/modules/datasets/formatter/*.py, docs/docs/data.md). Unlike
nerblackbox, nothing is dropped silently: every repair is counted in an `Issues` object that ends up in the
run report.
"""
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from nertags import detect_scheme, entities, entity_types, split_tag, to_bio


@dataclass
class Example:
    """One sentence or document at word level. `text`/`spans` are set when it came from char-span data."""
    words: list[str]
    tags: list[str]
    text: str | None = None
    spans: list[tuple[int, int]] | None = None  # char offsets of each word in `text`
    id: str | None = None
    lines: list[int] | None = None  # file line of each word (CoNLL), for messages


class Issues:
    """Counted warnings: problems we repaired or skipped, with up to 5 locations per kind."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.where: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        if len(self.where[kind]) < 5:
            self.where[kind].append(where)

    def summary(self) -> dict:
        return {k: {"count": n, "examples": self.where[k]} for k, n in sorted(self.counts.items())}

    def __str__(self) -> str:
        return "\n".join(f"warning: {n} x {k} (e.g. {'; '.join(self.where[k][:2])})"
                         for k, n in sorted(self.counts.items()))



# -----------------------------------------------------------------------------
# CoNLL: the token and tag columns are detected from the content, never assumed

OUTSIDE = ("O", "0")  # the outside tag; '0' (digit zero) in the Swedish NER corpus
MISC_KEYS = ("NE", "name")  # CoNLL-U MISC keys holding the NER tag (NorNE writes name=B-PER)
CHUNK_TYPES = {"NP", "VP", "PP", "ADJP", "ADVP", "SBAR", "PRT", "CONJP", "INTJ", "LST", "UCP"}  # CoNLL-2000
MAX_IO_TYPES = 50  # an IO tag column is a small label set; a word column is not
_TYPE = re.compile(r"[^\W\d_][\w.:/+&'-]*")  # an entity type: starts with a letter (PER, creative-work, GPE_LOC)
_ID = re.compile(r"\d+(?:[-.]\d+)?")  # CoNLL-U word ids: 7, 7-8 (multiword token), 7.1 (empty node)


def _split_line(line: str) -> list[str]:
    """TAB-separated columns, or whitespace-separated when the line has no TAB (both occur in one file)."""
    return [c.strip() for c in line.split("\t")] if "\t" in line else line.split()


def _conll_records(path) -> list[tuple]:
    """('break',) for a blank / lone-TAB / -DOCSTART- line, ('hash', cols, lineno, tabbed) for a line starting
    with '#' (a comment or a '#' token, decided once the layout is known), ('row', cols, lineno, tabbed) otherwise.
    utf-8-sig drops a BOM; universal newlines read Windows (CRLF) files."""
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                out.append(("break",))
            else:
                out.append(("hash" if line.startswith("#") else "row", _split_line(line), lineno, "\t" in line))
    return out


def _misc_tag(value: str, key: str) -> str:
    """The tag under `key` in a CoNLL-U MISC value (k=v|k=v); no key (or '_') means outside."""
    for part in value.split("|"):
        k, _, v = part.partition("=")
        if k == key:
            return v
    return "O"


def _tag_fit(values: list[str]) -> tuple[str | None, str, str | None]:
    """('prefixed' | 'io', types, None) when the values are NER tags, else (None, why not, the offending value)."""
    counts = Counter(values)
    outside = [v for v in counts if v in OUTSIDE]
    prefixed = {v for v in counts if len(v) > 2 and v[1] == "-" and v[0] in "BIESLU" and _TYPE.fullmatch(v[2:])}
    rest = [v for v in counts if v not in OUTSIDE and v not in prefixed]
    if not rest and (prefixed or outside == ["O"]):
        if "0" in counts:
            return None, "mixes the outside tag '0' with B-/I- prefixes", "0"
        return "prefixed", ", ".join(sorted({v[2:] for v in prefixed})), None
    if len(rest) > MAX_IO_TYPES:
        return None, f"{len(counts)} distinct values: words, not a small label set", None
    if prefixed:
        return None, f"{rest[0]!r} is neither O nor a prefixed tag like B-{sorted(prefixed)[0][2:]}", rest[0]
    bad = [v for v in rest if not _TYPE.fullmatch(v)]
    if bad:
        return None, f"{bad[0]!r} is not a tag (placeholders '-'/'_', numbers and punctuation are not labels)", bad[0]
    if len(outside) != 1:
        return None, "no outside tag (O or 0)" if not outside else "both O and 0", None
    return "io", ", ".join(sorted(rest)), None


def _is_id_column(sentences: list[list[list[str]]], j: int) -> bool:
    """Integer ids counting up by one within each sentence (1, 2, 3 ... as in CoNLL-U, UNER)."""
    seen = False
    for sent in sentences:
        ids = [r[j] for r in sent]
        if not all(_ID.fullmatch(x) for x in ids):
            return False
        nums = [int(x) for x in ids if x.isdigit()]
        if any(b != a + 1 for a, b in zip(nums, nums[1:])):
            return False
        seen = seen or bool(nums)
    return seen


def _column_tags(sentences, j: int) -> tuple[list[str], str | None]:
    """The values of column j as tags, and the MISC key they came from (None for a plain tag column)."""
    values = [r[j] for s in sentences for r in s]
    if all(v == "_" or "=" in v for v in values):  # a CoNLL-U MISC column
        keys = {p.partition("=")[0] for v in values for p in v.split("|")}
        key = next((k for k in MISC_KEYS if k in keys), None)
        if key is not None:
            return [_misc_tag(v, key) for v in values], key
    return values, None


def _column_report(sentences, ncols: int, notes: dict[int, str]) -> str:
    lines = []
    for j in range(ncols):
        firsts = list(dict.fromkeys(r[j] for s in sentences for r in s if len(r) > j))[:6]
        lines.append(f"  column {j} (--tag_column={j} / --token_column={j}): {', '.join(map(repr, firsts))}"
                     + (f" -- {notes[j]}" if j in notes else ""))
    return "\n".join(lines)


def detect_conll_layout(records: list[tuple], path, token_column: int = -1, tag_column: int = -1) -> dict:
    """Find the token and tag columns of a CoNLL-style file from its content (ids are not words; a tag column
    holds O / B-X / I-X / E-X / S-X / L-X / U-X or the IO labels of a small set; a CoNLL-U MISC column may hold
    NE= or name= tags). Explicit columns (>= 0) win, but a tag column whose values are not tags is refused.
    Raises ValueError listing every column's first values and the flags that select them."""
    rows = [r[1] for r in records if r[0] == "row"]
    if not rows:
        raise ValueError(f"{path}: no token lines found (only blank, -DOCSTART- or # lines)")
    ncols = Counter(len(r) for r in rows).most_common(1)[0][0]
    sentences, cur = [], []
    for r in records:  # a space-separated line with more columns holds a token with spaces: its columns are shifted
        if r[0] == "row" and (len(r[1]) == ncols or len(r[1]) > ncols and r[3]):
            cur.append(r[1])
        elif r[0] == "break" and cur:
            sentences.append(cur)
            cur = []
    sentences += [cur] if cur else []
    if ncols < 2:
        raise ValueError(f"{path}: lines have {ncols} column; a CoNLL file needs a token and a tag column "
                         f"(TAB- or space-separated)")
    id_cols = {j for j in range(ncols) if _is_id_column(sentences, j)}
    notes, fits = {j: "integer ids counting 1, 2, 3 per sentence: not words, not tags" for j in id_cols}, {}
    for j in range(ncols):
        if j in id_cols:
            continue
        values, key = _column_tags(sentences, j)
        kind, info, bad = _tag_fit(values)
        if kind is None:
            at = next((r[2] for r in records if r[0] == "row" and len(r[1]) > j and r[1][j] == bad), None)
            notes[j] = f"not tags: {info}" + (f" ({path}:{at})" if at else "")
        elif kind == "prefixed" and info and set(info.split(", ")) <= CHUNK_TYPES:
            fits[j] = (kind, info, key)  # usable when asked for, never chosen on its own
            notes[j] = f"syntactic chunks ({info}), not entities; not chosen unless --tag_column={j}"
        else:
            fits[j] = (kind, info, key)
            notes[j] = f"NER tags ({'IO' if kind == 'io' else 'prefixed'}: {info or 'no entities'})" + \
                (f" under the MISC key {key}=" if key else "")
    flags = "choose the columns with --token_column=N --tag_column=N (0-based)"
    if tag_column >= 0:
        if tag_column >= ncols:
            raise ValueError(f"{path}: --tag_column={tag_column} but the lines have {ncols} columns:\n"
                             f"{_column_report(sentences, ncols, notes)}\n{flags}")
        if tag_column not in fits:
            raise ValueError(f"{path}: --tag_column={tag_column} does not hold NER tags ({notes[tag_column]}); "
                             f"training on it would learn nonsense. The columns:\n"
                             f"{_column_report(sentences, ncols, notes)}\n{flags}")
        tag = tag_column
    else:
        # prefixed tags before IO labels, then the leftmost (NER after CoNLL-2003's chunks, GermEval's outer
        # before inner); IO columns by fewest labels (a word column of a tiny file can pass as a label set)
        candidates = sorted((j for j in fits if j != token_column and "syntactic" not in notes[j]),
                            key=lambda j: (fits[j][0] != "prefixed", 0 if fits[j][0] == "prefixed" else
                                           len(fits[j][1].split(", ")), j))
        if not candidates:
            raise ValueError(f"{path}: no column holds NER tags (O, B-X/I-X/E-X/S-X/L-X/U-X, or the IO labels of "
                             f"a small label set). The columns:\n{_column_report(sentences, ncols, notes)}\n{flags}")
        tag = candidates[0]  # the leftmost: GermEval-style outer before inner, NER after CoNLL-2003's chunks
    if token_column >= 0:
        if token_column >= ncols or token_column == tag:
            raise ValueError(f"{path}: --token_column={token_column} is not a word column (the tag column is "
                             f"{tag}, the lines have {ncols} columns):\n{_column_report(sentences, ncols, notes)}")
        token = token_column
    else:
        words = [j for j in range(ncols) if j not in id_cols and j != tag
                 and not all(r[j] in ("-", "_") for s in sentences for r in s)]
        if not words:
            raise ValueError(f"{path}: no column holds the words. The columns:\n"
                             f"{_column_report(sentences, ncols, notes)}\n{flags}")
        token = words[0]
    kind, info, key = fits[tag]
    return dict(file=str(path), format="conll", columns=ncols, token_column=token, tag_column=tag,
                misc_key=key, id_column=min(id_cols) if id_cols else None,
                other_tag_columns=[j for j in fits if j != tag and "syntactic" not in notes[j]], explicit=dict(
                    token_column=token_column >= 0, tag_column=tag_column >= 0))


def conll_layout_or_none(path: str | Path) -> dict | None:
    """The layout of a file that is CoNLL (a token column and a column of NER tags: O, B-X, I-X, ...), or None
    (plain text: a line of words has no such column). For a reader of text that must not take a CoNLL file
    as text. A column of IO labels counts only in a file whose every token line has a TAB."""
    records = _conll_records(path)
    try:
        layout = detect_conll_layout(records, path)
    except ValueError:
        return None
    tag = layout["tag_column"]
    prefixed = all(r[1][tag] in OUTSIDE or r[1][tag][1:2] == "-" for r in records if r[0] == "row"
                   and len(r[1]) > tag)
    tabbed = all(r[3] for r in records if r[0] == "row")
    return layout if prefixed or tabbed else None


def read_conll(path: str | Path, token_column: int = -1, tag_column: int = -1,
               issues: Issues | None = None) -> tuple[list["Example"], dict]:
    """CoNLL-style file -> (examples, layout). Columns: TAB-separated, or whitespace when a line has no TAB. A
    blank or lone-TAB line ends a sentence; `-DOCSTART-` lines and `#` comment lines are skipped (a `#` line that
    has the file's columns and a tag in the tag column is a '#' token); CoNLL-U multiword-token (1-2) and
    empty-node (1.1) lines are skipped; the outside tag '0' is read as 'O'. Columns (0-based) are detected
    (detect_conll_layout) unless given (>= 0)."""
    issues = issues if issues is not None else Issues()
    records = _conll_records(path)
    layout = detect_conll_layout(records, path, token_column, tag_column)
    tok, tag, key, idc = layout["token_column"], layout["tag_column"], layout["misc_key"], layout["id_column"]
    need, ncols = max(tok, tag) + 1, layout["columns"]

    def tag_of(cols):
        t = _misc_tag(cols[tag], key) if key else cols[tag]
        return "O" if t == "0" else t

    valid = {tag_of(r[1]) for r in records if r[0] == "row" and len(r[1]) >= need} | {"O"}
    examples, words, tags, lines = [], [], [], []
    skipped = Counter()

    def flush():
        if words:
            examples.append(Example(list(words), list(tags), lines=list(lines)))
            words.clear(), tags.clear(), lines.clear()

    for rec in records:
        if rec[0] == "break":
            flush()
            continue
        kind, cols, lineno, tabbed = rec
        if kind == "hash" and (idc is not None or not words and (len(cols) != ncols or tag_of(cols) not in valid)):
            # '# sent_id = 3', '# text = ...'; with an id column a '#' token's line starts with its id, and in a
            # 2-column file '#<TAB>O' (the file's columns, a tag where the tag goes) is a '#' token
            skipped["comment"] += 1
            continue
        if len(cols) > ncols and not tabbed:  # 'New York NNP I-NP I-LOC': the token holds a space
            extra = len(cols) - ncols
            cols = cols[:tok] + [" ".join(cols[tok:tok + extra + 1])] + cols[tok + extra + 1:]
            issues.add("space-separated line with extra columns: read as a token with spaces", f"{path}:{lineno}: "
                       f"token {cols[tok]!r}")
        if len(cols) < need:
            issues.add("line with too few columns, skipped", f"{path}:{lineno}: {' '.join(cols)!r} has "
                       f"{len(cols)} column(s), need {need} (token column {tok}, tag column {tag})")
            continue
        if idc is not None and not cols[idc].isdigit():
            skipped["multiword"] += 1  # CoNLL-U 1-2 / 1.1 lines: the words are on their own lines
            continue
        words.append(cols[tok])
        tags.append(tag_of(cols))
        lines.append(lineno)
    flush()
    _check_tags(examples, path)
    layout["comment_lines"], layout["multiword_lines_skipped"] = skipped["comment"], skipped["multiword"]
    return examples, layout


def write_conll(examples: list[Example], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write("".join(f"{w}\t{t}\n" for w, t in zip(ex.words, ex.tags)) + "\n")


def _check_tags(examples: list[Example], path) -> None:
    """A malformed tag is an error naming the file and the sentence."""
    for i, ex in enumerate(examples):
        for w, t in zip(ex.words, ex.tags):
            try:
                split_tag(t)
            except ValueError as e:
                raise ValueError(f"{path}: sentence {i + 1}, word {w!r}: {e}; if this column is not the tags, "
                                 f"choose the column with --tag_column") from None


# -----------------------------------------------------------------------------
# pretokenized CSV: one sample per line, `tags<TAB>tokens`, each side space-separated (nerblackbox)

def read_csv(path: str | Path, issues: Issues | None = None) -> list[Example]:
    issues = issues if issues is not None else Issues()
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                issues.add("empty line in CSV, skipped", f"{path}:{lineno}")
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 2 TAB-separated columns `tags<TAB>tokens`, "
                                 f"got {len(parts)}")
            tags, words = parts[0].split(), parts[1].split()
            if len(tags) != len(words):
                raise ValueError(f"{path}:{lineno}: {len(tags)} tags but {len(words)} tokens; "
                                 f"each token needs exactly one tag")
            examples.append(Example(words, tags))
    _check_tags(examples, path)
    return examples


def write_csv(examples: list[Example], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(" ".join(ex.tags) + "\t" + " ".join(ex.words) + "\n")


# -----------------------------------------------------------------------------
# standard JSONL: {"id"?, "text", "tags": [{"char_start", "char_end", "token", "tag"}]} (team contract)

def read_json_lines(path: str | Path, keep_blank: bool = False) -> list[dict | None]:
    """Every non-blank line of a JSONL file as a JSON object (standard documents, Doccano lines, merge outputs).
    keep_blank: a blank line gives None, so that list index + 1 is the line number. A line that is not a JSON
    object raises ValueError naming FILE:LINE."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                if keep_blank:
                    docs.append(None)
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}): write one JSON document per "
                                 f"line") from None
            if not isinstance(doc, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object, not {type(doc).__name__}")
            docs.append(doc)
    return docs


def read_jsonl(path: str | Path, keep_blank: bool = False) -> list[dict | None]:
    """Read and validate standard documents: offsets must be ints inside the text (error with file:line).
    keep_blank: a blank line gives None, so that list index + 1 is the line number."""
    docs = read_json_lines(path, keep_blank=True)
    for lineno, doc in enumerate(docs, 1):
        if doc is None:
            continue
        if not isinstance(doc.get("text"), str):
            raise ValueError(f"{path}:{lineno}: each line must be an object with a string 'text'")
        for tag in doc.setdefault("tags", []):
            s, e = tag.get("char_start"), tag.get("char_end")
            if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(doc["text"])):
                raise ValueError(f"{path}:{lineno}: span {tag} is outside the text (length "
                                 f"{len(doc['text'])}) or empty; char_start/char_end must be ints, 0 <= start "
                                 f"< end <= len(text)")
            if "tag" not in tag:
                raise ValueError(f"{path}:{lineno}: span {tag} has no 'tag' (the label, e.g. 'PER')")
    return docs if keep_blank else [d for d in docs if d is not None]


def write_jsonl(docs: list[dict], path: str | Path) -> None:
    """One JSON object per line (UTF-8, characters as they are); the parent folder is made if missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)


def doc_to_example(doc: dict, issues: Issues | None = None, where: str = "") -> Example:
    """Char spans -> BIO word tags. A span that cuts a word is widened to whole words, overlapping spans keep the
    first; both are counted in `issues` (nerblackbox drops both silently, data_preprocessor.py)."""
    issues = issues if issues is not None else Issues()
    text = doc["text"]
    from bert import pretokenize  # bert.py imports torch; annotate.py reads JSONL here without it
    spans = pretokenize(text)
    tags = ["O"] * len(spans)
    taken_until = -1
    for tag in sorted(doc.get("tags", []), key=lambda t: (t["char_start"], -t["char_end"])):
        s, e, label = tag["char_start"], tag["char_end"], tag["tag"]
        if text[s:e] != tag.get("token", text[s:e]):
            issues.add("span token differs from text[char_start:char_end]", f"{where} {tag}")
        if s < taken_until:
            issues.add("overlapping span dropped", f"{where} {tag}")
            continue
        covered = [i for i, (ws, we) in enumerate(spans) if ws < e and we > s]
        if not covered:
            issues.add("span covers no word (whitespace only), dropped", f"{where} {tag}")
            continue
        if spans[covered[0]][0] != s or spans[covered[-1]][1] != e:
            issues.add("span not on word boundaries, widened to whole words", f"{where} {tag} -> "
                       f"{text[spans[covered[0]][0]:spans[covered[-1]][1]]!r}")
        if any(tags[i] != "O" for i in covered):
            issues.add("overlapping span dropped", f"{where} {tag}")
            continue
        for k, i in enumerate(covered):
            tags[i] = ("B-" if k == 0 else "I-") + label
        taken_until = e
    return Example([text[s:e] for s, e in spans], tags, text, spans, doc.get("id"))


def example_to_doc(ex: Example) -> dict:
    """Word tags (any scheme given as BIO) -> a standard JSONL document. Words without text are joined by
    single spaces."""
    text, spans = ex.text, ex.spans
    if text is None:
        text, spans, pos = " ".join(ex.words), [], 0
        for w in ex.words:
            spans.append((pos, pos + len(w)))
            pos += len(w) + 1
    tags = [{"char_start": spans[a][0], "char_end": spans[b - 1][1], "token": text[spans[a][0]:spans[b - 1][1]],
             "tag": typ} for typ, a, b in entities(ex.tags)]
    return ({"id": ex.id} if ex.id is not None else {}) | {"text": text, "tags": tags}


# -----------------------------------------------------------------------------
# any file -> examples in one scheme

def detect_format(path: str | Path) -> str:
    """conll | csv | jsonl, from the extension or else the first non-blank line."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    with open(path, encoding="utf-8") as f:
        first = next((ln for ln in f if ln.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    parts = first.rstrip("\n").split("\t")
    if len(parts) == 2 and len(parts[0].split()) == len(parts[1].split()) > 1:
        return "csv"
    return "conll"


def read_data(path: str | Path, fmt: str = "auto", token_column: int = -1, tag_column: int = -1,
              issues: Issues | None = None, repair_bio: bool = False) -> tuple[list[Example], dict]:
    """Read any supported file into word-level examples (tags as in the file) and its layout: format, columns
    (CoNLL), scheme, entity types and counts, for printing before training and for the run's config.json.
    BIO files: an I-X that follows neither B-X nor I-X is counted in `issues` with file:line (strict evaluation
    would drop that gold entity), and turned into B-X when repair_bio (nerblackbox does so when formatting,
    formatter/base_formatter.py::_convert_iob1_to_iob2)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"data file {path} not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    issues = issues if issues is not None else Issues()
    if fmt == "conll":
        examples, layout = read_conll(path, token_column, tag_column, issues)
    elif fmt == "csv":
        examples, layout = read_csv(path, issues), {"file": str(path), "format": "csv"}
    elif fmt == "jsonl":
        examples = [doc_to_example(d, issues, f"{path}:doc {i + 1}") for i, d in enumerate(read_jsonl(path))]
        layout = {"file": str(path), "format": "jsonl"}
    else:
        raise ValueError(f"unknown format {fmt!r}: choose auto, conll, csv or jsonl")
    empty = [i for i, ex in enumerate(examples) if not ex.words]
    for i in empty:
        issues.add("empty sentence/document skipped", f"{path}: item {i + 1}")
    examples = [ex for ex in examples if ex.words]
    if not examples:
        raise ValueError(f"{path}: no sentences found (format {fmt}); check the file and --format")
    scheme = detect_scheme([ex.tags for ex in examples])
    if scheme == "bio":
        _stray_inside(examples, path, issues, repair_bio)
    types = sorted(entity_types(examples))
    layout |= dict(scheme=scheme, labels=types, sentences=len(examples), tokens=sum(len(e.words) for e in examples),
                   entities=sum(len(entities(to_bio(e.tags, scheme))) for e in examples))
    return examples, layout


def _stray_inside(examples: list[Example], path, issues: Issues, repair: bool) -> None:
    """Count (and with repair, fix to B-X) every I-X not preceded by B-X or I-X in BIO tags."""
    kind = "I-X after neither B-X nor I-X in BIO gold, " + ("repaired to B-X" if repair else
                                                            "kept (strict scores drop it; --repair_bio=True fixes)")
    for k, ex in enumerate(examples):
        for i, t in enumerate(ex.tags):
            p, typ = split_tag(t)
            if p == "I" and (i == 0 or split_tag(ex.tags[i - 1])[1] != typ):
                where = f"{path}:{ex.lines[i]}" if ex.lines else f"{path}: item {k + 1}, word {i + 1}"
                issues.add(kind, f"{where}: {ex.words[i]!r} {t} after {ex.tags[i - 1] if i else 'sentence start'}")
                if repair:
                    ex.tags[i] = f"B-{typ}"


def read_examples(path: str | Path, fmt: str = "auto", token_column: int = -1, tag_column: int = -1,
                  issues: Issues | None = None) -> list[Example]:
    """read_data without the layout."""
    return read_data(path, fmt, token_column, tag_column, issues)[0]


def layout_text(name: str, layout: dict) -> str:
    """One line saying how a file was read: columns, scheme, labels, counts."""
    cols = ""
    if layout["format"] == "conll":
        tag = f"column {layout['tag_column']}" + (f" (MISC {layout['misc_key']}=)" if layout["misc_key"] else "")
        how = {k: "given" if v else "detected" for k, v in layout["explicit"].items()}
        cols = (f", {layout['columns']} columns: words = column {layout['token_column']} ({how['token_column']}), "
                f"tags = {tag} ({how['tag_column']})")
        if layout["id_column"] is not None:
            cols += f", ids = column {layout['id_column']}"
        if layout["other_tag_columns"]:
            cols += f"; columns {layout['other_tag_columns']} also hold tags (select with --tag_column)"
    return (f"{name}: {layout['file']} ({layout['format']}{cols}); scheme {layout['scheme']}, "
            f"{len(layout['labels'])} types [{', '.join(layout['labels'])}]; {layout['sentences']} sentences, "
            f"{layout['tokens']} tokens, {layout['entities']} entities")


def write_examples(examples: list[Example], path: str | Path, fmt: str) -> None:
    if fmt == "jsonl":
        write_jsonl([example_to_doc(ex) for ex in examples], path)
    elif fmt == "csv":
        write_csv(examples, path)
    else:
        write_conll(examples, path)


def split_examples(examples: list, fractions: tuple[float, ...], seed: int) -> list[list]:
    """Seeded shuffle, then consecutive slices of the given fractions (the last slice takes the rest)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    out, start = [], 0
    for k, frac in enumerate(fractions):
        end = len(order) if k == len(fractions) - 1 else start + round(frac * len(order))
        out.append([examples[i] for i in order[start:end]])
        start = end
    return out


def subsample(examples: list, fraction: float, seed: int, how: str = "first") -> list:
    """A `fraction` of the examples for dataset-size studies (Stollenwerk 2022, arXiv:2202.02617).
    how='first': the first max(1, int(fraction * N)), as the paper's code (nerblackbox _prune_examples);
    how='random': a seeded sample of max(1, round(fraction * N))."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(examples)
    if how == "first":
        return list(examples[:max(1, int(fraction * len(examples)))])
    if how != "random":
        raise ValueError(f"subset={how!r}: choose first or random")
    n = max(1, round(fraction * len(examples)))
    return split_examples(examples, (n / len(examples), 1 - n / len(examples)), seed)[0]
