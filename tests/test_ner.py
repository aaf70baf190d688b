"""ner.py / nerdata.py / the BERT encoder: equivalence with HF transformers and seqeval, data formats and
quirks of the shipped NER corpora (corpora/ner), schemes, chunking, inference offsets, training end to end (tiny
models)."""
import hashlib
import json
import random
import re
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import ROOT
from torch import nn

import bert
import ner
import nerdata
import nertagger
import nertags
from bert import BertForTokenClassification, WordPieceTokenizer
from ner import FINE_TUNING_PRESETS, AdaptiveFineTuning
from nerdata import Example, Issues

TEXTS = [
    "Gunhild Westman, tidigare chef på Skatteverket i Göteborg, sa: \"Det är inte tillräckligt!\"",
    "Crème brûlée à la française — naïve café, Ångström, ÉÇÀ; Malmö Åre Öland",
    "Hello!!!...?? (x+y)=z; $100 #tag @user https://t.co/abc 3.14 don't U.S.A.",
    "I love 😀 emoji 👍🏽 and 👨‍👩‍👧 family\u200b zero-width",
    "multi   spaces\n\nnewlines\t\ttabs  end  ",
    "漢字テスト 中文 mixed中文text",
    "a" * 120 + " short",
    "İstanbul ǅ ß ﬁ Straße \u00advärlden ränte\u00adpapper",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models here are fastest on one thread, and the 2-core machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- tokenizer + encoder vs HF

def _check_tokenizer(ours, fast, slow, texts):
    for t in texts:
        ids, offsets = ours.tokenize(t)
        ref = fast(t, add_special_tokens=False, return_offsets_mapping=True)
        assert ids == ref["input_ids"], t
        assert offsets == [tuple(o) for o in ref["offset_mapping"]], t
        assert ids == slow.convert_tokens_to_ids(slow.tokenize(t)), t


def test_wordpiece_uncased_matches_hf(minilm):
    from transformers import BertTokenizerFast
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    ours = bert.WordPieceTokenizer.from_dir(minilm)
    _check_tokenizer(ours, BertTokenizerFast.from_pretrained(minilm),
                     BertTokenizerLegacy(vocab_file=f"{minilm}/vocab.txt", do_lower_case=True), TEXTS)


def test_wordpiece_cased_matches_hf(tmp_path):
    from transformers import BertTokenizerFast
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    words = ["Gunhild", "West", "##man", "Göte", "##borg", "Skatte", "##verket", "chef", "på", "i", "sa", "Det",
             "är", "Crème", "br", "##û", "##lée", "café", "Å", "##ngström", "Malmö", "Hello", "e", "##mo", "##ji"]
    chars = sorted({c for t in TEXTS for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in chars]
    (tmp_path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    ours = bert.WordPieceTokenizer(tmp_path / "vocab.txt", lowercase=False)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    fast = BertTokenizerFast.from_pretrained(tmp_path)
    slow = BertTokenizerLegacy(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=False)
    texts = [t for t in TEXTS if "ǅ" not in t]  # NFC/case-folding corner cases differ between HF's two tokenizers
    _check_tokenizer(ours, fast, slow, texts)
    assert ours.tokenize("Göteborg")[0] == [ours.vocab["Göte"], ours.vocab["##borg"]]  # cased, accents kept


def test_encoder_matches_hf_bert(minilm):
    from transformers import BertModel
    ours = BertForTokenClassification.from_hf(minilm, 5).eval()
    hf = BertModel.from_pretrained(minilm).eval()
    tok = bert.WordPieceTokenizer.from_dir(minilm)
    seqs = [[tok.cls] + tok.tokenize(t)[0][:30] + [tok.sep] for t in TEXTS[:3]]
    idx = torch.zeros(3, max(map(len, seqs)), dtype=torch.long)
    mask = torch.zeros_like(idx)
    for i, s in enumerate(seqs):
        idx[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    with torch.no_grad():
        a = ours.bert(idx, mask)
        b = hf(input_ids=idx, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-4, rtol=1e-4)


def test_save_hf_loads_in_transformers_and_trains_identically(tiny_bert, tmp_path):
    """Our fine-tuned layout is a HF BertForTokenClassification folder, and 3 AdamW steps give the same losses."""
    from transformers import BertForTokenClassification as HFTokenClassification
    ours = BertForTokenClassification.from_hf(tiny_bert, 3)
    ours.save_hf(tmp_path, {0: "O", 1: "B-X", 2: "I-X"})
    hf = HFTokenClassification.from_pretrained(tmp_path)
    idx = torch.randint(5, 30000, (4, 12))
    mask = torch.ones_like(idx)
    mask[1, 8:] = 0
    labels = torch.randint(0, 3, (4, 12))
    labels[mask == 0] = -100
    opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    opt_b = torch.optim.AdamW(hf.parameters(), lr=1e-3)
    for _ in range(3):
        la = torch.nn.functional.cross_entropy(ours(idx, mask).flatten(0, 1), labels.flatten())
        lb = hf(input_ids=idx, attention_mask=mask, labels=labels).loss
        assert abs(la.item() - lb.item()) < 1e-5
        for opt, loss in ((opt_a, la), (opt_b, lb)):
            opt.zero_grad()
            loss.backward()
            opt.step()


# ----------------------------------------------------------------------------- data formats

def test_conll_quirks(tmp_path):
    f = tmp_path / "x.conll"
    f.write_text("-DOCSTART- -X- O O\n\n# sent_id = 1\n1\tAnna\tB-PER\tx\n2\tbor\tO\t-\n\t\n"
                 "1  Kalle   B-PER  y\nbn\n2 \tsover\tO\tz\n\n\n#\tO\tO\tO\n3\t#\tO\tO\n", encoding="utf-8")
    issues = Issues()
    ex, _ = nerdata.read_conll(f, token_column=1, tag_column=2, issues=issues)
    assert [e.words for e in ex] == [["Anna", "bor"], ["Kalle", "sover"], ["#"]]  # '#' lines are comments here
    assert [e.tags for e in ex] == [["B-PER", "O"], ["B-PER", "O"], ["O"]]
    assert issues.counts["line with too few columns, skipped"] == 1
    assert f"{f}:8" in issues.where["line with too few columns, skipped"][0]
    g = tmp_path / "io.txt"
    g.write_text("# a comment\n\n#\t0\nGunhild\tPER\nWestman    PER\n,  0\n", encoding="utf-8")
    ex, _ = nerdata.read_conll(g)
    assert [(e.words, e.tags) for e in ex] == [(["#", "Gunhild", "Westman", ","], ["O", "PER", "PER", "O"])]


def _count_conll(path, tag_column: int) -> tuple[int, int, int, int]:
    """(sentences, tokens, B- tags, one-field lines) of a shipped CoNLL-style file, counted here without nerdata:
    a token line has >= 2 whitespace-separated fields (not a '# ...' comment line of a UNER file), a sentence is
    a maximal run of token lines, a one-field line (the Swedish corpus's stray `bn`) is neither."""
    sentences = tokens = begins = singles = 0
    in_sentence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 2 or (tag_column == 2 and line.startswith("#")):
            singles += len(fields) == 1
            in_sentence = in_sentence and len(fields) == 1  # `bn` sits inside a sentence
            continue
        sentences += not in_sentence
        in_sentence, tokens, begins = True, tokens + 1, begins + fields[tag_column].startswith("B-")
    return sentences, tokens, begins, singles


@pytest.mark.parametrize("name, kwargs, published", [
    # kept whole (byte-identical, see test_shipped_corpora_match_their_checksums): the counts in the corpus README
    ("wnut17/wnut17train.conll", {}, (3394, 62730, 1975)),
    ("wnut17/emerging.test.annotated", {}, (1287, 23394, 1079)),
    ("swedish_ner_corpus/test_corpus.txt", {}, (2453, 42208, None)),
    # subsets (their first sentences): counted from the shipped file by _count_conll
    ("uner_sv_talbanken/sv_talbanken-ud-train.iob2", dict(token_column=1, tag_column=2), None),
    ("swedish_ner_corpus/train_corpus.txt", {}, None),
])
def test_shipped_corpora_counts(corpora, name, kwargs, published):
    """The corpus counts through the quirks (lone-TAB breaks, mixed separators, `bn`, doubled blank lines)."""
    path = corpora / "ner" / name
    sentences, tokens, begins, singles = _count_conll(path, kwargs.get("tag_column", 1))
    if published:
        assert (sentences, tokens) == published[:2] and (published[2] is None or begins == published[2])
    issues = Issues()
    ex = nerdata.read_examples(path, issues=issues, **kwargs)
    assert len(ex) == sentences and sum(len(e.words) for e in ex) == tokens
    scheme = nertags.detect_scheme([e.tags for e in ex])
    if "swedish" not in name:
        assert scheme == "bio" and sum(t.startswith("B-") for e in ex for t in e.tags) == begins > 0
    else:
        assert scheme == "io"
    assert issues.counts.get("line with too few columns, skipped", 0) == singles


def test_shipped_corpora_match_their_checksums(corpora):
    """Every data file under corpora/ has the sha256 its folder's README gives (upstream files kept whole are
    byte-identical to upstream; subsets are the ones the README's cut command made)."""
    readmes = sorted(corpora.rglob("README.md"))
    listed = {h for r in readmes for h in re.findall(r"\b([0-9a-f]{64})\b", r.read_text(encoding="utf-8"))}
    data = [p for p in corpora.rglob("*") if p.is_file() and p.suffix in (".txt", ".conll", ".annotated",
                                                                        ".iob2", ".tiktoken", ".gz")
            and not p.name.startswith(("LICENSE", "README", "SOURCES", "Readme"))]
    assert len(data) == 15
    for p in data:
        assert hashlib.sha256(p.read_bytes()).hexdigest() in listed, p


def test_csv_and_jsonl_round_trip(tmp_path):
    ex = [Example(["Anna", "bor", "i", "Lund", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
          Example(["New", "York", "City"], ["B-LOC", "I-LOC", "I-LOC"])]
    for fmt in ("conll", "csv", "jsonl"):
        path = tmp_path / f"d.{fmt}"
        nerdata.write_examples(ex, path, fmt)
        back = nerdata.read_examples(path)
        assert [(e.words, e.tags) for e in back] == [(e.words, e.tags) for e in ex], fmt
    doc = nerdata.read_jsonl(tmp_path / "d.jsonl")[0]
    assert doc["tags"][1] == {"char_start": 11, "char_end": 15, "token": "Lund", "tag": "LOC"}


def test_jsonl_bad_spans(tmp_path):
    text = "Anna Svensson bor i Stockholms län."
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": text, "tags": [{"char_start": 0, "char_end": 99, "tag": "PER"}]}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: .*outside the text"):
        nerdata.read_jsonl(f)
    issues = Issues()
    doc = {"text": text, "tags": [{"char_start": 0, "char_end": 13, "token": "Anna Svensson", "tag": "PER"},
                                  {"char_start": 5, "char_end": 13, "token": "Svensson", "tag": "PER"},
                                  {"char_start": 20, "char_end": 29, "token": "Stockholm", "tag": "LOC"}]}
    ex = nerdata.doc_to_example(doc, issues)
    assert ex.tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O"]
    assert issues.counts == {"overlapping span dropped": 1, "span not on word boundaries, widened to whole words": 1}


def test_seeded_splits_and_fractions():
    items = list(range(100))
    a = nerdata.split_examples(items, (0.8, 0.1, 0.1), seed=1)
    assert [len(x) for x in a] == [80, 10, 10] and sorted(sum(a, [])) == items
    assert a == nerdata.split_examples(items, (0.8, 0.1, 0.1), seed=1)
    assert a != nerdata.split_examples(items, (0.8, 0.1, 0.1), 2)
    sub = nerdata.subsample(items, 0.05, seed=3, how="random")
    assert len(sub) == 5 and sub == nerdata.subsample(items, 0.05, seed=3, how="random") and sub != items[:5]
    assert len(nerdata.subsample(items, 0.001, 0, "random")) == 1
    # the paper's code (nerblackbox _prune_examples): the first max(1, int(x * N)) examples
    assert nerdata.subsample(items, 0.057, seed=3) == items[:5] and nerdata.subsample(items, 0.001, 0) == [0]


# ----------------------------------------------------------------------------- schemes

def test_scheme_rules():
    assert nertags.convert(["PER", "PER", "O", "LOC", "PER"], "io", "bio") == ["B-PER", "I-PER", "O", "B-LOC", "B-PER"]
    assert nertags.convert(["PER", "PER", "PER", "O", "LOC"], "io", "bilou") == ["B-PER", "I-PER", "L-PER", "O",
                                                                                 "U-LOC"]
    assert nertags.convert(["U-A", "B-A", "L-A"], "bilou", "bio") == ["B-A", "B-A", "I-A"]
    assert nertags.convert(["B-A", "I-A", "O"], "bio", "io") == ["A", "A", "O"]
    # nerblackbox's consistency rules (annotation_tags/tags.py): stray I -> B/U, unfinished B -> U, I before O -> L
    assert nertags.convert(["O", "I-A", "I-A", "O", "B-A", "O", "I-B"], "bio", "bilou") == \
        ["O", "B-A", "L-A", "O", "U-A", "O", "U-B"]
    assert nertags.convert(["I-A", "I-A", "B-A", "O", "I-B"], "iob1", "bio") == ["B-A", "I-A", "B-A", "O", "B-B"]
    assert nertags.convert(["S-A", "B-B", "E-B"], "iobes", "bilou") == ["U-A", "B-B", "L-B"]
    rng = random.Random(0)
    for _ in range(200):  # BIO -> BILOU -> BIO is the identity on well-formed BIO
        tags = nertags.convert([rng.choice(["O", "A", "B"]) for _ in range(10)], "io", "bio")
        assert nertags.convert(nertags.convert(tags, "bio", "bilou"), "bilou", "bio") == tags


def test_detect_scheme_and_bad_tags(tmp_path):
    assert nertags.detect_scheme([["O", "PER"]]) == "io"
    assert nertags.detect_scheme([["B-PER", "I-PER", "O", "I-LOC"]]) == "bio"  # ill-formed IOB2 stays IOB2
    assert nertags.detect_scheme([["I-PER", "I-PER", "B-PER", "O"]]) == "iob1"
    assert nertags.detect_scheme([["U-PER", "B-LOC", "L-LOC"]]) == "bilou"
    assert nertags.detect_scheme([["S-PER", "B-LOC", "E-LOC"]]) == "iobes"
    with pytest.raises(ValueError, match="mix"):
        nertags.detect_scheme([["B-PER", "LOC"]])
    f = tmp_path / "bad.conll"
    f.write_text("Anna\tB-PER\nbor\tI-\n")
    with pytest.raises(ValueError, match=r"(?s)no column holds NER tags.*'I-' is neither O nor.*bad.conll:2"):
        nerdata.read_examples(f)
    g = tmp_path / "bad.csv"
    g.write_text("B-PER O\tAnna bor\nO\tx y\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: 1 tags but 2 tokens"):
        nerdata.read_examples(g)


# ----------------------------------------------------------------------------- scores vs seqeval

def _adversarial(scheme):
    if scheme == "bio":
        return [["I-A", "I-A", "O"], ["B-A", "I-B", "I-B"], ["O", "I-A", "B-A", "I-A", "B-B"], [], ["B-A"]]
    return [["B-A", "I-A", "O"], ["U-A", "L-A", "I-A"], ["B-A", "L-B", "U-B", "B-B", "I-B", "L-B"], ["I-A", "L-A"]]


@pytest.mark.parametrize("scheme", ["bio", "bilou"])
def test_entity_scores_equal_seqeval(scheme):
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support as lenient_ref
    from seqeval.metrics.v1 import precision_recall_fscore_support as strict_ref
    from seqeval.scheme import BILOU, IOB2
    prefixes = "BI" if scheme == "bio" else "BILU"
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in "ABC"]
    rng = random.Random(1)
    warnings.simplefilter("ignore")
    for trial in range(150):
        gold = [[rng.choice(tags) for _ in range(rng.randint(0, 9))] for _ in range(12)]
        pred = [[rng.choice(tags) for _ in s] for s in gold]
        if trial == 0:
            gold, pred = _adversarial(scheme), [list(reversed(s)) for s in _adversarial(scheme)]
        modes = [("strict", dict(mode="strict", scheme=IOB2 if scheme == "bio" else BILOU), strict_ref)]
        if scheme == "bio":
            modes.append(("lenient", {}, lenient_ref))
        for mode, kw, ref in modes:
            ours = nertags.entity_scores(gold, pred, mode, scheme)
            for avg in ("micro", "macro"):
                p, r, f, _ = ref(gold, pred, average=avg, zero_division=0, **kw)
                assert ours[avg]["precision"] == pytest.approx(p, abs=1e-12)
                assert ours[avg]["recall"] == pytest.approx(r, abs=1e-12)
                assert ours[avg]["f1"] == pytest.approx(f, abs=1e-12)
            p, r, f, s = ref(gold, pred, average=None, zero_division=0, **kw)
            assert [v["f1"] for v in ours["per_class"].values()] == pytest.approx(list(f), abs=1e-12)
            assert [v["support"] for v in ours["per_class"].values()] == list(s)


def test_token_scores_equal_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    rng = random.Random(2)
    tags = ["O", "B-A", "I-A", "B-B", "I-B", "B-C"]
    gold = [[rng.choice(tags) for _ in range(8)] for _ in range(20)]
    pred = [[rng.choice(tags) for _ in range(8)] for _ in range(20)]
    ours = nertags.token_scores(gold, pred)
    g = [t[2:] if t != "O" else t for s in gold for t in s]
    p = [t[2:] if t != "O" else t for s in pred for t in s]
    labels = ours["confusion_matrix"]["labels"]
    assert ours["confusion_matrix"]["matrix"] == confusion_matrix(g, p, labels=labels).tolist()
    for name, labs in (("all", labels), ("fil", labels[1:])):
        for avg in ("micro", "macro"):
            ref = precision_recall_fscore_support(g, p, labels=labs, average=avg, zero_division=0)
            assert [ours[name][avg][k] for k in ("precision", "recall", "f1")] == pytest.approx(list(ref[:3]))


# ----------------------------------------------------------------------------- chunking + inference

class _LookupModel(torch.nn.Module):
    """Position-independent stub: label 1 (B-LOC) for the given token ids, else 0 (O)."""

    def __init__(self, hot_ids):
        super().__init__()
        self.hot = torch.tensor(sorted(hot_ids))
        self.classifier = torch.nn.Linear(1, 3)

    def forward(self, idx, mask=None):
        hot = torch.isin(idx, self.hot).float()
        return torch.stack([1 - hot, hot, torch.zeros_like(hot)], -1) * 5.0


def _stub_tagger(minilm, hot_words, **cfg):
    tok = bert.WordPieceTokenizer.from_dir(minilm)
    hot = {tok.encode_word(w)[0] for w in hot_words}
    cfg = dict(labels=["O", "B-LOC", "I-LOC"], scheme="bio", max_seq_length=128, chunk_overlap=0, batch_size=4) | cfg
    return nertagger.Tagger(_LookupModel(hot), tok, cfg, "cpu")


def test_encode_chunks_first_subtoken_and_overlap(minilm):
    tok = bert.WordPieceTokenizer.from_dir(minilm)
    words = ("Gunhild Westmanssonsky " * 12).split()
    labels = list(range(len(words)))
    chunks = nertagger.encode(words, tok, max_seq_length=12, chunk_overlap=4, label_ids=labels)
    assert len(chunks) > 3 and all(len(c["ids"]) <= 12 for c in chunks)
    assert chunks[0]["ws"] == 0 and chunks[-1]["we"] == len(words)
    for a, b in zip(chunks, chunks[1:]):
        assert a["ws"] < b["ws"] < a["we"]  # consecutive chunks share words
    for c in chunks:
        assert c["ids"][0] == tok.cls and c["ids"][-1] == tok.sep
        labelled = [(i, y) for i, y in enumerate(c["labels"]) if y != -100]
        assert labelled == [(pos, c["ws"] + k) for k, pos in enumerate(c["first"])]  # first sub-token only


def test_train_batches_cover_every_chunk_once():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(1000)]
    padded = {}
    for group in (False, True):
        batches = ner.train_batches(lengths, 16, torch.Generator().manual_seed(0), group)
        assert sorted(i for b in batches for i in b) == list(range(1000)) and max(map(len, batches)) == 16
        padded[group] = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded[True] < 0.7 * padded[False]  # grouping by length cuts the padded tokens


def test_chunked_prediction_equals_unchunked(minilm):
    words = ("Stockholm ligger vid Mälaren och Göteborg vid havet . " * 20).split()
    probs = {}
    for max_len, overlap in ((512, 0), (16, 0), (16, 6)):
        tagger = _stub_tagger(minilm, ["stockholm", "goteborg"], max_seq_length=max_len, chunk_overlap=overlap)
        probs[max_len, overlap] = nertagger.word_probs(tagger.model, tagger.tokenizer, [words], tagger.cfg, "cpu")[0]
    for p in probs.values():
        torch.testing.assert_close(p, probs[512, 0])
    assert probs[512, 0].argmax(-1).tolist() == [1 if w in ("Stockholm", "Göteborg") else 0 for w in words]


def test_predict_offsets_on_messy_text(minilm):
    texts = ["I  live in\n\nStockholm  😀 and   Göteborg!", "Crème brûlée in Malmö\tand Åre 👨‍👩‍👧", "", "🙂"]
    tagger = _stub_tagger(minilm, ["stockholm", "goteborg", "malmo", "are"])
    out = nertagger.predict(tagger, texts)
    got = [[(texts[i][e["char_start"]:e["char_end"]], e["text"], e["label"]) for e in ents]
           for i, ents in enumerate(out)]
    assert got == [[("Stockholm",) * 2 + ("LOC",), ("Göteborg",) * 2 + ("LOC",)],
                   [("Malmö",) * 2 + ("LOC",), ("Åre",) * 2 + ("LOC",)], [], []]
    assert all(isinstance(e["char_start"], int) and 0.5 < e["score"] <= 1 for ents in out for e in ents)


# ----------------------------------------------------------------------------- training end to end (tiny models)

def _toy_data(path, n, seed):
    rng = random.Random(seed)
    names, cities = ["anna", "erik", "maria", "johan"], ["lund", "umea", "kiruna", "visby"]
    ex = []
    for _ in range(n):
        a, c = rng.choice(names), rng.choice(cities)
        ex.append(Example([a, "lives", "in", c, "with", rng.choice(names)], ["B-PER", "O", "O", "B-LOC", "O", "B-PER"]))
    nerdata.write_examples(ex, path, "conll")
    return ex


def test_train_evaluate_predict_cli(tiny_bert, tmp_path, capsys):
    _toy_data(tmp_path / "train.conll", 32, 0)
    _toy_data(tmp_path / "val.conll", 12, 1)
    test = _toy_data(tmp_path / "test.conll", 12, 2)
    test[0].tags[0] = "B-ORG"  # a label never seen in training
    nerdata.write_examples(test, tmp_path / "test.conll", "conll")
    out = tmp_path / "run"
    ner.main(["train", f"--train={tmp_path / 'train.conll'}", f"--val={tmp_path / 'val.conll'}",
              f"--test={tmp_path / 'test.conll'}", f"--encoder={tiny_bert}", f"--out_dir={out}", "--lr_max=3e-3",
              "--warmup_epochs=1", "--cooldown_epochs=1", "--max_epochs=20", "--multiple_runs=2", "--batch_size=8",
              "--min_delta=0.03"])
    report = json.loads((out / "report.json").read_text())
    assert report["issues"]["label in test unseen in training"]["count"] == 1
    for k, run in enumerate(report["runs"]):
        history = [json.loads(x) for x in (out / f"run{k}" / "metrics.jsonl").read_text().splitlines()]
        assert run["epochs"] == len(history) < 20  # early stopping: 2 epochs without a min_delta improvement
        assert [h["improved"] for h in history[-2:]] == [False, False]
        assert history[-1]["lr"] < 3e-3 and history[2]["lr"] == 3e-3  # warm-up, constant, cool-down
        assert run["best_val_loss"] == min(h["val_loss"] for h in history)
        assert run["test"]["entity.strict.micro.f1"] > 0.8  # the toy task is learnt
    f1s = [r["test"]["entity.strict.micro.f1"] for r in report["runs"]]
    s = report["summary"]["test.entity.strict.micro.f1"]
    assert s["mean"] == pytest.approx(sum(f1s) / 2) and s["stderr"] == pytest.approx(abs(f1s[0] - f1s[1]) / 2)
    best = max(range(2), key=lambda k: report["runs"][k]["val"]["entity.strict.micro.f1"])

    ner.main(["evaluate", f"--model={out / 'model'}", f"--data={tmp_path / 'test.conll'}", f"--out={tmp_path / 'ev'}"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["entity.strict.micro.f1"] == pytest.approx(report["runs"][best]["test"]["entity.strict.micro.f1"])
    blocks = (tmp_path / "ev" / "predictions.tsv").read_text().split("\n\n")
    assert len(blocks) - 1 == len(test)  # one block per sentence, then the final newline
    first = blocks[0].split("\n")[0].split("\t")
    assert first[:2] == [test[0].words[0], "B-ORG"] and len(first) == 3

    (tmp_path / "in.txt").write_text("maria lives in  kiruna\n\nerik lives in visby with anna\n")
    ner.main(["predict", f"--model={out / 'model'}", f"--input={tmp_path / 'in.txt'}",
              f"--output={tmp_path / 'p.jsonl'}"])
    docs = nerdata.read_jsonl(tmp_path / "p.jsonl")
    assert [(t["token"], t["tag"]) for t in docs[0]["tags"]] == [("maria", "PER"), ("kiruna", "LOC")]
    ner.main(["predict", f"--model={out / 'model'}", f"--input={tmp_path / 'p.jsonl'}",
              f"--output={tmp_path / 'ls.json'}", "--format=labelstudio"])
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert tasks[0]["data"]["text"] == "maria lives in  kiruna" and tasks[0]["predictions"][0]["result"]
    ner.main(["predict", f"--model={out / 'model'}", f"--input={tmp_path / 'in.txt'}",
              f"--output={tmp_path / 'dc.jsonl'}", "--format=doccano"])
    line = json.loads((tmp_path / "dc.jsonl").read_text().splitlines()[0])
    assert line["text"] == "maria lives in  kiruna" and [x[2] for x in line["label"]] == ["PER", "LOC"]


_FULL_DISK_CHILD = """
import errno, runpy, sys
import safetensors.torch
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
safetensors.torch.save_file = full_disk  # the model weights' writer
sys.argv = ["ner.py", *sys.argv[1:]]
runpy.run_path("ner.py", run_name="__main__")
"""


def test_a_full_disk_while_saving_the_model_is_one_line(tiny_bert, tmp_path):
    """ner.py train whose model save hits a full disk: one line naming the cause, exit 1, no traceback, and no
    half-written model folder (it is built beside out_dir/model and renamed into place)."""
    _toy_data(tmp_path / "train.conll", 16, 0)
    _toy_data(tmp_path / "val.conll", 8, 1)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, "train", f"--train={tmp_path / 'train.conll'}",
                        f"--val={tmp_path / 'val.conll'}", f"--encoder={tiny_bert}", f"--out_dir={out}",
                        "--max_epochs=1", "--batch_size=8"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith(f"ner.py: cannot write the model model in {out}: the disk "
                                                       f"is full (")
    assert not (out / "model").exists() and not list(out.glob(".model.*"))


def test_adaptive_preset_and_gpt_backbone(trained_run, tmp_path):
    """The shared producer run (train.py's own run folder) as backbone: fine-tune it with the adaptive schedule,
    reload, predict."""
    _toy_data(tmp_path / "train.conll", 32, 0)
    _toy_data(tmp_path / "val.conll", 8, 1)
    cfg = ner.TRAIN_DEFAULTS | dict(train=str(tmp_path / "train.conll"), val=str(tmp_path / "val.conll"),
                                    backbone=f"gpt:{trained_run}", out_dir=str(tmp_path / "out"), lr_max=1e-2,
                                    warmup_epochs=1, cooldown_epochs=1, max_epochs=6, batch_size=8,
                                    max_seq_length=8, chunk_overlap=2)
    report = ner.train(cfg)
    history = [json.loads(x) for x in (tmp_path / "out/run0/metrics.jsonl").read_text().splitlines()]
    assert len(history) == report["runs"][0]["epochs"]
    tagger = nertagger.Tagger.load(tmp_path / "out/model", "cpu")
    loaded, _ = nertagger.load_gpt_backbone(str(trained_run), 3, "")
    for k, v in torch.load(trained_run / "ckpt.pt", weights_only=True)["model"].items():
        assert torch.equal(loaded.gpt.state_dict()[k.removeprefix("_orig_mod.")], v), k
    tags, _ = tagger.tag([["anna", "lives", "in", "lund", "with", "erik"] * 3])
    assert len(tags[0]) == 18  # chunked (max_seq_length 8) and merged back by word
    assert report["runs"][0]["val"]["entity.lenient.micro.f1"] > 0.5


def test_bad_input_messages(tmp_path, tiny_bert):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "", "tags": []}) + "\n" + json.dumps({"text": "Anna", "tags": []}) + "\n")
    issues = Issues()
    assert len(nerdata.read_examples(f, issues=issues)) == 1
    assert issues.counts == {"empty sentence/document skipped": 1}
    cfg = ner.TRAIN_DEFAULTS | dict(train=str(f), encoder=str(tiny_bert), out_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--preset='fast'.*adaptive"):
        ner.train(cfg | {"preset": "fast"})
    with pytest.raises(ValueError, match="gpt:<train.py out_dir>"):
        ner._build(cfg | {"backbone": "bert-base"}, 3)
    with pytest.raises(FileNotFoundError, match="ner_config.json not found"):
        nertagger.Tagger.load(tmp_path)


def test_train_writes_nothing_before_every_check_and_replaces_a_run_only_with_overwrite(tiny_bert, tmp_path):
    """A value that only the optimizer or schedule checks (lr_max < 0, warmup_epochs < 0) stops train before
    config.json; an out_dir that holds an earlier run's model is refused without --overwrite=True, and replaced
    whole with it; an empty out_dir is refused."""
    _toy_data(tmp_path / "train.conll", 16, 0)
    _toy_data(tmp_path / "val.conll", 8, 1)
    out = tmp_path / "o"
    cfg = ner.TRAIN_DEFAULTS | dict(train=str(tmp_path / "train.conll"), val=str(tmp_path / "val.conll"),
                                    encoder=str(tiny_bert), out_dir=str(out), preset="original", max_epochs=1,
                                    batch_size=8)
    for bad, match in (({"lr_max": -1.0}, "learning rate"), ({"warmup_epochs": -1}, "warmup"),
                       ({"out_dir": ""}, "--out_dir is empty")):
        with pytest.raises(ValueError, match=match):
            ner.train(cfg | bad)
        assert not out.exists()
    ner.train(cfg)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(ValueError, match=r"holds an earlier run \(config.json, model, report.json, report.txt, "
                                         r"run0\).*--overwrite=True"):
        ner.train(cfg)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    (out / "run3").mkdir()  # a run of an earlier multiple_runs=4
    ner.train(cfg | {"overwrite": True, "save_model": False})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.json", "report.txt", "run0"]


@pytest.mark.slow
def test_minilm_fine_tuning_learns_wnut(minilm, corpora, tmp_path):
    """The real encoder, a few steps on a WNUT-17 slice: the validation loss falls."""
    train = nerdata.read_examples(corpora / "ner/wnut17/wnut17train.conll")[:48]
    nerdata.write_examples(train[:40], tmp_path / "train.conll", "conll")
    nerdata.write_examples(train[40:], tmp_path / "val.conll", "conll")
    cfg = ner.TRAIN_DEFAULTS | dict(train=str(tmp_path / "train.conll"), val=str(tmp_path / "val.conll"),
                                    encoder=str(minilm), out_dir=str(tmp_path / "o"), preset="original",
                                    max_epochs=2, warmup_epochs=0, lr_max=1e-4, save_model=False)
    report = ner.train(cfg)
    history = [json.loads(x) for x in (tmp_path / "o/run0/metrics.jsonl").read_text().splitlines()]
    assert report["runs"][0]["epochs"] == 2 and history[1]["val_loss"] < history[0]["val_loss"]


def test_asr_scores_follow_nerblackbox_by_hand():
    # nerblackbox (tags.py restore_annotation_scheme_consistency, ner_metrics.py compute_asr_results): the
    # predictions of all sentences form one sequence; each tag is checked against its ORIGINAL neighbours.
    pred = [["B-PER", "I-PER", "O", "I-LOC"], ["I-LOC", "O"]]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-LOC", "O"]]
    # flat: B-PER I-PER O I-LOC I-LOC O -> only position 3 changes (I-LOC after O -> B-LOC): abidance 5/6.
    # restored: B-PER I-PER O B-LOC I-LOC O = PER[0,2) LOC[3,5); gold joined the same way: PER[0,2) LOC[3,5)
    asr = nertags.asr_scores(gold, pred, "bio")
    assert asr["abidance"] == pytest.approx(5 / 6)
    assert asr["precision"] == asr["recall"] == asr["f1"] == 1.0
    gold2 = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]  # joined: PER, LOC[3,4), LOC[4,5)
    asr2 = nertags.asr_scores(gold2, pred, "bio")
    assert (asr2["precision"], asr2["recall"]) == (pytest.approx(1 / 2), pytest.approx(1 / 3))
    # BILOU, the repeated rules: a lone I-X -> L-X (no I/L after) then -> B-X (no B/I before) then -> U-X
    bilou = nertags.asr_scores([["O", "U-ORG", "O"]], [["O", "I-ORG", "O"]], "bilou")
    assert bilou["abidance"] == pytest.approx(2 / 3) and bilou["f1"] == 1.0
    # well-formed predictions are left alone
    ok = nertags.asr_scores([["B-X", "I-X", "L-X", "U-Y"]], [["B-X", "I-X", "L-X", "U-Y"]], "bilou")
    assert ok == {"abidance": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_fine_tuning_defaults_and_presets_are_nerblackbox_published_ones():
    """nerblackbox (Stollenwerk 2023, arXiv:2312.04306; modules/data/training_configs/default.ini and
    modules/training_config/preset.py) and adaptive fine-tuning (Stollenwerk 2022, arXiv:2202.02617): the
    defaults and the three presets, pinned."""
    d = ner.TRAIN_DEFAULTS
    assert {k: d[k] for k in ("lr_max", "warmup_epochs", "cooldown_epochs", "patience", "min_delta",
                              "cooldown_restarts", "weight_decay", "batch_size", "max_seq_length", "seed",
                              "preset")} == dict(lr_max=2e-5, warmup_epochs=2, cooldown_epochs=7, patience=0,
                                                 min_delta=0.0, cooldown_restarts=True, weight_decay=0.01,
                                                 batch_size=16, max_seq_length=128, seed=42, preset="adaptive")
    assert ner.FINE_TUNING_PRESETS == {
        "adaptive": dict(lr_schedule="constant", early_stopping=True, max_epochs=250),
        "original": dict(lr_schedule="linear", early_stopping=False, max_epochs=5),  # BERT paper
        "stable": dict(lr_schedule="linear", early_stopping=False, max_epochs=20),  # Mosbach et al. 2021
    }


def test_fine_tuning_precision_is_bf16_autocast_and_tf32_on_cuda_only():
    """ner.mixed_precision, which wraps the fine-tuning and validation forwards: bf16 autocast + TF32 on CUDA (the
    object is built without a GPU; warnings about a missing CUDA are expected here), fp32 and no flag on CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        ctx = ner.mixed_precision("cpu")
        assert not isinstance(ctx, torch.autocast) and not torch.backends.cuda.matmul.allow_tf32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx = ner.mixed_precision("cuda:0")
        assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# -----------------------------------------------------------------------------------------------------------
# the fine-tuning schedule (AdaptiveFineTuning, FINE_TUNING_PRESETS)

def _replay(sched, opt, val_losses):
    """LR used by every optimizer step, epoch by epoch, and the epoch at which the schedule says stop."""
    lrs = []
    for v in val_losses:
        epoch_lrs = []
        for _ in range(sched.steps_per_epoch):
            epoch_lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs.append(epoch_lrs)
        if sched.end_epoch(v):
            return lrs, sched.epoch
    return lrs, None


def _opt():
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=123.0)


def test_adaptive_fine_tuning_replay_with_restart_during_cooldown():
    # S = 2 steps/epoch, warm-up 2 epochs (4 steps), cool-down 3 epochs (6 steps), patience 0 -> stop at wait 4
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 2, lr_max=1.0, warmup_epochs=2, cooldown_epochs=3)
    losses = [1.0, 0.9, 0.95, 0.92, 0.85, 0.86, 0.90, 0.90, 0.90, 0.1]
    lrs, stop = _replay(sched, opt, losses)
    expected = [
        [0, 1 / 4], [2 / 4, 3 / 4],  # e1 best, e2 best (warm-up)
        [1, 1],                      # e3: constant; no improvement -> wait 1 -> cool-down
        [6 / 6, 5 / 6],              # e4: cool-down, wait 2
        [4 / 6, 3 / 6],              # e5: cool-down, new best -> wait 0 -> restart constant
        [1, 1],                      # e6: no improvement -> cool-down again
        [6 / 6, 5 / 6], [4 / 6, 3 / 6], [2 / 6, 1 / 6],  # e7-e9: wait 2, 3, 4 -> stop
    ]
    assert stop == 9
    assert len(lrs) == len(expected)
    for got, want in zip(lrs, expected):
        assert got == pytest.approx(want)
    assert opt.param_groups[0]["lr"] == 0.0 and sched.best == 0.85 and sched.wait == 4 and sched.in_cooldown


def test_adaptive_fine_tuning_defaults_stop_after_best_plus_8():
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 3)  # nerblackbox defaults
    assert (sched.lr_max, sched.warmup_epochs, sched.cooldown_epochs, sched.max_epochs) == (2e-5, 2, 7, 250)
    losses = [5.0, 4.0, 3.0, 3.5] + [3.1] * 10
    lrs, stop = _replay(sched, opt, losses)
    assert stop == 3 + 8  # best at epoch 3, then 1 + 7 epochs without a new best
    assert lrs[0] == pytest.approx([0, 2e-5 / 6, 2 * 2e-5 / 6])
    assert lrs[3] == pytest.approx([2e-5] * 3)
    assert lrs[4] == pytest.approx([2e-5 * (21 - k) / 21 for k in range(3)])
    assert lrs[10] == pytest.approx([2e-5 * (3 - k) / 21 for k in range(3)])
    # the best epoch is flagged for checkpointing
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 1)
    flags = [(sched.end_epoch(v), sched.improved)[1] for v in [3.0, 2.0, 2.0, 1.0]]
    assert flags == [True, True, False, True]  # min_delta 0: an equal loss is not an improvement


def test_adaptive_fine_tuning_without_restarts_and_max_epochs():
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 1, lr_max=1.0, warmup_epochs=0, cooldown_epochs=2, cooldown_restarts=False)
    lrs, stop = _replay(sched, opt, [1.0, 1.1, 0.5, 0.4, 0.3])
    assert lrs == [[1.0], [1.0], [1.0], [0.5]] and stop == 4  # the improvement at e3 does not count
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 1, lr_max=1.0, warmup_epochs=0, max_epochs=3)
    _, stop = _replay(sched, opt, [3.0, 2.0, 1.0, 0.5])
    assert stop == 3
    opt = _opt()
    _, stop = _replay(AdaptiveFineTuning(opt, 1), opt, [1.0, float("nan"), 0.5])
    assert stop == 2


@pytest.mark.parametrize("preset,epochs", [("original", 5), ("stable", 20)])
def test_linear_presets(preset, epochs):
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 2, lr_max=1.0, **FINE_TUNING_PRESETS[preset])
    lrs, stop = _replay(sched, opt, [1.0, 2.0, 3.0] + [4.0] * 30)  # early stopping off: losses do not matter
    assert stop == epochs
    total, warm = 2 * epochs, 4
    flat = [x for e in lrs for x in e]
    assert flat == pytest.approx([k / warm if k < warm else (total - k) / (total - warm) for k in range(total)])


def test_adaptive_fine_tuning_state_dict_resume():
    losses = [1.0, 0.9, 0.95, 0.92, 0.85, 0.86, 0.90, 0.90, 0.90]
    opt = _opt()
    full, _ = _replay(AdaptiveFineTuning(opt, 2, lr_max=1.0, warmup_epochs=2, cooldown_epochs=3), opt, losses)
    opt = _opt()
    sched = AdaptiveFineTuning(opt, 2, lr_max=1.0, warmup_epochs=2, cooldown_epochs=3)
    first, _ = _replay(sched, opt, losses[:4])
    opt2 = _opt()
    resumed = AdaptiveFineTuning(opt2, 2, lr_max=1.0, warmup_epochs=2, cooldown_epochs=3)
    resumed.load_state_dict(sched.state_dict())
    rest, stop = _replay(resumed, opt2, losses[4:])
    assert first + rest == full and stop == 9


def test_adaptive_fine_tuning_bad_input():
    with pytest.raises(ValueError, match="lr_schedule 'cosine'"):
        AdaptiveFineTuning(_opt(), 2, lr_schedule="cosine")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        AdaptiveFineTuning(_opt(), 0)


def test_adaptive_fine_tuning_get_lr_and_one_step_cooldown():
    """get_lr() is the rate the optimizer uses; a one-step cool-down starts at lr_max and reaches 0."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = AdaptiveFineTuning(opt, steps_per_epoch=1, lr_max=0.5, warmup_epochs=0, cooldown_epochs=1)
    for val_loss in (1.0, 2.0):  # a best epoch, then one without improvement: the cool-down starts
        sched.step()
        sched.end_epoch(val_loss)
        assert sched.get_lr() == opt.param_groups[0]['lr']
    assert sched.phase == 'cooldown' and opt.param_groups[0]['lr'] == 0.5  # (1 - 0) / 1 of lr_max
    sched.step()
    assert opt.param_groups[0]['lr'] == 0.0 == sched.get_lr()


def test_adaptive_fine_tuning_checks_each_count_alone():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    AdaptiveFineTuning(opt, 1, max_epochs=1)  # one epoch is a valid run
    for bad in (dict(warmup_epochs=-1), dict(cooldown_epochs=-1), dict(patience=-1), dict(max_epochs=0)):
        with pytest.raises(ValueError, match="AdaptiveFineTuning: need steps_per_epoch >= 1"):
            AdaptiveFineTuning(opt, 3, **bad)
    fresh = AdaptiveFineTuning(opt, 3).state_dict()  # nothing recorded yet
    assert (fresh["wait"], fresh["improved"], fresh["in_cooldown"], fresh["epoch"]) == (0, False, False, 0)


def test_adaptive_fine_tuning_cool_down_only_for_early_stopping_constant_and_positive_epochs():
    """A bad epoch starts the cool-down only with early stopping, the constant schedule and cooldown_epochs > 0:
    the linear schedule keeps its decay, and cooldown_epochs=0 keeps the constant LR."""
    def lr_after_a_bad_epoch(**kw):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        s = AdaptiveFineTuning(opt, 2, lr_max=1.0, warmup_epochs=0, max_epochs=10, **kw)
        s.end_epoch(1.0)
        s.step()
        s.end_epoch(2.0)  # no improvement: wait 1 = cooldown_wait
        return s.get_lr(), s.in_cooldown
    assert lr_after_a_bad_epoch() == (1.0, True)  # the cool-down starts at factor 1, then falls
    assert lr_after_a_bad_epoch(cooldown_epochs=0) == (1.0, False)
    assert lr_after_a_bad_epoch(lr_schedule="linear") == (pytest.approx(1 - 1 / 20), False)


@pytest.mark.parametrize("steps_per_epoch,warmup_epochs,max_epochs", [(1, 1, 2), (1, 0, 1), (2, 1, 3), (3, 2, 5)])
def test_adaptive_fine_tuning_linear_equals_transformers_schedule(steps_per_epoch, warmup_epochs, max_epochs):
    """lr_schedule='linear' equals transformers.get_linear_schedule_with_warmup step for step, also where the
    decay phase is a single step (total - warmup = 1)."""
    from transformers import get_linear_schedule_with_warmup
    p = torch.zeros(1, requires_grad=True)
    ours_opt, hf_opt = torch.optim.SGD([p], lr=1.0), torch.optim.SGD([p], lr=1.0)
    ours = AdaptiveFineTuning(ours_opt, steps_per_epoch, lr_max=1.0, warmup_epochs=warmup_epochs,
                              max_epochs=max_epochs, lr_schedule="linear", early_stopping=False)
    hf = get_linear_schedule_with_warmup(hf_opt, warmup_epochs * steps_per_epoch, max_epochs * steps_per_epoch)
    for _ in range(max_epochs * steps_per_epoch + 1):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(hf_opt.param_groups[0]["lr"])
        ours.step()
        hf_opt.step()
        hf.step()


# -----------------------------------------------------------------------------------------------------------
# Bad NER input is reported before any work, never silently scored; and the paper's choices
# (nerblackbox as used for adaptive fine-tuning, Stollenwerk 2022, arXiv 2202.02617) where they decide results: the
# evaluated model, the validation-loss mean, first-N subsets, token-level macro averages.

def _cfg(tmp_path, tiny_bert, **kw):
    return ner.TRAIN_DEFAULTS | dict(encoder=str(tiny_bert), out_dir=str(tmp_path / "run"), max_epochs=2,
                                     warmup_epochs=0, batch_size=8, lr_max=3e-3) | kw


def test_empty_validation_split_stops_before_training(tmp_path, tiny_bert):
    _toy_data(tmp_path / "train.conll", 4, 0)
    with pytest.raises(ValueError, match=r"--val_split=0.1 of 4 sentences .* leaves 0 for validation"):
        ner.train(_cfg(tmp_path, tiny_bert, train=str(tmp_path / "train.conll")))
    assert not (tmp_path / "run").exists()


def test_stray_inside_tags_are_counted_with_file_line_and_repaired_on_request(tmp_path):
    f = tmp_path / "stray.conll"
    f.write_text("Anna\tB-PER\nbor\tO\ni\tO\nLund\tI-LOC\n\nErik\tI-PER\nLarsson\tI-PER\n\nMalmö\tB-LOC\n"
                 "Kalle\tI-PER\n\n", encoding="utf-8")
    issues = nerdata.Issues()
    ex, layout = nerdata.read_data(f, issues=issues)
    (kind, n), = issues.counts.items()
    assert n == 3 and "kept" in kind and layout["scheme"] == "bio"
    assert [w.split(": ")[0] for w in issues.where[kind]] == [f"{f}:4", f"{f}:6", f"{f}:10"]
    assert ex[1].tags == ["I-PER", "I-PER"]
    issues = nerdata.Issues()
    ex, _ = nerdata.read_data(f, issues=issues, repair_bio=True)
    assert [e.tags for e in ex] == [["B-PER", "O", "O", "B-LOC"], ["B-PER", "I-PER"], ["B-LOC", "B-PER"]]
    assert "repaired" in next(iter(issues.counts))


def test_max_seq_length_beyond_the_position_table_is_an_error_at_start(tmp_path, tiny_bert):
    _toy_data(tmp_path / "train.conll", 16, 0)
    cfg = _cfg(tmp_path, tiny_bert, train=str(tmp_path / "train.conll"), val=str(tmp_path / "train.conll"),
               max_seq_length=129)
    with pytest.raises(ValueError, match=r"--max_seq_length=129 is longer than the encoder's position table "
                                         r"\(128 positions\)"):
        ner.train(cfg)
    assert not (tmp_path / "run").exists()


def test_data_warnings_are_printed_before_training_and_wordless_labels_counted(tmp_path, tiny_bert, capsys):  # noqa: E501
    ex = _toy_data(tmp_path / "train.conll", 16, 0)
    ex[0].words[0], ex[0].tags[0] = "\u200b", "B-PER"  # a zero-width space: BERT deletes it, no sub-token
    ex[1].tags[0] = "I-PER"  # a stray I-X
    nerdata.write_examples(ex, tmp_path / "train.conll", "conll")
    report = ner.train(_cfg(tmp_path, tiny_bert, train=str(tmp_path / "train.conll"),
                            val=str(tmp_path / "train.conll"), max_epochs=1))
    printed = capsys.readouterr().out
    first_epoch = printed.index("epoch 1")
    for kind in ("labelled word without sub-tokens in train", "I-X after neither B-X nor I-X"):
        assert 0 <= printed.index(kind) < first_epoch, kind
        assert any(k.startswith(kind) for k in report["issues"]), kind
    wordless = next(v for k, v in report["issues"].items() if k.startswith("labelled word without sub-tokens in val"))
    assert wordless["count"] == 1 and "line 1" in wordless["examples"][0]


def test_predict_writes_one_record_per_input_line(tmp_path, minilm):
    tagger = _stub_tagger(minilm, ["stockholm"])
    (tmp_path / "in.txt").write_text("Stockholm\n\nbor i Stockholm\n   \n", encoding="utf-8")
    docs = nertagger.predict_on_file(tagger, tmp_path / "in.txt", tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == len(docs) == 4
    assert [json.loads(x)["line"] for x in lines] == [1, 2, 3, 4]
    assert [len(json.loads(x)["tags"]) for x in lines] == [1, 0, 1, 0]
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "Stockholm"}\n\n{"id": "b", "text": "x"}\n')
    docs = nertagger.predict_on_file(tagger, tmp_path / "in.jsonl", tmp_path / "out2.jsonl")
    assert [(d["line"], d.get("id"), len(d["tags"])) for d in docs] == [(1, "a", 1), (2, None, 0), (3, "b", 0)]


@pytest.mark.parametrize("final_model", ["last", "best"])
def test_evaluated_model_is_the_last_epoch_or_the_best(tmp_path, tiny_bert, final_model):
    """last (the paper's code, nerblackbox v0.0.12) vs best (lowest val loss, v1.0.0): the weights returned by
    train_run give exactly that epoch's validation loss."""
    _toy_data(tmp_path / "t.conll", 24, 0)
    ex = nerdata.read_examples(tmp_path / "t.conll")
    tok = WordPieceTokenizer.from_dir(tiny_bert)
    labels = nertags.label_list(["LOC", "PER"], "bio")
    chunks = [c for e in ex for c in nertagger.encode(e.words, tok, 32, 0, [labels.index(t) for t in e.tags])]
    torch.manual_seed(0)
    model = ner.BertForTokenClassification.from_hf(tiny_bert, len(labels))
    cfg = _cfg(tmp_path, tiny_bert, final_model=final_model, max_epochs=4, lr_max=0.3, preset="original")
    result = ner.train_run(cfg, model, tok, chunks[:16], chunks[16:], 0, tmp_path)
    losses = [h["val_loss"] for h in result["history"]]
    assert losses.index(min(losses)) != len(losses) - 1  # lr 0.3 overshoots: the best epoch is not the last
    again = ner._val_loss(model, chunks[16:], tok.pad, 8, "cpu", "batch")
    kept = len(losses) if final_model == "last" else losses.index(min(losses)) + 1
    assert result["evaluated_epoch"] == kept and again == pytest.approx(losses[kept - 1], rel=1e-6)


def test_val_loss_is_the_mean_of_batch_means_as_the_paper(tiny_bert):
    """nerblackbox NerModelEvaluation: epoch loss = np.stack(batch losses).mean(), each batch loss the mean over its
    labelled tokens (HF cross-entropy with ignore_index -100)."""
    tok = WordPieceTokenizer.from_dir(tiny_bert)
    rng = random.Random(0)
    chunks = [c for _ in range(11)
              for c in nertagger.encode(["anna", "bor", "i", "lund"][:rng.randint(1, 4)], tok, 32, 0,
                                        [rng.randint(0, 2) for _ in range(4)])]
    model = ner.BertForTokenClassification.from_hf(tiny_bert, 3).eval()
    batch_means, total, n = [], 0.0, 0
    with torch.no_grad():
        for i in range(0, len(chunks), 4):  # batches of 4, 4, 3
            idx, mask, labels = nertagger.collate(chunks[i:i + 4], tok.pad, "cpu")
            loss = torch.nn.functional.cross_entropy(model(idx, mask).flatten(0, 1), labels.flatten())
            batch_means.append(loss.item())
            total += loss.item() * (labels != -100).sum().item()
            n += (labels != -100).sum().item()
    assert ner._val_loss(model, chunks, tok.pad, 4, "cpu", "batch") == pytest.approx(sum(batch_means) / 3, rel=1e-6)
    assert ner._val_loss(model, chunks, tok.pad, 4, "cpu", "token") == pytest.approx(total / n, rel=1e-6)
    assert abs(sum(batch_means) / 3 - total / n) > 1e-4  # the two definitions differ here


def _nerblackbox_token_macro(gold, pred, tag_list_plain, subset):
    """NerMetrics._token_evaluation as in the authors' code: sklearn with labels = the model's plain classes (all,
    or without O for 'fil'), UndefinedMetricWarning turned into an error and reported as -1."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import precision_recall_fscore_support, precision_score, recall_score
    labels = tag_list_plain if subset == "all" else [t for t in tag_list_plain if t != "O"]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", None)):
            try:
                if fn is None:
                    out[name] = precision_recall_fscore_support(gold, pred, labels=labels, average="macro",
                                                                warn_for=("precision", "recall", "f-score"))[2]
                else:
                    out[name] = fn(gold, pred, labels=labels, average="macro")
            except UndefinedMetricWarning:
                out[name] = -1
    return out


def test_token_macro_follows_nerblackbox():
    rng = random.Random(3)
    classes = nertags.label_list(["A", "B", "C", "D"], "bio")
    plain = ["O", "A", "B", "C", "D"]
    seen_undefined = seen_defined = False
    for trial in range(60):
        tags = classes if trial % 2 else classes[:5]  # every other trial leaves classes C/D out of the data
        gold = [[rng.choice(tags) for _ in range(6)] for _ in range(5)]
        pred = [[rng.choice(tags) for _ in range(6)] for _ in range(5)]
        ours = nertags.token_scores(gold, pred, classes)
        g = [t.split("-")[-1] for s in gold for t in s]
        p = [t.split("-")[-1] for s in pred for t in s]
        for subset in ("all", "fil"):
            ref = _nerblackbox_token_macro(g, p, plain, subset)
            for k, v in ref.items():
                got = ours[subset]["macro"][k]
                assert (got is None) == (v == -1), (trial, subset, k)
                if v != -1:
                    assert got == pytest.approx(v)
                    seen_defined = True
                else:
                    seen_undefined = True
    assert seen_defined and seen_undefined
