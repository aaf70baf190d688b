"""Tool exports exactly as the tools write them: Label Studio offsets in UTF-16 code units or in code points
(detected, converted, the same in convert / merge / agreement), span results without value or labels, and
Doccano's relation layout (entities + relations) with relations surviving Label Studio <-> Doccano."""
import copy
import json

import pytest

import agreement as G
import annotate as A

TEXT = "Grattis 🎉🎉 Anna! Vi ses i Göteborg 👋🏽 med Erik 😀"  # astral emoji before, between and after spans
SPANS = [("Anna", "PER"), ("Göteborg", "LOC"), ("Erik", "PER"), ("😀", "EMOJI")]


def _utf16(i: int, text: str = TEXT) -> int:
    return len(text[:i].encode("utf-16-le")) // 2


def _ls_task(unit: str, annotator: int, spans=SPANS, tid=1) -> dict:
    """A Label Studio task as an export of the given offset unit writes it (value.text is always the text)."""
    results = []
    for k, (word, label) in enumerate(spans):
        s = TEXT.index(word)
        e = s + len(word)
        if unit == "utf16":
            s, e = _utf16(s), _utf16(e)
        results.append({"id": f"r{annotator}{k}", "from_name": "label", "to_name": "text", "type": "labels",
                        "value": {"start": s, "end": e, "text": word, "labels": [label]}})
    return {"id": tid, "data": {"text": TEXT}, "annotations": [{"id": annotator, "completed_by": annotator,
                                                                 "result": results}]}


def _spans(doc):
    return sorted((t["char_start"], t["char_end"], t["token"], t["tag"]) for t in doc["tags"])


EXPECTED = sorted((TEXT.index(w), TEXT.index(w) + len(w), w, lab) for w, lab in SPANS)


def _agree_merge_convert(first, second) -> None:
    """Two exports of the same spans: agreement F1 1, a merge without conflicts, and `convert` of the first file,
    all with the EXPECTED spans (the offsets were read in their own unit)."""
    annotations, _ = G.load_annotations([str(first), str(second)])
    assert G.agreement(annotations)["f1"] == 1.0
    merged, conflicts = G.merge(annotations)
    assert conflicts == [] and _spans(merged[0]) == EXPECTED
    out = first.with_name(first.stem + "_converted.jsonl")
    A.main(["convert", f"--input={first}", f"--output={out}", "--to=standard"])
    assert _spans(A.read_jsonl(out)[0]) == EXPECTED


@pytest.mark.parametrize("unit", ["codepoints", "utf16"])
def test_labelstudio_offset_unit_detected_and_converted(unit):
    export = [_ls_task(unit, 1)]
    assert A.labelstudio_offset_unit(export) == unit
    docs, report = A.labelstudio_to_standard(copy.deepcopy(export))
    assert _spans(docs[0]) == EXPECTED  # code points into the text, whatever the export counted
    assert bool(report.get("utf16_offsets")) == (unit == "utf16") and "text_mismatch" not in report
    assert A.standard_to_labelstudio(docs) == export  # written back in the unit it came in


