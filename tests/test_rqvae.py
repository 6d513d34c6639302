"""Chapter 7: the residual quantizer, the RQ-VAE's semantic IDs, their health metrics, save/load and the CLI."""

import subprocess
import sys
from pathlib import Path
import pytest
import torch
from rdtcourse.rqvae import (
    MovieLensMovieData,
    RQVAEConfig,
    ResidualQuantizer,
    codebook_health,
    genre_matrix,
    load_rqvae,
    movies_sharing_prefix,
    rotate_to,
    train_rqvae,
)
from rdtcourse.core import CheckpointError, ConfigError, replace_config


def test_quantizer_shapes_and_straight_through():
    torch.manual_seed(0)
    q = ResidualQuantizer(8, codebook_size=16, n_levels=3)
    z = torch.randn(64, 8, requires_grad=True)
    zq, codes, loss, residuals = q(z)
    assert zq.shape == (64, 8) and codes.shape == (64, 3) and residuals.shape == (3, 64, 8) and loss.ndim == 0
    assert codes.min() >= 0 and codes.max() < 16
    torch.testing.assert_close(zq, q.decode_codes(codes))  # forward: the sum of the chosen codes
    (zq * 2).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 2.0))  # backward: the gradient passes straight through
    assert q.codebooks.grad is None  # codes learn from the codebook loss only
    loss.backward()
    assert q.codebooks.grad.abs().sum() > 0


def test_rotation_trick_keeps_the_forward_value_and_changes_the_gradient():
    torch.manual_seed(1)
    e, r = torch.randn(16, 8), torch.randn(16, 8, requires_grad=True)
    out = rotate_to(e, r)
    torch.testing.assert_close(out, e, atol=1e-5, rtol=1e-4)
    out[:, 0].sum().backward()
    assert not torch.allclose(r.grad, torch.eye(8)[0].expand(16, 8))
    r0 = torch.zeros(1, 8, requires_grad=True)  # degenerate: falls back to straight-through
    torch.testing.assert_close(rotate_to(torch.ones(1, 8), r0), torch.ones(1, 8))


def test_kmeans_init_uses_every_level():
    torch.manual_seed(0)
    q = ResidualQuantizer(16, codebook_size=32, n_levels=3)
    q.init_kmeans(torch.randn(2000, 16))
    h = codebook_health(q.encode(torch.randn(2000, 16)), 32)
    assert all(h[f"usage_{l}"] > 0.5 for l in range(3)), h


def test_dead_codes_are_restarted():
    torch.manual_seed(0)
    q = ResidualQuantizer(4, codebook_size=8, n_levels=1, restart_after=2)
    q.init_kmeans(torch.randn(500, 4))
    q.codebooks.data[0, 0] = 100.0  # a code far from everything: never chosen
    for _ in range(3):
        q(torch.randn(256, 4))
    assert q.codebooks[0, 0].abs().max() < 10  # moved onto real residuals


def test_health_on_a_hand_computed_case():
    h = codebook_health(torch.tensor([[0, 1], [0, 1], [1, 2], [3, 2]]), codebook_size=4)
    assert (h["usage_0"], h["dead_0"], h["dead_1"], h["max_collision_group"]) == (0.75, 1, 2, 2)
    assert h["unique_prefix_share"] == 0.5 and abs(h["perplexity_1"] - 2.0) < 1e-6


def test_genre_matrix():
    import pandas as pd

    m, names = genre_matrix(pd.DataFrame({"genres": ["Comedy|Drama", "(no genres listed)", "Drama"]}))
    assert names == ["Comedy", "Drama"] and m.tolist() == [[1, 1], [0, 0], [0, 1]]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("rqvae")
    cfg = replace_config(  # steps, log_every, out_dir: the brief's names, aliases of optim.*
        RQVAEConfig(),
        max_items=300,
        cache_dir=str(out / "cache"),
        hidden_dims=[64],
        output_dim=8,
        codebook_size=8,
        steps=40,
        batch_size=64,
        log_every=20,
        out_dir=str(out / "run"),
    )
    model, data, history = train_rqvae(cfg, bar=False)
    return cfg, model, data, history


