"""
Inter-annotator agreement and adjudication of standard char-span documents, and their commands (annotate.py reads
the tool files).

The workflow is x-annotate's (Stollenwerk 2023, github.com/flxst/x-annotate; the tool behind Stollenwerk,
Fastlund, Nyqvist & Öhman 2023, "Annotated Job Ads with Named Entity Recognition", arXiv:2310.11769):
the agreement units are the union over annotators of exact (start, end) spans (analysis/inter_annotator_agreement.py),
scored by pairwise Cohen's kappa, Fleiss' kappa, percent agreement and exact/partial span F1; merge accepts
the spans all annotators marked alike and turns every other span into a `???` conflict for review; resolve
puts the reviewed conflicts back (double annotation + adjudication, Stollenwerk et al. 2023, "Text Annotation
Handbook", arXiv:2310.11780, §4 Quality Assurance).

    python agreement.py agreement --input=A.jsonl,B.jsonl,C.jsonl --out=iaa
    python agreement.py merge --input=A.jsonl,B.jsonl --out=merged.jsonl --conflicts=conflicts.jsonl
    python agreement.py resolve --merged=merged.jsonl --resolved=conflicts_done.jsonl --out=final.jsonl
"""
import itertools
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from annotate import check_documents, doc_id, read_documents, split_by_annotator
from configurator import check_output_path, configure_command
from nerdata import read_json_lines, write_jsonl

CONFLICT = "???"  # label of a span the annotators disagree on (x-annotate's merge)
O = "O"  # noqa: E741 (the tag name) -- "no span here" in the aligned span units
_COLUMNS = ("f1", "f1_partial", "cohen_kappa", "fleiss_kappa", "n_units")  # per label / per document


def load_annotations(paths: list[str]) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """Annotator -> {document id -> document} from files of any supported format, and annotator -> file.
    A file with one annotator is named by its file name; a file holding several (a Label Studio export)
    is split into its annotators. Checks the inputs agree with each other (texts, documents, labels)."""
    annotations, sources = {}, {}
    for k, path in enumerate(paths):
        twice = [p for p in paths[:k] if Path(p).resolve() == Path(path).resolve()]
        if twice:
            raise ValueError(f"{path} is given twice in --input ({twice[0]}): one annotator's file compared with "
                             f"itself agrees perfectly; give each annotator's file once")
        docs, report = read_documents(path, annotator=None)
        if report.get("text_mismatch"):  # the offsets point elsewhere than the annotator's text: never merge those
            raise ValueError(f"{path}: {len(report['text_mismatch'])} span(s) whose text differs from the document "
                             f"at their offsets (shifted offsets?), e.g. " +
                             "; ".join(f"document {d}: {x}" for d, x in report["text_mismatch"][:3]) +
                             "; fix the export before computing agreement or merging")
        parts = split_by_annotator(docs)
        if len(parts) <= 1:
            parts = {Path(path).stem: docs}
        for name, part in parts.items():
            name = name if name not in annotations else f"{name}@{path}"
            by_id = {}
            for i, d in enumerate(part):
                if doc_id(d, i) in by_id:
                    raise ValueError(f"{path}: document id {doc_id(d, i)!r} appears twice; make ids unique")
                by_id[doc_id(d, i)] = d
            annotations[name], sources[name] = by_id, path
    if len(annotations) < 2:
        raise ValueError(f"agreement and merge need two or more annotators, got {list(annotations)} from {paths}: "
                         f"give two or more files, comma-separated (--input=A.jsonl,B.jsonl), or a Label Studio "
                         f"export holding several annotators")
    _check_consistent(annotations, sources)
    return annotations, sources


