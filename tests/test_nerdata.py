"""nerdata.py's CoNLL reader at its edges (the layouts of real corpora are further below): which values
are NER tags, '#' comment lines, TAB lines with an extra column vs space-separated tokens with spaces, and a
last column that ends in the letter X. At the end: the JSONL and CSV readers and writers, char spans <-> word
tags, format detection and read_data."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import ner
import nerdata
import nertags


def test_tag_fit_prefixed_and_io_label_sets():
    fit = nerdata._tag_fit
    assert fit(["O", "B-X", "I-X"]) == ("prefixed", "X", None)  # a one-letter type
    assert fit(["B-PER", "I-PER"]) == ("prefixed", "PER", None)  # no outside tag in the file
    assert fit(["O", "O"]) == ("prefixed", "", None)  # no entities at all
    assert fit(["O", "X-PER"]) == ("io", "X-PER", None)  # X is no prefix: an IO label
    assert fit(["O", "B-1X"]) == ("io", "B-1X", None)  # 1X is no type: an IO label, not prefixed


def test_read_conll_comments_extra_tab_columns_and_spaced_tokens(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("# text = MAX bor i Oslo\nMAX\tB-PER\nbor\tO\textra\n\nOslo\tB-LOC\n")
    examples, layout = nerdata.read_conll(path, token_column=0, tag_column=1)
    # a TAB line's extra column is not glued to its token (only space-separated lines hold spaced tokens)
    assert [(e.words, e.tags) for e in examples] == [(["MAX", "bor"], ["B-PER", "O"]), (["Oslo"], ["B-LOC"])]
    assert layout["comment_lines"] == 1
    spaced = tmp_path / "b.conll"
    spaced.write_text("Hon O\nbor O\ni O\nNew York B-LOC\n")
    examples, _ = nerdata.read_conll(spaced)
    assert [(e.words, e.tags) for e in examples] == [(["Hon", "bor", "i", "New York"], ["O", "O", "O", "B-LOC"])]
    last = tmp_path / "c.conll"
    last.write_text("B-PER\tMAX\nO\tsaid\n")
    examples, layout = nerdata.read_conll(last)
    assert (layout["token_column"], layout["tag_column"]) == (1, 0)
    assert [(e.words, e.tags) for e in examples] == [(["MAX", "said"], ["B-PER", "O"])]


def test_tag_fit_refusals_and_the_io_label_limit():
    fit = nerdata._tag_fit
    assert fit(["0", "B-PER"]) == (None, "mixes the outside tag '0' with B-/I- prefixes", "0")
    assert fit(["O", "B-PER", "B-LOC", "foo", "bar"]) == (
        None, "'foo' is neither O nor a prefixed tag like B-LOC", "foo")
    labels = sorted(f"L{a}{b}" for a in "abcdefghij" for b in "abcdefghij")[:nerdata.MAX_IO_TYPES]
    assert fit(["O", *labels]) == ("io", ", ".join(labels), None)  # at the limit: a label set
    more = labels + ["Lzz"]
    assert fit(["O", *more]) == (None, f"{len(more) + 1} distinct values: words, not a small label set", None)


# -----------------------------------------------------------------------------------------------------------
# NER files as people have them: every common CoNLL-style layout reads (and trains) with no
# column flags, the layout is detected from the content and recorded, and a file whose columns are not what they seem
# is refused before anything is trained. The files are built here from the shipped NER corpora (corpora/ner, no
# downloads).

UNER = "ner/uner_sv_talbanken/sv_talbanken-ud-train.iob2"


SWEDISH = "ner/swedish_ner_corpus/train_corpus.txt"


N = 40  # sentences per test file


def _uner_slice(corpora, n=N) -> str:
    """The UNER file itself (ID, token, tag, -, annotator; # comments), byte for byte: its first 5 sentences (no
    entities) and then the first n - 5 sentences that hold an entity, in file order."""
    blocks = (corpora / UNER).read_text(encoding="utf-8").split("\n\n")
    with_entity = [b for b in blocks if "\tB-" in b]
    return "\n\n".join(blocks[:5] + with_entity[:n - 5]) + "\n\n"


def _uner_truth(corpora, n=N) -> list[tuple[list[str], list[str]]]:
    """The sentences of _uner_slice, parsed here independently of nerdata (column 2 = word, column 3 = IOB2 tag,
    per the corpus README)."""
    out = []
    for block in _uner_slice(corpora, n).split("\n\n"):
        rows = [ln.split("\t") for ln in block.splitlines() if ln and not ln.startswith("#")]
        if rows:
            out.append(([r[1] for r in rows], [r[2] for r in rows]))
    return out


def _pos(w: str) -> str:
    return "." if not w[0].isalnum() else "NNP" if w[0].isupper() else "NN"


def _conll2003(sents) -> str:
    """token POS chunk NER, space-separated, -DOCSTART- header (the CoNLL-2003 layout)."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words, tags in sents:
        chunk = ["O" if _pos(w) == "." else ("B-NP" if i == 0 or _pos(words[i - 1]) == "." else "I-NP")
                 for i, w in enumerate(words)]
        lines += [f"{w} {_pos(w)} {c} {t}" for w, c, t in zip(words, chunk, tags)] + [""]
    return "\n".join(lines) + "\n"


