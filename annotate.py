"""
The annotation loop around the standard char-span JSONL of ner.py: Label Studio and Doccano converters,
pre-annotation writers, inter-annotator agreement and adjudication. Facts: ../shared/papers/ner.md §1.3-§1.4
(formats, nerblackbox's converters), §3 (the job-ads workflow of x-annotate: agreement on aligned spans,
merge of agreed spans, `???` conflicts), §4 (Text Annotation Handbook: double annotation + adjudication).

    python annotate.py convert export.json alice_bob.jsonl --to standard
    python annotate.py agreement A.jsonl B.jsonl [C.jsonl ...] --out DIR
    python annotate.py merge A.jsonl B.jsonl --out merged.jsonl --conflicts conflicts.jsonl
    python annotate.py resolve merged.jsonl resolved_conflicts.jsonl --out final.jsonl

Input files may be standard JSONL, Doccano JSONL or a Label Studio JSON export (detected from the content).
A standard document is {"id", "text", "tags": [{"char_start", "char_end", "token", "tag"}]}; this file adds
optional keys so that a round trip gives back the same file: tag "annotator" (who made the span), "score"
(predictions), "labelstudio" (the rest of the Label Studio result: id, from_name, ...), "votes" (conflicts);
document "annotators" (everyone who annotated it, also those who marked nothing) and "meta" (tool fields
the standard format has no place for). What a target cannot hold is counted in a report, never dropped.
"""
import argparse
import copy
import itertools
import json
import re
from collections import defaultdict
from pathlib import Path

CONFLICT = "???"  # label of a span the annotators disagree on (x-annotate, ner.md §3)
O = "O"  # noqa: E741 (the tag name) -- "no span here" in the aligned span units
_COLUMNS = ("f1", "f1_partial", "cohen_kappa", "fleiss_kappa", "n_units")  # per label / per document

Report = dict[str, list[tuple[str, str]]]  # kind -> [(document id, detail)]
_REPORT_TEXT = {
    "multi_label": "one span with several labels: kept as one tag per label (Label Studio gets them back as "
                   "one result)",
    "non_span_result": "Label Studio results that are neither text spans nor relations (choices, text areas): "
                       "kept in meta, "
                       "not in tags",
    "cancelled": "skipped (cancelled) Label Studio annotations: kept in meta, not counted as an annotator",
    "duplicate_annotator": "one annotator with several annotations of a task: the later ones are named "
                           "NAME#<annotation id>",
    "text_mismatch": "value.text differs from text[start:end]: offsets kept, token = text[start:end] "
                     "(check the offsets)",
    "overlap": "overlapping spans of one annotator: kept; Doccano needs a project with 'Allow overlapping "
               "spans'",
    "utf16_offsets": "Label Studio offsets counted in UTF-16 code units (older exports: an emoji counts 2), "
                     "converted to code points; written back in UTF-16 for Label Studio",
    "relation_lost": "relations whose ends are not spans of the document: not written",
}


def _note(report: Report, kind: str, doc_id: str, detail: str) -> None:
    report.setdefault(kind, []).append((doc_id, detail))


def format_report(report: Report) -> str:
    """One line per kind of thing a conversion could not keep as is: count, meaning, documents."""
    lines = []
    for kind, items in report.items():
        shown = "; ".join(f"{d}: {x}" for d, x in items[:5]) + (" ..." if len(items) > 5 else "")
        lines.append(f"{len(items)} x {kind} ({_REPORT_TEXT[kind]}): {shown}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files and checks

def read_jsonl(path: str | Path) -> list[dict]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {n}: not valid JSON ({e.msg}); write one JSON document "
                                     f"per line") from None
    return docs


def write_jsonl(docs: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)


