"""
NER tag schemes and the scores computed on tag sequences: IO, BIO (= IOB2), IOB1 input, BILOU / IOBES;
detection and conversion (nerblackbox's rules, nerblackbox/modules/ner_training/annotation_tags/tags.py),
BIO -> entities, and entity-level (strict and lenient, equal to seqeval) and token-level scores as nerblackbox
computes them (nerblackbox/modules/ner_training/metrics/ner_metrics.py). nerdata.py reads and writes the
files; ner.py reports the scores.

    convert(["PER", "PER", "O"], "io", "bio")  # ['B-PER', 'I-PER', 'O']
    entity_scores(gold, pred, "strict", "bio")  # micro/macro/per_class precision, recall, f1, support
    evaluate_tags(gold, pred, "bio")           # every score at once, flat (ner.py's report); metrics_table prints it
"""



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
    """io | bio | iob1 | bilou | iobes from the tags (nerblackbox's auto-detection,
    nerblackbox/modules/ner_training/annotation_tags/annotation.py, plus IOB1/IOBES)."""
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
    if scheme == "io":  # a run of equal labels is one entity: adjacent same-type entities merge (nerblackbox)
        return ["O" if t == "O" else ("I-" if i and tags[i - 1] == t else "B-") + t for i, t in enumerate(tags)]
    if scheme == "iob1":  # an I-X that does not follow I-X or B-X starts one (nerblackbox's _convert_iob1_to_iob2)
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
    """BIO -> BILOU with nerblackbox's consistency rules (nerblackbox/modules/ner_training/annotation_tags/tags.py)."""
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
    """All classes of a scheme with 'O' first (nerblackbox adds missing I-/L-/U- classes)."""
    prefixes = {"io": [""], "bio": ["B-", "I-"], "bilou": ["B-", "I-", "L-", "U-"]}[scheme]
    return ["O"] + [p + t for t in sorted(types) for p in prefixes]


def entity_types(examples: list) -> set[str]:
    """The entity types of examples (anything with a .tags list), without prefixes."""
    return {split_tag(t)[1] for ex in examples for t in ex.tags} - {None}


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


# -----------------------------------------------------------------------------
# scores as nerblackbox's (nerblackbox/modules/ner_training/metrics/ner_metrics.py): entity level strict and
# lenient (equal to seqeval), token level, confusion matrix

def _prefix_type(tag: str) -> tuple[str, str]:
    # seqeval.scheme.Token's parse: first char is the prefix, the rest minus '-' the type ('_' if none)
    return tag[0], tag[1:].strip("-") or "_"


