"""training: FIM formats, packing, the schedule, the CLI, and a few real training steps."""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np
import pytest
from tokenizers import Tokenizer

from corpus import Document
from model.prompts.families import STARCODER_SPECIAL_TOKENS
from training.data import StreamBuilder, split_pieces, token_byte_lengths, windows
from training.tokenizer import new_tokenizer
from training.train import lr_at, parse_args, train

TEXT = "def add(a, b):\n    return a + b\n\n\nclass Foo:\n    x = 'é\\t'\n"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    from tokenizers import pre_tokenizers, trainers

    t = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(STARCODER_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t.train_from_iterator([TEXT] * 20, trainer=trainer)
    return t


def doc(text: str = TEXT) -> Document:
    return Document("r", "a.py", "MIT", "0", text, "train")


def decode(tok: Tokenizer, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False)


def test_plain_documents_are_packed_with_endoftext(tok):
    stream = StreamBuilder(tok, 10_000, fim_rate=0.0).build(
        [doc(), doc("x = 1\n")], seed=0, shuffle=False
    )
    assert decode(tok, stream) == TEXT + "<|endoftext|>x = 1\n<|endoftext|>"


def test_psm_format_and_reassembly(tok):
    for seed in range(5):
        stream = StreamBuilder(tok, 10_000, fim_rate=1.0, fim_spm_rate=0.0).build([doc()], seed)
        text = decode(tok, stream)
        assert text.startswith("<fim_prefix>") and text.endswith("<|endoftext|>")
        prefix, rest = text[len("<fim_prefix>") :].split("<fim_suffix>")
        suffix, middle = rest.split("<fim_middle>")
        assert prefix + middle.removesuffix("<|endoftext|>") + suffix == TEXT


def test_spm_is_starcoders_variant(tok):
    for seed in range(5):
        stream = StreamBuilder(tok, 10_000, fim_rate=1.0, fim_spm_rate=1.0).build([doc()], seed)
        text = decode(tok, stream)
        assert text.startswith("<fim_prefix><fim_suffix>")
        suffix, prefix_middle = text[len("<fim_prefix><fim_suffix>") :].split("<fim_middle>")
        # <pre><suf>{suffix}<mid>{prefix}{middle}: prefix + middle is contiguous.
        assert TEXT.startswith(prefix_middle.removesuffix("<|endoftext|>"))
        assert prefix_middle.removesuffix("<|endoftext|>") + suffix == TEXT


def test_fim_rate_is_per_document_and_about_half(tok):
    docs = [doc(f"x{i} = {i}\n") for i in range(400)]
    stream = StreamBuilder(tok, 10_000, fim_rate=0.5).build(docs, seed=1)
    n_fim = int((stream == tok.token_to_id("<fim_prefix>")).sum())
    n_spm = int(np.sum((stream[:-1] == 1) & (stream[1:] == 3)))
    assert 160 < n_fim < 240
    assert 0.35 < n_spm / n_fim < 0.65


def test_pieces_cut_at_lines_and_keep_text():
    text = "".join(f"line {i}\n" for i in range(100))
    pieces = split_pieces(text, 60)
    assert "".join(pieces) == text
    assert all(p.endswith("\n") and len(p) <= 60 for p in pieces)


def test_windows_and_byte_lengths(tok):
    w = windows(np.arange(21), 4)
    assert w.shape == (5, 5) and (w[1] == [4, 5, 6, 7, 8]).all()
    lens = token_byte_lengths(tok)
    assert lens[0] == 0  # special tokens stand for no bytes
    ids = tok.encode(TEXT).ids
    assert lens[ids].sum() == len(TEXT.encode("utf-8"))


def test_schedule_warms_up_then_decays_to_floor():
    args = argparse.Namespace(
        lr=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=100, time_budget=0.0
    )
    assert lr_at(args, 0, 0)[0] == pytest.approx(1e-4)
    assert lr_at(args, 10, 0)[0] == pytest.approx(
        1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0.1 * math.pi)))
    )
    assert lr_at(args, 100, 0)[0] == pytest.approx(1e-4)
    args.time_budget = 1.0  # minutes: the schedule follows elapsed time
    assert lr_at(args, 20, 30.0)[1] == pytest.approx(0.5)


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    parser_args = parse_args([])
    for name in vars(parser_args):
        assert "--" + name.replace("_", "-") in out


def test_training_runs_end_to_end_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = [
        "--work-dir",
        str(tmp_path),
        "--max-docs",
        "12",
        "--vocab-size",
        "600",
        "--n-embd",
        "32",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-positions",
        "64",
        "--batch-size",
        "4",
        "--eval-every",
        "3",
        "--save-every",
        "3",
        "--eval-windows",
        "4",
        "--warmup-steps",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    stats = train(parse_args([*common, "--max-steps", "6"]))
    assert stats["step"] == 6 and stats["total_tokens"] == 6 * 4 * 64
    rows = list(csv.DictReader((tmp_path / "learning_curve.csv").open()))
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert float(rows[-1]["eval_loss"]) < math.log(600) + 0.5
    best = tmp_path / "best"
    model = AutoModelForCausalLM.from_pretrained(best)
    assert model.config.multi_query and model.config.n_embd == 32
    assert AutoTokenizer.from_pretrained(best).convert_ids_to_tokens(0) == "<|endoftext|>"
    assert (best / "corpus_manifest.json").exists() and (best / "generation_config.json").exists()
    # Resume: the step counter continues from state.pt.
    stats = train(parse_args([*common, "--max-steps", "9"]))
    assert stats["step"] == 9 and stats["total_tokens"] == 9 * 4 * 64