def _conllu_misc(sents, key: str) -> str:
    """CoNLL-U (10 columns) with the NER tag in MISC under `key` (NorNE: name=B-PER, every token tagged; NE=:
    only entity tokens, others '_'), comments and one multiword-token line per sentence."""
    lines = []
    for k, (words, tags) in enumerate(sents):
        lines += [f"# sent_id = s{k}", f"# text = {' '.join(words)}",
                  f"1-2\t{words[0]}{words[1]}\t_\t_\t_\t_\t_\t_\t_\t_"]
        for i, (w, t) in enumerate(zip(words, tags)):
            misc = f"{key}={t}" if key == "name" or t != "O" else "_"
            if i == 1:
                misc = "SpaceAfter=No" + ("" if misc == "_" else "|" + misc)
            lines.append(f"{i + 1}\t{w}\t{w.lower()}\t{'PROPN' if _pos(w) == 'NNP' else 'NOUN'}\t_\t_\t{i}\t"
                         f"{'root' if i == 0 else 'dep'}\t_\t{misc}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _no_spaces(sents):
    """A space-separated file cannot tell 't ex' (one UNER token) from two columns: the same text with '_'."""
    return [([w.replace(" ", "_") for w in words], tags) for words, tags in sents]


def _two_columns(sents, sep: str) -> str:
    return "".join("".join(f"{w}{sep}{t}\n" for w, t in zip(words, tags)) + "\n" for words, tags in sents)


def _swedish_slice(corpora, n) -> tuple[str, list[tuple[list[str], list[str]]]]:
    """The Swedish NER corpus (IO tags, outside '0', TAB or spaces) byte for byte, and its truth ('0' -> 'O')."""
    blocks = (corpora / SWEDISH).read_text(encoding="utf-8").split("\n\n")[:n]
    truth = [([ln.split()[0] for ln in b.splitlines()], ["O" if ln.split()[1] == "0" else ln.split()[1]
                                                         for ln in b.splitlines()]) for b in blocks]
    return "\n\n".join(blocks) + "\n\n", truth


def _layouts(corpora, n=N) -> dict[str, tuple[str, list, dict]]:
    """name -> (file text, expected (words, tags) per sentence, expected layout keys)."""
    uner = _uner_truth(corpora, n)
    swedish, swedish_truth = _swedish_slice(corpora, n)
    return {
        "conll2003": (_conll2003(_no_spaces(uner)), _no_spaces(uner), dict(columns=4, token_column=0, tag_column=3)),
        "uner_id_token_tag_misc": (_uner_slice(corpora, n), uner, dict(columns=5, token_column=1, tag_column=2,
                                                                        id_column=0)),
        "conllu_misc_name": (_conllu_misc(uner, "name"), uner, dict(columns=10, token_column=1, tag_column=9,
                                                                     misc_key="name", id_column=0)),
        "conllu_misc_ne": (_conllu_misc(uner, "NE"), uner, dict(columns=10, tag_column=9, misc_key="NE")),
        "two_columns_tab": (_two_columns(uner, "\t"), uner, dict(columns=2, token_column=0, tag_column=1)),
        "two_columns_spaces": (_two_columns(_no_spaces(uner), "   "), _no_spaces(uner), dict(columns=2, token_column=0,
                                                                                               tag_column=1)),
        "io_outside_zero": (swedish, swedish_truth, dict(columns=2, token_column=0, tag_column=1, scheme="io")),
        "windows_line_endings": (_uner_slice(corpora, n).replace("\n", "\r\n"), uner, dict(token_column=1,
                                                                                          tag_column=2)),
        "byte_order_mark": ("\ufeff" + _two_columns(uner, "\t"), uner, dict(columns=2, token_column=0, tag_column=1)),
    }


LAYOUTS = ["conll2003", "uner_id_token_tag_misc", "conllu_misc_name", "conllu_misc_ne", "two_columns_tab",
           "two_columns_spaces", "io_outside_zero", "windows_line_endings", "byte_order_mark"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_reads_with_no_flags(corpora, tmp_path, name):
    text, truth, expected = _layouts(corpora)[name]
    path = tmp_path / f"{name}.txt"
    path.write_bytes(text.encode("utf-8"))
    examples, layout = nerdata.read_data(path)
    assert [(e.words, e.tags) for e in examples] == truth
    assert {k: layout[k] for k in expected} == expected
    assert layout["sentences"] == len(truth) and layout["labels"] == sorted(
        {t.split("-")[-1] for _, tags in truth for t in tags} - {"O"})


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_trains_with_no_column_flags(corpora, tmp_path, tiny_bert, name, capsys):
    """ner.py train on each layout, defaults for the columns: it trains on the words and tags (not on ids or
    placeholders), prints the detected layout first and records it in config.json and report.json."""
    text, truth, expected = _layouts(corpora, 12)[name]
    path = tmp_path / f"{name}.txt"
    path.write_bytes(text.encode("utf-8"))
    out = tmp_path / "run"
    report = ner.train(ner.TRAIN_DEFAULTS | dict(train=str(path), val=str(path), encoder=str(tiny_bert),
                                                 out_dir=str(out), max_epochs=1, warmup_epochs=0, batch_size=8,
                                                 save_model=False))
    printed = capsys.readouterr().out
    assert printed.index(f"words = column {expected['token_column'] if 'token_column' in expected else 1}") \
        < printed.index("epoch 1")
    config = json.loads((out / "config.json").read_text())
    for layout in (config["layouts"]["train"], report["layouts"]["val"]):
        assert {k: layout[k] for k in expected} == expected
    types = sorted({t.split("-")[-1] for _, tags in truth for t in tags} - {"O"})
    assert config["labels"] == nertags.label_list(types, config["scheme"])
    assert set(report["runs"][0]["val"]) >= {"entity.strict.micro.f1"}


def _column_listing(message: str, ncols: int) -> None:
    for j in range(ncols):
        assert f"column {j} (--tag_column={j}" in message


def test_placeholder_tag_column_is_refused(corpora, tmp_path):
    """The issue's case made explicit: UNER's placeholder column 3 ('-') chosen as tags."""
    path = tmp_path / "uner.iob2"
    path.write_text(_uner_slice(corpora), encoding="utf-8")
    with pytest.raises(ValueError, match=r"--tag_column=3 does not hold NER tags .*'-' is not a tag") as e:
        nerdata.read_data(path, tag_column=3)
    _column_listing(str(e.value), 5)
    assert "column 2 (--tag_column=2 / --token_column=2): 'O', 'B-ORG'" in str(e.value)  # what to choose instead
    assert "NER tags (prefixed: LOC, ORG)" in str(e.value)


@pytest.mark.parametrize("tag_column, why", [(0, "integer ids"), (1, "words, not a small label set|is not a tag"),
                                             (4, "is not a tag")])
def test_ids_words_and_annotator_columns_are_refused_as_tags(corpora, tmp_path, tag_column, why):
    path = tmp_path / "uner.iob2"
    path.write_text(_uner_slice(corpora, 200), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"--tag_column={tag_column} does not hold NER tags \(.*({why})") as e:
        nerdata.read_data(path, tag_column=tag_column)
    _column_listing(str(e.value), 5)


def test_no_tag_column_is_refused_before_training(corpora, tmp_path, tiny_bert):
    """ID, token, placeholders: nothing fits a scheme -> stop before training, listing every column."""
    lines = [ln if ln.startswith("#") or not ln.strip() else "\t".join(ln.split("\t")[:2] + ["-", "_"])
             for ln in _uner_slice(corpora).splitlines()]
    path = tmp_path / "no_tags.conll"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="no column holds NER tags") as e:
        ner.train(ner.TRAIN_DEFAULTS | dict(train=str(path), encoder=str(tiny_bert), out_dir=str(out)))
    _column_listing(str(e.value), 4)
    assert "integer ids" in str(e.value) and "'Genom'" in str(e.value) and not out.exists()


def test_numbers_as_io_tags_are_refused(tmp_path):
    path = tmp_path / "numbers.conll"
    path.write_text("Anna\t0\nbor\t3\ni\t0\nLund\t17\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="(?s)no column holds NER tags.*'3' is not a tag"):
        nerdata.read_data(path)


def test_explicit_columns_still_win(corpora, tmp_path):
    """CoNLL-2003: the chunk column (2) is a valid BIO column too; asking for it is allowed, the default is NER."""
    path = tmp_path / "c.conll"
    path.write_text(_conll2003(_no_spaces(_uner_truth(corpora))), encoding="utf-8")
    examples, layout = nerdata.read_data(path, tag_column=2)
    assert layout["tag_column"] == 2 and layout["explicit"]["tag_column"] and layout["labels"] == ["NP"]
    assert nerdata.read_data(path)[1]["tag_column"] == 3


def test_eval_file_with_no_shared_label_is_an_error(corpora, tmp_path, tiny_bert):
    """train --val/--test and evaluate: a label set sharing nothing with training stops, it is not an F1 of 0."""
    uner = tmp_path / "uner.iob2"
    uner.write_text(_uner_slice(corpora), encoding="utf-8")
    other = tmp_path / "other.conll"
    other.write_text("Anna\tB-person\nbor\tO\n\n", encoding="utf-8")
    cfg = ner.TRAIN_DEFAULTS | dict(train=str(uner), encoder=str(tiny_bert), out_dir=str(tmp_path / "run"),
                                    max_epochs=1, warmup_epochs=0, batch_size=8)
    for key in ("val", "test"):
        with pytest.raises(ValueError, match=rf"{key} file .*other.conll has entity types \['person'\], none of"):
            ner.train(cfg | {key: str(other)})
    assert not (tmp_path / "run").exists()
    ner.train(cfg | dict(val=str(uner)))
    with pytest.raises(ValueError, match=r"data file .*other.conll has entity types \['person'\], none of"):
        ner.evaluate(ner.EVALUATE_DEFAULTS | dict(model=str(tmp_path / "run/model"), data=str(other),
                                                  out=str(tmp_path / "ev")))
    # evaluate detects the layout like train: the UNER file (ids in column 0) in its own layout
    two = tmp_path / "two.conll"
    nerdata.write_examples(nerdata.read_examples(uner), two, "conll")
    m1 = ner.evaluate(ner.EVALUATE_DEFAULTS | dict(model=str(tmp_path / "run/model"), data=str(uner),
                                                   out=str(tmp_path / "ev1")))
    m2 = ner.evaluate(ner.EVALUATE_DEFAULTS | dict(model=str(tmp_path / "run/model"), data=str(two),
                                                   out=str(tmp_path / "ev2")))
    assert m1["layout"]["token_column"] == 1 and m2["layout"]["token_column"] == 0
    assert m1["token.confusion_matrix"] == m2["token.confusion_matrix"]
# ---------------------------------------------------------------------------------------------------
# the layout detector's notes, choices and messages, and read_conll's counts (kill tests of the mutation run)



def _write(tmp_path, text: str, name: str = "d.conll"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _layout(path, **kw) -> dict:
    return nerdata.detect_conll_layout(nerdata._conll_records(path), path, **kw)


# id, two placeholder columns, words, IO labels, CoNLL-2000 chunks, a MISC column with NE= (never the first key),
# a column of O only
_WIDE = ["# sent_id = 1",
         "1\t_\t-\tAnna\tPER\tB-NP\tSpaceAfter=No|NE=B-PER\tO",
         "2\t_\t-\tbor\tO\tB-VP\t_\tO",
         "3\t_\t-\ti\tO\tB-PP\t_\tO",
         "4\t_\t-\tOslo\tLOC\tB-NP\tGloss=x|NE=B-LOC\tO",
         "", "1\t_\t-\tHon\tO\tB-NP\t_\tO", ""]


def test_the_column_report_names_every_column_its_first_values_and_why(tmp_path):
    """A --tag_column past the last column (also exactly at the column count) stops with the file, the count and
    one line per column: its flags, its first values and the detector's note (ids, placeholders with the line of
    the first one, words, IO labels, syntactic chunks, MISC NE= tags, a column without entities), then the flags."""
    path = _write(tmp_path, "\n".join(_WIDE))
    lines = [
        (0, "'1', '2', '3', '4'", "integer ids counting 1, 2, 3 per sentence: not words, not tags"),
        (1, "'_'", f"not tags: '_' is not a tag (placeholders '-'/'_', numbers and punctuation are not labels) "
                   f"({path}:2)"),
        (2, "'-'", f"not tags: '-' is not a tag (placeholders '-'/'_', numbers and punctuation are not labels) "
                   f"({path}:2)"),
        (3, "'Anna', 'bor', 'i', 'Oslo', 'Hon'", "not tags: no outside tag (O or 0)"),
        (4, "'PER', 'O', 'LOC'", "NER tags (IO: LOC, PER)"),
        (5, "'B-NP', 'B-VP', 'B-PP'", "syntactic chunks (NP, PP, VP), not entities; not chosen unless --tag_column=5"),
        (6, "'SpaceAfter=No|NE=B-PER', '_', 'Gloss=x|NE=B-LOC'",
         "NER tags (prefixed: LOC, PER) under the MISC key NE="),
        (7, "'O'", "NER tags (prefixed: no entities)")]
    report = "\n".join(f"  column {j} (--tag_column={j} / --token_column={j}): {values} -- {note}"
                       for j, values, note in lines)
    flags = "choose the columns with --token_column=N --tag_column=N (0-based)"
    with pytest.raises(ValueError) as e:
        _layout(path, tag_column=8)
    assert str(e.value) == f"{path}: --tag_column=8 but the lines have 8 columns:\n{report}\n{flags}"
    layout = _layout(path)
    assert (layout["id_column"], layout["token_column"], layout["tag_column"], layout["misc_key"]) == (0, 3, 6, "NE")
    assert layout["other_tag_columns"] == [4, 7]  # not the chosen one, not the chunks
    assert layout["explicit"] == {"token_column": False, "tag_column": False}
    for token_column in (6, 8):  # the tag column (given), one past the last
        with pytest.raises(ValueError) as e:
            _layout(path, token_column=token_column, tag_column=6)
        assert str(e.value) == (f"{path}: --token_column={token_column} is not a word column (the tag column is 6, "
                                f"the lines have 8 columns):\n{report}")


def test_layout_errors_name_the_file_and_the_fix(tmp_path):
    """No token lines, one column, or no column left for the words: one message naming the file (and the
    columns with the flags, where there are columns)."""
    with pytest.raises(ValueError, match=r"^\S+only\.conll: no token lines found \(only blank, -DOCSTART- or #"):
        _layout(_write(tmp_path, "# a\n\n-DOCSTART-\n", "only.conll"))
    with pytest.raises(ValueError, match=r"^\S+one\.conll: lines have 1 column; a CoNLL file needs a token and a tag"):
        _layout(_write(tmp_path, "Anna\nbor\n", "one.conll"))
    path = _write(tmp_path, "1\t_\tB-PER\n2\t_\tO\n", "nowords.conll")
    with pytest.raises(ValueError) as e:
        _layout(path)
    assert str(e.value).startswith(f"{path}: no column holds the words. The columns:\n  column 0 (--tag_column=0")
    assert str(e.value).endswith("-- NER tags (prefixed: PER)\nchoose the columns with --token_column=N "
                                 "--tag_column=N (0-based)")


def test_the_tag_column_chosen_among_several(tmp_path):
    """Prefixed tags before IO labels wherever they stand; among prefixed columns the leftmost (GermEval's outer
    before inner, whatever their type counts); among IO columns the fewest labels; a column holding every
    CoNLL-2000 chunk type is chunks, not entities."""
    io_then_prefixed = _write(tmp_path, "Anna\tPER\tB-PER\nbor\tO\tO\n", "a.conll")
    assert _layout(io_then_prefixed)["tag_column"] == 2
    two_prefixed = _write(tmp_path, "Anna\tB-PER\tB-PER\nOslo\tB-LOC\tO\nbor\tO\tO\n", "b.conll")
    layout = _layout(two_prefixed)
    assert (layout["tag_column"], layout["other_tag_columns"]) == (1, [2])
    two_io = _write(tmp_path, "Anna\tPER\tPER\nOslo\tLOC\tO\nbor\tO\tO\n", "c.conll")
    assert _layout(two_io)["tag_column"] == 2  # 1 label (PER) before 2 (LOC, PER)
    chunks = sorted(nerdata.CHUNK_TYPES)
    every_chunk = _write(tmp_path, "".join(f"w{i}\tB-{c}\t{'B-PER' if i == 0 else 'O'}\n"
                                           for i, c in enumerate(chunks)))
    assert _layout(every_chunk)["tag_column"] == 2


def test_explicit_columns_are_recorded_and_win_also_at_column_0(tmp_path):
    """--token_column=0 / --tag_column=0 are explicit (0 is a column, not 'unset'): recorded as given, and an
    explicit token column wins even where detection would skip it (here the id column)."""
    path = _write(tmp_path, "B-PER\tAnna\nO\tbor\n")
    layout = _layout(path, token_column=1, tag_column=0)
    assert (layout["token_column"], layout["tag_column"], layout["explicit"]) == (
        1, 0, {"token_column": True, "tag_column": True})
    ids = _write(tmp_path, "1\tAnna\tB-PER\n2\tbor\tO\n", "ids.conll")
    layout = _layout(ids, token_column=0)
    assert (layout["token_column"], layout["explicit"]) == (0, {"token_column": True, "tag_column": False})


def test_ids_count_per_sentence_between_blank_lines_only(tmp_path):
    """An id column restarts at each blank line (two CoNLL-U sentences); ids that jump inside a sentence are no
    id column, also when a short line stands at the jump; a column of multiword ranges alone holds no ids."""
    two = _write(tmp_path, "1\tAnna\tB-PER\n2\tbor\tO\n\n1\tHon\tO\n2\tsa\tO\n", "two.conll")
    assert _layout(two)["id_column"] == 0
    jump = _write(tmp_path, "1\tAnna\tB-PER\n2\tbor\tO\nshort\n5\ti\tO\n", "jump.conll")
    layout = _layout(jump)
    assert (layout["id_column"], layout["token_column"]) == (None, 0)
    assert not nerdata._is_id_column([[["1-2", "x"], ["3.1", "y"]]], 0)


def test_tag_fit_says_which_outside_tag_is_missing_or_doubled():
    """IO label sets need exactly one outside tag: none, or both O and 0, is refused with the reason."""
    assert nerdata._tag_fit(["PER", "LOC"]) == (None, "no outside tag (O or 0)", None)
    assert nerdata._tag_fit(["O", "0", "PER"]) == (None, "both O and 0", None)


def test_read_conll_counts_its_repairs_in_the_callers_issues(tmp_path):
    """A space-separated line with one column too many is a token with a space, a line with too few columns is
    skipped (reading goes on); both are counted, with file:line, in the Issues the caller passed; ordinary lines
    count nothing."""
    path = _write(tmp_path, "Anna NNP B-PER\nbor VB O\ni PP O\nNew York NNP B-LOC\nfoo bar\n\nHon PN O\n")
    issues = nerdata.Issues()
    examples, _ = nerdata.read_conll(path, issues=issues)
    assert [(e.words, e.tags) for e in examples] == [
        (["Anna", "bor", "i", "New York"], ["B-PER", "O", "O", "B-LOC"]), (["Hon"], ["O"])]
    assert issues.summary() == {
        "line with too few columns, skipped": {"count": 1, "examples": [
            f"{path}:5: 'foo bar' has 2 column(s), need 3 (token column 0, tag column 2)"]},
        "space-separated line with extra columns: read as a token with spaces": {"count": 1, "examples": [
            f"{path}:4: token 'New York'"]}}


def test_hash_lines_comments_or_hash_tokens(tmp_path):
    """Without an id column a '#' line at a sentence start is a comment unless it has the file's columns and a tag
    of the file (or O, even in a file whose rows have none) in the tag column: then it is the token '#'."""
    path = _write(tmp_path, "# comment here\n# O x\n#\tB-PER\nMAX\tB-PER\n\n#\tO\nbor\tI-PER\n")
    examples, layout = nerdata.read_conll(path)
    assert [(e.words, e.tags) for e in examples] == [(["#", "MAX"], ["B-PER", "B-PER"]), (["#", "bor"], ["O", "I-PER"])]
    assert layout["comment_lines"] == 2


def test_conll_u_misc_tags_multiword_lines_and_a_bad_tag(tmp_path):
    """CoNLL-U: ids per sentence, NE= tags in MISC after other keys, multiword-token lines (1-2) skipped and
    counted, '# sent_id' lines counted as comments; a tag with a prefix and no type stops naming file, sentence
    and word."""
    path = _write(tmp_path, "# sent_id = 1\n1-2\tdel\t_\t_\n1\tde\t_\tSpaceAfter=No|NE=B-PER\n"
                            "2\tl\t_\tGloss=x|NE=I-PER\n3\tbor\t_\t_\n\n"
                            "# sent_id = 2\n1\tHon\t_\t_\n2-3\tsax\t_\t_\n2\tsa\t_\t_\n"
                            "3\tx\t_\tSpaceAfter=No|NE=B-LOC\n")
    examples, layout = nerdata.read_conll(path)
    assert [(e.words, e.tags) for e in examples] == [
        (["de", "l", "bor"], ["B-PER", "I-PER", "O"]), (["Hon", "sa", "x"], ["O", "O", "B-LOC"])]
    assert (layout["id_column"], layout["token_column"], layout["tag_column"], layout["misc_key"]) == (0, 1, 3, "NE")
    assert (layout["comment_lines"], layout["multiword_lines_skipped"]) == (2, 2)
    bad = _write(tmp_path, "MAX\tB\nbor\tO\n", "bad.conll")
    with pytest.raises(ValueError, match=r"^\S+bad\.conll: sentence 1, word 'MAX': tag 'B' has a scheme prefix"):
        nerdata.read_conll(bad)


# -----------------------------------------------------------------------------------------------------------
# the JSONL and CSV readers and writers, char spans <-> word tags, format detection and read_data (kill tests of
# the second mutation run)

def _raises(fn, *args, **kw) -> str:
    with pytest.raises(ValueError) as e:
        fn(*args, **kw)
    return str(e.value)


def test_read_json_lines_skips_or_keeps_blank_lines_and_names_the_bad_line(tmp_path):
    """Every non-blank line as an object (a whitespace-only line is blank); keep_blank gives None at each blank
    line, so that index + 1 is the line number; a line that is not JSON, or JSON that is not an object, stops
    naming FILE:LINE (blank lines counted)."""
    path = _write(tmp_path, '{"a": 1}\n\n \t\n{"b": "Åsa"}\n', "d.jsonl")
    assert nerdata.read_json_lines(path) == [{"a": 1}, {"b": "Åsa"}]
    assert nerdata.read_json_lines(path, keep_blank=True) == [{"a": 1}, None, None, {"b": "Åsa"}]
    bad = _write(tmp_path, '{"a": 1}\n\n{"a": \n', "bad.jsonl")
    assert _raises(nerdata.read_json_lines, bad) == (
        f"{bad}:3: not valid JSON (Expecting value): write one JSON document per line")
    array = _write(tmp_path, '{"a": 1}\n[1, 2]\n', "array.jsonl")
    assert _raises(nerdata.read_json_lines, array) == f"{array}:2: each line must be a JSON object, not list"


def test_read_jsonl_checks_text_span_offsets_at_their_bounds_and_labels(tmp_path):
    """A document needs a string 'text' ('tags' defaults to []); a span needs int offsets with 0 <= char_start <
    char_end <= len(text) (tried at, and one past, each bound) and a 'tag'. Errors name FILE:LINE counting blank
    lines; keep_blank keeps their places."""
    ok = [{"text": "abc", "tags": [{"char_start": 0, "char_end": 3, "tag": "X"},
                                   {"char_start": 2, "char_end": 3, "tag": "Y"}]}, {"text": ""}]
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(ok[0]) + "\n\n" + json.dumps(ok[1]) + "\n", encoding="utf-8")
    assert nerdata.read_jsonl(path) == [ok[0], {"text": "", "tags": []}]
    assert nerdata.read_jsonl(path, keep_blank=True) == [ok[0], None, {"text": "", "tags": []}]

    def refused(doc):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "x"}\n\n' + json.dumps(doc) + "\n", encoding="utf-8")
        message = _raises(nerdata.read_jsonl, bad)
        assert message.startswith(f"{bad}:3: ")
        return message.removeprefix(f"{bad}:3: ")

    assert refused({"text": 5}) == refused({"tags": []}) == "each line must be an object with a string 'text'"
    for s, e in [(-1, 2), (1, 1), (2, 1), (0, 4), (0.0, 2), (0, 2.0), (None, 2), (0, None)]:
        span = {"char_start": s, "char_end": e, "tag": "X"}
        assert refused({"text": "abc", "tags": [span]}) == (
            f"span {span} is outside the text (length 3) or empty; char_start/char_end must be ints, "
            f"0 <= start < end <= len(text)")
    assert refused({"text": "abc", "tags": [{"char_start": 0, "char_end": 3}]}) == (
        "span {'char_start': 0, 'char_end': 3} has no 'tag' (the label, e.g. 'PER')")


def test_write_jsonl_makes_the_folder_and_writes_one_utf8_object_per_line(tmp_path):
    """The parent folders are made (also when they exist), each document is one line of JSON with its characters
    as they are (no \\u escapes), and read_jsonl reads the documents back."""
    docs = [{"text": "Åsa i Malmö", "tags": [{"char_start": 0, "char_end": 3, "token": "Åsa", "tag": "PER"}]},
            {"text": "x", "tags": []}]
    path = tmp_path / "new" / "deeper" / "out.jsonl"
    for _ in range(2):
        nerdata.write_jsonl(docs, path)
    assert path.read_text(encoding="utf-8") == (
        '{"text": "Åsa i Malmö", "tags": [{"char_start": 0, "char_end": 3, "token": "Åsa", "tag": "PER"}]}\n'
        '{"text": "x", "tags": []}\n')
    assert nerdata.read_jsonl(path) == docs


def test_read_csv_counts_blank_lines_and_names_the_bad_line(tmp_path):
    """`tags<TAB>tokens` per line, each side split at spaces; a blank line is skipped and counted with FILE:LINE
    (in the caller's Issues, or none given); a line without exactly 2 TAB columns, or with more tags than tokens,
    and a tag with a prefix but no type, stop with FILE:LINE or the sentence. Only the newline is cut from a line
    (a last token 'X' stays, a trailing TAB is a third column)."""
    path = _write(tmp_path, "B-PER I-PER\tMalcolm X\n\n  \nO\tHon", "d.csv")  # no final newline
    issues = nerdata.Issues()
    for got in (nerdata.read_csv(path, issues), nerdata.read_csv(path)):
        assert [(e.words, e.tags) for e in got] == [(["Malcolm", "X"], ["B-PER", "I-PER"]), (["Hon"], ["O"])]
    assert issues.summary() == {"empty line in CSV, skipped": {"count": 2, "examples": [f"{path}:2", f"{path}:3"]}}
    for text, why in [("O\tHon\tx\n", "expected 2 TAB-separated columns `tags<TAB>tokens`, got 3"),
                      ("O\tHon\t\n", "expected 2 TAB-separated columns `tags<TAB>tokens`, got 3"),  # a trailing TAB
                      ("O Hon\n", "expected 2 TAB-separated columns `tags<TAB>tokens`, got 1"),
                      ("O O\tHon\n", "2 tags but 1 tokens; each token needs exactly one tag")]:
        bad = _write(tmp_path, "O\tja\n" + text, "bad.csv")
        assert _raises(nerdata.read_csv, bad) == f"{bad}:2: {why}"
    bad = _write(tmp_path, "O\tja\nO B\tHon sa\n", "tag.csv")
    assert _raises(nerdata.read_csv, bad).startswith(f"{bad}: sentence 2, word 'sa': tag 'B' has a scheme prefix")


def test_write_csv_is_tags_tab_tokens_per_line(tmp_path):
    """One line per example: the tags, a TAB, the words, each side joined by single spaces; read_csv reads it
    back."""
    examples = [nerdata.Example(["Anna", "bor"], ["B-PER", "O"]), nerdata.Example(["Hon"], ["O"])]
    path = tmp_path / "out.csv"
    nerdata.write_csv(examples, path)
    assert path.read_text(encoding="utf-8") == "B-PER O\tAnna bor\nO\tHon\n"
    assert nerdata.read_csv(path) == examples


def test_detect_format_by_extension_in_any_case_else_by_the_first_non_blank_line(tmp_path):
    """.jsonl/.json and .csv decide (in any letter case) whatever the content; otherwise the first non-blank line:
    '{' (after spaces) is JSONL, two TAB columns with the same number (> 1) of space-separated items is CSV,
    anything else (one word and its tag, counts that differ, three columns (also a trailing TAB, which read_csv
    refuses), an empty file) is CoNLL."""
    for name, fmt in [("a.jsonl", "jsonl"), ("a.JSON", "jsonl"), ("a.Csv", "csv"), ("a.conll", "conll")]:
        assert nerdata.detect_format(_write(tmp_path, "Anna\tB-PER\n", name)) == fmt
    for text, fmt in [('\n \n  {"text": "x"}\n', "jsonl"), ("\nB-PER O\tAnna bor\n", "csv"),
                      ("B-PER I-PER\tMalcolm X\n", "csv"), ("B-PER O\tAnna bor\t\n", "conll"),
                      ("O\tHon\n", "conll"), ("B-PER O\tAnna\n", "conll"), ("O O\tHon sa\tx\n", "conll"),
                      ("", "conll"), ("Anna B-PER\nbor O\n", "conll")]:
        assert nerdata.detect_format(_write(tmp_path, text, "d.txt")) == fmt, text


_TEXT = "Anna Lind bor i Nya Zeeland, sa hon."  # words: Anna Lind bor i Nya Zeeland , sa hon .


def _span(s, e, tag, token=True):
    return {"char_start": s, "char_end": e} | ({"token": _TEXT[s:e]} if token else {}) | {"tag": tag}


def test_doc_to_example_gives_words_their_offsets_and_bio_tags():
    """Spans in any order -> BIO word tags (a span that ends where the next begins stays whole); the words, the
    text, each word's char offsets and the id are kept; example_to_doc gives the document back."""
    doc = {"id": "d1", "text": _TEXT, "tags": [_span(16, 27, "LOC"), _span(0, 9, "PER"), _span(27, 28, "MISC")]}
    issues = nerdata.Issues()
    ex = nerdata.doc_to_example(doc, issues)
    assert ex.words == ["Anna", "Lind", "bor", "i", "Nya", "Zeeland", ",", "sa", "hon", "."]
    assert ex.tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "B-MISC", "O", "O", "O"]
    assert ex.spans == [(0, 4), (5, 9), (10, 13), (14, 15), (16, 19), (20, 27), (27, 28), (29, 31), (32, 35),
                        (35, 36)]
    assert (ex.text, ex.id, issues.counts) == (_TEXT, "d1", {})
    assert nerdata.example_to_doc(ex) == doc | {"tags": sorted(doc["tags"], key=lambda t: t["char_start"])}
    assert nerdata.doc_to_example({"text": "Hon"}).id is None


