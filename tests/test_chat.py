"""Tests of chat.py: the chat fine-tuning loader (truncation, loss masks, resume state)."""
import warnings

import pytest
import torch


def test_chat_loader_truncation_report_defaults_sep_and_real_tokens(tiny_dataset):
    """Conversations longer than block_size + 1 are truncated and counted, those left without an assistant
    token dropped and counted (the warning points at the caller), the others all kept, also one left with a
    single trained token; sep reaches format_chat; the defaults read as rank 0 of 1 with seed 1337;
    last_real_tokens counts x's tokens without padding; too few conversations are named in the error."""


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
