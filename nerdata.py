"""
NER data: file formats (CoNLL, pretokenized CSV, standard JSONL with char spans), annotation schemes
(IO, BIO = IOB2, IOB1 input, BILOU / IOBES) and seeded splits. Split off from ner.py, which does the
modelling. Words are split with bert.pretokenize (exact char offsets).

Conventions follow nerblackbox (../shared/papers/ner.md §1.3-§1.5). Unlike nerblackbox, nothing is
dropped silently (§6.1): every repair is counted in an `Issues` object that ends up in the run report.
"""
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bert import pretokenize


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
# schemes (ner.md §1.5)

def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', None); 'PER' (IO scheme) -> ('', 'PER')."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BILUES":
        return tag[0], tag[2:]
    if tag[:2] in {f"{p}-" for p in "BILUES"} or tag in tuple("BILUES"):
        raise ValueError(f"tag {tag!r} has a scheme prefix but no entity type; write e.g. 'B-PER'")
    return "", tag


def detect_scheme(seqs: list[list[str]]) -> str:
    """io | bio | iob1 | bilou | iobes from the tags (ner.md §1.3 auto-detection, plus IOB1/IOBES)."""
    prefixes = {split_tag(t)[0] for s in seqs for t in s} - {"O"}
    if "" in prefixes:
        if prefixes != {""}:
            raise ValueError(f"tags mix prefixed (B-/I-/...) and plain (IO) labels: prefixes {sorted(prefixes)}; "
                             f"use one scheme per file")
        return "io"
    if prefixes & {"L", "U"}:
        if prefixes & {"E", "S"}:
            raise ValueError("tags mix BILOU (L-/U-) and IOBES (E-/S-) prefixes; use one scheme")
        return "bilou"
    if prefixes & {"E", "S"}:
        return "iobes"
    return "iob1" if _looks_iob1(seqs) else "bio"


def _looks_iob1(seqs: list[list[str]]) -> bool:
    """IOB1: entities start with I-; B- only separates two adjacent entities of the same type."""
    i_starts, b_after_same = 0, True
    for s in seqs:
        prev = (None, None)
        for t in s:
            p, typ = split_tag(t)
            if p == "I" and prev[1] != typ:
                i_starts += 1
            if p == "B" and prev[1] != typ:
                b_after_same = False
            prev = (p, typ)
    return i_starts > 0 and b_after_same


def to_bio(tags: list[str], scheme: str) -> list[str]:
    """Any input scheme -> BIO (IOB2)."""
    if scheme == "io":  # a run of equal labels is one entity: adjacent same-type entities merge (§1.5)
        return ["O" if t == "O" else ("I-" if i and tags[i - 1] == t else "B-") + t for i, t in enumerate(tags)]
    if scheme == "iob1":  # an I-X that does not follow I-X or B-X starts an entity (§1.3)
        out = []
        for i, t in enumerate(tags):
            p, typ = split_tag(t)
            prev_typ = split_tag(tags[i - 1])[1] if i else None
            out.append(f"B-{typ}" if p == "I" and prev_typ != typ else t)
        return out
    if scheme in ("bilou", "iobes"):  # U/S -> B, L/E -> I
        return [{"U": "B", "S": "B", "L": "I", "E": "I"}.get(t[0], t[0]) + t[1:] if t != "O" else t for t in tags]
    return list(tags)


def bio_to_bilou(tags: list[str]) -> list[str]:
    """BIO -> BILOU with nerblackbox's consistency rules (ner.md §1.5)."""
    out = []
    for i, t in enumerate(tags):
        p, typ = split_tag(t)
        if p == "O":
            out.append(t)
            continue
        prev = split_tag(tags[i - 1]) if i else ("O", None)
        nxt = split_tag(tags[i + 1]) if i + 1 < len(tags) else ("O", None)
        starts = p == "B" or prev[0] not in "BI" or prev[1] != typ  # I after something other than B/I -> B
        continues = nxt[0] == "I" and nxt[1] == typ
        out.append(("B-" if continues else "U-") if starts else ("I-" if continues else "L-"))
        out[-1] += typ
    return out


def convert(tags: list[str], source: str, target: str) -> list[str]:
    """Convert between schemes; target is io | bio | bilou."""
    bio = to_bio(tags, source)
    if target == "bio":
        return bio
    if target == "io":
        return ["O" if t == "O" else t[2:] for t in bio]
    if target == "bilou":
        return bio_to_bilou(bio)
    raise ValueError(f"unknown target scheme {target!r}: choose io, bio or bilou")


def label_list(types: list[str], scheme: str) -> list[str]:
    """All classes of a scheme with 'O' first (nerblackbox adds missing I-/L-/U- classes, §1.3)."""
    prefixes = {"io": [""], "bio": ["B-", "I-"], "bilou": ["B-", "I-", "L-", "U-"]}[scheme]
    return ["O"] + [p + t for t in sorted(types) for p in prefixes]