def detect_format(path: str | Path) -> str:
    """'labelstudio' (a JSON list of tasks), 'doccano' (JSONL with "label", or "entities" + "relations") or
    'standard' (with "tags")."""
    text = Path(path).read_text(encoding="utf-8").lstrip()
    if not text or text.startswith("["):
        return "labelstudio" if text else "standard"
    first = json.loads(text.splitlines()[0])
    for key, fmt in (("tags", "standard"), ("label", "doccano"), ("entities", "doccano")):
        if key in first:
            return fmt
    raise ValueError(f"{path}: cannot tell the format from the first document's keys {sorted(first)}: "
                     f"expected 'tags' (standard JSONL), 'label' (Doccano JSONL) or a JSON list of Label "
                     f"Studio tasks")


def read_documents(path: str | Path, annotator: str | None = None) -> tuple[list[dict], Report]:
    """Any supported file as standard documents (checked) plus the conversion report."""
    fmt = detect_format(path)
    if fmt == "labelstudio":
        docs, report = labelstudio_to_standard(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
    elif fmt == "doccano":
        docs, report = doccano_to_standard(read_jsonl(path), annotator, str(path))
    else:
        docs, report = read_jsonl(path), {}
    check_documents(docs, str(path))
    return docs, report


def doc_id(doc: dict, index: int) -> str:
    """A document's id, or its line number (from 1) in the file when it has none."""
    return str(doc["id"]) if "id" in doc else str(index + 1)


def _check_span(text: str, start, end, where: str) -> None:
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(text)):
        raise ValueError(f"{where}: span [{start}, {end}) is outside the text (length {len(text)}); offsets "
                         f"must be ints with 0 <= char_start <= char_end <= len(text)")


def check_documents(docs: list[dict], source: str) -> None:
    """Raise a message naming file, document and span for anything ill-formed in standard documents."""
    for i, doc in enumerate(docs):
        where = f"{source}, document {doc_id(doc, i)}"
        if not isinstance(doc.get("text"), str) or not isinstance(doc.get("tags", []), list):
            raise TypeError(f"{where}: expected {{'text': str, 'tags': [...]}}, got keys {sorted(doc)}")
        for t in doc.get("tags", []):
            if not {"char_start", "char_end", "tag"} <= t.keys():
                raise ValueError(f"{where}: tag {t} lacks char_start, char_end or tag")
            s, e = t["char_start"], t["char_end"]
            _check_span(doc["text"], s, e, where)
            if "token" in t and t["token"] != doc["text"][s:e]:
                raise ValueError(f"{where}: span [{s}, {e}) has token {t['token']!r} but the text there is "
                                 f"{doc['text'][s:e]!r}; fix the offsets or the token")
        doc.setdefault("tags", [])


# ----------------------------------------------------------------------------- Label Studio

def _annotation_names(annotations: list[dict]) -> list[str | None]:
    """Annotator of each Label Studio annotation: completed_by (email if exported as a dict, else id);
    None when the export does not say (then the tags get no "annotator")."""
    names: list[str | None] = []
    for ann in annotations:
        who = ann.get("completed_by")
        if isinstance(who, dict):
            who = who.get("email") or who.get("id")
        name = None if who is None else str(who)
        if name is not None and name in names:
            name = f"{name}#{ann.get('id', len(names))}"
        names.append(name)
    return names


def _utf16_to_codepoints(text: str) -> list[int]:
    """Index: a UTF-16 code unit offset into text -> the code point offset (an astral character such as most
    emoji is 2 units, 1 code point). Offsets inside a surrogate pair map to the character's start."""
    out = []
    for i, c in enumerate(text):
        out += [i] * (2 if ord(c) > 0xFFFF else 1)
    return out + [len(text)]


def _codepoints_to_utf16(text: str) -> list[int]:
    out, unit = [], 0
    for c in text:
        out.append(unit)
        unit += 2 if ord(c) > 0xFFFF else 1
    return out + [unit]


def _span_results(tasks: list[dict]):
    """(task, result) for every labels result of every annotation and prediction that has start/end/text."""
    for task in tasks:
        for ann in task.get("annotations", []) + task.get("predictions", []):
            for r in ann.get("result", []) or []:
                v = r.get("value")
                if isinstance(v, dict) and {"start", "end", "text"} <= v.keys():
                    yield task, r