def _check_consistent(annotations: dict[str, dict[str, dict]], sources: dict[str, str]) -> None:
    names = list(annotations)
    first = names[0]
    for name in names[1:]:
        extra = [d for d in annotations[name] if d not in annotations[first]]
        missing = [d for d in annotations[first] if d not in annotations[name]]
        for who, lacking, ids in ((name, first, extra), (first, name, missing)):
            if ids:
                raise ValueError(f"{sources[who]} ({who}) has documents that {sources[lacking]} ({lacking}) "
                                 f"lacks: {ids[:10]}; every annotator must annotate the same documents (ids)")
        for did, doc in annotations[name].items():
            a, b = annotations[first][did]["text"], doc["text"]
            if a != b:
                at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                raise ValueError(f"document {did!r} has a different text in {sources[name]} than in "
                                 f"{sources[first]} (first difference at char {at}: {b[at:at + 20]!r} vs "
                                 f"{a[at:at + 20]!r}); annotate the same text or give the documents new ids")
    where: dict[str, str] = {}
    for name, docs in annotations.items():
        for did, doc in docs.items():
            for t in doc["tags"]:
                if t["tag"] in (CONFLICT, O):
                    raise ValueError(f"{sources[name]}, document {did}: span [{t['char_start']}, "
                                     f"{t['char_end']}) has label {t['tag']!r}; resolve conflicts first "
                                     f"(agreement.py resolve)")
                where.setdefault(t["tag"], f"{sources[name]}, document {did}, span [{t['char_start']}, "
                                           f"{t['char_end']}) {t.get('token', '')!r}")
    spelled = defaultdict(list)
    for label in where:
        spelled[re.sub(r"^[BIESLU]-|[-_ ]", "", label).lower()].append(label)
    for same in spelled.values():
        if len(same) > 1:
            raise ValueError("mixed label sets: " + " and ".join(f"{x!r} ({where[x]})" for x in same) +
                             " look like one label spelled differently; rename so that every file uses the "
                             "same labels (no B-/I- prefixes in char-span files)")


def _labels_at(doc: dict) -> dict[tuple[int, int], str]:
    """(start, end) -> label of one annotator ('A|B' when they gave one span several labels)."""
    out = defaultdict(list)
    for t in doc["tags"]:
        out[(t["char_start"], t["char_end"])].append(t["tag"])
    return {k: "|".join(sorted(v)) for k, v in out.items()}


