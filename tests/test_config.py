"""config/: the paper recipes pinned to their published settings. A changed value in a recipe (or in the
preset it names) fails here with the published value and its source beside it."""
import inspect
from pathlib import Path

import pytest

import configurator
import optim
from model import PRESETS, GPTConfig

ROOT = Path(__file__).resolve().parent.parent

# OEC (Stollenwerk, Lokrantz, Hertzberg 2026, arXiv:2601.02031, Sec. 4 and App.; the authors' nanoGPT configs,
# v1 "wortsman" setting): model shapes follow Porian et al.; n_head = 4 for every size
OEC_MODEL = dict(n_head=4, vocab_size=50304, block_size=2048, bias=False, norm="layernorm", pos="rope",
                 mlp="swiglu", qk_norm=True, tie_embeddings=False, init="xavier")
OEC_SIZES = {"oec-16m": (6, 224), "oec-29m": (9, 320), "oec-57m": (12, 480), "oec-109m": (15, 640)}
OEC_TRAINING = dict(beta1=0.9, beta2=0.95, weight_decay=0.0, grad_clip=1.0, warmup_iters=5000, min_lr=1e-5,
                    max_iters=100_000, lr_decay_iters=100_000)  # AdamW, 5000 warmup, cosine to 1e-5, 100k steps
OEC_TOKENS_PER_STEP = 131_072  # 64 sequences x 2048 tokens
OEC_LR_GRID = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
OEC_LAMBDA = 1e-4  # z-loss and mu-loss main lambda (authors' 0_runs.sh, muloss-g1e-04)


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # config files exec other config files by a path relative to the repo


def resolved(path: str) -> dict:
    """What a run of train.py with this config file uses: train.py's defaults, then the file's values."""
    return configurator.script_defaults(str(ROOT / "train.py")) | configurator.read_config_file(path)


@pytest.mark.parametrize("name", sorted(OEC_SIZES))
def test_oec_presets_are_the_published_shapes(name):
    n_layer, n_embd = OEC_SIZES[name]
    assert PRESETS[name] == dict(OEC_MODEL, n_layer=n_layer, n_embd=n_embd)


def test_oec_16m_recipe_is_the_published_one(at_root):
    cfg = resolved("config/oec_16m.py")
    assert cfg["schedule"] == "cosine" and cfg["decay_lr"] and cfg["optimizer"] == "adamw"
    assert cfg["model_preset"] == "oec-16m" and cfg["vocab_multiple"] == 64  # 50257 -> 50304
    assert {k: cfg[k] for k in OEC_TRAINING} == OEC_TRAINING
    assert cfg["batch_size"] * cfg["gradient_accumulation_steps"] * PRESETS["oec-16m"]["block_size"] \
        == OEC_TOKENS_PER_STEP
    sweep = resolved("config/oec_lr_sweep_16m.py")
    assert sweep["sweep"] == dict(learning_rate=OEC_LR_GRID)
    assert sweep["variants"] == dict(baseline={}, z_loss=dict(z_loss=OEC_LAMBDA), mu_loss=dict(mu_loss=OEC_LAMBDA),
                                     mu_centering=dict(mu_centering=True))
    assert sweep["dtype"] == "bfloat16" and sweep["compile"] is True  # bf16 autocast + torch.compile


def test_oec_miniature_keeps_the_papers_architecture_and_optimizer(at_root):
    """The CPU miniature shrinks the model and the schedule, never the method: same architecture flags,
    optimizer, lambda and the paper's arms."""
    cfg = resolved("config/oec_lr_sweep.py")
    arch = {k: v for k, v in OEC_MODEL.items() if k not in ("n_head", "vocab_size", "block_size")}
    assert {k: cfg[k] for k in arch} == arch
    assert {k: cfg[k] for k in ("beta1", "beta2", "weight_decay", "grad_clip")} == \
        dict(beta1=0.9, beta2=0.95, weight_decay=0.0, grad_clip=1.0)
    assert cfg["variants"] == dict(baseline={}, z_loss=dict(z_loss=OEC_LAMBDA), mu_loss=dict(mu_loss=OEC_LAMBDA),
                                   mu_centering=dict(mu_centering=True))


def test_coupled_adam_recipe_is_the_published_one(at_root):
    """Coupled Adam (Stollenwerk & Stollenwerk 2025, arXiv:2502.08441, Sec. 5; flxst/coupled-adam nanoGPT
    configs): AdamW (0.9, 0.95), wd 0.1, embedding not decayed (embdecay=False), clip 1.0, tied embeddings,
    avg_scale 1, eps 1e-8; both optimizers as arms."""
    cfg = resolved("config/coupled_adam.py")
    assert {k: cfg[k] for k in ("beta1", "beta2", "weight_decay", "grad_clip", "tie_embeddings",
                                "decay_token_embedding")} == \
        dict(beta1=0.9, beta2=0.95, weight_decay=0.1, grad_clip=1.0, tie_embeddings=True,
             decay_token_embedding=False)
    assert cfg["sweep"]["optimizer"] == ["adamw", "coupled_adam"]
    defaults = inspect.signature(optim.configure_optimizer).parameters
    assert defaults["eps"].default == 1e-8 and defaults["coupled_adam_avg_scale"].default == 1.0
    assert cfg["coupled_adam_avg_scale"] == 1.0 and cfg["coupled_adam_embedding"] == "output"


def test_every_preset_builds_a_model_config():
    for name, preset in PRESETS.items():
        GPTConfig(**preset)  # a preset key GPTConfig does not know would fail here, not in a user's run
