"""
Annotation tool files around the standard char-span JSONL of ner.py: Label Studio and Doccano converters and
pre-annotation writers, and the `convert` command (agreement.py holds inter-annotator agreement and
adjudication, with their commands). The converters follow nerblackbox's (nerblackbox,
nerblackbox/modules/annotation/file_conversion.py: Label Studio `data.text` + `result[].value{start, end, labels}`,
Doccano `{"text", "label": [[start, end, tag]]}`), but lose nothing.

    python annotate.py convert --input=export.json --output=alice_bob.jsonl --to=standard

Input files may be standard JSONL, Doccano JSONL or a Label Studio JSON export (detected from the content).
A standard document is {"id", "text", "tags": [{"char_start", "char_end", "token", "tag"}]}; this file adds
optional keys so that a round trip gives back the same file: tag "annotator" (who made the span), "score"
(predictions), "labelstudio" (the rest of the Label Studio result: id, from_name, ...), "votes" (conflicts);
document "annotators" (everyone who annotated it, also those who marked nothing) and "meta" (tool fields
the standard format has no place for). What a target cannot hold is counted in a report, never dropped.
"""
import copy
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

from configurator import check_output_path, configure_command
from nerdata import read_json_lines, write_jsonl

CONVERT_DEFAULTS = dict(
    input="",  # a standard JSONL, Doccano JSONL or Label Studio JSON export (the format is read from the content)
    output="",  # the converted file (Doccano with several annotators: one OUTPUT.<name>.jsonl per annotator)
    to="",  # standard | labelstudio | doccano
    annotator="",  # annotator name for the spans of a Doccano input file ('' = none)
)
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
    "utf16_offsets": "offsets counted in UTF-16 code units (older Label Studio exports, some Doccano ones: an "
                     "emoji counts 2), converted to code points; written back in UTF-16 for the tool",
    "crlf_offsets": "Label Studio offsets that count a CRLF as one character (the browser's LF), converted to "
                    "code points; written back so for Label Studio",
    "utf16_crlf_offsets": "Label Studio offsets in UTF-16 code units that count a CRLF as one character, "
                          "converted to code points; written back so for Label Studio",
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