def labelstudio_offset_unit(tasks: list[dict]) -> str:
    """'codepoints' or 'utf16': how an export counts value.start/end. Label Studio wrote UTF-16 code units in some
    versions (JavaScript string indices: one emoji = 2) and code points in newer ones. Decided by checking every
    span's value.text against the document under both readings; only texts with characters beyond U+FFFF can
    tell them apart. Code points when nothing tells (then both readings agree wherever a span has text)."""
    votes = {"codepoints": 0, "utf16": 0}
    for task, r in _span_results(tasks):
        text = task.get("data", {}).get("text")
        if not isinstance(text, str) or all(ord(c) <= 0xFFFF for c in text):
            continue
        s, e, want = r["value"]["start"], r["value"]["end"], r["value"]["text"]
        if not (isinstance(s, int) and isinstance(e, int)):
            continue
        votes["codepoints"] += text[s:e] == want
        u = _utf16_to_codepoints(text)
        votes["utf16"] += 0 <= s <= e < len(u) and text[u[s]:u[e]] == want
    return "utf16" if votes["utf16"] > votes["codepoints"] else "codepoints"


def _span_result_error(r: dict, where: str) -> str | None:
    """Why a labels result is not a usable span (None when it is)."""
    v = r.get("value")
    if not isinstance(v, dict):
        return "has no value"
    missing = [k for k in ("start", "end", "labels") if k not in v]
    if missing:
        return f"has no value.{'/'.join(missing)}"
    if not isinstance(v["labels"], list) or not v["labels"]:
        return f"has an empty value.labels {v['labels']!r}"
    return None


