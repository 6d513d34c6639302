"""One loader shape: every `load_*` that loads a trained model returns (model, tokenizer, config). The test finds
every public `load_*` in the package, so a new one must be classified below, and calls each model loader on a run
made in seconds by the chapter's own trainer (or, for the fine-tuning chapter, its own export)."""

import importlib
import inspect
import pkgutil

import numpy as np
import pandas as pd
import pytest
import torch

import rdtcourse
from rdtcourse.core import replace_config, save_config

MODEL_LOADERS = {
    "training.load_model",
    "rdt_train.load_rdt",
    "rqvae.load_rqvae",
    "retrieval.load_retrieval",
    "tow_sft.load_finetuned",
    "ddp.load_kr_model",
    "rdt_sudoku.load_solver",
}
OTHER_LOADERS = {  # data, configs, tokenizers and raw checkpoints: not a trained model with its config
    "core.load_checkpoint",
    "core.load_config",
    "data.load_kr3",
    "data.load_movielens_1m",
    "data.load_records",
    "data.load_table",
    "data.load_text",
    "data.load_tokens",
    "data.load_wikitext",
    "ddp.load_kr_tokenizer",
    "ddp.load_reviews",
    "retrieval.load_retrieval_data",
    "rdt_train.load_rdt_config",
    "rqvae.load_sentence_encoder",
    "tokenizer.load_tokenizer",
    "tow_sft.load_model_and_tokenizer",  # the brief's function: (model, tokenizer) of any Hugging Face model
}


def _public_loaders() -> set[str]:
    found = set()
    for m in pkgutil.iter_modules(rdtcourse.__path__):
        if m.name.startswith("_"):
            continue  # __main__ runs the CLI when imported
        mod = importlib.import_module(f"rdtcourse.{m.name}")
        for name, f in vars(mod).items():
            if name.startswith("load_") and inspect.isfunction(f) and f.__module__ == mod.__name__:
                found.add(f"{m.name}.{name}")
    return found


def test_every_loader_is_classified():
    found = _public_loaders()
    known = MODEL_LOADERS | OTHER_LOADERS
    assert found == known, f"unclassified: {sorted(found - known)}; gone: {sorted(known - found)}"


def _shape(result, model_type, cfg_type, tokenizer=True):
    "The one shape: (an nn.Module of `model_type`, a tokenizer (None where the model is its own), a `cfg_type`)."
    assert isinstance(result, tuple) and len(result) == 3, type(result)
    model, tok, cfg = result
    assert isinstance(model, model_type) and not model.training  # in eval mode
    assert (tok is not None) == tokenizer
    assert isinstance(cfg, cfg_type) if cfg_type else cfg is None
    return model, tok, cfg


def test_gpt(tmp_path):
    from rdtcourse.gpt import GPT
    from rdtcourse.training import PrepareConfig, TrainConfig, load_model, prepare, train

    d = prepare(PrepareConfig(corpus="tinyshakespeare", tokenizer="char", data_dir=str(tmp_path / "data")))
    cfg = replace_config(
        TrainConfig(),
        {**{k: d[k] for k in ("train_bin", "val_bin", "tok_path")}, "n_layer": 1, "n_head": 1, "n_embd": 8},
        block_size=8,
        batch_size=2,
        max_steps=2,
        warmup_steps=0,
        eval_interval=2,
        eval_iters=1,
        sample_every_eval=False,
        tensorboard=False,
        out_dir=str(tmp_path / "run"),
    )
    train(cfg, bar=False)
    _, tok, saved = _shape(load_model(tmp_path / "run" / "best.pt"), GPT, TrainConfig)
    assert saved == cfg and len(tok) == 65


def test_sudoku(tmp_path):
    from rdtcourse.rdt import RDT, RDTModelConfig
    from rdtcourse.rdt_sudoku import SolverConfig, load_solver, save_solver, sudoku_rdt

    cfg = RDTModelConfig(n_embd=8, n_head=2, n_encoder_layers=1, d_ff=16, attention_bias="none")
    save_solver(sudoku_rdt(cfg), tmp_path / "model", SolverConfig(confidence=0.9))
    model, _, saved = _shape(load_solver(tmp_path / "model"), RDT, SolverConfig, tokenizer=False)
    assert saved == SolverConfig(confidence=0.9) and model.config == cfg


def test_rdt(tmp_path):
    from rdtcourse.rdt import RDT
    from rdtcourse.rdt_train import RDTConfig, load_rdt, load_rdt_config, train_rdt

    sets = [
        "model.n_embd=16",
        "model.n_head=2",
        "model.n_encoder_layers=1",
        "model.d_ff=32",
        "model.gate_hidden_dim=8",
    ]
    sets += [
        "data.tokenizer=wikitext2-sample/wordpiece-1000.json",
        "data.max_seq_length=16",
        f"data.data_dir={tmp_path}",
    ]
    sets += ["training.batch_size=4", "training.steps_per_epoch=1", "training.eval_batches=1", "optim.epochs=1"]
    cfg = load_rdt_config("cpu", sets=[*sets, f"optim.out_dir={tmp_path / 'run'}", "optim.tensorboard=false"])
    train_rdt(cfg, bar=False)
    _, _, saved = _shape(load_rdt(tmp_path / "run" / "best.pt"), RDT, RDTConfig)
    assert saved == cfg