def export_format(path: str | Path) -> str:
    """Which tool wrote an annotation file: 'labelstudio' (a JSON list of tasks), 'doccano' (JSONL with "label",
    or "entities" + "relations") or 'standard' (with "tags"). nerdata.detect_format tells CoNLL, CSV and JSONL
    apart for training files."""
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
    fmt = export_format(path)
    if fmt == "labelstudio":
        docs, report = labelstudio_to_standard(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
    elif fmt == "doccano":
        docs, report = doccano_to_standard(read_json_lines(path), annotator, str(path))
    else:
        docs, report = read_json_lines(path), {}
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
            raise ValueError(f"{where}: expected {{'text': str, 'tags': [...]}}, got keys {sorted(doc)}")
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


OFFSET_UNITS = ("codepoints", "utf16", "crlf", "utf16+crlf")  # how a tool's export may count offsets


def _to_codepoints(text: str, unit: str) -> list[int]:
    """Index: an offset as an export counts it -> the code point offset into text. 'utf16': an astral character
    (most emoji) is 2 UTF-16 code units, 1 code point; 'crlf': a CRLF counts as one character (a browser's
    textarea turns it into LF). Offsets inside a surrogate pair or a CRLF map to the character's start."""
    out = []
    for i, c in enumerate(text):
        if "crlf" in unit and c == "\n" and text[i - 1:i] == "\r":
            continue  # the CRLF was counted once, at its CR
        out += [i] * (2 if "utf16" in unit and ord(c) > 0xFFFF else 1)
    return out + [len(text)]


def _from_codepoints(text: str, unit: str) -> list[int]:
    """Index: a code point offset into text -> the offset as an export of that unit counts it."""
    out, pos = [], 0
    for i, c in enumerate(text):
        out.append(pos)
        if not ("crlf" in unit and c == "\r" and text[i + 1:i + 2] == "\n"):
            pos += 2 if "utf16" in unit and ord(c) > 0xFFFF else 1
    return out + [pos]


def _unit_tells(text: str) -> bool:
    """Whether the offset units differ in text: characters beyond U+FFFF or a CRLF."""
    return "\r\n" in text or any(ord(c) > 0xFFFF for c in text)


def _span_results(tasks: list[dict]):
    """(task, result) for every labels result of every annotation and prediction that has start/end/text."""
    for task in tasks:
        for ann in task.get("annotations", []) + task.get("predictions", []):
            for r in ann.get("result", []) or []:
                v = r.get("value")
                if isinstance(v, dict) and {"start", "end", "text"} <= v.keys():
                    yield task, r


def labelstudio_offset_unit(tasks: list[dict]) -> str:
    """One of OFFSET_UNITS: how an export counts value.start/end. Label Studio wrote UTF-16 code units in some
    versions (JavaScript string indices: one emoji = 2) and code points in newer ones, and counts a CRLF of the
    text as one character (the browser shows it as LF). Decided by checking every span's value.text against the
    document under each reading; only texts with characters beyond U+FFFF or a CRLF can tell them apart. Code
    points when nothing tells (then every reading agrees wherever a span has text)."""
    votes = dict.fromkeys(OFFSET_UNITS, 0)
    for task, r in _span_results(tasks):
        text = task.get("data", {}).get("text")
        s, e, want = r["value"]["start"], r["value"]["end"], r["value"]["text"]
        if not isinstance(text, str) or not _unit_tells(text) or not (isinstance(s, int) and isinstance(e, int)):
            continue
        for unit in OFFSET_UNITS:
            m = _to_codepoints(text, unit)
            votes[unit] += 0 <= s <= e < len(m) and _same_text(text[m[s]:m[e]], want)
    return max(OFFSET_UNITS, key=lambda u: votes[u])  # the first of a tie: code points


def _same_text(token: str, want) -> bool:
    """A span's text equals the tool's, a CRLF in it counted as the LF the tool saw."""
    return token == want or token.replace("\r\n", "\n") == want


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
        raise ValueError(f"{source}: a Label Studio export is a JSON list of tasks (Export -> JSON), "
                         f"got {type(tasks).__name__}")
    unit = labelstudio_offset_unit(tasks)
    docs, report = [], {}
    units_note = "utf16_offsets" if unit == "utf16" else f"{unit.replace('+', '_')}_offsets"
    for i, task in enumerate(tasks):
        did = str(task.get("id", i + 1))
        text = task.get("data", {}).get("text")
        if not isinstance(text, str):
            raise ValueError(f"{source}, task {did}: no data.text string (data keys: "
                             f"{sorted(task.get('data', {}))}); the labeling config must read the text as "
                             f"value=\"$text\"")
        to_cp = _to_codepoints(text, unit) if unit != "codepoints" and _unit_tells(text) else None
        rest = {k: v for k, v in task.items() if k != "annotations"}
        rest["data"] = {k: v for k, v in task["data"].items() if k != "text"}
        doc = {"id": did, "text": text, "tags": [], "annotators": [],
               "meta": {"labelstudio": {"task": rest, "annotations": []}}}
        if unit != "codepoints":
            doc["meta"]["labelstudio"]["offsets"] = unit
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
                        raise ValueError(f"{where}: span [{s}, {e}) is outside the text ({len(to_cp) - 1} "
                                         f"offsets counted as {unit})")
                    s, e = to_cp[s], to_cp[e]
                    if (s, e) != (v["start"], v["end"]):
                        _note(report, units_note, did, f"[{v['start']}, {v['end']}) -> [{s}, {e})")
                _check_span(text, s, e, where)
                token = text[s:e]
                extra = {k: x for k, x in r.items() if k != "value"}
                extra_value = {k: x for k, x in v.items()
                               if k not in ("start", "end", "labels") and not (k == "text" and _same_text(token, x))}
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
        units = _from_codepoints(doc["text"], ls["offsets"]) if ls.get("offsets") else None  # as it came in
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

def _doccano_offsets(line: dict) -> list[tuple]:
    """The (start, end) of every span of a Doccano line, either layout (malformed items skipped)."""
    if isinstance(line.get("entities"), list):
        return [(x.get("start_offset"), x.get("end_offset")) for x in line["entities"] if isinstance(x, dict)]
    spans = line.get("label")
    return [tuple(x[:2]) for x in spans if isinstance(x, list) and len(x) == 3] if isinstance(spans, list) else []


def _clean_span(text: str, s: int, e: int) -> bool:
    """Whether [s, e) is what an annotator marks: not empty, no space at its ends, no word cut at either end."""
    if not 0 <= s < e <= len(text) or text[s:e] != text[s:e].strip():
        return False
    return (s == 0 or not (text[s - 1].isalnum() and text[s].isalnum())) and \
        (e == len(text) or not (text[e - 1].isalnum() and text[e].isalnum()))


def doccano_offset_unit(lines: list[dict]) -> str:
    """'codepoints' or 'utf16': how a Doccano export counts its offsets (some count UTF-16 code units: an emoji
    = 2). Doccano keeps no span text, so each reading is scored by its spans' ends: read in the wrong unit, a span
    after an emoji is shifted by a character per emoji and cuts words ('na o' for 'Anna'); the reading with more
    spans that start and end at word boundaries wins. Only texts with characters beyond U+FFFF can tell; code
    points when they tie."""
    votes = {"codepoints": 0, "utf16": 0}
    for line in lines:
        text = line.get("text") if isinstance(line, dict) else None
        if not isinstance(text, str) or all(ord(c) <= 0xFFFF for c in text):
            continue
        m = _to_codepoints(text, "utf16")
        for s, e in _doccano_offsets(line):
            if isinstance(s, int) and isinstance(e, int):
                votes["codepoints"] += _clean_span(text, s, e)
                votes["utf16"] += 0 <= s <= e < len(m) and _clean_span(text, m[s], m[e])
    return "utf16" if votes["utf16"] > votes["codepoints"] else "codepoints"


def doccano_to_standard(lines: list[dict], annotator: str | None = None,
                        source: str = "doccano") -> tuple[list[dict], Report]:
    """Doccano JSONL, one annotator per file, in either layout Doccano exports: sequence labeling
    {"text", "label": [[start, end, tag]]} or relation extraction {"text", "entities": [{id, label, start_offset,
    end_offset}], "relations": [{id, from_id, to_id, type}]} -> standard documents (entity ids become tag "id",
    relations a document "relations" list). A "scores" list (written by write_doccano, one per label) becomes the
    tags' scores. Offsets in UTF-16 code units are detected (doccano_offset_unit), converted to code points
    (reported) and written back so by standard_to_doccano."""
    unit, report = doccano_offset_unit(lines), {}
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
                raise ValueError(f"{where}: expected {{'text': str, 'label': [[start, end, tag]]}}")
            for item in spans:
                if not (isinstance(item, list) and len(item) == 3):
                    raise ValueError(f"{where}: label {item!r} is not [start, end, tag]")
            items = [(s, e, tag, {}) for s, e, tag in spans]
        if not isinstance(text, str):
            raise ValueError(f"{where}: expected a string 'text'")
        scores = line.get("scores")
        to_cp = _to_codepoints(text, unit) if unit == "utf16" and _unit_tells(text) else None
        tags = []
        for k, (s, e, tag, extra) in enumerate(items):
            if to_cp is not None:
                if not (isinstance(s, int) and isinstance(e, int) and 0 <= s <= e < len(to_cp)):
                    raise ValueError(f"{where}: span [{s}, {e}) is outside the text ({len(to_cp) - 1} UTF-16 "
                                     f"code units)")
                if (to_cp[s], to_cp[e]) != (s, e):
                    _note(report, "utf16_offsets", did, f"[{s}, {e}) -> [{to_cp[s]}, {to_cp[e]})")
                s, e = to_cp[s], to_cp[e]
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
        if unit == "utf16":
            doc.setdefault("meta", {})["doccano_offsets"] = unit
        docs.append(doc)
    return docs, report


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
                             f"`python annotate.py convert --input=IN --output=OUT --to=doccano` writes a file per "
                             f"annotator)")
        line = copy.deepcopy(doc.get("meta", {}).get("doccano", {}))
        if "id" not in line and "id" in doc:
            line["id"] = doc["id"]
        tags = doc["tags"]
        unit = doc.get("meta", {}).get("doccano_offsets")
        if unit:  # the unit it came in
            units = _from_codepoints(doc["text"], unit)
            tags = [{**t, "char_start": units[t["char_start"]], "char_end": units[t["char_end"]]} for t in tags]
        if with_relations:
            entities, relations = _doccano_entities({**doc, "tags": tags}, did, report)
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
    """nertagger.predict output ([{char_start, char_end, text, label, score}] per text) -> standard documents."""
    if len(texts) != len(preds):
        raise ValueError(f"{len(texts)} texts but {len(preds)} prediction lists: pass one list per text")
    docs = []
    for i, (text, spans) in enumerate(zip(texts, preds)):
        tags = []
        for p in spans:
            s, e = int(p["char_start"]), int(p["char_end"])  # nerblackbox's predict() gives str offsets
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


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> None:
    """`python annotate.py convert [config.py] [--key=value ...]` (agreement, merge and resolve: agreement.py)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("agreement", "merge", "resolve"):
        raise ValueError(f"{argv[0]} is in agreement.py: python agreement.py {argv[0]} -h lists its keys")
    command, cfg = configure_command({"convert": CONVERT_DEFAULTS}, argv, __file__)
    missing = [k for k, v in cfg.items() if k != "annotator" and not v]
    if missing:
        raise ValueError(f"{command}: give " + " ".join(f"--{k}=..." for k in missing) +
                         f" (python annotate.py {command} -h lists the keys)")
    _convert(cfg)


def _convert(cfg: dict) -> None:
    if cfg["to"] not in ("standard", "labelstudio", "doccano"):
        raise ValueError(f"--to={cfg['to']!r}: choose standard, labelstudio or doccano")
    check_output_path("output", cfg["output"], [cfg["input"]])
    docs, report = read_documents(cfg["input"], cfg["annotator"] or None)
    out = Path(cfg["output"])
    if cfg["to"] == "labelstudio":
        out.write_text(json.dumps(standard_to_labelstudio(docs), ensure_ascii=False, indent=1), encoding="utf-8")
    elif cfg["to"] == "standard":
        write_jsonl(docs, out)
    else:
        parts = split_by_annotator(docs) if len({n for d in docs for n in _annotators(d)} - {None}) > 1 \
            else {None: docs}
        for name, part in parts.items():
            lines, more = standard_to_doccano(part, cfg["input"])
            for k, v in more.items():
                report.setdefault(k, []).extend(v)
            target = out if name is None else out.with_name(f"{out.stem}.{name}{out.suffix}")
            write_jsonl(lines, target)
            print(f"wrote {target} ({len(lines)} documents)")
    print(format_report(report) or "nothing lost in the conversion")


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `annotate.py: problem: fix`, exit 1
    run_cli("annotate.py", main)