def labelstudio_to_standard(tasks: list[dict], source: str = "labelstudio") -> tuple[list[dict], Report]:
    """Label Studio JSON export (Export -> JSON) -> standard documents, a tag per (span, label, annotator).
    Offsets in UTF-16 code units (older exports) are detected and converted to code points (reported); a
    relation result becomes a document "relations" entry {from_id, to_id, type, annotator}, its ends being the
    tags' Label Studio result ids (tag "id"). A labels result without value/start/end/labels is an error naming
    the result id."""
    if not isinstance(tasks, list):
        raise TypeError(f"{source}: a Label Studio export is a JSON list of tasks (Export -> JSON), "
                         f"got {type(tasks).__name__}")
    unit = labelstudio_offset_unit(tasks)
    docs, report = [], {}
    for i, task in enumerate(tasks):
        did = str(task.get("id", i + 1))
        text = task.get("data", {}).get("text")
        if not isinstance(text, str):
            raise TypeError(f"{source}, task {did}: no data.text string (data keys: "
                             f"{sorted(task.get('data', {}))}); the labeling config must read the text as "
                             f"value=\"$text\"")
        to_cp = _utf16_to_codepoints(text) if unit == "utf16" else None
        rest = {k: v for k, v in task.items() if k != "annotations"}
        rest["data"] = {k: v for k, v in task["data"].items() if k != "text"}
        doc = {"id": did, "text": text, "tags": [], "annotators": [],
               "meta": {"labelstudio": {"task": rest, "annotations": []}}}
        if unit == "utf16":
            doc["meta"]["labelstudio"]["offsets"] = "utf16"
        relations = []
        annotations = task.get("annotations", [])
        for ann, name in zip(annotations, _annotation_names(annotations)):
            kept, other = {k: v for k, v in ann.items() if k != "result"}, []
            if name is not None and "#" in name:
                _note(report, "duplicate_annotator", did, name)
            if ann.get("was_cancelled"):
                _note(report, "cancelled", did, f"annotation by {name}")
            elif name is not None:
                doc["annotators"].append(name)
            for r in ann.get("result", []):
                where = f"{source}, task {did}, annotation by {name}, result id {r.get('id')!r}"
                is_span = r.get("type") == "labels" or (r.get("type") is None and isinstance(r.get("value"), dict)
                                                        and "start" in r["value"])
                if is_span and (why := _span_result_error(r, where)):
                    raise ValueError(f"{where}: a '{r.get('type', 'labels')}' (span) result {why}; every span "
                                     f"needs value.start, value.end and value.labels (fix or delete that result)")
                if ann.get("was_cancelled") or not is_span:
                    if r.get("type") == "relation" and not ann.get("was_cancelled"):
                        relations.append((r, name))
                        continue
                    other.append(r)
                    if not ann.get("was_cancelled"):
                        _note(report, "non_span_result", did, f"{r.get('type')} by {name}")
                    continue
                v = r["value"]
                s, e = v["start"], v["end"]
                if to_cp is not None:
                    if not (isinstance(s, int) and isinstance(e, int) and 0 <= s <= e < len(to_cp)):
                        raise ValueError(f"{where}: span [{s}, {e}) is outside the text ({len(to_cp) - 1} UTF-16 "
                                         f"code units)")
                    s, e = to_cp[s], to_cp[e]
                    _note(report, "utf16_offsets", did, f"[{v['start']}, {v['end']}) -> [{s}, {e})")
                _check_span(text, s, e, where)
                token = text[s:e]
                extra = {k: x for k, x in r.items() if k != "value"}
                extra_value = {k: x for k, x in v.items()
                               if k not in ("start", "end", "labels") and not (k == "text" and x == token)}
                if "text" in extra_value:
                    _note(report, "text_mismatch", did, f"[{s}, {e}) {v['text']!r} vs {token!r}")
                if extra_value:
                    extra["value"] = extra_value
                if len(v["labels"]) > 1:
                    _note(report, "multi_label", did, f"[{s}, {e}) {token!r} {v['labels']} by {name}")
                who = {} if name is None else {"annotator": name}
                rid = {} if r.get("id") is None else {"id": r["id"]}
                doc["tags"] += [{"char_start": s, "char_end": e, "token": token, "tag": label, **rid, **who,
                                 "labelstudio": extra} for label in v["labels"]]
            if other:
                kept["other_results"] = other
            doc["meta"]["labelstudio"]["annotations"].append(kept)
        ids = {t.get("id") for t in doc["tags"]}
        for r, name in relations:
            if r.get("from_id") not in ids or r.get("to_id") not in ids:
                raise ValueError(f"{source}, task {did}: relation {r.get('id')!r} joins {r.get('from_id')!r} and "
                                 f"{r.get('to_id')!r}, which are not both span results of the task")
            labels = r.get("labels") or []
            doc.setdefault("relations", []).append(
                {"from_id": r["from_id"], "to_id": r["to_id"], "type": labels[0] if labels else "",
                 **({} if name is None else {"annotator": name}), "labelstudio": r})
            if len(labels) > 1:
                _note(report, "multi_label", did, f"relation {r.get('id')!r} {labels}: type = the first")
        docs.append(doc)
    return docs, report


def _ls_results(tags: list[dict], prefix: str, from_name: str, to_name: str,
                to_units: list[int] | None = None) -> list[dict]:
    """Tags of one annotator -> Label Studio results; tags of one span and result id share one result. The result
    id is the tag's Label Studio id, else its "id" (relations refer to it), else a new one. to_units: code point
    -> UTF-16 offsets, for a document that came from a UTF-16 export."""
    results: dict[tuple, dict] = {}
    for t in tags:
        extra = t.get("labelstudio", {})
        key = (t["char_start"], t["char_end"], extra.get("id", t.get("id")))
        if key not in results:
            rid = str(t["id"]) if "id" in t else f"{prefix}{len(results)}"
            r = copy.deepcopy(extra) or {"id": rid, "from_name": from_name, "to_name": to_name, "type": "labels"}
            s, e = (t["char_start"], t["char_end"]) if to_units is None else (to_units[t["char_start"]],
                                                                              to_units[t["char_end"]])
            r["value"] = {"start": s, "end": e, "text": t["token"], "labels": [], **extra.get("value", {})}
            if "score" in t:
                r["score"] = t["score"]
            results[key] = r
        results[key]["value"]["labels"].append(t["tag"])
    return list(results.values())