def aligned_units(docs: list[dict]) -> list[tuple[str, ...]]:
    """x-annotate's alignment (analysis/inter_annotator_agreement.py): the units are the union over
    annotators of exact (start, end) spans; an annotator without a span there gets O. Rows where everyone
    has O are dropped, which the union already guarantees. Returns one row per unit: the label of each
    annotator, in order."""
    labels = [_labels_at(d) for d in docs]
    units = sorted(set().union(*labels))
    return [tuple(lab.get(u, O) for lab in labels) for u in units]


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa = (p_o - p_e) / (1 - p_e), p_e = sum_k p_a(k) p_b(k). None without units; 1.0 when
    both used one and the same label throughout (p_e = 1: no disagreement possible; sklearn gives nan)."""
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum(a.count(c) * b.count(c) for c in set(a) | set(b)) / n ** 2
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(rows: list[tuple[str, ...]]) -> float | None:
    """Fleiss' kappa (Fleiss 1971) over units rated by m annotators each: (P_bar - P_e) / (1 - P_e) with
    P_i = (sum_j n_ij^2 - m) / (m (m - 1)), P_e = sum_j p_j^2. None without units; 1.0 when P_e = 1."""
    if not rows:
        return None
    m = len(rows[0])
    cats = sorted({c for r in rows for c in r})
    counts = [[r.count(c) for c in cats] for r in rows]  # n_ij
    p_bar = sum((sum(n * n for n in row) - m) / (m * (m - 1)) for row in counts) / len(rows)
    p_e = sum((sum(row[j] for row in counts) / (len(rows) * m)) ** 2 for j in range(len(cats)))
    return 1.0 if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def _span_counts(a: dict, b: dict, label: str | None = None) -> list[int]:
    """[exact matches, |A|, |B|, A spans partly matched, B spans partly matched] for one document pair: a
    span matches exactly with the same (start, end, label), partly when it overlaps one of the same label."""
    sa = {(t["char_start"], t["char_end"], t["tag"]) for t in a["tags"] if label in (None, t["tag"])}
    sb = {(t["char_start"], t["char_end"], t["tag"]) for t in b["tags"] if label in (None, t["tag"])}

    def hit(x, others):
        return any(y[2] == x[2] and y[0] < x[1] and x[0] < y[1] or y == x for y in others)
    return [len(sa & sb), len(sa), len(sb), sum(hit(x, sb) for x in sa), sum(hit(y, sa) for y in sb)]


def _f1s(c: list[int]) -> tuple[float | None, float | None]:
    """(exact F1, partial F1) from _span_counts. Exact: 2|A∩B| / (|A| + |B|), i.e. seqeval's entity F1 with
    A as truth. Partial: P = B spans matched / |B|, R = A spans matched / |A|. None when no one marked a
    span."""
    tp, na, nb, ma, mb = c
    if na + nb == 0:
        return None, None
    p, r = (mb / nb if nb else 0.0), (ma / na if na else 0.0)
    return 2 * tp / (na + nb), (2 * p * r / (p + r) if p + r else 0.0)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _scores(docs_by_name: dict[str, list[dict]], label: str | None = None) -> dict:
    """Agreement over a set of documents (one list per annotator, aligned): pairs, mean F1s, kappas."""
    names = list(docs_by_name)
    rows = [r for docs in zip(*docs_by_name.values()) for r in aligned_units(list(docs))]
    if label is not None:  # one-vs-rest units; rows where nobody chose the label are dropped
        rows = [tuple(x if x == label else O for x in r) for r in rows if label in r]
    pairs = []
    for i, j in itertools.combinations(range(len(names)), 2):
        per_doc = [_span_counts(a, b, label) for a, b in zip(docs_by_name[names[i]], docs_by_name[names[j]])]
        c = [sum(x) for x in zip(*per_doc)] or [0] * 5
        f1, f1p = _f1s(c)
        both = [(r[i], r[j]) for r in rows if (r[i], r[j]) != (O, O)]  # the pair's own units
        a, b = [x for x, _ in both], [y for _, y in both]
        pairs.append({"a": names[i], "b": names[j], "f1": f1, "f1_partial": f1p,
                      "cohen_kappa": cohen_kappa(a, b),
                      "percent_agreement": _mean([float(x == y) for x, y in both]),
                      "n_spans_a": c[1], "n_spans_b": c[2]})
    return {"f1": _mean(p["f1"] for p in pairs), "f1_partial": _mean(p["f1_partial"] for p in pairs),
            "cohen_kappa": _mean(p["cohen_kappa"] for p in pairs), "fleiss_kappa": fleiss_kappa(rows),
            "percent_agreement": _mean(p["percent_agreement"] for p in pairs), "n_units": len(rows),
            "pairs": pairs}


def agreement(annotations: dict[str, dict[str, dict]]) -> dict:
    """Inter-annotator agreement: overall, per label, per document
    (worst first), per pair. F1 and Cohen's kappa are means over annotator pairs."""
    names, ids = list(annotations), list(next(iter(annotations.values())))
    docs = {n: [annotations[n][d] for d in ids] for n in names}
    out = {"annotators": names, "n_documents": len(ids), **_scores(docs)}
    labels = sorted({t["tag"] for ds in docs.values() for d in ds for t in d["tags"]})
    out["per_label"] = {}
    for label in labels:
        s = _scores(docs, label)
        out["per_label"][label] = {k: s[k] for k in _COLUMNS}
        out["per_label"][label]["n_spans"] = {n: sum(t["tag"] == label for d in docs[n] for t in d["tags"])
                                              for n in names}
    per_doc = []
    for k, did in enumerate(ids):
        s = _scores({n: [docs[n][k]] for n in names})
        per_doc.append({"id": did, **{key: s[key] for key in _COLUMNS}})
    out["per_document"] = sorted(per_doc, key=_badness)
    return out


def _badness(doc: dict) -> tuple:
    """Sort key, worst agreement first; a document nobody marked anything in counts as full agreement."""
    return tuple(1.0 if doc[k] is None else doc[k] for k in ("f1", "cohen_kappa"))


