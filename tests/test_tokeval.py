"""Tests of tokeval.py: the tokenizer metrics (fertility, proportion of continued words, unknown rate)."""
import pytest
from test_tokenizer import _FixedTokenizer


def test_evaluation_metrics_equal_a_per_document_count_on_random_corpora():
    """Every metric against the authors' per-document loop (src/evaluation/evaluate.py, counted here document by
    document), on random pieces: documents that start with a continuation piece after a document that ends with
    a word-initial one, unknown pieces, whitespace runs."""
    import random

    from tokeval import evaluation_metrics

    vocab = ["<pad>", "<unk>", "▁a", "▁b", "c", "d", "▁"]
    rng = random.Random(0)
    for _ in range(200):
        docs = {f"w{k} x{'y' * k}": [rng.choice(vocab[1:]) for _ in range(rng.randint(1, 6))]
                for k in range(rng.randint(1, 5))}
        m = evaluation_metrics(_FixedTokenizer(vocab, docs), list(docs))
        n_tok = n_unk = n_words = n_cont = 0
        for pieces in docs.values():
            mask = [p.startswith("▁") for p in pieces]
            n_tok, n_unk, n_words = n_tok + len(pieces), n_unk + pieces.count("<unk>"), n_words + sum(mask)
            n_cont += sum(not m for j, m in enumerate(mask) if j == 0 or (not m and mask[j - 1]))
        n_chars = sum(map(len, docs))
        want = dict(unk_rate=n_unk / n_tok, ctcl=n_tok / n_chars, chars_per_token=n_chars / n_tok,
                    tokens_per_ws_word=n_tok / (2 * len(docs)), n_docs=len(docs), n_chars=n_chars, n_tokens=n_tok,
                    n_words=n_words)
        if n_words:
            want |= dict(fertility=n_tok / n_words, pcw=n_cont / n_words)
        assert {k: m[k] for k in want} == pytest.approx(want), docs


def test_evaluation_metrics_zero_denominators_and_empty_input():
    """No word-initial piece: fertility and pcw are nan (the authors wrote -1), not an error; no whitespace word:
    tokens_per_ws_word nan; nothing left after removing punctuation: the documented error."""
    import math

    from tokeval import evaluation_metrics

    vocab = ["<pad>", "<unk>", "c", "▁▁"]
    m = evaluation_metrics(_FixedTokenizer(vocab, {"cc": ["c", "c"]}), ["cc"])
    assert math.isnan(m["fertility"]) and math.isnan(m["pcw"]) and m["n_words"] == 0
    assert m["tokens_per_ws_word"] == 2.0
    m = evaluation_metrics(_FixedTokenizer(vocab, {"  ": ["▁▁"]}), ["  "])
    assert math.isnan(m["tokens_per_ws_word"]) and m["fertility"] == 1.0
    with pytest.raises(ValueError, match=r"^no tokens to evaluate: every document is empty after removing ASCII "
                                         r"punctuation$"):
        evaluation_metrics(_FixedTokenizer(vocab, {"": []}), ["...", "!"])