def _ls_relation(rel: dict) -> dict:
    """A standard relation -> a Label Studio relation result (the original one when it came from Label Studio)."""
    if "labelstudio" in rel:
        return copy.deepcopy(rel["labelstudio"])
    return {"from_id": str(rel["from_id"]), "to_id": str(rel["to_id"]), "type": "relation", "direction": "right",
            "labels": [rel["type"]] if rel.get("type") else []}


def _annotators(doc: dict) -> list:
    """Everyone who annotated a document, in order: doc["annotators"], then whoever else made a tag."""
    names = list(doc.get("annotators", []))
    for t in doc["tags"]:
        if t.get("annotator") not in names:
            names.append(t.get("annotator"))
    return names


def standard_to_labelstudio(docs: list[dict], from_name: str = "label",
                            to_name: str = "text") -> list[dict]:
    """Standard documents -> Label Studio tasks (import JSON), one annotation per annotator.
    from_name/to_name must match the project's labeling config (<Labels name=...> / <Text name=...>)."""
    tasks = []
    for i, doc in enumerate(docs):
        ls = doc.get("meta", {}).get("labelstudio", {})
        units = _codepoints_to_utf16(doc["text"]) if ls.get("offsets") == "utf16" else None  # as it came in
        task = copy.deepcopy(ls.get("task", {}))
        if "id" not in task and "id" in doc:  # Label Studio task ids are ints
            task["id"] = int(doc["id"]) if str(doc["id"]).isdigit() else doc["id"]
        task["data"] = {"text": doc["text"], **task.get("data", {})}
        by_name = defaultdict(list)
        for t in doc["tags"]:
            by_name[t.get("annotator")].append(t)
        metas = ls.get("annotations", [])
        names = _annotation_names(metas)
        names += [n for n in _annotators(doc) if n not in names] or ([None] if not names else [])
        task["annotations"] = []
        for k, name in enumerate(names):
            ann = copy.deepcopy(metas[k]) if k < len(metas) else (
                {} if name is None else {"completed_by": int(name) if name.isdigit() else name})
            other = ann.pop("other_results", [])
            prefix = f"{doc_id(doc, i)}-{k}-"  # result ids for tags that did not come from Label Studio
            rels = [_ls_relation(r) for r in doc.get("relations", []) if r.get("annotator") == name]
            ann["result"] = _ls_results(by_name.pop(name, []), prefix, from_name, to_name, units) + rels + other
            task["annotations"].append(ann)
        tasks.append(task)
    return tasks


def split_by_annotator(docs: list[dict]) -> dict[str, list[dict]]:
    """One list of documents per annotator (only the documents they annotated, only their tags)."""
    out: dict[str, list[dict]] = {}
    for doc in docs:
        names = _annotators(doc)
        metas = doc.get("meta", {}).get("labelstudio", {}).get("annotations", [])
        for name in names:
            one = {**doc, "tags": [t for t in doc["tags"] if t.get("annotator") == name],
                   "annotators": [name]}
            if "relations" in doc:
                one["relations"] = [r for r in doc["relations"] if r.get("annotator") == name]
            if metas:
                ls = {**doc["meta"]["labelstudio"],
                      "annotations": [m for m, n in zip(metas, _annotation_names(metas)) if n == name]}
                one["meta"] = {**doc["meta"], "labelstudio": ls}
            out.setdefault(str(name), []).append(one)
    return out


# ----------------------------------------------------------------------------- Doccano