def test_doc_to_example_counts_each_repair_with_where():
    """A span inside one already taken (also the shorter of two that start together), or widened onto a word
    another span holds, is dropped; a span over whitespace only is dropped (the spans after it are still read);
    a span that cuts a word is widened to whole words; a 'token' that differs from the text is counted (the span
    is kept). Each in the caller's Issues, with `where`, the span and the widened words."""
    where = "f.jsonl:doc 1"
    spans = [_span(0, 4, "PER", token=False), _span(18, 27, "LOC"), _span(28, 29, "X", token=False),
             _span(0, 9, "PER"), _span(10, 13, "ACT") | {"token": "bo"}, _span(16, 18, "LOC"), _span(32, 35, "PER")]
    issues = nerdata.Issues()
    ex = nerdata.doc_to_example({"text": _TEXT, "tags": spans}, issues, where)
    assert ex.tags == ["B-PER", "I-PER", "B-ACT", "O", "B-LOC", "O", "O", "O", "B-PER", "O"]
    assert issues.summary() == {
        "overlapping span dropped": {"count": 2, "examples": [f"{where} {spans[0]}", f"{where} {spans[1]}"]},
        "span covers no word (whitespace only), dropped": {"count": 1, "examples": [f"{where} {spans[2]}"]},
        "span not on word boundaries, widened to whole words": {"count": 2, "examples": [
            f"{where} {spans[5]} -> 'Nya'", f"{where} {spans[1]} -> 'Nya Zeeland'"]},
        "span token differs from text[char_start:char_end]": {"count": 1, "examples": [f"{where} {spans[4]}"]}}
    assert nerdata.doc_to_example({"text": _TEXT, "tags": spans}).tags == ex.tags  # no Issues given
    issues = nerdata.Issues()
    nerdata.doc_to_example({"text": _TEXT, "tags": [spans[4]]}, issues)  # no `where` given
    assert issues.where["span token differs from text[char_start:char_end]"] == [f" {spans[4]}"]