def test_ids_unique_and_stable_after_save_and_load(small):
    cfg, model, data, history = small
    ids = model.corpus_ids
    assert ids.shape == (300, 4) and len(set(map(tuple, ids.tolist()))) == 300  # 8^3 = 512 cells, yet unique
    again, tok, saved = load_rqvae(Path(cfg.optim.out_dir) / "rqvae.pt", data)  # every loader's shape
    assert tok is None and saved == cfg
    assert torch.equal(again.corpus_ids, ids) and torch.equal(again.encode(data.features), model.encode(data.features))
    assert again.item_of(again.id_of(123)) == 123 and again.item_of((99, 99, 99, 0)) is None
    with pytest.raises(ValueError, match="not in the corpus"):
        again.id_of(300)
    assert [r["step"] for r in history] == [20, 40] and all(0 < history[-1][f"usage_{l}"] <= 1 for l in range(3))


def test_checkpoint_of_other_data_is_refused(small, tmp_path):
    cfg, model, data, _ = small
    other = MovieLensMovieData(data.movies.iloc[:10], data.features[:10], data.genres, data.embed_model)
    with pytest.raises(CheckpointError, match="300 items"):
        load_rqvae(Path(cfg.optim.out_dir) / "rqvae.pt", other)
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not an RQ-VAE checkpoint"):
        load_rqvae(tmp_path / "x.pt")


def test_movies_sharing_prefix(small):
    _, model, data, _ = small
    t = movies_sharing_prefix(model, data, 5, depth=1)
    assert t.title.iloc[0] == data.movies.title.iloc[5]
    assert all(sid[0] == model.id_of(5)[0] for sid in t["semantic ID"])


def test_cli_trains_and_refuses_a_model_it_cannot_load(tmp_path):
    bin_ = str(Path(sys.executable).parent / "rdtcourse")
    common = [
        "--set",
        "max_items=120",
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
        "--set",
        "hidden_dims=[32]",
        "--set",
        "codebook_size=4",
        "--set",
        "steps=5",
        "--set",
        "batch_size=32",
    ]
    r = subprocess.run(
        [bin_, "rqvae", "train", *common, "--set", f"out_dir={tmp_path / 'ok'}"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ok" / "rqvae.pt").exists() and "semantic IDs for 120 movies" in r.stdout
    r = subprocess.run(
        [
            bin_,
            "rqvae",
            "train",
            *common,
            "--set",
            "embed_model=someone/not-here",
            "--set",
            f"out_dir={tmp_path / 'bad'}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "someone/not-here" in r.stderr
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_rqkmeans_tokenizer_saves_and_loads_like_an_rqvae(tmp_path, small):
    cfg, _, data, _ = small
    km = replace_config(cfg, quantizer="rqkmeans", out_dir=str(tmp_path / "km"))
    model, _, history = train_rqvae(km, data, bar=False)
    assert history[-1]["step"] == 0 and min(history[-1][f"usage_{l}"] for l in range(3)) > 0.9
    again, _, saved = load_rqvae(tmp_path / "km" / "rqvae.pt", data)
    assert saved.quantizer == "rqkmeans" and torch.equal(again.corpus_ids, model.corpus_ids)
    assert torch.equal(again.encode(data.features), model.corpus_ids[:, :3])  # identity encoder: codes of the features
    with pytest.raises(ConfigError, match="quantizer='vq'"):
        RQVAEConfig(quantizer="vq")


def test_reconstruction_loss_is_summed_over_features(small):
    _, model, data, _ = small
    x = data.features[:32]
    out = model(x)
    torch.testing.assert_close(out.recon_loss, ((out.recon - x) ** 2).sum(1).mean())


def test_quantizer_losses_are_summed_over_dimensions():
    torch.manual_seed(0)
    q = ResidualQuantizer(8, codebook_size=4, n_levels=2, beta=0.25)
    q.initialised.fill_(True)  # keep the random codebooks: no k-means, so the expected loss is easy to write down
    z = torch.randn(16, 8)
    _, codes, loss, residuals = q(z)
    expected = sum(
        1.25 * (residuals[l] - q.codebooks[l][codes[:, l]]).pow(2).sum(1).mean() for l in range(2)
    )  # codebook term + beta x commitment term, each summed over the 8 dimensions
    torch.testing.assert_close(loss, expected)