def doccano_to_standard(lines: list[dict], annotator: str | None = None,
                        source: str = "doccano") -> tuple[list[dict], Report]:
    """Doccano JSONL, one annotator per file, in either layout Doccano exports: sequence labeling
    {"text", "label": [[start, end, tag]]} or relation extraction {"text", "entities": [{id, label, start_offset,
    end_offset}], "relations": [{id, from_id, to_id, type}]} -> standard documents (entity ids become tag "id",
    relations a document "relations" list). A "scores" list (written by write_doccano, one per label) becomes the
    tags' scores."""
    docs = []
    for i, line in enumerate(lines):
        did = str(line.get("id", i + 1))
        where = f"{source} line {i + 1} (document {did})"
        text = line.get("text")
        if "entities" in line:
            spans, layout = line["entities"], "entities"
            if not isinstance(spans, list) or not all(isinstance(x, dict) and {"id", "label", "start_offset",
                                                                                "end_offset"} <= x.keys()
                                                      for x in spans):
                raise ValueError(f"{where}: 'entities' must be a list of {{id, label, start_offset, end_offset}}")
            items = [(x["start_offset"], x["end_offset"], x["label"], {"id": x["id"]}) for x in spans]
        else:
            spans, layout = line.get("label", []), "label"
            if not isinstance(spans, list):
                raise TypeError(f"{where}: expected {{'text': str, 'label': [[start, end, tag]]}}")
            for item in spans:
                if not (isinstance(item, list) and len(item) == 3):
                    raise ValueError(f"{where}: label {item!r} is not [start, end, tag]")
            items = [(s, e, tag, {}) for s, e, tag in spans]
        if not isinstance(text, str):
            raise TypeError(f"{where}: expected a string 'text'")
        scores = line.get("scores")
        tags = []
        for k, (s, e, tag, extra) in enumerate(items):
            _check_span(text, s, e, where)
            tags.append({"char_start": s, "char_end": e, "token": text[s:e], "tag": tag, **extra})
            if scores is not None:
                tags[-1]["score"] = scores[k]
            if annotator is not None:
                tags[-1]["annotator"] = annotator
        doc = {"id": did, "text": text, "tags": tags} if "id" in line else {"text": text, "tags": tags}
        if layout == "entities":
            ids = {t["id"] for t in tags}
            doc["relations"] = []
            for r in line.get("relations", []):
                if not (isinstance(r, dict) and {"from_id", "to_id", "type"} <= r.keys()):
                    raise ValueError(f"{where}: relation {r!r} is not {{id, from_id, to_id, type}}")
                if r["from_id"] not in ids or r["to_id"] not in ids:
                    raise ValueError(f"{where}: relation {r.get('id')!r} joins entities {r['from_id']!r} and "
                                     f"{r['to_id']!r}, which are not both in 'entities'")
                doc["relations"].append({k: r[k] for k in ("id", "from_id", "to_id", "type") if k in r}
                                        | ({} if annotator is None else {"annotator": annotator}))
        if annotator is not None:
            doc["annotators"] = [annotator]
        meta = {k: v for k, v in line.items() if k not in ("text", "label", "scores", "entities", "relations")}
        if meta:
            doc["meta"] = {"doccano": meta}
        docs.append(doc)
    return docs, {}


def _doccano_entities(doc: dict, did: str, report: Report) -> tuple[list[dict], list[dict]]:
    """Tags + relations -> Doccano entities/relations with int ids; a relation whose end is not a tag is reported
    as lost."""
    entities, new_id = [], {}
    used = {t["id"] for t in doc["tags"] if isinstance(t.get("id"), int)}
    fresh = (k for k in itertools.count(1) if k not in used)
    for t in doc["tags"]:
        old = t.get("id")
        eid = old if isinstance(old, int) and old not in {e["id"] for e in entities} else next(fresh)
        new_id.setdefault(old, eid)
        entities.append({"id": eid, "label": t["tag"], "start_offset": t["char_start"], "end_offset": t["char_end"]})
    relations = []
    for k, r in enumerate(doc.get("relations", [])):
        if r["from_id"] not in new_id or r["to_id"] not in new_id:
            _note(report, "relation_lost", did, f"{r['from_id']} -> {r['to_id']} {r.get('type')!r}")
            continue
        rid = r["id"] if isinstance(r.get("id"), int) else k + 1
        relations.append({"id": rid, "from_id": new_id[r["from_id"]], "to_id": new_id[r["to_id"]],
                          "type": r.get("type", "")})
    return entities, relations