@pytest.fixture(scope="module")
def movies():
    "Forty synthetic movies with 8-dimensional features, and the ratings of six users: no encoder, no download."
    from rdtcourse.rqvae import MovieLensMovieData

    g = torch.Generator().manual_seed(0)
    table = pd.DataFrame({"movieId": np.arange(1, 41), "title": [f"m{i}" for i in range(40)], "genres": "Drama"})
    data = MovieLensMovieData(table, torch.randn(40, 8, generator=g), ["Drama"], "synthetic")
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(
        [(u, int(m), 4.0, t) for u in range(1, 7) for t, m in enumerate(rng.choice(40, 8, replace=False) + 1)],
        columns=["userId", "movieId", "rating", "timestamp"],
    )
    return data, ratings


def _rqvae(tmp_path, data):
    from rdtcourse.rqvae import RQVAEConfig, train_rqvae

    cfg = replace_config(
        RQVAEConfig(), hidden_dims=[16], output_dim=4, codebook_size=4, batch_size=16, max_steps=2, log_every=2
    )
    cfg = replace_config(cfg, out_dir=str(tmp_path / "rqvae"))
    train_rqvae(cfg, data, bar=False)
    return cfg


def test_rqvae(tmp_path, movies):
    from rdtcourse.rqvae import RQVAEConfig, SemanticIdTokenizer, load_rqvae

    cfg = _rqvae(tmp_path, movies[0])
    _, _, saved = _shape(load_rqvae(tmp_path / "rqvae" / "rqvae.pt"), SemanticIdTokenizer, RQVAEConfig, tokenizer=False)
    assert saved == cfg


def test_retrieval(tmp_path, movies):
    from rdtcourse.retrieval import MovieLensSeqData, RetrievalConfig, load_retrieval, train_retrieval
    from rdtcourse.rqvae import SemanticIdTokenizer, load_rqvae

    data, ratings = movies
    _rqvae(tmp_path, data)
    tokenizer = load_rqvae(tmp_path / "rqvae" / "rqvae.pt", data)[0]
    seq = MovieLensSeqData.from_ratings(ratings, data, max_seq_len=4)
    cfg = replace_config(
        RetrievalConfig(),
        rqvae=str(tmp_path / "rqvae" / "rqvae.pt"),
        max_seq_len=4,
        embedding_dim=4,
        n_embd=8,
        n_head=1,
        n_layer=1,
        batch_size=2,
        beam_width=2,
        iterations=2,
        warmup_steps=0,
        eval_every=2,
        tensorboard=False,
        out_dir=str(tmp_path / "run"),
    )
    train_retrieval(cfg, data=(data, seq, tokenizer), bar=False)
    _, tok, saved = _shape(
        load_retrieval(tmp_path / "run" / "best.pt", data=(data, seq, tokenizer)), torch.nn.Module, RetrievalConfig
    )
    assert isinstance(tok, SemanticIdTokenizer) and saved == cfg


def test_finetuned(tmp_path):
    from transformers import PreTrainedModel

    from rdtcourse.gpt import GPT, GPTConfig, export_hf
    from rdtcourse.tokenizer import train_bpe
    from rdtcourse.tow_sft import FlatArguments, load_finetuned

    tok = train_bpe("Question: how many apples? Answer: 3\n" * 20, vocab_size=300)
    export_hf(GPT(GPTConfig(vocab_size=len(tok), block_size=16, n_layer=1, n_head=1, n_embd=8)), tmp_path, tok)
    _shape(load_finetuned(tmp_path), PreTrainedModel, None)  # a folder sft train did not write: no config
    cfg = replace_config(FlatArguments(), output_dir=str(tmp_path), learning_rate=3e-4)
    save_config(cfg, tmp_path)  # what sft train writes beside the model
    _, _, saved = _shape(load_finetuned(tmp_path), PreTrainedModel, FlatArguments)
    assert saved == cfg


def test_kr(tmp_path):
    from rdtcourse.ddp import KRTrainConfig, load_kr_model, tokenize_reviews, train_kr

    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.txt").write_text("이 영화 정말 좋아요\n" * 60 + "별로였어요 지루했다\n" * 60)
    tokenize_reviews(tmp_path, mode="manual", chunk_size=8)
    cfg = replace_config(
        KRTrainConfig(),
        data_dir=str(tmp_path),
        mode="manual",
        chunk_size=8,
        n_embd=8,
        d_ff=16,
        n_layer=1,
        batch_size=4,
        n_tokens=0.0001,
        val_tokens=0.0001,
        tensorboard=False,
        device="cpu",
        model_path=str(tmp_path / "m.pt"),
    )
    train_kr(cfg, bar=False)
    _, tok, saved = _shape(load_kr_model(tmp_path / "m.pt"), torch.nn.Module, KRTrainConfig)
    assert saved == cfg and tok.encode("영화")
