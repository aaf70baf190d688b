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


# ---------------------------------------------------------------------------------------------------
# the layout detector's notes, choices and messages, and read_conll's counts (kill tests of the mutation run)

import pytest  # noqa: E402


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
