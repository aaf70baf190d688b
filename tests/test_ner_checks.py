"""Bad NER input is reported before any work, never silently scored; and the paper's choices (nerblackbox as
used for adaptive fine-tuning, Stollenwerk 2022, arXiv 2202.02617) where they decide results: the evaluated
model, the validation-loss mean, first-N subsets, token-level macro averages."""
import json
import random
import warnings

import pytest
import torch
from test_ner import _toy_data, minilm, tiny_bert  # noqa: F401 (pytest fixtures)

import ner
import nerdata
import nertagger
import nertags
from bert import WordPieceTokenizer


def _cfg(tmp_path, tiny_bert, **kw):  # noqa: F811
    return ner.TRAIN_DEFAULTS | dict(encoder=str(tiny_bert), out_dir=str(tmp_path / "run"), max_epochs=2,
                                     warmup_epochs=0, batch_size=8, lr_max=3e-3) | kw


# ----------------------------------------------------------------------------- bad input

def test_empty_validation_split_stops_before_training(tmp_path, tiny_bert):  # noqa: F811
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


def test_max_seq_length_beyond_the_position_table_is_an_error_at_start(tmp_path, tiny_bert):  # noqa: F811
    _toy_data(tmp_path / "train.conll", 16, 0)
    cfg = _cfg(tmp_path, tiny_bert, train=str(tmp_path / "train.conll"), val=str(tmp_path / "train.conll"),
               max_seq_length=129)
    with pytest.raises(ValueError, match=r"--max_seq_length=129 is longer than the encoder's position table "
                                         r"\(128 positions\)"):
        ner.train(cfg)
    assert not (tmp_path / "run").exists()


def test_data_warnings_are_printed_before_training_and_wordless_labels_counted(tmp_path, tiny_bert, capsys):  # noqa: F811,E501
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


def test_predict_writes_one_record_per_input_line(tmp_path, minilm):  # noqa: F811
    from test_ner import _stub_tagger
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


# ----------------------------------------------------------------------------- the paper's choices

@pytest.mark.parametrize("final_model", ["last", "best"])
def test_evaluated_model_is_the_last_epoch_or_the_best(tmp_path, tiny_bert, final_model):  # noqa: F811
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


def test_val_loss_is_the_mean_of_batch_means_as_the_paper(tiny_bert):  # noqa: F811
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
