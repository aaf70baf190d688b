"""hf.py: every export layout computes our logits in transformers (and loads back), small random transformers models
of each architecture load with their logits, what has no exact equivalent is refused naming the option, and the
tokenizer files give our ids. `checkpoint.py convert --hf` on the producer run: transformers' greedy generation
equals sample.py's. transformers is the reference (a test-only peer)."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_py

import hf
from checkpoint import CheckpointError, convert, load_run
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent
BASE = dict(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_embd=32, pos="rope", mlp="swiglu")
# one config per export layout (what export_layout must choose, and the transformers class it writes)
LAYOUTS = {
    "gpt2_gelu_tanh": (dict(norm="layernorm", pos="learned", mlp="gelu_tanh"), "GPT2LMHeadModel"),
    "llama_gqa_untied": (dict(norm="rmsnorm", rope_fraction=1.0, n_kv_head=2, tie_embeddings=False, bias=False,
                              rope_theta=500000.0), "LlamaForCausalLM"),
    "llama_bias_tied": (dict(norm="rmsnorm", rope_fraction=1.0, bias=True), "LlamaForCausalLM"),
    "qwen3_qknorm_mqa": (dict(norm="rmsnorm", rope_fraction=1.0, qk_norm=True, n_kv_head=1, tie_embeddings=False,
                              bias=False), "Qwen3ForCausalLM"),
    "glm_half_rope": (dict(norm="rmsnorm", n_kv_head=2, tie_embeddings=False, bias=False), "GlmForCausalLM"),
    "glm4_moe_qknorm_half_rope": (dict(norm="rmsnorm", qk_norm=True, n_kv_head=2, tie_embeddings=False, bias=False),
                                  "Glm4MoeForCausalLM"),
    "stablelm_oec": (dict(norm="layernorm", qk_norm=True, n_kv_head=2, tie_embeddings=False, bias=False,
                          init="xavier"), "StableLmForCausalLM"),
}
# a varied sample: several scripts, runs of spaces, tabs and newlines, digits, punctuation, code, NBSP
TEXT = ("Hallå där! Hvordan går det? Þetta er íslenska. Åtta små älgar åt 12 345 äpplen.\n\n"
        "    indented\tand\t\ttabbed    spaces      end\n"
        "Prices: $3.50, €1 000,25; 2024-12-31 at 23:59... (ok?) [yes!] {no} <tag> \"quoted\" 'single'\n"
        "for i in range(10):\n    print(i ** 2)  # 0123456789\n"
        "Ελληνικά, русский, 日本語のテキスト, עברית 😀\u00a0non-breaking\n\n\n")


def _randomise(m: torch.nn.Module) -> None:
    """Random norm gains and biases too, so that a dropped or mis-mapped tensor changes the logits."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", LAYOUTS)
def test_export_gives_equal_logits_in_transformers_and_loads_back(tmp_path, name):
    kw, cls = LAYOUTS[name]
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**(BASE | kw))).eval()
    _randomise(ours)
    layout = hf.save_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(theirs).__name__ == cls and layout == theirs.config.model_type
    idx = torch.randint(0, 96, (2, 32))
    with torch.no_grad():
        ref = ours(idx)
        assert _max_diff(theirs(idx).logits, ref) <= 1e-4
        back = hf.load_hf(tmp_path).eval()
        assert dataclasses.replace(back.config, init=ours.config.init) == ours.config  # init: not in the folder
        assert _max_diff(back(idx), ref) <= 1e-4


def _hf_model(cls: str, **kw):
    torch.manual_seed(0)
    model = getattr(transformers, cls.replace("ForCausalLM", "Config"))
    m = getattr(transformers, cls)(model(**(dict(vocab_size=96, hidden_size=32, intermediate_size=256,
                                                 num_hidden_layers=2, num_attention_heads=4,
                                                 max_position_embeddings=32, rms_norm_eps=1e-5) | kw))).eval()
    _randomise(m)
    return m


# small random transformers models of each architecture (biases the class has: ours gets those and zeros)
HF_MODELS = {
    "llama_gqa_attention_bias": ("LlamaForCausalLM", dict(num_key_value_heads=2, attention_bias=True,
                                                          tie_word_embeddings=False,
                                                          rope_parameters=dict(rope_type="default",
                                                                               rope_theta=5e5))),
    "llama_tied": ("LlamaForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3ForCausalLM", dict(num_key_value_heads=2, head_dim=8, tie_word_embeddings=False)),
    "glm_qkv_bias": ("GlmForCausalLM", dict(num_key_value_heads=1, head_dim=8, attention_bias=True,
                                            pad_token_id=0, eos_token_id=1)),
    "stablelm_qk_layernorm": ("StableLmForCausalLM", dict(num_key_value_heads=2, qk_layernorm=True,
                                                          layer_norm_eps=1e-5)),
    "glm4_moe_dense_qk_norm": ("Glm4MoeForCausalLM", dict(num_key_value_heads=2, use_qk_norm=True,
                                                          first_k_dense_replace=2, partial_rotary_factor=0.5)),
}