def standard_to_doccano(docs: list[dict], source: str = "documents") -> tuple[list[dict], Report]:
    """Standard documents of one annotator -> Doccano JSONL lines (+ report of overlapping spans). Documents with
    relations give the relation-extraction layout (entities + relations) for the whole file, others the
    sequence-labeling layout (label)."""
    lines, report = [], {}
    with_relations = any(doc.get("relations") for doc in docs)
    for i, doc in enumerate(docs):
        did = doc_id(doc, i)
        names = [n for n in _annotators(doc) if n is not None]
        if len(names) > 1:
            raise ValueError(f"{source}, document {did}: spans of several annotators {names}; a Doccano file "
                             f"holds one annotator's labels: split first (annotate.split_by_annotator, or "
                             f"`python annotate.py convert IN OUT --to doccano` writes a file per annotator)")
        line = copy.deepcopy(doc.get("meta", {}).get("doccano", {}))
        if "id" not in line and "id" in doc:
            line["id"] = doc["id"]
        tags = doc["tags"]
        if with_relations:
            entities, relations = _doccano_entities(doc, did, report)
            line.update(text=doc["text"], entities=entities, relations=relations)
        else:
            line.update(text=doc["text"], label=[[t["char_start"], t["char_end"], t["tag"]] for t in tags])
        if any("score" in t for t in tags):
            line["scores"] = [t.get("score") for t in tags]
        for a, b in itertools.pairwise(sorted(tags, key=lambda t: (t["char_start"], t["char_end"]))):
            if b["char_start"] < a["char_end"]:
                _note(report, "overlap", did, f"[{a['char_start']}, {a['char_end']}) {a['tag']} and "
                                              f"[{b['char_start']}, {b['char_end']}) {b['tag']}")
        lines.append(line)
    return lines, report


# ----------------------------------------------------------------------------- pre-annotation

def predictions_to_documents(texts: list[str], preds: list[list[dict]]) -> list[dict]:
    """ner.predict output ([{char_start, char_end, text, label, score}] per text) -> standard documents."""
    if len(texts) != len(preds):
        raise ValueError(f"{len(texts)} texts but {len(preds)} prediction lists: pass one list per text")
    docs = []
    for i, (text, spans) in enumerate(zip(texts, preds)):
        tags = []
        for p in spans:
            s, e = int(p["char_start"]), int(p["char_end"])  # nerblackbox gives str offsets (ner.md §1.4)
            _check_span(text, s, e, f"prediction {p} for text {i}")
            label = p.get("label", p.get("tag"))
            tags.append({"char_start": s, "char_end": e, "token": text[s:e], "tag": label})
            if p.get("score") is not None:
                tags[-1]["score"] = float(p["score"])
        docs.append({"text": text, "tags": tags})
    return docs


def write_labelstudio_predictions(texts: list[str], preds: list[list[dict]], path: str | Path,
                                  model_version: str = "ner.py", from_name: str = "label",
                                  to_name: str = "text") -> None:
    """Label Studio import JSON with model `predictions` (pre-annotations shown to annotators), per-span
    and per-task scores (task score = mean span score, used by Label Studio to sort tasks)."""
    tasks = []
    for i, doc in enumerate(predictions_to_documents(texts, preds)):
        scores = [t["score"] for t in doc["tags"] if "score" in t]
        pred = {"model_version": model_version,
                "result": _ls_results(doc["tags"], f"p{i}-", from_name, to_name)}
        if scores:
            pred["score"] = sum(scores) / len(scores)
        tasks.append({"data": {"text": doc["text"]}, "predictions": [pred]})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")


def write_doccano(texts: list[str], preds: list[list[dict]], path: str | Path) -> None:
    """Doccano JSONL pre-annotations; scores go in a "scores" key (Doccano keeps it as metadata)."""
    lines, report = standard_to_doccano(predictions_to_documents(texts, preds), str(path))
    if report:
        print(format_report(report))
    write_jsonl(lines, path)


# ----------------------------------------------------------------------------- agreement