def test_merge_and_agreement_of_a_utf16_and_a_codepoint_export(tmp_path):
    """Two annotators, same spans, exported by Label Studio versions that count differently: full agreement,
    nothing to adjudicate (before: shifted spans merged as conflicts, or the export refused)."""
    (tmp_path / "old.json").write_text(json.dumps([_ls_task("utf16", 1)], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "new.json").write_text(json.dumps([_ls_task("codepoints", 2)], ensure_ascii=False),
                                       encoding="utf-8")
    _agree_merge_convert(tmp_path / "old.json", tmp_path / "new.json")


def test_shifted_spans_are_never_merged(tmp_path):
    task = _ls_task("codepoints", 1)
    task["annotations"][0]["result"][1]["value"]["start"] += 2  # 'teborg' where the text says 'Göteborg'
    task["annotations"][0]["result"][1]["value"]["end"] += 2
    (tmp_path / "a.json").write_text(json.dumps([task], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([_ls_task("codepoints", 2)], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match=r"a.json: 1 span\(s\) whose text differs .*document 1: \[.*'Göteborg'"):
        G.load_annotations([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    with pytest.raises(ValueError, match="shifted offsets"):
        A.main(["merge", f"--input={tmp_path / 'a.json'},{tmp_path / 'b.json'}", "--out", str(tmp_path / "m.jsonl"),
                "--conflicts", str(tmp_path / "c.jsonl")])
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("break_it, why", [
    (lambda r: r.pop("value"), "has no value"),
    (lambda r: r["value"].pop("labels"), "has no value.labels"),
    (lambda r: r["value"].update(labels=[]), "empty value.labels"),
    (lambda r: r["value"].pop("start"), "has no value.start"),
])
def test_span_result_without_value_or_labels_names_the_result_id(break_it, why):
    task = _ls_task("codepoints", 1)
    break_it(task["annotations"][0]["result"][2])
    with pytest.raises(ValueError, match=rf"task 1, annotation by 1, result id 'r12': .*{why}"):
        A.labelstudio_to_standard([task])


# ----------------------------------------------------------------------------- Doccano relations

DOCCANO_REL = [
    {"id": 11, "text": "Anna bor i Lund och jobbar på Volvo.",
     "entities": [{"id": 5, "label": "PER", "start_offset": 0, "end_offset": 4},
                  {"id": 6, "label": "LOC", "start_offset": 11, "end_offset": 15},
                  {"id": 9, "label": "ORG", "start_offset": 30, "end_offset": 35}],
     "relations": [{"id": 1, "from_id": 5, "to_id": 6, "type": "bor_i"},
                   {"id": 2, "from_id": 5, "to_id": 9, "type": "jobbar_på"}],
     "Comments": []},
    {"id": 12, "text": "Inget här.", "entities": [], "relations": [], "Comments": []},
]


def test_doccano_relation_layout_reads_and_writes():
    docs, _ = A.doccano_to_standard(copy.deepcopy(DOCCANO_REL), annotator="alice")
    assert [(r["from_id"], r["to_id"], r["type"]) for r in docs[0]["relations"]] == [(5, 6, "bor_i"),
                                                                                     (5, 9, "jobbar_på")]
    assert [t["id"] for t in docs[0]["tags"]] == [5, 6, 9]
    back, report = A.standard_to_doccano(docs)
    assert back == DOCCANO_REL and report == {}


def test_relations_survive_labelstudio_doccano_round_trips(tmp_path):
    path = tmp_path / "alice.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in DOCCANO_REL), encoding="utf-8")
    A.main(["convert", f"--input={path}", f"--output={tmp_path / 'ls.json'}", "--to=labelstudio"])
    tasks = json.loads((tmp_path / "ls.json").read_text())
    results = tasks[0]["annotations"][0]["result"]
    by_id = {r["id"]: r["value"]["text"] for r in results if r["type"] == "labels"}
    rels = [(by_id[r["from_id"]], by_id[r["to_id"]], r["labels"]) for r in results if r["type"] == "relation"]
    assert rels == [("Anna", "Lund", ["bor_i"]), ("Anna", "Volvo", ["jobbar_på"])]
    A.main(["convert", f"--input={tmp_path / 'ls.json'}", f"--output={tmp_path / 'back.jsonl'}", "--to=doccano"])
    back = A.read_jsonl(tmp_path / "back.jsonl")
    ents = {e["id"]: back[0]["text"][e["start_offset"]:e["end_offset"]] for e in back[0]["entities"]}
    assert [(ents[r["from_id"]], ents[r["to_id"]], r["type"]) for r in back[0]["relations"]] == [
        ("Anna", "Lund", "bor_i"), ("Anna", "Volvo", "jobbar_på")]


def test_a_relation_that_cannot_be_written_is_reported_lost():
    docs, _ = A.doccano_to_standard(copy.deepcopy(DOCCANO_REL))
    docs[0]["tags"] = [t for t in docs[0]["tags"] if t["tag"] != "ORG"]  # a reviewer deleted the ORG span
    lines, report = A.standard_to_doccano(docs)
    assert [r["type"] for r in lines[0]["relations"]] == ["bor_i"]
    assert report["relation_lost"] == [("11", "5 -> 9 'jobbar_på'")]
    with pytest.raises(ValueError, match=r"relation 2 joins entities 5 and 99, which are not both"):
        bad = copy.deepcopy(DOCCANO_REL)
        bad[0]["relations"][1]["to_id"] = 99
        A.doccano_to_standard(bad)


def test_merge_says_it_does_not_carry_relations(tmp_path, capsys):
    for name in ("alice", "bob"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n"
                                                        for x in DOCCANO_REL), encoding="utf-8")
    A.main(["merge", f"--input={tmp_path / 'alice.jsonl'},{tmp_path / 'bob.jsonl'}", "--out", str(tmp_path / "m.jsonl"),
            "--conflicts", str(tmp_path / "c.jsonl")])
    assert "note: 4 relation(s) in the inputs are not carried into" in capsys.readouterr().out


def _doccano_line(unit: str, layout: str = "label") -> dict:
    """A Doccano line of TEXT as an export counting `unit` writes it (Doccano keeps no span text)."""
    spans = [(TEXT.index(w), TEXT.index(w) + len(w), lab) for w, lab in SPANS]
    if unit == "utf16":
        spans = [(_utf16(s), _utf16(e), lab) for s, e, lab in spans]
    if layout == "label":
        return {"id": 1, "text": TEXT, "label": [list(x) for x in spans]}
    return {"id": 1, "text": TEXT, "relations": [{"id": 1, "from_id": 1, "to_id": 3, "type": "knows"}],
            "entities": [{"id": k + 1, "label": lab, "start_offset": s, "end_offset": e}
                         for k, (s, e, lab) in enumerate(spans)]}


@pytest.mark.parametrize("layout", ["label", "entities"])
@pytest.mark.parametrize("unit", ["codepoints", "utf16"])
def test_doccano_offset_unit_detected_and_converted(unit, layout):
    """A Doccano export counting UTF-16 code units: detected from where its spans start and end, converted to
    code points (reported), written back in UTF-16 (before: 'na o'-like shifted spans, 'nothing lost')."""
    lines = [_doccano_line(unit, layout)]
    assert A.doccano_offset_unit(lines) == unit
    docs, report = A.doccano_to_standard(copy.deepcopy(lines))
    assert _spans(docs[0]) == EXPECTED
    assert bool(report.get("utf16_offsets")) == (unit == "utf16")
    assert A.standard_to_doccano(docs)[0] == lines  # written back in the unit it came in


def test_merge_agreement_and_convert_of_a_utf16_doccano_export(tmp_path):
    A.write_jsonl([_doccano_line("utf16")], tmp_path / "alice.jsonl")
    (tmp_path / "bob.json").write_text(json.dumps([_ls_task("codepoints", 2)], ensure_ascii=False), encoding="utf-8")
    _agree_merge_convert(tmp_path / "alice.jsonl", tmp_path / "bob.json")


CRLF_TEXT = "Anna bor i Lund.\r\nErik 🎉 bor i Visby.\r\n\r\nMaria i Kiruna."
CRLF_SPANS = [("Anna", "PER"), ("Lund", "LOC"), ("Erik", "PER"), ("Visby", "LOC"), ("Maria", "PER")]


def _crlf_task(unit: str, annotator: int) -> dict:
    """A Label Studio task whose text has CRLFs, the offsets counted as the browser saw the text (a CRLF = one LF),
    in code points or UTF-16 code units."""
    seen = CRLF_TEXT.replace("\r\n", "\n")
    results = []
    for k, (word, label) in enumerate(CRLF_SPANS):
        s = seen.index(word)
        e = s + len(word)
        if "utf16" in unit:
            s, e = _utf16(s, seen), _utf16(e, seen)
        results.append({"id": f"c{annotator}{k}", "from_name": "label", "to_name": "text", "type": "labels",
                        "value": {"start": s, "end": e, "text": word, "labels": [label]}})
    return {"id": 7, "data": {"text": CRLF_TEXT}, "annotations": [{"id": annotator, "completed_by": annotator,
                                                                     "result": results}]}


@pytest.mark.parametrize("unit", ["crlf", "utf16+crlf"])
def test_labelstudio_crlf_offsets_are_repaired_in_convert_merge_and_agreement(unit, tmp_path, capsys):
    """Offsets that count a CRLF as one character: detected, converted to code points (convert too, not only
    merge and agreement; before: converted with a text_mismatch warning and shifted spans), written back so."""
    export = [_crlf_task(unit, 1)]
    expected = sorted((CRLF_TEXT.index(w), CRLF_TEXT.index(w) + len(w), w, lab) for w, lab in CRLF_SPANS)
    assert A.labelstudio_offset_unit(export) == unit
    docs, report = A.labelstudio_to_standard(copy.deepcopy(export))
    assert _spans(docs[0]) == expected and "text_mismatch" not in report
    assert A.standard_to_labelstudio(docs) == export
    (tmp_path / "a.json").write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    A.main(["convert", f"--input={tmp_path / 'a.json'}", f"--output={tmp_path / 'a.jsonl'}", "--to=standard"])
    assert _spans(A.read_jsonl(tmp_path / "a.jsonl")[0]) == expected
    assert "text_mismatch" not in capsys.readouterr().out
    b = _crlf_task(unit, 2)
    b["annotations"][0]["result"][1]["value"]["labels"] = ["ORG"]  # one disagreement: Lund
    (tmp_path / "b.json").write_text(json.dumps([b], ensure_ascii=False), encoding="utf-8")
    merged, conflicts = G.merge(G.load_annotations([str(tmp_path / "a.json"), str(tmp_path / "b.json")])[0])
    assert [(t["token"], t["tag"]) for t in conflicts[0]["tags"] if t["tag"] == G.CONFLICT] == [("Lund", "???")]


def test_one_labelstudio_export_of_several_annotators_is_enough_for_agreement_and_merge(tmp_path):
    """`-h` says a Label Studio export may hold several annotators: one such file is accepted (before: 'needs two
    or more files'); one file of one annotator, or one file given twice, is refused."""
    task = _ls_task("codepoints", 1)
    task["annotations"] += _ls_task("codepoints", 2)["annotations"]
    (tmp_path / "both.json").write_text(json.dumps([task], ensure_ascii=False), encoding="utf-8")
    A.main(["agreement", f"--input={tmp_path / 'both.json'}", f"--out={tmp_path / 'iaa'}"])
    result = json.loads((tmp_path / "iaa" / "agreement.json").read_text())
    assert result["annotators"] == ["1", "2"] and result["f1"] == 1.0
    A.main(["merge", f"--input={tmp_path / 'both.json'}", f"--out={tmp_path / 'm.jsonl'}",
            f"--conflicts={tmp_path / 'c.jsonl'}"])
    assert _spans(A.read_jsonl(tmp_path / "m.jsonl")[0]) == EXPECTED
    (tmp_path / "one.json").write_text(json.dumps([_ls_task("codepoints", 1)], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match=r"two or more annotators, got \['one'\]"):
        A.main(["agreement", f"--input={tmp_path / 'one.json'}", f"--out={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match="one.json is given twice"):
        A.main(["agreement", f"--input={tmp_path / 'one.json'},{tmp_path}/../{tmp_path.name}/one.json",
                f"--out={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()