@pytest.mark.parametrize("name", HF_MODELS)
def test_transformers_folder_loads_with_equal_logits(tmp_path, name):
    cls, kw = HF_MODELS[name]
    theirs = _hf_model(cls, **kw)
    if kw.get("qk_layernorm"):  # ours has one qk-norm shared by every head: make StableLM's heads equal
        with torch.no_grad():
            for layer in theirs.model.layers:
                for norms in (layer.self_attn.q_layernorm.norms, layer.self_attn.k_layernorm.norms):
                    for n in norms:
                        n.weight.copy_(norms[0].weight)
    theirs.save_pretrained(tmp_path)
    ours = hf.load_hf(tmp_path).eval()
    idx = torch.randint(0, 96, (2, 32))
    with torch.no_grad():
        assert _max_diff(ours(idx), theirs(idx).logits) <= 1e-4


@pytest.mark.parametrize("kw, option", [
    (dict(norm="dyt"), "norm='dyt'"),
    (dict(norm="dyisru_sp"), "norm='dyisru_sp'"),
    (dict(norm="rmsnorm", rope_fraction=1.0, logit_softcap=30.0), "logit_softcap=30.0"),
    (dict(norm="rmsnorm", qk_norm=True, bias=True), "bias=True"),  # Qwen3 and GLM-4-MoE have no MLP biases
    (dict(norm="layernorm", bias=True), "bias=True"),  # StableLM has no MLP biases
    (dict(norm="rmsnorm", bias=True), "bias=True"),  # GLM neither
    (dict(norm="rmsnorm", mlp="gelu"), "mlp='gelu'"),
])
def test_export_refuses_what_no_architecture_computes_naming_the_option(tmp_path, kw, option):
    with pytest.raises(ValueError, match="cannot export") as e:
        hf.save_hf(GPT(GPTConfig(**(BASE | kw))), tmp_path / "x")
    assert option in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


def test_folders_our_gpt_cannot_compute_are_refused(tmp_path):
    olmo = transformers.Olmo2ForCausalLM(transformers.Olmo2Config(  # qk-norm over the whole projection
        vocab_size=96, hidden_size=32, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4))
    olmo.save_pretrained(tmp_path / "olmo2")
    with pytest.raises(ValueError, match="model_type='olmo2'"):
        hf.load_hf(tmp_path / "olmo2")
    _hf_model("Qwen3ForCausalLM", head_dim=16).save_pretrained(tmp_path / "wide")  # 16 != 32/4
    with pytest.raises(ValueError, match="head_dim=16"):
        hf.load_hf(tmp_path / "wide")
    _hf_model("LlamaForCausalLM", rms_norm_eps=1e-6).save_pretrained(tmp_path / "eps")  # ours: 1e-5
    with pytest.raises(ValueError, match="norm epsilon 1e-06"):
        hf.load_hf(tmp_path / "eps")
    _hf_model("Glm4MoeForCausalLM", first_k_dense_replace=1, n_routed_experts=2, num_experts_per_tok=1,
              moe_intermediate_size=16).save_pretrained(tmp_path / "moe")  # layer 1 is a mixture of experts
    with pytest.raises(ValueError, match="first_k_dense_replace=1"):
        hf.load_hf(tmp_path / "moe")
    stable = _hf_model("StableLmForCausalLM", qk_layernorm=True, layer_norm_eps=1e-5,  # heads' norms differ
                       num_key_value_heads=2)
    stable.save_pretrained(tmp_path / "stable")
    with pytest.raises(ValueError, match="differs from head 0's"):
        hf.load_hf(tmp_path / "stable")


# ----------------------------------------------------------------------------------------------------
# tokenizer files and the complete folder

def _auto_ids(folder: Path, text: str) -> list[int]:
    return transformers.AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name", ["sp", "gpt2", pytest.param("cl100k_base", marks=pytest.mark.slow)])
def test_tokenizer_files_give_our_ids(tmp_path, tiny_dataset, name):
    """A SentencePiece tokenizer through GPTSw3Tokenizer (spiece.model), GPT-2's and cl100k_base's tiktoken through
    tokenizer.json: AutoTokenizer gives our ids on the whole text and on each line; literal special-token text
    differs unless transformers is told split_special_tokens=True (documented)."""
    import data
    from tokenizer import get_tokenizer
    tok = data.dataset_tokenizer(tiny_dataset) if name == "sp" else get_tokenizer(name)
    hf.hf_tokenizer(tok, 32).save_pretrained(tmp_path / name)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / name)
    assert type(auto).__name__ == ("GPTSw3Tokenizer" if name == "sp" else "TokenizersBackend")
    for text in (TEXT, *TEXT.splitlines(keepends=True)):
        assert auto(text, add_special_tokens=False)["input_ids"] == tok.encode(text), (name, text)
    special = "a <|endoftext|> b"
    assert auto(special, split_special_tokens=True)["input_ids"] == tok.encode(special)
    assert auto.eos_token_id == tok.eot and auto.decode(tok.encode(TEXT[:40])) == tok.decode(tok.encode(TEXT[:40]))


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory) -> Path:
    """A train.py run on the tiny plays tokenized with GPT-2's tiktoken encoding (vocabulary 50257)."""
    from conftest import TINY_PLAYS

    from data import prepare_dataset, shakespeare_files
    root = tmp_path_factory.mktemp("gpt2data")
    plays = [str(p) for p in shakespeare_files() if p.name in TINY_PLAYS]
    prepare_dataset("tiny_gpt2", data_root=root, input=plays, txt_unit="file", tokenizer="gpt2", num_proc=1)
    out = root.parent / "gpt2run"
    r = train_py(out, root, "tiny_gpt2")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sentencepiece", "gpt2"])