def load_annotations(paths: list[str]) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """Annotator -> {document id -> document} from files of any supported format, and annotator -> file.
    A file with one annotator is named by its file name; a file holding several (a Label Studio export)
    is split into its annotators. Checks the inputs agree with each other (texts, documents, labels)."""
    annotations, sources = {}, {}
    for path in paths:
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
        raise ValueError(f"agreement needs at least two annotators, got {list(annotations)} from {paths}")
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
                                     f"(annotate.py resolve)")
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
    """Job-ads alignment (ner.md §3): the units are the union over annotators of exact (start, end) spans;
    an annotator without a span there gets O. Rows where everyone has O are dropped, which the union
    already guarantees. Returns one row per unit: the label of each annotator, in order."""
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
    """Inter-annotator agreement (keys documented in README "Annotation"): overall, per label, per document
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
    `???` tag with "votes" {annotator: label or O} (x-annotate, ner.md §3). Returns (merged documents in
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
                             f"that `annotate.py merge` wrote")
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

def main(argv: list[str] | None = None) -> None:
    """`python annotate.py convert|agreement|merge|resolve ...` (also `python ner.py agreement ...`)."""
    ap = argparse.ArgumentParser(prog="annotate.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="convert between standard JSONL, Label Studio JSON and Doccano JSONL")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--to", required=True, choices=["standard", "labelstudio", "doccano"])
    p.add_argument("--annotator", default=None, help="annotator name for a Doccano input file")
    p = sub.add_parser("agreement", help="inter-annotator agreement -> DIR/agreement.json")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p = sub.add_parser("merge", help="accept agreed spans, write conflicts for review")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--conflicts", required=True)
    p = sub.add_parser("resolve", help="merge reviewed conflicts back")
    p.add_argument("merged")
    p.add_argument("resolved")
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        _run(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit(f"annotate.py: {e}") from None


def _run(args: argparse.Namespace) -> None:
    if args.command == "convert":
        docs, report = read_documents(args.input, args.annotator)
        out = Path(args.output)
        if args.to == "labelstudio":
            out.write_text(json.dumps(standard_to_labelstudio(docs), ensure_ascii=False, indent=1),
                           encoding="utf-8")
        elif args.to == "standard":
            write_jsonl(docs, out)
        else:
            parts = split_by_annotator(docs) if len({n for d in docs for n in _annotators(d)} - {None}) > 1 \
                else {None: docs}
            for name, part in parts.items():
                lines, more = standard_to_doccano(part, args.input)
                for k, v in more.items():
                    report.setdefault(k, []).extend(v)
                target = out if name is None else out.with_name(f"{out.stem}.{name}{out.suffix}")
                write_jsonl(lines, target)
                print(f"wrote {target} ({len(lines)} documents)")
        print(format_report(report) or "nothing lost in the conversion")
    elif args.command == "agreement":
        result = agreement(load_annotations(args.files)[0])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "agreement.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
        print(format_agreement(result))
        print(f"wrote {Path(args.out) / 'agreement.json'}")
    elif args.command == "merge":
        annotations = load_annotations(args.files)[0]
        merged, conflicts = merge(annotations)
        lost = sum(len(d.get("relations", [])) for docs in annotations.values() for d in docs.values())
        if lost:  # merge adjudicates spans only: say so rather than drop relations silently
            print(f"note: {lost} relation(s) in the inputs are not carried into {args.out} (merge adjudicates "
                  f"spans only)")
        write_jsonl(merged, args.out)
        write_jsonl(conflicts, args.conflicts)
        n = sum(t["tag"] == CONFLICT for d in conflicts for t in d["tags"])
        print(f"wrote {args.out} ({len(merged)} documents) and {args.conflicts} ({n} conflicts in "
              f"{len(conflicts)} documents, worst agreement first): set each {CONFLICT} tag to a label or "
              f"{O}, then run resolve")
    else:
        final = resolve(read_jsonl(args.merged), read_jsonl(args.resolved), args.merged, args.resolved)
        write_jsonl(final, args.out)
        print(f"wrote {args.out} ({len(final)} documents)")


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `annotate.py: problem: fix`, exit 1
    run_cli("annotate.py", main)