def test_example_to_doc_joins_words_by_spaces_and_keeps_an_id():
    """Words without a text are joined by single spaces and the entities (BIO) become char spans with their
    tokens; an id (even an empty one) is kept, none is no 'id' key."""
    ex = nerdata.Example(["Anna", "Lind", "bor", "i", "Oslo"], ["B-PER", "I-PER", "O", "O", "B-LOC"])
    doc = {"text": "Anna Lind bor i Oslo", "tags": [
        {"char_start": 0, "char_end": 9, "token": "Anna Lind", "tag": "PER"},
        {"char_start": 16, "char_end": 20, "token": "Oslo", "tag": "LOC"}]}
    assert nerdata.example_to_doc(ex) == doc
    ex.id = ""
    assert nerdata.example_to_doc(ex) == {"id": ""} | doc


def test_read_data_reads_each_format_and_describes_it(tmp_path):
    """The format from the file (or as given), word-level examples and the layout: file, format, scheme, labels,
    sentences, words and entities (counted in BIO, so two adjacent U-PER are two); an empty document is skipped
    and counted, a repair names the document; the CoNLL columns can be given."""
    docs = [{"text": "Anna bor i Oslo", "tags": [{"char_start": 0, "char_end": 4, "tag": "PER"},
                                                {"char_start": 11, "char_end": 15, "tag": "LOC"}]},
            {"text": "   "}, {"text": "Hon sa", "tags": [{"char_start": 0, "char_end": 2, "tag": "PER"}]}]
    path = tmp_path / "d.jsonl"
    nerdata.write_jsonl(docs, path)
    issues = nerdata.Issues()
    examples, layout = nerdata.read_data(path, issues=issues)
    assert [(e.words, e.tags) for e in examples] == [(["Anna", "bor", "i", "Oslo"], ["B-PER", "O", "O", "B-LOC"]),
                                                     (["Hon", "sa"], ["B-PER", "O"])]
    assert layout == dict(file=str(path), format="jsonl", scheme="bio", labels=["LOC", "PER"], sentences=2,
                          tokens=6, entities=3)
    assert issues.summary() == {
        "empty sentence/document skipped": {"count": 1, "examples": [f"{path}: item 2"]},
        "span not on word boundaries, widened to whole words": {"count": 1, "examples": [
            f"{path}:doc 3 {docs[2]['tags'][0]} -> 'Hon'"]}}
    assert nerdata.read_data(path)[1] == layout  # no Issues given
    csv = _write(tmp_path, "U-PER U-PER O\tAnna Hon sa\n", "bilou.txt")
    assert nerdata.read_data(csv) == ([nerdata.Example(["Anna", "Hon", "sa"], ["U-PER", "U-PER", "O"])], dict(
        file=str(csv), format="csv", scheme="bilou", labels=["PER"], sentences=1, tokens=3, entities=2))
    conll = _write(tmp_path, "Anna\tB-PER\tB-LOC\nbor\tO\tO\n", "conll.csv")
    examples, layout = nerdata.read_data(conll, "conll", tag_column=2)
    assert ([(e.words, e.tags) for e in examples], layout["format"], layout["tag_column"], layout["entities"]) == (
        [(["Anna", "bor"], ["B-LOC", "O"])], "conll", 2, 1)
    assert nerdata.read_data(conll, "conll", token_column=2, tag_column=1)[0][0].words == ["B-LOC", "O"]


