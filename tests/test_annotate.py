"""annotate.py: lossless converters, pre-annotation writers, agreement (vs sklearn/seqeval/textbook values),
merge/resolve, and the bad inputs the annotation issue lists."""
import copy
import json
import random

import pytest
from seqeval.metrics import classification_report, f1_score
from sklearn.metrics import cohen_kappa_score

import agreement as G
import annotate as A

TEXT = "Vi söker en erfaren Python-utvecklare till Stockholm."


def _ls_export() -> list[dict]:
    """A Label Studio JSON export as the tool writes it: two annotators, a cancelled one, overlapping spans,
    a multi-label span, a relation, extra data fields, model predictions and an empty document."""
    def res(rid, s, e, labels, origin="manual"):
        return {"id": rid, "from_name": "label", "to_name": "text", "type": "labels", "origin": origin,
                "value": {"start": s, "end": e, "text": TEXT[s:e], "labels": labels}}
    return [
        {"id": 101, "data": {"text": TEXT, "source": "ad-17"},
         "annotations": [
             {"id": 1, "completed_by": 3, "was_cancelled": False, "lead_time": 12.5,
              "result": [res("a1", 20, 37, ["SKILL_HARD"]), res("a2", 20, 26, ["SKILL_HARD", "SKILL_JOB"]),
                         res("a3", 43, 52, ["LOC"]),
                         {"id": "r1", "from_id": "a2", "to_id": "a3", "type": "relation", "labels": []}]},
             {"id": 2, "completed_by": 5, "was_cancelled": False, "lead_time": 8.0,
              "result": [res("b1", 20, 26, ["SKILL_HARD"], "prediction-changed"),
                         res("b2", 43, 52, ["LOC"])]},
             {"id": 3, "completed_by": 7, "was_cancelled": True, "result": []}],
         "predictions": [{"model_version": "v1", "score": 0.8, "result": []}]},
        {"id": 102, "data": {"text": "", "source": "ad-18"},
         "annotations": [{"id": 4, "completed_by": 3, "result": []},
                         {"id": 5, "completed_by": 5, "result": []}]},
    ]


def _doc(did, text, spans):
    return {"id": did, "text": text,
            "tags": [{"char_start": s, "char_end": e, "token": text[s:e], "tag": t} for s, e, t in spans]}


def test_labelstudio_round_trip_is_lossless_and_reports():
    export = _ls_export()
    docs, report = A.labelstudio_to_standard(copy.deepcopy(export))
    assert A.standard_to_labelstudio(docs) == export
    spans = {(t["annotator"], t["char_start"], t["char_end"], t["tag"]) for t in docs[0]["tags"]}
    assert spans == {("3", 20, 37, "SKILL_HARD"), ("3", 20, 26, "SKILL_HARD"), ("3", 20, 26, "SKILL_JOB"),
                     ("3", 43, 52, "LOC"), ("5", 20, 26, "SKILL_HARD"), ("5", 43, 52, "LOC")}
    assert docs[0]["annotators"] == ["3", "5"] and docs[1]["annotators"] == ["3", "5"]
    assert docs[1]["tags"] == [] and docs[1]["text"] == ""
    assert report["multi_label"] == [("101", "[20, 26) 'Python' ['SKILL_HARD', 'SKILL_JOB'] by 3")]
    assert "non_span_result" not in report  # the relation is a relation now, not an unknown result
    assert [(r["from_id"], r["to_id"], r["type"], r["annotator"]) for r in docs[0]["relations"]] == [
        ("a2", "a3", "", "3")]
    assert [d for d, _ in report["cancelled"]] == ["101"]


def test_agreement_reads_a_labelstudio_export_with_two_annotators(tmp_path):
    (tmp_path / "export.json").write_text(json.dumps(_ls_export()))
    annotations, _ = G.load_annotations([str(tmp_path / "export.json")])
    r = G.agreement(annotations)
    assert r["annotators"] == ["3", "5"] and r["n_documents"] == 2
    assert r["f1"] == pytest.approx(2 * 2 / (4 + 2))
    # units of task 101: (20,26) 'SKILL_HARD|SKILL_JOB' vs SKILL_HARD, (20,37) SKILL_HARD vs O,
    # (43,52) LOC vs LOC: p_o = 1/3, p_e = 2/9
    assert r["cohen_kappa"] == pytest.approx((1 / 3 - 2 / 9) / (1 - 2 / 9))


