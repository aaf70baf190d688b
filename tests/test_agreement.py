"""Tests of agreement.py: inter-annotator agreement (Cohen's and Fleiss' kappa, span F1s)."""
import itertools
import json
import random

import pytest

import agreement as G
import annotate as A


def _annotator_files(tmp_path, spans_by_annotator: dict, texts: list[str]) -> dict:
    """One standard JSONL file per annotator (document k: texts[k], spans (k, start, end, label)), loaded with
    agreement.load_annotations as `python agreement.py agreement` does."""
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


# -----------------------------------------------------------------------------------------------------------
# Agreement of three and four annotators against independent computations: Cohen's
# kappa per pair from sklearn.metrics.cohen_kappa_score, Fleiss' kappa from statsmodels, percent agreement and exact
# span F1 counted here, overall and per label (one-vs-rest), on random documents read back through the agreement
# command's own file reader. The units are the README's: per document the union of the annotators' (start, end)
# spans, O where an annotator has none; a pair uses the units either of the two marked.

sklearn_metrics = pytest.importorskip("sklearn.metrics")


inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")


LABELS = ["PER", "LOC", "ORG"]


def _random_batch(n_annotators: int, n_docs: int, seed: int) -> tuple[dict[str, list[dict]], list[str]]:
    """Documents of words; annotator 0 marks random word spans, the others keep, relabel, drop or add
    spans. One document has a unit only one annotator marked, one has no spans at all."""
    rng = random.Random(seed)
    words = ["Anna", "bor", "i", "Lund", "och", "Erik", "jobbar", "på", "Volvo", "AB", "nu"]
    texts, base = [], []
    for k in range(n_docs):
        toks = [rng.choice(words) for _ in range(rng.randint(4, 14))]
        starts = [sum(len(t) + 1 for t in toks[:i]) for i in range(len(toks))]
        spans = {(starts[i], starts[i] + len(toks[i]), rng.choice(LABELS))
                 for i in range(len(toks)) if rng.random() < 0.35}
        texts.append(" ".join(toks))
        base.append((toks, starts, spans))
    names = [f"ann{j}" for j in range(n_annotators)]
    docs = {n: [] for n in names}
    for k, (toks, starts, spans) in enumerate(base):
        for j, n in enumerate(names):
            mine = set()
            for s, e, lab in spans:
                r = rng.random()
                if j == 0 or r < 0.6:
                    mine.add((s, e, lab))
                elif r < 0.8:
                    mine.add((s, e, rng.choice([x for x in LABELS if x != lab])))
            if j and rng.random() < 0.5:  # an extra span of one word, or of two words
                i = rng.randrange(len(toks) - 1)
                j2 = i + rng.randint(0, 1)
                if not any((s, e) == (starts[i], starts[j2] + len(toks[j2])) for s, e, _ in mine):
                    mine.add((starts[i], starts[j2] + len(toks[j2]), rng.choice(LABELS)))
            if k == 0:  # only the last annotator marks the first word: a unit of one annotator
                mine = {x for x in mine if x[0] != 0} | ({(0, len(toks[0]), "PER")} if j == len(names) - 1
                                                         else set())
            if k == 1:
                mine = set()
            docs[n].append(dict(id=str(k), text=texts[k], tags=[
                dict(char_start=s, char_end=e, token=texts[k][s:e], tag=lab) for s, e, lab in sorted(mine)]))
    return docs, names


def _units(docs: dict[str, list[dict]], names: list[str]) -> list[tuple[str, ...]]:
    rows = []
    for k in range(len(docs[names[0]])):
        lab = [{(t["char_start"], t["char_end"]): t["tag"] for t in docs[n][k]["tags"]} for n in names]
        for u in sorted(set().union(*lab)):
            rows.append(tuple(x.get(u, "O") for x in lab))
    return rows


def _kappa(a: list[str], b: list[str]) -> float:
    k = sklearn_metrics.cohen_kappa_score(a, b)
    return 1.0 if k != k else k  # sklearn: nan when both used one label throughout; README: 1.0


def _fleiss(rows: list[tuple[str, ...]]) -> float:
    table, _ = inter_rater.aggregate_raters([list(r) for r in rows])
    return inter_rater.fleiss_kappa(table, method="fleiss")