def test_read_data_passes_the_callers_issues_to_every_reader(tmp_path):
    """What the CoNLL and CSV readers repair or skip (a line with too few columns, a blank CSV line) is counted
    in the Issues given to read_data, as the JSONL span repairs are."""
    conll = _write(tmp_path, "Anna\tB-PER\nshort\nbor\tO\n")
    csv = _write(tmp_path, "B-PER O\tAnna bor\n\nO\tHon\n", "d.csv")
    for path, kind in [(conll, "line with too few columns, skipped"), (csv, "empty line in CSV, skipped")]:
        issues = nerdata.Issues()
        nerdata.read_data(path, issues=issues)
        assert list(issues.counts) == [kind], path


def test_read_data_refuses_a_missing_file_an_unknown_format_and_a_file_without_sentences(tmp_path):
    """Each with one message naming the file or the format and the choices."""
    missing = tmp_path / "missing.conll"
    with pytest.raises(FileNotFoundError) as e:
        nerdata.read_data(missing)
    assert str(e.value) == f"data file {missing} not found"
    path = _write(tmp_path, '{"text": ""}\n{"text": " "}\n', "empty.jsonl")
    assert _raises(nerdata.read_data, path, "xml") == "unknown format 'xml': choose auto, conll, csv or jsonl"
    assert _raises(nerdata.read_data, path) == f"{path}: no sentences found (format jsonl); check the file and --format"