def test_doccano_round_trip_and_overlap_report():
    lines = [{"id": 7, "text": TEXT, "Comments": [],
              "label": [[20, 26, "SKILL_HARD"], [20, 37, "SKILL_JOB"], [43, 52, "LOC"]]},
             {"id": 8, "text": "", "label": [], "Comments": ["empty ad"]},
             {"text": "Utan id, i Lund.", "label": [[11, 15, "LOC"]]}]
    docs, _ = A.doccano_to_standard(copy.deepcopy(lines), annotator="alice")
    assert {t["annotator"] for t in docs[0]["tags"]} == {"alice"}
    back, report = A.standard_to_doccano(docs)
    assert back == lines
    assert [d for d, _ in report["overlap"]] == ["7"]


def _content(doc):
    return doc["id"], doc["text"], [(t["char_start"], t["char_end"], t["tag"]) for t in doc["tags"]]


def test_standard_to_labelstudio_to_standard_keeps_spans():
    docs = [_doc("d1", TEXT, [(20, 26, "SKILL_HARD"), (20, 26, "SKILL_JOB"), (43, 52, "LOC")]),
            _doc("d2", "", [])]
    tasks = A.standard_to_labelstudio(docs)
    assert tasks[0]["annotations"][0]["result"][0]["value"]["labels"] == ["SKILL_HARD", "SKILL_JOB"]
    again, _ = A.labelstudio_to_standard(json.loads(json.dumps(tasks)))
    assert [_content(d) for d in again] == [_content(d) for d in docs]


def test_convert_cli_writes_one_doccano_file_per_annotator(tmp_path):
    src = tmp_path / "export.json"
    src.write_text(json.dumps(_ls_export()))
    A.main(["convert", f"--input={src}", f"--output={tmp_path / 'batch.jsonl'}", "--to=doccano"])
    alice = A.read_json_lines(tmp_path / "batch.3.jsonl")  # annotator 3 drew a relation: Doccano's relation layout
    ents = alice[0]["entities"]
    assert [(e["start_offset"], e["end_offset"], e["label"]) for e in ents] == [
        (20, 37, "SKILL_HARD"), (20, 26, "SKILL_HARD"), (20, 26, "SKILL_JOB"), (43, 52, "LOC")]
    assert len({e["id"] for e in ents}) == 4 and alice[1]["entities"] == [] == alice[1]["relations"]
    (rel,) = alice[0]["relations"]
    assert (rel["from_id"], rel["to_id"]) == (ents[1]["id"], ents[3]["id"])  # a2 (its first label) -> a3
    assert A.read_json_lines(tmp_path / "batch.5.jsonl")[0]["label"] == [[20, 26, "SKILL_HARD"], [43, 52, "LOC"]]
    docs, _ = A.labelstudio_to_standard(_ls_export())
    with pytest.raises(ValueError, match="several annotators"):
        A.standard_to_doccano(docs)


def test_prediction_writers(tmp_path):
    texts = ["Anna bor i Lund.", "Inget här."]
    preds = [[{"char_start": "0", "char_end": "4", "text": "Anna", "label": "PER", "score": 0.9},
              {"char_start": 11, "char_end": 15, "text": "Lund", "label": "LOC", "score": 0.7}], []]
    A.write_labelstudio_predictions(texts, preds, tmp_path / "ls.json", model_version="m1")
    tasks = json.loads((tmp_path / "ls.json").read_text())
    pred = tasks[0]["predictions"][0]
    assert tasks[0]["data"] == {"text": texts[0]} and pred["model_version"] == "m1"
    assert pred["score"] == pytest.approx(0.8)
    assert [(r["value"]["start"], r["value"]["end"], r["value"]["text"], r["value"]["labels"], r["score"])
            for r in pred["result"]] == [(0, 4, "Anna", ["PER"], 0.9), (11, 15, "Lund", ["LOC"], 0.7)]
    assert tasks[1]["predictions"][0]["result"] == []
    A.write_doccano(texts, preds, tmp_path / "dc.jsonl")
    lines = A.read_json_lines(tmp_path / "dc.jsonl")
    assert lines[0] == {"text": texts[0], "label": [[0, 4, "PER"], [11, 15, "LOC"]], "scores": [0.9, 0.7]}
    docs, _ = A.doccano_to_standard(lines)
    assert [t["score"] for t in docs[0]["tags"]] == [0.9, 0.7]
    with pytest.raises(ValueError, match="outside the text"):
        A.write_doccano(["kort"], [[{"char_start": 2, "char_end": 9, "label": "X"}]], tmp_path / "bad.jsonl")


