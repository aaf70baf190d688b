"""Tests of agreement.py: inter-annotator agreement (Cohen's and Fleiss' kappa, span F1s)."""
import pytest


def _annotator_files(tmp_path, spans_by_annotator: dict, texts: list[str]) -> dict:
    """One standard JSONL file per annotator (document k: texts[k], spans (k, start, end, label)), loaded with
    agreement.load_annotations as `python annotate.py agreement` does."""
    import json

    from agreement import load_annotations

    paths = []
    for name, spans in spans_by_annotator.items():
        lines = [json.dumps(dict(id=str(k), text=t, tags=[
            dict(char_start=s, char_end=e, token=t[s:e], tag=lab) for d, s, e, lab in spans if d == k]))
            for k, t in enumerate(texts)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        paths.append(str(tmp_path / f"{name}.jsonl"))
    return load_annotations(paths)[0]


def test_partial_f1_same_label_real_overlap_and_span_counts(tmp_path):
    """Partial F1 = harmonic mean of P (B's spans overlapping one of A's with the same label / |B|) and R (the
    same for A); touching spans do not overlap; no overlap at all gives 0, not 1. Each pair reports its own
    span counts. Kills: P*R*(P+R), a different label counting as a partial hit, <= at either span end, 1.0 when
    P + R = 0, and n_spans_a / n_spans_b misnamed or from the wrong count."""
    from agreement import agreement

    texts = ["Anna Berg bor i Lund nu", "AnnaLund"]
    ann = _annotator_files(tmp_path, {
        "a": [(0, 0, 9, "PER"), (0, 16, 20, "LOC"), (1, 0, 4, "PER")],
        # doc 0: two PER pieces inside a's PER (2 partial hits), Lund with another label (no hit)
        # doc 1: touching a's span (4 == 4): no overlap
        "b": [(0, 0, 4, "PER"), (0, 5, 9, "PER"), (0, 16, 20, "ORG"), (1, 4, 8, "PER")]}, texts)
    result = agreement(ann)
    doc = {d["id"]: d for d in result["per_document"]}
    p, r = 2 / 3, 1 / 2  # doc 0: b's 2 of 3 spans hit, a's 1 of 2
    assert doc["0"]["f1_partial"] == pytest.approx(2 * p * r / (p + r))
    assert doc["0"]["f1"] == 0.0 and doc["1"]["f1"] == 0.0
    assert doc["1"]["f1_partial"] == 0.0
    p, r = 2 / 4, 1 / 3  # both documents: b 2 of 4, a 1 of 3
    assert result["f1_partial"] == pytest.approx(2 * p * r / (p + r))
    pair = result["pairs"][0]
    assert (pair["a"], pair["b"], pair["n_spans_a"], pair["n_spans_b"]) == ("a", "b", 3, 4)


def test_kappas_are_one_when_everyone_used_one_label_throughout(tmp_path):
    """p_e = 1 (one label, everyone agrees): Cohen's and Fleiss' kappa are 1.0 (sklearn gives nan), as
    documented, not another value."""
    from agreement import agreement, cohen_kappa, fleiss_kappa

    ann = _annotator_files(tmp_path, {n: [(0, 0, 4, "PER"), (0, 16, 20, "PER")] for n in "abc"},
                           ["Anna Berg bor i Lund nu"])
    result = agreement(ann)
    assert result["cohen_kappa"] == 1.0 and result["fleiss_kappa"] == 1.0 and result["f1"] == 1.0
    assert cohen_kappa(["PER"] * 3, ["PER"] * 3) == 1.0 and fleiss_kappa([("LOC", "LOC")] * 2) == 1.0


def test_aligned_units_join_several_labels_of_one_span():
    """An annotator who gave one span two labels contributes 'ORG|PER' (sorted, '|'-joined) for that unit."""
    from agreement import aligned_units

    a = dict(text="Anna", tags=[dict(char_start=0, char_end=4, tag="PER"), dict(char_start=0, char_end=4, tag="ORG")])
    b = dict(text="Anna", tags=[dict(char_start=0, char_end=4, tag="PER")])
    assert aligned_units([a, b]) == [("ORG|PER", "PER")]


def test_agreement_without_documents_has_no_scores():
    """Two annotators and no documents: no units, no span counts; every score None (not made-up counts)."""
    from agreement import agreement

    result = agreement({"a": {}, "b": {}})
    assert result["n_documents"] == 0 and result["n_units"] == 0
    assert all(result[k] is None for k in ("f1", "f1_partial", "cohen_kappa", "fleiss_kappa", "percent_agreement"))
    assert result["pairs"][0]["n_spans_a"] == 0 == result["pairs"][0]["n_spans_b"]