def _expected(docs: dict[str, list[dict]], names: list[str], label: str | None) -> dict:
    rows = _units(docs, names)
    if label is not None:
        rows = [tuple(x if x == label else "O" for x in r) for r in rows if label in r]
    pairs = []
    for i, j in itertools.combinations(range(len(names)), 2):
        both = [(r[i], r[j]) for r in rows if (r[i], r[j]) != ("O", "O")]
        sa = {(k, t["char_start"], t["char_end"], t["tag"]) for k, d in enumerate(docs[names[i]])
              for t in d["tags"] if label in (None, t["tag"])}
        sb = {(k, t["char_start"], t["char_end"], t["tag"]) for k, d in enumerate(docs[names[j]])
              for t in d["tags"] if label in (None, t["tag"])}
        pairs.append(dict(cohen_kappa=_kappa([x for x, _ in both], [y for _, y in both]),
                          percent_agreement=sum(x == y for x, y in both) / len(both),
                          f1=2 * len(sa & sb) / (len(sa) + len(sb))))
    mean = {k: sum(p[k] for p in pairs) / len(pairs) for k in pairs[0]}
    return dict(mean, fleiss_kappa=_fleiss(rows), n_units=len(rows), pairs=pairs)


@pytest.fixture(params=[(3, 7), (4, 11)], ids=["3 annotators", "4 annotators"])
def batch(request, tmp_path):
    n_annotators, seed = request.param
    docs, names = _random_batch(n_annotators, 12, seed)
    paths = []
    for n in names:  # through the command's own reader: one standard JSONL file per annotator
        paths.append(str(tmp_path / f"{n}.jsonl"))
        A.write_jsonl(docs[n], paths[-1])
    annotations, _ = G.load_annotations(paths)
    return docs, names, G.agreement(annotations)


def test_overall_agreement_equals_sklearn_and_statsmodels(batch):
    docs, names, got = batch
    want = _expected(docs, names, None)
    assert got["annotators"] == names and got["n_units"] == want["n_units"]
    for key in ("cohen_kappa", "percent_agreement", "f1", "fleiss_kappa"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert len(got["pairs"]) == len(want["pairs"]) == len(names) * (len(names) - 1) // 2
    for g, w in zip(got["pairs"], want["pairs"]):
        for key in ("cohen_kappa", "percent_agreement", "f1"):
            assert g[key] == pytest.approx(w[key], abs=1e-12), (g["a"], g["b"], key)
    assert 0.1 < want["fleiss_kappa"] < 0.9  # neither trivial agreement nor none: a discriminating case
    # the unit only the last annotator marked is counted, with O for everybody else
    assert ("O",) * (len(names) - 1) + ("PER",) in _units({n: docs[n][:1] for n in names}, names)


@pytest.mark.parametrize("label", LABELS)
def test_per_label_agreement_equals_sklearn_and_statsmodels(batch, label):
    docs, names, got = batch
    want = _expected(docs, names, label)
    per = got["per_label"][label]
    assert per["n_units"] == want["n_units"]
    for key in ("cohen_kappa", "fleiss_kappa", "f1"):
        assert per[key] == pytest.approx(want[key], abs=1e-12), key
    assert per["n_spans"] == {n: sum(t["tag"] == label for d in docs[n] for t in d["tags"]) for n in names}


def test_a_document_marked_by_one_annotator_only(tmp_path):
    """One unit, marked by one of three annotators: every pair with that annotator disagrees on it (kappa 0
    with sklearn's definition: p_o = 0 = p_e... here p_e = 0 as well, so kappa = 0), the other pair has no
    units at all (None), and Fleiss' kappa matches statsmodels."""
    text = "Anna bor i Lund."
    docs = {n: [dict(id="d", text=text, tags=[])] for n in ("a", "b", "c")}
    docs["c"][0]["tags"] = [dict(char_start=0, char_end=4, token="Anna", tag="PER")]
    paths = []
    for n, d in docs.items():
        paths.append(str(tmp_path / f"{n}.jsonl"))
        A.write_jsonl(d, paths[-1])
    got = G.agreement(G.load_annotations(paths)[0])
    pairs = {(p["a"], p["b"]): p for p in got["pairs"]}
    assert pairs[("a", "b")]["cohen_kappa"] is None and pairs[("a", "b")]["percent_agreement"] is None
    for pair in (("a", "c"), ("b", "c")):
        assert pairs[pair]["cohen_kappa"] == pytest.approx(_kappa(["O"], ["PER"]))
        assert pairs[pair]["percent_agreement"] == 0.0 and pairs[pair]["f1"] == 0.0
    assert got["n_units"] == 1
    assert got["fleiss_kappa"] == pytest.approx(_fleiss([("O", "O", "PER")]))
    json.dumps(got)  # agreement.json is written from this dict