def test_read_data_counts_stray_inside_tags_and_repairs_them_on_request(tmp_path):
    """In BIO gold an I-X at a sentence start, after O or after another type is counted with FILE:LINE (CoNLL) or
    item and word (CSV) and the tag before it; repair_bio=True turns it into B-X. An I-X after B-X or I-X is not
    counted; IOB1 files (entities start with I-) are not BIO and count nothing."""
    conll = _write(tmp_path, "Anna\tB-PER\nLind\tI-PER\nbor\tO\nOslo\tI-LOC\n\n"
                             "Hon\tI-PER\n\nAnna\tB-PER\nOslo\tI-LOC\n")
    kept = "I-X after neither B-X nor I-X in BIO gold, kept (strict scores drop it; --repair_bio=True fixes)"
    for repair, kind in [(False, kept), (True, "I-X after neither B-X nor I-X in BIO gold, repaired to B-X")]:
        issues = nerdata.Issues()
        examples, _ = nerdata.read_data(conll, issues=issues, repair_bio=repair)
        assert issues.summary() == {kind: {"count": 3, "examples": [
            f"{conll}:4: 'Oslo' I-LOC after O", f"{conll}:6: 'Hon' I-PER after sentence start",
            f"{conll}:9: 'Oslo' I-LOC after B-PER"]}}
        assert [e.tags for e in examples] == ([["B-PER", "I-PER", "O", "B-LOC"], ["B-PER"], ["B-PER", "B-LOC"]]
                                              if repair else [["B-PER", "I-PER", "O", "I-LOC"], ["I-PER"],
                                                              ["B-PER", "I-LOC"]])
    csv = _write(tmp_path, "B-PER I-LOC\tAnna Oslo\n", "d.csv")
    issues = nerdata.Issues()
    nerdata.read_data(csv, issues=issues)
    assert issues.where[kept] == [f"{csv}: item 1, word 2: 'Oslo' I-LOC after B-PER"]
    iob1 = _write(tmp_path, "I-PER I-PER O I-LOC\tAnna Lind bor Oslo\n", "iob1.csv")
    issues = nerdata.Issues()
    assert nerdata.read_data(iob1, issues=issues)[1]["scheme"] == "iob1" and not issues.counts


