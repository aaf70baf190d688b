# The GPT-SW3 data mixture applied to the shipped Nordic text:  python data.py prepare config/data_gptsw3_weights.py
# then train on it:  python train.py --dataset=nordic_gptsw3
#
# Weights W[category][language] "used for tokenizer training and e.g. 126m, 345m, 5b runs", from
# flxst/gpt-sw3-tokenizer SAMPLING_WEIGHTS/SAMPLING_WEIGHTS_real_OLD_USED_FOR_TOKENIZER_TRAINING.csv
# (Stollenwerk 2023, arXiv:2304.14780). A category/language group keeps weight * sampling_scale of its
# training documents (weight > 1 repeats documents; GPT-SW3's global percent p is sampling_scale).
# Languages: sv, en, no (Norwegian), da, is, cd (code). The later "7b" weights differ only in en:
# web_sources 0 and wiki 1.5.
_GPTSW3 = {
    "articles":        dict(sv=0.9, en=0.072, no=0.0, da=0.9, is_=0.0, cd=0.0),
    "books_hq":        dict(sv=1.0, en=0.4,   no=0.0, da=0.0, is_=0.0, cd=0.0),
    "code":            dict(sv=0.0, en=0.0,   no=0.0, da=0.0, is_=0.0, cd=0.35),
    "conversational":  dict(sv=1.0, en=0.4,   no=1.0, da=1.0, is_=1.0, cd=0.0),
    "math":            dict(sv=0.8, en=0.32,  no=0.0, da=0.0, is_=0.0, cd=0.0),
    "misc":            dict(sv=1.0, en=0.4,   no=1.0, da=1.0, is_=1.0, cd=0.0),
    "web_commoncrawl": dict(sv=0.5, en=0.2,   no=0.5, da=0.5, is_=0.5, cd=0.0),
    "web_sources":     dict(sv=0.8, en=0.32,  no=0.0, da=0.8, is_=0.0, cd=0.0),
    "wiki":            dict(sv=1.5, en=0.6,   no=1.5, da=1.5, is_=1.5, cd=0.0),
}
# our language codes: 'is' is a Python keyword above (is_); Norwegian Bokmål and Nynorsk both take 'no'
weights = {cat: {"sv": w["sv"], "en": w["en"], "da": w["da"], "nb": w["no"], "nn": w["no"], "is": w["is_"],
                 "cd": w["cd"]} for cat, w in _GPTSW3.items()}

# The shipped text (corpora/text, paths relative to the repo root) is software documentation (manuals, help,
# man pages): we file it under GPT-SW3's 'misc' category (our choice; no category fits exactly), so English is
# down-weighted to 0.4 as in GPT-SW3. is.txt is left out: too small to train on (corpora/text/README.md).
dataset = "nordic_gptsw3"
sources = {f"{lang}/misc": f"corpora/text/{lang}.txt" for lang in ("sv", "da", "nb", "nn", "en")}
