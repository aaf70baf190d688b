"""nerdata.py's CoNLL reader at its edges (the layouts of real corpora are in test_ner_layouts.py): which values
are NER tags, '#' comment lines, TAB lines with an extra column vs space-separated tokens with spaces, and a
last column that ends in the letter X."""
import nerdata


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