_UTF8_ROUND_TRIP = """
import nerdata, sys
d = sys.argv[1]
docs = [{"text": "Åsa i Malmö", "tags": [{"char_start": 0, "char_end": 3, "token": "Åsa", "tag": "PER"}]}]
nerdata.write_jsonl(docs, d + "/a.jsonl")
assert nerdata.read_json_lines(d + "/a.jsonl") == docs
nerdata.write_csv([nerdata.Example(["Åsa", "bor"], ["B-PER", "O"])], d + "/a.txt")
assert nerdata.detect_format(d + "/a.txt") == "csv"
assert [(e.words, e.tags) for e in nerdata.read_csv(d + "/a.txt")] == [(["Åsa", "bor"], ["B-PER", "O"])]
nerdata.write_conll([nerdata.Example(["Åsa", "bor"], ["B-PER", "O"])], d + "/a.conll")
assert [(e.words, e.tags) for e in nerdata.read_conll(d + "/a.conll")[0]] == [(["Åsa", "bor"], ["B-PER", "O"])]
print("ok")
"""


def test_jsonl_and_csv_files_are_utf8_whatever_the_locale(tmp_path):
    """The JSONL, CSV and CoNLL writers and readers and detect_format use UTF-8 also where the locale's encoding is
    another (here ASCII: the C locale without UTF-8 mode or coercion; Windows' cp1252 would differ too): 'Åsa i
    Malmö' is written and read back unchanged, in a separate Python (the locale is fixed at its start) and here."""
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    code = _UTF8_ROUND_TRIP.encode("ascii", "backslashreplace").decode()  # an ASCII command line: Å as \xc5
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, encoding="utf-8")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")
    exec(_UTF8_ROUND_TRIP.replace("sys.argv[1]", repr(str(tmp_path))), {})  # the same calls in this process