def test_cohen_kappa_matches_sklearn_and_textbook():
    # Wikipedia "Cohen's kappa" example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert G.cohen_kappa(a, b) == pytest.approx(0.4)
    rng = random.Random(0)
    for _ in range(20):
        x = [rng.choice("OABC") for _ in range(30)]
        y = [c if rng.random() < 0.6 else rng.choice("OABC") for c in x]
        assert G.cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) / Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    rows = [tuple(c for c, n in zip("12345", row) for _ in range(n)) for row in table]
    assert G.fleiss_kappa(rows) == pytest.approx(0.20993, abs=1e-5)
    # two raters: Fleiss' kappa is Scott's pi, computed independently here
    x, y = list("AABBOOAB"), list("ABBBOAAB")
    p_o = sum(i == j for i, j in zip(x, y)) / 8
    p_e = sum(((x + y).count(c) / 16) ** 2 for c in "ABO")
    assert G.fleiss_kappa(list(zip(x, y))) == pytest.approx((p_o - p_e) / (1 - p_e))


def _bio(text, spans):
    """Whitespace tokens of `text` -> BIO tags from char spans that lie on token boundaries."""
    tags, pos = [], 0
    for tok in text.split():
        start = text.index(tok, pos)
        pos = start + len(tok)
        tag = "O"
        for s, e, t in spans:
            if s <= start and pos <= e:
                tag = ("B-" if s == start else "I-") + t
        tags.append(tag)
    return tags


def _random_spans(rng, toks, starts):
    """Non-overlapping spans of 1-3 whole tokens with random labels."""
    out, i = [], 0
    while i < len(toks):
        n = rng.randint(1, 3)
        if rng.random() < 0.4 and i + n <= len(toks):
            out.append((starts[i], starts[i + n - 1] + len(toks[i + n - 1]), rng.choice(["PER", "LOC"])))
        i += n
    return out


def test_span_f1_equals_seqeval_on_bio():
    rng = random.Random(1)
    words = ["a", "bb", "ccc", "dd", "e", "ff", "ggg", "hh", "i", "jj", "kkk"]
    docs_a, docs_b = [], []
    for k in range(12):
        toks = [rng.choice(words) for _ in range(rng.randint(0, 15))]
        text = " ".join(toks)
        starts = [sum(len(t) + 1 for t in toks[:i]) for i in range(len(toks))]
        sa = _random_spans(rng, toks, starts)
        sb = [s for s in sa if rng.random() < 0.6]
        sb += [s for s in _random_spans(rng, toks, starts) if rng.random() < 0.3]
        sb = [s for s in sb if not any(o != s and o[0] < s[1] and s[0] < o[1] for o in sb)]  # BIO: no overlap
        docs_a.append(_doc(str(k), text, sa))
        docs_b.append(_doc(str(k), text, sorted(set(sb))))
    result = G.agreement({"a": {d["id"]: d for d in docs_a}, "b": {d["id"]: d for d in docs_b}})
    y_a = [_bio(d["text"], [(t["char_start"], t["char_end"], t["tag"]) for t in d["tags"]]) for d in docs_a]
    y_b = [_bio(d["text"], [(t["char_start"], t["char_end"], t["tag"]) for t in d["tags"]]) for d in docs_b]
    assert result["f1"] == pytest.approx(f1_score(y_a, y_b))
    per_type = classification_report(y_a, y_b, output_dict=True)
    for label in ("PER", "LOC"):
        assert result["per_label"][label]["f1"] == pytest.approx(per_type[label]["f1-score"])