def entity_types(examples: list[Example]) -> set[str]:
    return {split_tag(t)[1] for ex in examples for t in ex.tags} - {None}


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
    for r in records:
        if r[0] == "row" and len(r[1]) >= ncols:
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
# pretokenized CSV: one sample per line, `tags<TAB>tokens`, each side space-separated (ner.md §1.4)

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

def read_jsonl(path: str | Path, keep_blank: bool = False) -> list[dict | None]:
    """Read and validate documents: offsets must be ints inside the text (error with file:line). keep_blank: a
    blank line gives None, so that list index + 1 is the line number."""
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
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise ValueError(f"{path}:{lineno}: each line must be an object with a string 'text'")
            for tag in doc.setdefault("tags", []):
                s, e = tag.get("char_start"), tag.get("char_end")
                if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(doc["text"])):
                    raise ValueError(f"{path}:{lineno}: span {tag} is outside the text (length "
                                     f"{len(doc['text'])}) or empty; char_start/char_end must be ints, 0 <= start "
                                     f"< end <= len(text)")
                if "tag" not in tag:
                    raise ValueError(f"{path}:{lineno}: span {tag} has no 'tag' (the label, e.g. 'PER')")
            docs.append(doc)
    return docs


def write_jsonl(docs: list[dict], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def doc_to_example(doc: dict, issues: Issues | None = None, where: str = "") -> Example:
    """Char spans -> BIO word tags. A span that cuts a word is widened to whole words, overlapping spans keep the
    first; both are counted in `issues` (nerblackbox drops both silently, ner.md §1.3)."""
    issues = issues if issues is not None else Issues()
    text = doc["text"]
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


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """BIO tags -> (type, first word, last word + 1); a stray I-X starts an entity."""
    out = []
    for i, t in enumerate(tags):
        p, typ = split_tag(t)
        if p == "O":
            continue
        if p == "B" or not out or out[-1][2] != i or out[-1][0] != typ:
            out.append((typ, i, i + 1))
        else:
            out[-1] = (typ, out[-1][1], i + 1)
    return out


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
    ner.md §1.3)."""
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
    """A `fraction` of the examples for dataset-size studies (ner.md §2.3). how='first': the first
    max(1, int(fraction * N)), as the paper's code (nerblackbox _prune_examples); how='random': a seeded sample of
    max(1, round(fraction * N))."""
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


# -----------------------------------------------------------------------------
# scores (ner.md §1.6): entity level strict + lenient (equal to seqeval), token level, confusion matrix

def _prefix_type(tag: str) -> tuple[str, str]:
    # seqeval.scheme.Token's parse: first char is the prefix, the rest minus '-' the type ('_' if none)
    return tag[0], tag[1:].strip("-") or "_"


def strict_entities(seq: list[str], scheme: str) -> list[tuple[str, int, int]]:
    """Entities that obey the scheme (seqeval mode='strict'): BIO = B-X I-X*; BILOU = U-X | B-X (I-X)* L-X.
    Ill-formed pieces (O I-X, B-X O in BILOU, ...) are ignored, as in nerblackbox (ner.md §1.6)."""
    toks = [_prefix_type(t) for t in seq]
    allowed = {"bio": "BIO", "bilou": "BILOU"}[scheme]
    for t, (p, _) in zip(seq, toks):
        if p not in allowed:
            raise ValueError(f"tag {t!r} is not in the {scheme.upper()} scheme (prefixes {'/'.join(allowed)})")
    out, i, n = [], 0, len(toks)
    while i < n:
        p, typ = toks[i]
        if scheme == "bio" and p == "B":
            j = i + 1
            while j < n and toks[j] == ("I", typ):
                j += 1
            out.append((typ, i, j))
            i = j
        elif scheme == "bilou" and p == "U":
            out.append((typ, i, i + 1))
            i += 1
        elif scheme == "bilou" and p == "B":
            j, last = i + 1, "B"
            while j < n and last in "BI" and toks[j][0] in "IL" and toks[j][1] == typ:
                last = toks[j][0]
                j += 1
            if last == "L":
                out.append((typ, i, j))
            i = j
        else:
            i += 1
    return out


def lenient_entities(seq: list[str]) -> list[tuple[str, int, int]]:
    """conlleval-style chunks (seqeval default mode): a stray I-X or a type change starts an entity."""
    out, prev_p, prev_t, begin = [], "O", "", 0
    for i, tag in enumerate(seq + ["O"]):
        p, typ = tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"
        end = (prev_p in "ES" or (prev_p in "BI" and p in "BSO")
               or (prev_p not in ("O", ".") and prev_t != typ))
        if end:
            out.append((prev_t, begin, i))
        start = p in "BS" or (prev_p in "ESO" and p in "EI") or (p not in ("O", ".") and prev_t != typ)
        if start:
            begin = i
        prev_p, prev_t = p, typ
    return out


def _prf(tp: int, n_pred: int, n_true: int) -> dict:
    p = tp / n_pred if n_pred else 0.0  # zero_division=0, as seqeval's default
    r = tp / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": n_true}


def _scores(gold: list[set], pred: list[set], classes: list[str]) -> dict:
    """micro / macro / per-class P, R, F1 from sets of (sentence, type, start, end)."""
    per = {}
    for c in classes:
        g = {e for e in gold if e[1] == c}
        p = {e for e in pred if e[1] == c}
        per[c] = _prf(len(g & p), len(p), len(g))
    micro = _prf(len(gold & pred), len(pred), len(gold))
    macro = {k: sum(v[k] for v in per.values()) / len(per) if per else 0.0 for k in ("precision", "recall", "f1")}
    return {"micro": micro, "macro": macro | {"support": len(gold)}, "per_class": per}


def entity_scores(gold: list[list[str]], pred: list[list[str]], mode: str, scheme: str = "bio") -> dict:
    """Entity-level scores. mode 'strict' = seqeval(mode='strict', scheme=IOB2|BILOU); 'lenient' = seqeval
    default mode (run on the joined sequence with 'O' between sentences, exactly as seqeval does)."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences differ in length")
    if mode == "strict":
        g = {(i, *e) for i, s in enumerate(gold) for e in strict_entities(s, scheme)}
        p = {(i, *e) for i, s in enumerate(pred) for e in strict_entities(s, scheme)}
    else:
        g = {(0, *e) for e in lenient_entities([t for s in gold for t in s + ["O"]])}
        p = {(0, *e) for e in lenient_entities([t for s in pred for t in s + ["O"]])}
    return _scores(g, p, sorted({e[1] for e in g | p}))