def test_write_examples_writes_each_format(tmp_path):
    """jsonl: standard documents (words joined by spaces, entities as char spans); csv: tags<TAB>tokens; conll:
    word<TAB>tag lines with a blank line after each sentence. Each reads back to the same words and tags."""
    examples = [nerdata.Example(["Anna", "bor"], ["B-PER", "O"]), nerdata.Example(["Hon"], ["O"])]
    expected = {"jsonl": '{"text": "Anna bor", "tags": [{"char_start": 0, "char_end": 4, "token": "Anna", '
                         '"tag": "PER"}]}\n{"text": "Hon", "tags": []}\n',
                "csv": "B-PER O\tAnna bor\nO\tHon\n", "conll": "Anna\tB-PER\nbor\tO\n\nHon\tO\n\n"}
    for fmt, text in expected.items():
        path = tmp_path / f"out.{fmt}"
        nerdata.write_examples(examples, path, fmt)
        assert path.read_text(encoding="utf-8") == text, fmt
        assert [(e.words, e.tags) for e in nerdata.read_examples(path)] == [(e.words, e.tags) for e in examples]


def test_read_examples_counts_in_the_callers_issues(tmp_path):
    """read_examples is read_data without the layout: the repairs go to the Issues it was given."""
    issues = nerdata.Issues()
    path = _write(tmp_path, "B-PER O\tAnna bor\n\nO\tHon\n", "d.csv")
    assert [e.words for e in nerdata.read_examples(path, issues=issues)] == [["Anna", "bor"], ["Hon"]]
    assert issues.summary() == {"empty line in CSV, skipped": {"count": 1, "examples": [f"{path}:2"]}}


def test_issues_keep_five_places_per_kind_and_print_two():
    """Every repair is counted; the first 5 places of each kind are kept, the first 2 printed, one line a kind
    in the order of the kinds' names."""
    issues = nerdata.Issues()
    for i in range(7):
        issues.add("b kind", f"f:{i}")
    issues.add("a kind", "g:1")
    assert issues.summary() == {"a kind": {"count": 1, "examples": ["g:1"]},
                                "b kind": {"count": 7, "examples": ["f:0", "f:1", "f:2", "f:3", "f:4"]}}
    assert str(issues) == "warning: 1 x a kind (e.g. g:1)\nwarning: 7 x b kind (e.g. f:0; f:1)"


def test_layout_text_says_how_each_file_was_read(tmp_path):
    """One line: the file and format; for CoNLL the columns, which were given or detected, the MISC key, the id
    column and the other tag columns; then scheme, types, sentences, words and entities."""
    wide = _write(tmp_path, "\n".join(_WIDE), "wide.conll")
    _, layout = nerdata.read_data(wide, token_column=3)
    assert nerdata.layout_text("train", layout) == (
        f"train: {wide} (conll, 8 columns: words = column 3 (given), tags = column 6 (MISC NE=) (detected), ids = "
        f"column 0; columns [4, 7] also hold tags (select with --tag_column)); scheme bio, 2 types [LOC, PER]; "
        f"2 sentences, 5 tokens, 2 entities")
    plain = _write(tmp_path, "Anna\tB-PER\nOslo\tB-LOC\n", "plain.conll")
    _, layout = nerdata.read_data(plain, tag_column=1)
    assert nerdata.layout_text("dev", layout) == (
        f"dev: {plain} (conll, 2 columns: words = column 0 (detected), tags = column 1 (given)); scheme bio, "
        f"2 types [LOC, PER]; 1 sentences, 2 tokens, 2 entities")
    csv = _write(tmp_path, "O\tHon\n", "d.csv")
    assert nerdata.layout_text("test", nerdata.read_data(csv)[1]) == (
        f"test: {csv} (csv); scheme bio, 0 types []; 1 sentences, 1 tokens, 0 entities")


def test_conll_layout_or_none_only_where_a_column_holds_tags(tmp_path):
    """A file is CoNLL when a column holds prefixed tags (O, B-X, ...; TAB- or space-separated, short lines
    aside), or IO labels with a TAB on every token line; a space-separated column of IO labels, or plain text,
    is not (None)."""
    for text, tag_column in [("Anna B-PER\nshort\nbor O\n\nHon O\n", 1), ("Anna\tPER\nbor\tO\n\nHon\tO\n", 1)]:
        path = _write(tmp_path, text)
        layout = nerdata.conll_layout_or_none(path)
        assert (layout["file"], layout["tag_column"]) == (str(path), tag_column), text
    for text in ["Anna PER\nbor O\n\nHon O\n", "Anna\tPER\nbor O\n\nHon\tO\n", "Hon bor i Oslo\nDet regnar\n"]:
        assert nerdata.conll_layout_or_none(_write(tmp_path, text)) is None, text