def test_partial_f1_and_kappa_on_hand_made_documents():
    text = "Anna Berg bor i Lunds kommun nu."
    a = {"d": _doc("d", text, [(0, 9, "PER"), (16, 28, "LOC")])}
    b = {"d": _doc("d", text, [(0, 4, "PER"), (16, 28, "ORG")])}
    r = G.agreement({"a": a, "b": b})
    assert r["f1"] == 0.0
    assert r["f1_partial"] == pytest.approx(0.5)  # P = 1/2 of b's spans overlap, R = 1/2 of a's
    # units: (0,4) O/PER, (0,9) PER/O, (16,28) LOC/ORG -> p_o = 0
    assert r["cohen_kappa"] == pytest.approx(G.cohen_kappa(["O", "PER", "LOC"], ["PER", "O", "ORG"]))
    assert r["n_units"] == 3


def test_agreement_cli_three_formats(tmp_path, capsys):
    texts = {"1": "Anna bor i Lund.", "2": "Erik jobbar på Volvo i Göteborg.", "3": "Inget här."}
    spans = {"A": {"1": [(0, 4, "PER"), (11, 15, "LOC")],
                   "2": [(0, 4, "PER"), (15, 20, "ORG"), (23, 31, "LOC")], "3": []},
             "B": {"1": [(0, 4, "PER"), (11, 15, "LOC")], "2": [(0, 4, "PER"), (15, 20, "LOC")], "3": []},
             "C": {"1": [(0, 4, "PER")], "2": [(0, 4, "PER"), (15, 20, "ORG"), (23, 31, "LOC")], "3": []}}
    A.write_jsonl([_doc(k, texts[k], spans["A"][k]) for k in texts], tmp_path / "A.jsonl")
    A.write_jsonl([{"id": k, "text": texts[k], "label": [list(s) for s in spans["B"][k]]} for k in texts],
                  tmp_path / "B.jsonl")
    A.write_jsonl([_doc(k, texts[k], spans["C"][k]) for k in texts], tmp_path / "C.jsonl")
    G.main(["agreement", "--input=" + ",".join(str(tmp_path / f"{n}.jsonl") for n in "ABC"),
            "--out", str(tmp_path / "iaa")])
    r = json.loads((tmp_path / "iaa" / "agreement.json").read_text())
    assert {"f1", "f1_partial", "cohen_kappa", "fleiss_kappa", "per_label", "per_document", "pairs"} \
        <= r.keys()
    assert r["annotators"] == ["A", "B", "C"]
    f1 = {(p["a"], p["b"]): p["f1"] for p in r["pairs"]}
    assert f1[("A", "B")] == pytest.approx(2 * 3 / (5 + 4))
    assert f1[("A", "C")] == pytest.approx(2 * 4 / (5 + 4))
    assert f1[("B", "C")] == pytest.approx(2 * 2 / (4 + 4))
    assert r["f1"] == pytest.approx(sum(f1.values()) / 3)
    assert [d["id"] for d in r["per_document"]] == ["2", "1", "3"]  # worst first; nothing marked = agreement
    assert r["per_document"][2]["f1"] is None and r["per_document"][1]["fleiss_kappa"] is not None
    assert r["per_label"]["ORG"]["n_spans"] == {"A": 1, "B": 0, "C": 1}
    assert "overall" in capsys.readouterr().out


def test_merge_and_resolve(tmp_path):
    text = "Erik jobbar på Volvo i Göteborg."
    A.write_jsonl([_doc("x", text, [(0, 4, "PER"), (15, 20, "ORG")]), _doc("y", "Tom.", [])],
                  tmp_path / "a.jsonl")
    A.write_jsonl([_doc("x", text, [(0, 4, "PER"), (15, 20, "LOC"), (23, 31, "LOC")]), _doc("y", "Tom.", [])],
                  tmp_path / "b.jsonl")
    G.main(["merge", f"--input={tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}",
            "--out", str(tmp_path / "merged.jsonl"), "--conflicts", str(tmp_path / "conflicts.jsonl")])
    merged = A.read_json_lines(tmp_path / "merged.jsonl")
    assert [(t["char_start"], t["tag"], t.get("votes")) for t in merged[0]["tags"]] == [
        (0, "PER", None), (15, "???", {"a": "ORG", "b": "LOC"}), (23, "???", {"a": "O", "b": "LOC"})]
    conflicts = A.read_json_lines(tmp_path / "conflicts.jsonl")
    assert [d["id"] for d in conflicts] == ["x"] and conflicts[0]["agreement"]["f1"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match=r"document 'x': span \[15, 20\) 'Volvo' is still \?\?\?"):
        G.main(["resolve", f"--merged={tmp_path / 'merged.jsonl'}", f"--resolved={tmp_path / 'conflicts.jsonl'}",
                "--out", str(tmp_path / "final.jsonl")])
    conflicts[0]["tags"][1]["tag"], conflicts[0]["tags"][2]["tag"] = "ORG", "O"
    A.write_jsonl(conflicts, tmp_path / "resolved.jsonl")
    G.main(["resolve", f"--merged={tmp_path / 'merged.jsonl'}", f"--resolved={tmp_path / 'resolved.jsonl'}",
            "--out", str(tmp_path / "final.jsonl")])
    final = A.read_json_lines(tmp_path / "final.jsonl")
    assert final == [_doc("x", text, [(0, 4, "PER"), (15, 20, "ORG")]), _doc("y", "Tom.", [])]