def _plain(t: str) -> str:
    return t if t == "O" else t[2:] if t[1:2] == "-" else t


def token_scores(gold: list[list[str]], pred: list[list[str]], classes: list[str] | None = None) -> dict:
    """Token level on IO labels (prefixes stripped, ner.md §1.6): 'all' includes O, 'fil' excludes it.
    micro: sklearn precision_recall_fscore_support(average='micro', zero_division=0).
    macro: nerblackbox's definition (NerMetrics._token_evaluation): sklearn's macro over every class of the model
    (`classes`, plain; default: the labels present), and None where nerblackbox logs its failure value -1 because
    sklearn warns: precision when a class was never predicted, recall when it never occurs in gold, f1 when
    either. macro_present: the macro over the labels present in gold or prediction, zero_division=0.
    Plus the confusion matrix (rows gold, columns predicted)."""
    g = [_plain(t) for s in gold for t in s]
    p = [_plain(t) for s in pred for t in s]
    present = ["O"] + sorted(set(g + p) - {"O"})
    model = ["O"] + sorted({_plain(c) for c in classes} - {"O"}) if classes else present
    labels = model + [lab for lab in present if lab not in model]
    index = {lab: k for k, lab in enumerate(labels)}
    cm = [[0] * len(labels) for _ in labels]
    for a, b in zip(g, p):
        cm[index[a]][index[b]] += 1
    out = {"confusion_matrix": {"labels": present, "matrix": [[cm[index[a]][index[b]] for b in present]
                                                              for a in present]}}
    for name, skip in (("all", 0), ("fil", 1)):
        def per_class(labs):
            return {lab: _prf(cm[index[lab]][index[lab]], sum(r[index[lab]] for r in cm), sum(cm[index[lab]]))
                    for lab in labs}
        per, per_model = per_class(present[skip:]), per_class(model[skip:])
        ks = [index[lab] for lab in present[skip:]]
        micro = _prf(sum(cm[k][k] for k in ks), sum(r[k] for r in cm for k in ks), sum(sum(cm[k]) for k in ks))
        mean = {k: sum(v[k] for v in per.values()) / len(per) if per else 0.0 for k in ("precision", "recall", "f1")}
        no_pred = any(sum(r[index[lab]] for r in cm) == 0 for lab in per_model)
        no_gold = any(v["support"] == 0 for v in per_model.values())
        macro = {k: None if bad or not per_model else sum(v[k] for v in per_model.values()) / len(per_model)
                 for k, bad in (("precision", no_pred), ("recall", no_gold), ("f1", no_pred or no_gold))}
        out[name] = {"micro": micro, "macro": macro, "macro_present": mean, "per_class": per}
    return out


def well_formed_fraction(pred: list[list[str]], scheme: str) -> float:
    """Fraction of predicted entity words that belong to a well-formed entity of the scheme (1.0 when nothing is
    predicted). Not nerblackbox's asr_abidance (the share of predicted tokens its consistency restoration leaves
    unchanged), hence the different name."""
    inside = sum(b - a for s in pred for _, a, b in strict_entities(s, scheme))
    total = sum(t != "O" for s in pred for t in s)
    return inside / total if total else 1.0