def strict_entities(seq: list[str], scheme: str) -> list[tuple[str, int, int]]:
    """Entities that obey the scheme (seqeval mode='strict'): BIO = B-X I-X*; BILOU = U-X | B-X (I-X)* L-X.
    Ill-formed pieces (O I-X, B-X O in BILOU, ...) are ignored, as in nerblackbox (ner_metrics.py)."""
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
    """Token level on IO labels (prefixes stripped, as ner_metrics.py): 'all' includes O, 'fil' excludes it.
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


def _asr_tag(tag: str, prev: str | None, nxt: str | None, scheme: str) -> tuple[str, bool]:
    """One tag through nerblackbox's annotation scheme restoration (Tags.convert_tag_bio2bio / bilou2bilou):
    the corrected tag and whether it changed. BIO: I-X after neither B-X nor I-X -> B-X. BILOU, repeated
    until stable: I-X not followed by I-X/L-X -> L-X; I-X or L-X not after B-X/I-X -> B-X; B-X not followed by
    I-X/L-X -> U-X."""
    if tag == "O" or tag.startswith("U-") or (scheme == "bio" and tag.startswith("B-")):
        return tag, False
    typ = tag[2:]
    bad_prev = prev not in (f"B-{typ}", f"I-{typ}")
    bad_next = nxt not in (f"I-{typ}", f"L-{typ}")
    if scheme == "bio":
        return (f"B-{typ}", True) if bad_prev else (tag, False)
    cur = tag
    while True:
        if cur.startswith("I-") and bad_next:
            cur = f"L-{typ}"
        elif cur.startswith(("I-", "L-")) and bad_prev:
            cur = f"B-{typ}"
        elif cur.startswith("B-") and bad_next:
            cur = f"U-{typ}"
        else:
            return cur, cur != tag


def asr_scores(gold: list[list[str]], pred: list[list[str]], scheme: str = "bio") -> dict:
    """nerblackbox's ASR metrics (annotation scheme restoration): the predictions of all sentences joined into one
    sequence, as nerblackbox flattens them, go through its consistency rules (_asr_tag); `abidance` = 1 - the
    share of predicted tags the rules change; precision/recall/f1 = strict micro entity scores of the restored
    predictions on that joined sequence (nerblackbox, nerblackbox/modules/ner_training/annotation_tags/tags.py and
    metrics/ner_metrics.py: asr_abidance, asr_precision_micro, asr_recall_micro, asr_f1_micro)."""
    flat = [t for s in pred for t in s]
    fixed = [_asr_tag(t, flat[i - 1] if i else None, flat[i + 1] if i + 1 < len(flat) else None, scheme)
             for i, t in enumerate(flat)]
    changed = sum(c for _, c in fixed)
    # one joined sequence, no separator, as nerblackbox scores it: an entity may run across a sentence boundary
    micro = entity_scores([[t for s in gold for t in s]], [[t for t, _ in fixed]], "strict", scheme)["micro"]
    abidance = 1 - changed / len(flat) if flat else 1.0
    return {"abidance": abidance, **{k: micro[k] for k in ("precision", "recall", "f1")}}


# -----------------------------------------------------------------------------
# every score of a tagging at once (ner.py's evaluation report)

def evaluate_tags(gold: list[list[str]], pred: list[list[str]], scheme: str, labels: list[str] | None = None) -> dict:
    """Flat metrics dict: entity.{strict,lenient}.{micro,macro}.{precision,recall,f1,support},
    entity.{mode}.per_class.{TYPE}.*, token.{all,fil}.{micro,macro,macro_present,per_class}.*,
    entity.strict.well_formed, entity.asr.{abidance,precision,recall,f1} (nerblackbox's annotation scheme
    restoration, asr_scores) and token.confusion_matrix. gold/pred in the model's scheme, `labels` the model's
    classes (token macro over all of them, as nerblackbox); strict mode uses IOB2 (BILOU for bilou models),
    lenient mode runs on BIO (nerblackbox's metrics/ner_metrics.py)."""
    strict_scheme = "bilou" if scheme == "bilou" else "bio"
    g_s = [convert(s, scheme, strict_scheme) for s in gold]
    p_s = [convert(s, scheme, strict_scheme) if scheme == "io" else s for s in pred]
    g_b = [convert(s, scheme, "bio") for s in gold]
    p_b = [to_bio(s, scheme) for s in pred]
    token = token_scores(gold, pred, labels)
    cm = token.pop("confusion_matrix")
    flat = _flatten({"entity": {"strict": entity_scores(g_s, p_s, "strict", strict_scheme),
                                "lenient": entity_scores(g_b, p_b, "lenient")}, "token": token})
    asr = {f"entity.asr.{k}": v for k, v in asr_scores(g_s, p_s, strict_scheme).items()}
    return flat | asr | {"entity.strict.well_formed": well_formed_fraction(p_s, strict_scheme),
                         "token.confusion_matrix": cm}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def metrics_table(m: dict) -> str:
    """The headline numbers and the per-class strict entity scores as a text table."""
    rows = [("entity strict micro", "entity.strict.micro"), ("entity strict macro", "entity.strict.macro"),
            ("entity lenient micro", "entity.lenient.micro"), ("token fil micro", "token.fil.micro"),
            ("token all micro", "token.all.micro")] + [("entity asr micro", "entity.asr")] * ("entity.asr.f1" in m)
    rows += [(f"  {k.split('.')[3]}", k.rsplit(".", 1)[0]) for k in m
             if k.startswith("entity.strict.per_class.") and k.endswith(".f1")]
    lines = [f"{'':24} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for name, key in rows:
        lines.append(f"{name:24} {m[key + '.precision']:9.4f} {m[key + '.recall']:9.4f} {m[key + '.f1']:9.4f} "
                     f"{m.get(key + '.support', ''):>8}")
    if "entity.asr.abidance" in m:  # nerblackbox's share of predicted tags that already obey the scheme
        lines.append(f"{'asr abidance':24} {m['entity.asr.abidance']:9.4f}")
    return "\n".join(lines)