@pytest.mark.parametrize("b_docs, message", [
    ([_doc("1", "Anna bor i Lund!", [])],
     r"document '1' has a different text in .*b.jsonl than in .*a.jsonl"),
    ([{"id": "1", "text": "Anna bor i Lund.", "tags": [{"char_start": 11, "char_end": 40, "tag": "LOC"}]}],
     r"b.jsonl, document 1: span \[11, 40\) is outside the text"),
    ([_doc("1", "Anna bor i Lund.", []), _doc("2", "Mer.", [])],
     r"b.jsonl \(b\) has documents that .*a.jsonl"),
    ([_doc("1", "Anna bor i Lund.", [(0, 4, "per")])],
     r"mixed label sets: 'PER' \(.*a.jsonl, document 1, span \[0, 4\) 'Anna'\) and 'per'"),
])
def test_bad_inputs_name_file_document_and_span(tmp_path, b_docs, message):
    A.write_jsonl([_doc("1", "Anna bor i Lund.", [(0, 4, "PER")])], tmp_path / "a.jsonl")
    A.write_jsonl(b_docs, tmp_path / "b.jsonl")
    with pytest.raises(ValueError, match=message):
        G.main(["agreement", f"--input={tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}", "--out",
                str(tmp_path / "o")])


def test_each_command_lists_its_own_keys_and_comments(capsys):
    """`annotate.py convert -h` / `agreement.py agreement -h`: every key of that command with its comment, also
    where two commands share a key name (agreement's and convert's `input` mean different things). The commands
    that moved to agreement.py are named there by annotate.py."""
    for command, comment in (("convert", "a standard JSONL, Doccano JSONL or Label Studio JSON export"),
                             ("agreement", "two or more annotation files (any format")):
        with pytest.raises(SystemExit) as e:
            (A if command == "convert" else G).main([command, "-h"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        line = next(x for x in text.splitlines() if x.strip().startswith("--input"))
        assert comment in line
        for key in {"convert": A.CONVERT_DEFAULTS, "agreement": G.AGREEMENT_DEFAULTS}[command]:
            assert f"--{key}" in text
    for command in ("agreement", "merge", "resolve"):
        with pytest.raises(ValueError, match=rf"{command} is in agreement.py: python agreement.py {command} -h"):
            A.main([command, "--input=a.jsonl,b.jsonl"])


def test_agreement_needs_two_files(tmp_path):
    A.write_jsonl([_doc("1", "Anna.", [(0, 4, "PER")])], tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="two or more files, comma-separated"):
        G.main(["agreement", f"--input={tmp_path / 'a.jsonl'}", f"--out={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()


# -----------------------------------------------------------------------------------------------------------
# Tool exports exactly as the tools write them: Label Studio offsets in UTF-16 code
# units or in code points (detected, converted, the same in convert / merge / agreement), span results without value
# or labels, and Doccano's relation layout (entities + relations) with relations surviving Label Studio <-> Doccano.

EMOJI_TEXT = "Grattis 🎉🎉 Anna! Vi ses i Göteborg 👋🏽 med Erik 😀"  # astral emoji before, between and after spans


SPANS = [("Anna", "PER"), ("Göteborg", "LOC"), ("Erik", "PER"), ("😀", "EMOJI")]


def _utf16(i: int, text: str = EMOJI_TEXT) -> int:
    return len(text[:i].encode("utf-16-le")) // 2


def _ls_task(unit: str, annotator: int, spans=SPANS, tid=1) -> dict:
    """A Label Studio task as an export of the given offset unit writes it (value.text is always the text)."""
    results = []
    for k, (word, label) in enumerate(spans):
        s = EMOJI_TEXT.index(word)
        e = s + len(word)
        if unit == "utf16":
            s, e = _utf16(s), _utf16(e)
        results.append({"id": f"r{annotator}{k}", "from_name": "label", "to_name": "text", "type": "labels",
                        "value": {"start": s, "end": e, "text": word, "labels": [label]}})
    return {"id": tid, "data": {"text": EMOJI_TEXT}, "annotations": [{"id": annotator, "completed_by": annotator,
                                                                 "result": results}]}


def _spans(doc):
    return sorted((t["char_start"], t["char_end"], t["token"], t["tag"]) for t in doc["tags"])


EXPECTED = sorted((EMOJI_TEXT.index(w), EMOJI_TEXT.index(w) + len(w), w, lab) for w, lab in SPANS)


def _agree_merge_convert(first, second) -> None:
    """Two exports of the same spans: agreement F1 1, a merge without conflicts, and `convert` of the first file,
    all with the EXPECTED spans (the offsets were read in their own unit)."""
    annotations, _ = G.load_annotations([str(first), str(second)])
    assert G.agreement(annotations)["f1"] == 1.0
    merged, conflicts = G.merge(annotations)
    assert conflicts == [] and _spans(merged[0]) == EXPECTED
    out = first.with_name(first.stem + "_converted.jsonl")
    A.main(["convert", f"--input={first}", f"--output={out}", "--to=standard"])
    assert _spans(A.read_json_lines(out)[0]) == EXPECTED


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
        G.main(["merge", f"--input={tmp_path / 'a.json'},{tmp_path / 'b.json'}", "--out", str(tmp_path / "m.jsonl"),
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
    back = A.read_json_lines(tmp_path / "back.jsonl")
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
    G.main(["merge", f"--input={tmp_path / 'alice.jsonl'},{tmp_path / 'bob.jsonl'}", "--out", str(tmp_path / "m.jsonl"),
            "--conflicts", str(tmp_path / "c.jsonl")])
    assert "note: 4 relation(s) in the inputs are not carried into" in capsys.readouterr().out


def _doccano_line(unit: str, layout: str = "label") -> dict:
    """A Doccano line of EMOJI_TEXT as an export counting `unit` writes it (Doccano keeps no span text)."""
    spans = [(EMOJI_TEXT.index(w), EMOJI_TEXT.index(w) + len(w), lab) for w, lab in SPANS]
    if unit == "utf16":
        spans = [(_utf16(s), _utf16(e), lab) for s, e, lab in spans]
    if layout == "label":
        return {"id": 1, "text": EMOJI_TEXT, "label": [list(x) for x in spans]}
    return {"id": 1, "text": EMOJI_TEXT, "relations": [{"id": 1, "from_id": 1, "to_id": 3, "type": "knows"}],
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
    assert _spans(A.read_json_lines(tmp_path / "a.jsonl")[0]) == expected
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
    G.main(["agreement", f"--input={tmp_path / 'both.json'}", f"--out={tmp_path / 'iaa'}"])
    result = json.loads((tmp_path / "iaa" / "agreement.json").read_text())
    assert result["annotators"] == ["1", "2"] and result["f1"] == 1.0
    G.main(["merge", f"--input={tmp_path / 'both.json'}", f"--out={tmp_path / 'm.jsonl'}",
            f"--conflicts={tmp_path / 'c.jsonl'}"])
    assert _spans(A.read_json_lines(tmp_path / "m.jsonl")[0]) == EXPECTED
    (tmp_path / "one.json").write_text(json.dumps([_ls_task("codepoints", 1)], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match=r"two or more annotators, got \['one'\]"):
        G.main(["agreement", f"--input={tmp_path / 'one.json'}", f"--out={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match="one.json is given twice"):
        G.main(["agreement", f"--input={tmp_path / 'one.json'},{tmp_path}/../{tmp_path.name}/one.json",
                f"--out={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()