def test_convert_hf_folder_generates_as_sample_py(request, tmp_path, which):
    """`checkpoint.py convert --hf` of a train.py run (the producer run with its 512-token SentencePiece BPE, and
    a GPT-2-tokenizer run): config.json and generation_config.json carry the tokenizer's bos/eos/pad ids;
    transformers' greedy generate() on AutoTokenizer's ids gives the text sample.py prints with
    --temperature=0."""
    trained_run = request.getfixturevalue("trained_run" if which == "sentencepiece" else "gpt2_run")
    out = tmp_path / "hf"
    conv = subprocess.run([sys.executable, str(ROOT / "checkpoint.py"), "convert", f"--out_dir={trained_run}",
                           f"--hf={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert conv.returncode == 0, conv.stderr
    run = load_run(trained_run)
    cfg, gen = (json.loads((out / f).read_text()) for f in ("config.json", "generation_config.json"))
    if which == "sentencepiece":  # GPT-SW3's <s>, <|endoftext|>, <pad>, read from the model file
        sp = run.tokenizer.sp
        ids = dict(bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id(), pad_token_id=sp.pad_id())
        assert ids == dict(bos_token_id=2, eos_token_id=3, pad_token_id=0) and cfg["vocab_size"] == 512
    else:  # GPT-2 as published: <|endoftext|> is bos and eos, no pad
        ids = dict(bos_token_id=50256, eos_token_id=50256, pad_token_id=None)
        assert run.tokenizer.eot == 50256 and cfg["vocab_size"] >= 50257
    assert all(cfg[k] == gen[k] == v for k, v in ids.items())
    prompt, n = "To be, or not", 12
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert x[0].tolist() == run.tokenizer.encode(prompt)
    y = model.generate(x, max_new_tokens=n, do_sample=False, eos_token_id=None)  # sample.py does not stop at eos
    r = subprocess.run([sys.executable, str(ROOT / "sample.py"), f"--out_dir={trained_run}", f"--start={prompt}",
                        "--num_samples=1", f"--max_new_tokens={n}", "--temperature=0", "--device=cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == tok.decode(y[0], skip_special_tokens=False) + "\n---------------\n"
    assert y.size(1) == x.size(1) + n


@pytest.mark.slow
def test_convert_refuses_before_writing_anything(tiny_dataset, tmp_path):
    """A DyT run has no Hugging Face architecture: one line naming the option, neither --to nor --hf written."""
    out = tmp_path / "dyt"
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name, norm="dyt")
    assert r.returncode == 0, r.stderr
    with pytest.raises(CheckpointError, match="norm='dyt'"):
        convert(out, to=tmp_path / "full", hf=tmp_path / "hf")
    assert not (tmp_path / "full").exists() and not (tmp_path / "hf").exists()



def test_a_tokenizer_that_cannot_be_exported_exactly_is_refused_before_writing(tmp_path, monkeypatch):
    """The probe check is live: a tokenizer.json missing half of GPT-2's merges encodes the probe text to other
    ids, so save_hf stops with one line naming the tokenizer and the first differing token, and writes nothing.
    A SentencePiece model without an end-of-text piece is refused too (GPTSw3Tokenizer would add one)."""
    from tokenizer import get_tokenizer, train_tokenizer
    merges = hf._tiktoken_merges
    monkeypatch.setattr(hf, "_tiktoken_merges", lambda enc: merges(enc)[:25000])
    model = GPT(GPTConfig(**(BASE | dict(vocab_size=50257, norm="rmsnorm", bias=False))))
    with pytest.raises(ValueError, match=r"tokenizer gpt2 cannot be exported exactly: .* at token \d+") as e:
        hf.save_hf(model, tmp_path / "hf", get_tokenizer("gpt2"))
    assert "\n" not in str(e.value) and not (tmp_path / "hf").exists()
    spm = train_tokenizer([], 380, str(tmp_path / "noeos"), documents=[TEXT] * 50, eos_id=-1,
                          add_whitespace_tokens=False, num_threads=1)
    with pytest.raises(ValueError, match="no end-of-text piece"):
        hf.hf_tokenizer(get_tokenizer(spm), 32)
