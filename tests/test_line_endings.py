"""Every text-format reader, cross-cutting: a file without a final newline and a file with CRLF line endings
(Windows editors, annotation tools) read exactly like the same file with LF endings. One table, one row per
reader and format; the reference is the LF file with a final newline."""
import json

import pytest

import annotate
import chat
import documents
import nerdata
import nertagger

STD = [dict(id="a", text="Anna bor i Lund", tags=[dict(char_start=0, char_end=4, token="Anna", tag="PER"),
                                                  dict(char_start=11, char_end=15, token="Lund", tag="LOC")]),
       dict(id="b", text="inget här", tags=[])]
CHAT = [dict(messages=[dict(role="user", content="hej"), dict(role="assistant", content="hej hej")])] * 2
DOCCANO = [dict(id=1, text="Anna bor i Lund", label=[[0, 4, "PER"], [11, 15, "LOC"]]),
           dict(id=2, text="inget här", label=[])]


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _docs(path):
    return [(d.text, d.source == str(path)) for d in documents.read_documents(path)]


READERS = {  # name: (file name, LF content with a final newline, reader)
    "documents txt": ("c.txt", "one\ntwo\n\nfour\n", _docs),
    "documents jsonl": ("c.jsonl", _jsonl([dict(text="one"), dict(text="two")]), _docs),
    "chat jsonl": ("chat.jsonl", _jsonl(CHAT), chat.load_chat_jsonl),
    "ner conll": ("d.conll", "Anna\tB-PER\nbor\tO\n\nLund\tB-LOC\n.\tO\n",
                  lambda p: [(e.words, e.tags) for e in nerdata.read_conll(p)[0]]),
    "ner csv": ("d.csv", "B-PER O\tAnna bor\nB-LOC O\tLund .\n",
                lambda p: [(e.words, e.tags) for e in nerdata.read_csv(p)]),
    "ner jsonl": ("d.jsonl", _jsonl(STD), nerdata.read_jsonl),
    "ner examples jsonl": ("e.jsonl", _jsonl(STD), lambda p: [(e.words, e.tags) for e in nerdata.read_examples(p)]),
    "predict txt": ("in.txt", "Anna bor i Lund\n\ninget här\n", nertagger.read_texts),
    "predict jsonl": ("in.jsonl", _jsonl(STD), nertagger.read_texts),
    "annotate standard": ("s.jsonl", _jsonl(STD), lambda p: annotate.read_documents(p)[0]),
    "annotate doccano": ("dc.jsonl", _jsonl(DOCCANO), lambda p: annotate.read_documents(p)[0]),
    "annotate labelstudio": ("ls.json", json.dumps([dict(id=1, data=dict(text="Anna bor i Lund"), annotations=[
        dict(result=[dict(type="labels", value=dict(start=0, end=4, text="Anna", labels=["PER"]))])])],
        indent=1) + "\n", lambda p: annotate.read_documents(p)[0]),
}


@pytest.mark.parametrize("variant", ["no final newline", "crlf", "crlf, no final newline"])
@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_ignores_line_endings(tmp_path, name, variant):
    file_name, lf, read = READERS[name]
    ref_path = tmp_path / "lf" / file_name
    ref_path.parent.mkdir()
    ref_path.write_bytes(lf.encode("utf-8"))
    text = lf.replace("\n", "\r\n") if variant.startswith("crlf") else lf
    text = text.rstrip("\r\n") if variant.endswith("no final newline") else text
    path = tmp_path / "v" / file_name
    path.parent.mkdir()
    path.write_bytes(text.encode("utf-8"))
    expected = read(ref_path)
    assert expected and read(path) == expected