def _row(name: str, scores: dict) -> str:
    cells = ["-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
             for v in map(scores.get, _COLUMNS)]
    return f"{name[:24]:<24}" + "".join(f"{c:>13}" for c in cells)


def format_agreement(result: dict, max_docs: int = 10) -> str:
    """The printed table: overall, per label, and the worst documents."""
    lines = [f"annotators: {', '.join(result['annotators'])}; {result['n_documents']} documents",
             f"{'':<24}" + "".join(f"{c:>13}" for c in _COLUMNS), _row("overall", result)]
    lines += [_row(label, s) for label, s in result["per_label"].items()]
    lines.append(f"worst documents (of {len(result['per_document'])}):")
    lines += [_row(f"  {d['id']}", d) for d in result["per_document"][:max_docs]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- adjudication

def merge(annotations: dict[str, dict[str, dict]]) -> tuple[list[dict], list[dict]]:
    """Accept the spans every annotator marked with the same label; every other (start, end) becomes one
    `???` tag with "votes" {annotator: label or O} (x-annotate's merge). Returns (merged documents in
    input order, the documents with conflicts sorted worst agreement first, with their "agreement")."""
    names = list(annotations)
    per_doc = {d["id"]: d for d in agreement(annotations)["per_document"]}
    merged, conflicts = [], []
    for did, base in next(iter(annotations.values())).items():
        docs = [annotations[n][did] for n in names]
        spans = [{(t["char_start"], t["char_end"], t["tag"]) for t in d["tags"]} for d in docs]
        agreed = set.intersection(*spans)
        tags = [{"char_start": s, "char_end": e, "token": base["text"][s:e], "tag": tag}
                for s, e, tag in agreed]
        rest = [{(s, e): lab for (s, e, lab) in sp - agreed} for sp in spans]
        for s, e in sorted(set().union(*rest)):
            votes = {n: "|".join(sorted(lab for (x, y, lab) in sp - agreed if (x, y) == (s, e))) or O
                     for n, sp in zip(names, spans)}
            tags.append({"char_start": s, "char_end": e, "token": base["text"][s:e], "tag": CONFLICT,
                         "votes": votes})
        tags.sort(key=lambda t: (t["char_start"], t["char_end"], t["tag"]))
        merged.append({"id": did, "text": base["text"], "tags": tags})
        if any(t["tag"] == CONFLICT for t in tags):
            conflicts.append({**merged[-1], "agreement": {k: per_doc[did][k] for k in ("f1", "cohen_kappa")}})
    conflicts.sort(key=lambda d: _badness(d["agreement"]))
    return merged, conflicts


def resolve(merged: list[dict], resolved: list[dict], merged_path: str = "merged",
            resolved_path: str = "resolved") -> list[dict]:
    """Put reviewed documents back: each reviewed document replaces its merged one; a tag set to O is
    dropped; "votes"/"agreement" are removed. Every `???` must be resolved."""
    check_documents(merged, merged_path)
    check_documents(resolved, resolved_path)
    by_id = {doc_id(d, i): d for i, d in enumerate(merged)}
    reviewed = {}
    for i, d in enumerate(resolved):
        did = doc_id(d, i)
        if did not in by_id:
            raise ValueError(f"{resolved_path}: document {did!r} is not in {merged_path}; resolve the file "
                             f"that `agreement.py merge` wrote")
        if d["text"] != by_id[did]["text"]:
            raise ValueError(f"{resolved_path}: document {did!r} has a different text than in {merged_path}; "
                             f"edit only the tags")
        reviewed[did] = d
    final = []
    for i, doc in enumerate(merged):
        did = doc_id(doc, i)
        doc = reviewed.get(did, doc)
        for t in doc["tags"]:
            if t["tag"] == CONFLICT:
                src = resolved_path if did in reviewed else merged_path
                raise ValueError(f"{src}, document {did!r}: span [{t['char_start']}, {t['char_end']}) "
                                 f"{t.get('token', '')!r} is still {CONFLICT} (votes {t.get('votes')}); set "
                                 f"its tag to a label, or to {O} to reject it")
        tags = [{k: v for k, v in t.items() if k != "votes"} for t in doc["tags"] if t["tag"] != O]
        final.append({**{k: v for k, v in doc.items() if k != "agreement"}, "tags": tags})
    return final


# ----------------------------------------------------------------------------- CLI

AGREEMENT_DEFAULTS = dict(
    input=[],  # two or more annotation files (any format), or one Label Studio export of several annotators
    out="",  # folder for agreement.json
)
MERGE_DEFAULTS = dict(
    input=[],  # two or more annotation files of the same documents, or one Label Studio export of several annotators
    out="",  # merged.jsonl: agreed spans, every other span a ??? conflict with its votes
    conflicts="",  # conflicts.jsonl: the documents with conflicts, worst agreement first, to review
)
RESOLVE_DEFAULTS = dict(
    merged="",  # the file `agreement.py merge` wrote as --out
    resolved="",  # the reviewed conflicts file: every ??? tag set to a label, or to O to reject the span
    out="",  # final.jsonl
)


def agreement_command(cfg: dict) -> None:
    """`agreement.py agreement`: cfg["input"] files -> cfg["out"]/agreement.json and the printed table."""
    result = agreement(load_annotations(cfg["input"])[0])
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    (Path(cfg["out"]) / "agreement.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(format_agreement(result))
    print(f"wrote {Path(cfg['out']) / 'agreement.json'}")


def merge_command(cfg: dict) -> None:
    """`agreement.py merge`: cfg["input"] files -> cfg["out"] (merged) and cfg["conflicts"] (to review)."""
    annotations = load_annotations(cfg["input"])[0]
    merged, conflicts = merge(annotations)
    lost = sum(len(d.get("relations", [])) for docs in annotations.values() for d in docs.values())
    if lost:  # merge adjudicates spans only: say so rather than drop relations silently
        print(f"note: {lost} relation(s) in the inputs are not carried into {cfg['out']} (merge adjudicates "
              f"spans only)")
    write_jsonl(merged, cfg["out"])
    write_jsonl(conflicts, cfg["conflicts"])
    n = sum(t["tag"] == CONFLICT for d in conflicts for t in d["tags"])
    print(f"wrote {cfg['out']} ({len(merged)} documents) and {cfg['conflicts']} ({n} conflicts in "
          f"{len(conflicts)} documents, worst agreement first): set each {CONFLICT} tag to a label or "
          f"{O}, then run resolve")


def resolve_command(cfg: dict) -> None:
    """`agreement.py resolve`: cfg["merged"] + the reviewed cfg["resolved"] -> cfg["out"]."""
    final = resolve(read_json_lines(cfg["merged"]), read_json_lines(cfg["resolved"]), cfg["merged"], cfg["resolved"])
    write_jsonl(final, cfg["out"])
    print(f"wrote {cfg['out']} ({len(final)} documents)")


def main(argv: list[str] | None = None) -> None:
    """`python agreement.py agreement|merge|resolve [config.py] [--key=value ...]`."""
    commands = {"agreement": AGREEMENT_DEFAULTS, "merge": MERGE_DEFAULTS, "resolve": RESOLVE_DEFAULTS}
    command, cfg = configure_command(commands, sys.argv[1:] if argv is None else argv, __file__)
    missing = [k for k, v in cfg.items() if not v]
    if missing:
        raise ValueError(f"{command}: give " + " ".join(f"--{k}=..." for k in missing) +
                         f" (python agreement.py {command} -h lists the keys)")
    outputs = {"merge": ("out", "conflicts"), "resolve": ("out",)}.get(command, ())
    inputs = cfg["input"] if command in ("agreement", "merge") else [cfg["merged"], cfg["resolved"]]
    for key in outputs:  # (agreement's --out is a folder for agreement.json)
        check_output_path(key, cfg[key], inputs + [cfg[k] for k in outputs if k != key])
    {"agreement": agreement_command, "merge": merge_command, "resolve": resolve_command}[command](cfg)


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `agreement.py: problem: fix`, exit 1
    run_cli("agreement.py", main)
