"""Tests of nertags.py: tag schemes, entity extraction and scores (seqeval and scikit-learn as references)."""
import pytest

import nertags


def test_lenient_entities_equal_seqeval_get_entities():
    """conlleval chunks as seqeval's default mode finds them, also for IOBES tags, hyphenated types
    (WNUT's creative-work) and type-less tags ('B', 'I': type '_'), including at the end of the sequence."""
    import random

    from seqeval.metrics.sequence_labeling import get_entities

    from nertags import lenient_entities

    pool = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-creative-work", "I-creative-work", "I-other-work", "B", "I"]
    rng = random.Random(0)
    seqs = [["S-PER", "S-PER"], ["B-creative-work", "I-other-work"], ["O", "B", "I"], ["I-creative-work"]]
    seqs += [[rng.choice(pool) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    for seq in seqs:
        assert lenient_entities(seq) == [(t, s, e + 1) for t, s, e in get_entities(seq)], seq


def test_bio_to_bilou_boundaries():
    """BIO -> BILOU: a B- after an entity of the same type starts a new one; a stray I- at the start is a
    beginning; a type change inside a run of I- ends the entity. Unknown targets are named in the error."""
    from nertags import convert

    cases = {("B-PER", "B-PER"): ["U-PER", "U-PER"],
             ("I-PER", "O", "B-PER", "I-PER"): ["U-PER", "O", "B-PER", "L-PER"],
             ("B-PER", "I-PER", "I-LOC"): ["B-PER", "L-PER", "U-LOC"],
             ("B-PER", "B-PER", "I-PER"): ["U-PER", "B-PER", "L-PER"]}
    for tags, want in cases.items():
        assert convert(list(tags), "bio", "bilou") == want, tags
    with pytest.raises(ValueError, match="unknown target scheme 'iobes'"):
        convert(["O"], "bio", "iobes")


def test_token_scores_equal_sklearn():
    """Token-level scores against sklearn's precision_recall_fscore_support: per class, micro, the macro over the
    labels present (zero_division=0) and the macro over the model's classes, which is None where sklearn would
    warn (a class never predicted: precision and f1; never in gold: recall and f1)."""
    from sklearn.metrics import precision_recall_fscore_support as prfs

    from nertags import token_scores

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC", "O", "B-PER"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "B-LOC", "O", "O", "B-LOC"]]
    g = [t[2:] if t != "O" else t for s in gold for t in s]
    p = [t[2:] if t != "O" else t for s in pred for t in s]
    classes = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    out = token_scores(gold, pred, classes)
    for name, labels in (("all", ["O", "LOC", "PER"]), ("fil", ["LOC", "PER"])):
        got = out[name]
        P, R, F, S = prfs(g, p, labels=labels, zero_division=0)
        for k, lab in enumerate(labels):
            assert (got["per_class"][lab]["precision"], got["per_class"][lab]["recall"], got["per_class"][lab]["f1"],
                    got["per_class"][lab]["support"]) == pytest.approx((P[k], R[k], F[k], S[k]))
        for avg, key in (("micro", "micro"), ("macro", "macro_present"), ("macro", "macro")):
            want = prfs(g, p, labels=labels, average=avg, zero_division=0)[:3]
            assert [got[key][m] for m in ("precision", "recall", "f1")] == pytest.approx(list(want)), (name, key)
    # the model has an ORG class that is neither in gold nor predicted: every macro over the model is None
    out = token_scores(gold, pred, classes + ["B-ORG", "I-ORG"])
    assert all(out[n]["macro"][m] is None for n in ("all", "fil") for m in ("precision", "recall", "f1"))
    assert out["fil"]["macro_present"]["f1"] == pytest.approx(prfs(g, p, labels=["LOC", "PER"], average="macro")[2])
    # PER in gold, never predicted: precision and f1 None, recall a number
    out = token_scores([["B-PER", "O", "B-LOC"]], [["O", "O", "B-LOC"]], ["O", "B-LOC", "B-PER"])
    assert out["fil"]["macro"]["precision"] is None and out["fil"]["macro"]["f1"] is None
    assert out["fil"]["macro"]["recall"] == pytest.approx(0.5)
    # nothing but O: no class without O, every mean 0
    assert out["fil"] and token_scores([["O"]], [["O"]])["fil"]["macro_present"] == dict(precision=0.0, recall=0.0,
                                                                                            f1=0.0)
    # IO tags (no prefix) keep their names
    assert set(token_scores([["PER", "O"]], [["PER", "PER"]])["all"]["per_class"]) == {"O", "PER"}


def test_split_tag_and_to_bio_edges():
    """A scheme prefix without a type is an error, with the message; plain IO labels (also 'X', 'X-ray') are
    labels; IOB1's first I- starts an entity whatever the last tag; IOBES' S- becomes B-."""
    from nertags import split_tag, to_bio

    for bad in ("B-", "B", "I"):
        with pytest.raises(ValueError, match=rf"^tag '{bad}' has a scheme prefix but no entity type; write e.g. "
                                             r"'B-PER'$"):
            split_tag(bad)
    assert [split_tag(t) for t in ("X", "X-ray", "B-PER", "O")] == [("", "X"), ("", "X-ray"), ("B", "PER"),
                                                                    ("O", None)]
    assert to_bio(["I-PER", "O", "I-PER"], "iob1") == ["B-PER", "O", "B-PER"]
    assert to_bio(["S-PER", "B-LOC", "E-LOC", "O"], "iobes") == ["B-PER", "B-LOC", "I-LOC", "O"]


def test_strict_entities_and_entity_scores_edges():
    """Strict entities: a U- tag is a one-word entity (end = start + 1); types keep their letters ('TAX') and a
    bare prefix has type '_' (as seqeval); a prefix outside the scheme is an error naming tag, scheme and
    prefixes. entity_scores: scheme 'bio' by default, no entity at all gives a zero macro with support 0, and
    sequences of different lengths are refused."""
    from nertags import entity_scores, strict_entities

    assert strict_entities(["U-PER", "O", "B-TAX", "L-TAX"], "bilou") == [("PER", 0, 1), ("TAX", 2, 4)]
    assert strict_entities(["B", "I", "O"], "bio") == [("_", 0, 2)]
    for seq, scheme, msg in ((["X-PER"], "bio", r"tag 'X-PER' is not in the BIO scheme \(prefixes B/I/O\)"),
                             (["X-PER"], "bilou", r"tag 'X-PER' is not in the BILOU scheme \(prefixes B/I/L/O/U\)")):
        with pytest.raises(ValueError, match=rf"^{msg}$"):
            strict_entities(seq, scheme)
    g, p = [["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]]
    assert entity_scores(g, p, "strict") == entity_scores(g, p, "strict", scheme="bio")
    none = entity_scores([["O"]], [["O"]], "strict")
    assert none["macro"] == dict(precision=0.0, recall=0.0, f1=0.0, support=0)
    with pytest.raises(ValueError, match="^gold and predicted tag sequences differ in length$"):
        entity_scores([["O", "O"]], [["O"]], "strict")


def test_evaluate_tags_keys():
    m = nertags.evaluate_tags([["B-A", "I-A", "O"]], [["B-A", "I-A", "O"]], "bio")
    for key in ("entity.strict.micro.f1", "entity.strict.macro.precision", "entity.lenient.micro.recall",
                "entity.strict.per_class.A.f1", "token.fil.micro.f1", "token.all.macro.f1",
                "entity.strict.well_formed"):
        assert m[key] == 1.0, key
    assert m["token.confusion_matrix"] == {"labels": ["O", "A"], "matrix": [[1, 0], [0, 2]]}
    m = nertags.evaluate_tags([["B-A", "I-A", "O"]], [["I-A", "I-A", "O"]], "bio")  # ill-formed prediction
    assert m["entity.strict.micro.f1"] == 0.0 and m["entity.lenient.micro.f1"] == 1.0
    assert m["entity.strict.well_formed"] == 0.0
    assert m["entity.asr.abidance"] == pytest.approx(2 / 3) and m["entity.asr.f1"] == 1.0  # I-A I-A -> B-A I-A
