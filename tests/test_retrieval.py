"""Chapter 8: the leave-one-out split, the prefix trie, beam search, Recall/NDCG, training, resume and the CLI."""

import subprocess
import sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rdtcourse.core import ConfigError, replace_config
from rdtcourse.rqvae import RQVAEConfig, train_rqvae
from rdtcourse.retrieval import (
    DecoderRetrievalModel,
    beam_bias,
    MovieLensSeqData,
    PrefixTrie,
    RetrievalConfig,
    SASRec,
    beam_search,
    collaborative_features,
    evaluate_split,
    item_tokens,
    load_retrieval,
    movielens_tables,
    next_token_targets,
    popularity_ranking,
    rank_metrics,
    read_retrieval_config,
    recommend,
    semantic_ids,
    train_retrieval,
)

CLI = str(Path(sys.executable).parent / "rdtcourse")


def test_rank_metrics_hand_cases():
    ranked = torch.tensor([[7, 3, 1], [1, 2, 3], [4, 5, 6]])
    m = rank_metrics(ranked, [3, 1, 9], ks=(1, 3))
    assert m["recall_1"].tolist() == [0, 1, 0] and m["recall_3"].tolist() == [1, 1, 0]
    np.testing.assert_allclose(m["ndcg_3"], [1 / np.log2(3), 1.0, 0.0])
    np.testing.assert_allclose(m["ndcg_1"], [0.0, 1.0, 0.0])


def test_a_shared_prefix_is_not_a_hit():
    # two items whose IDs share 3 codes: recommending the sibling is a miss (the references counted it as a hit)
    m = rank_metrics(torch.tensor([[1]]), [0], ks=(1,))
    assert m["recall_1"].tolist() == [0]


def test_trie_accepts_exactly_the_corpus_and_excludes_seen_items():
    ids = torch.tensor([[0, 1, 0], [0, 1, 1], [2, 0, 0]])
    trie = PrefixTrie(ids)
    assert all(tuple(r) in trie for r in ids.tolist())
    assert (0, 1, 2) not in trie and (1, 0, 0) not in trie and (0, 1) not in trie
    assert sorted(trie.allowed(())) == [0, 2] and sorted(trie.allowed((0, 1))) == [0, 1] and trie.allowed((5,)) == []
    seen = PrefixTrie.counts_of(ids[[0, 1]])  # both items under prefix 0 seen
    assert trie.allowed((), seen) == [2] and trie.allowed((0, 1), seen) == []
    seen = PrefixTrie.counts_of(ids[[0]])
    assert sorted(trie.allowed((), seen)) == [0, 2] and trie.allowed((0, 1), seen) == [1]


def _toy_model(K=4, L=3, seed=0):
    torch.manual_seed(seed)
    return DecoderRetrievalModel(
        embedding_dim=8, n_embd=16, dropout=0.0, n_head=2, n_layer=2, num_embeddings=K, sem_id_dim=L, max_pos=10 * L
    ).eval()


def _exact_score(model, ctx, sid, corpus, trie=None, excluded=None):
    "log p(sid | ctx) from one plain forward pass; with a trie, each softmax over the allowed codes only."
    full = torch.cat([corpus[torch.as_tensor(ctx)].flatten(), torch.as_tensor(sid)])[None]
    logits, n, total = model(full).logits[0], len(ctx) * len(sid), 0.0
    for j in range(len(sid)):
        row = logits[n - 1 + j]
        if trie is not None:
            keep = torch.full_like(row, float("-inf"))
            keep[trie.allowed(tuple(sid[:j]), excluded)] = 0.0
            row = row + keep
        total += F.log_softmax(row, -1)[sid[j]].item()
    return total


def test_beam_search_scores_are_exact_log_probs_and_ids_are_valid():
    corpus = torch.tensor([[a, b, c] for a in range(4) for b in range(2) for c in range(2)])  # 16 items
    model, trie = _toy_model(), PrefixTrie(corpus)
    contexts = [np.array([0, 3, 5]), np.array([7]), np.array([1, 2, 3, 4, 5, 6])]  # different lengths in one batch
    exclude = [np.array([3]), None, None]
    for constrained in (True, False):
        ids, scores = beam_search(
            model, contexts, corpus, 5, trie if constrained else None, exclude if constrained else None
        )
        assert ids.shape == (3, 5, 3) and (scores[:, :-1] >= scores[:, 1:]).all()
        for b, ctx in enumerate(contexts):
            ex = (
                PrefixTrie.counts_of(corpus[torch.as_tensor(exclude[b])])
                if constrained and exclude[b] is not None
                else None
            )
            for w in range(5):
                sid = ids[b, w].tolist()
                if constrained:
                    assert tuple(sid) in trie
                exact = _exact_score(model, ctx, sid, corpus, trie if constrained else None, ex)
                assert abs(scores[b, w].item() - exact) < 1e-4, (constrained, b, w)
        # item 3 = (0, 1, 1) excluded for user 0
        if constrained:
            assert (0, 1, 1) not in {tuple(s) for s in ids[0].tolist()}
    # a beam as wide as the corpus returns every item once, and their probabilities (given validity) sum to 1
    ids, scores = beam_search(model, [contexts[1]], corpus, 16, trie)
    assert len({tuple(s) for s in ids[0].tolist()}) == 16 and abs(scores.exp().sum().item() - 1) < 1e-4


def test_beam_bias_keeps_beams_apart():
    b = beam_bias(2, 2, past=3)[0]  # 2 beams of 2 tokens after 3 history positions
    assert b.shape == (4, 7) and (b[:, :3] == 0).all()  # everyone sees the history
    assert (b[:, 3:] == 0).int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


def test_beam_search_unconstrained_can_write_ids_of_no_item():
    corpus = torch.tensor([[0, 0, 0], [3, 3, 3]])
    ids, _ = beam_search(_toy_model(), [np.array([0])], corpus, 10, trie=None)
    assert sum(tuple(s) not in PrefixTrie(corpus) for s in ids[0].tolist()) >= 8


def test_decoder_targets_and_levels():
    corpus = torch.tensor([[1, 2, 0], [3, 0, 1]])
    tokens = item_tokens(corpus, torch.tensor([[0, 1, -1]]))
    assert tokens.tolist() == [[1, 2, 0, 3, 0, 1, -1, -1, -1]]
    assert next_token_targets(tokens).tolist() == [[2, 0, 3, 0, 1, -100, -100, -100, -100]]
    out = _toy_model()(tokens, next_token_targets(tokens))
    assert out.logits.shape == (1, 9, 4) and out.loss.ndim == 0


def R(**kw) -> RetrievalConfig:
    "A retrieval config from the brief's flat names (iterations, eval_every, lr...): ALIASES put them in `optim`."
    return replace_config(RetrievalConfig(), kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval")
    rq = replace_config(
        RQVAEConfig(),
        max_items=300,
        cache_dir=str(out / "cache"),
        hidden_dims=[64],
        output_dim=8,
        codebook_size=8,
        steps=30,
        batch_size=64,
        log_every=30,
        out_dir=str(out / "rqvae"),
    )
    tokenizer, movie_data, _ = train_rqvae(rq, bar=False)
    movies, ratings = movielens_tables()
    seq = MovieLensSeqData.from_ratings(ratings, movie_data, max_seq_len=12, max_users=60)
    base = dict(
        ids="rqvae",
        rqvae=str(out / "rqvae" / "rqvae.pt"),
        cache_dir=str(out / "cache"),
        max_items=300,
        max_users=60,
        max_seq_len=12,
        embedding_dim=8,
        n_embd=16,
        n_head=2,
        n_layer=1,
        batch_size=8,
        warmup_steps=2,
        eval_every=4,
        save_model_every=4,
        tensorboard=False,
    )
    data = (movie_data, seq, tokenizer)
    train_retrieval(R(**base, iterations=8, out_dir=str(out / "a")), data=data, bar=False)  # run "a"
    return out, data, base


def test_split_has_no_held_out_item_in_training(small):
    _, (_, seq, _), _ = small
    torch.manual_seed(0)
    batch = seq.sample_batch(200)
    for u in range(len(seq)):
        h = seq.histories[u]
        assert len(seq.train_history(u)) == len(h) - 2
        assert seq.target(u, "test") == h[-1] and seq.target(u, "val") == h[-2]
        assert (
            seq.context(u, "val").tolist() == h[:-2][-11:].tolist()
            and seq.context(u, "test").tolist() == h[:-1][-11:].tolist()
        )
    # every training window is a slice of some user's training history: no held-out item slips in
    trains = [seq.train_history(u).tolist() for u in range(len(seq))]
    for row in batch.tolist():
        w = [i for i in row if i >= 0]
        assert any(any(t[s : s + len(w)] == w for s in range(len(t) - len(w) + 1)) for t in trains)


def test_resume_is_bit_identical_and_other_configs_are_refused(small):
    out, data, base = small  # run "a": 8 iterations straight
    resumed = R(**base, iterations=8, out_dir=str(out / "b"))
    train_retrieval(resumed, checkpoint=out / "a" / "ckpt_step_4.pt", data=data, bar=False)
    a = torch.load(out / "a" / "ckpt_step_8.pt", weights_only=True)
    b = torch.load(out / "b" / "ckpt_step_8.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(
        torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(), b["optimizer"]["state"][0].values())
    )
    wider = R(**{**base, "n_embd": 32}, iterations=8, out_dir=str(out / "c"))
    with pytest.raises(ConfigError, match=r"other settings \(n_embd 16 -> 32\)"):
        train_retrieval(wider, checkpoint=out / "a" / "ckpt_step_4.pt", data=data, bar=False)


def test_sasrec_trains_and_both_models_rank_unseen_items(small):
    out, (movie_data, seq, tokenizer), base = small
    r = train_retrieval(
        R(**base, model="sasrec", iterations=30, lr=3e-3, out_dir=str(out / "s")),
        data=(movie_data, seq, tokenizer),
        bar=False,
    )
    sas, _, cfg = load_retrieval(r["best"], data=(movie_data, seq, tokenizer))
    assert isinstance(sas, SASRec) and cfg.model == "sasrec"
    ev = evaluate_split(sas, tokenizer, seq, "val")
    assert set(ev) == {"model", "most popular", "verdict_recall_10"}
    assert ev["verdict_recall_10"]["verdict"] in ("beats", "ties", "loses to")
    tiger, _, _ = load_retrieval(out / "a" / "best.pt", data=(movie_data, seq, tokenizer))
    for model in (sas, tiger):
        h = seq.seen(0, "all")
        recs = recommend(model, tokenizer, h, k=10)
        assert len(recs) == 10 and not set(recs) & set(h.tolist())
    losses = [
        r["total_loss"]
        for r in __import__("rdtcourse.core", fromlist=["read_log"]).read_log(out / "s")
        if "total_loss" in r
    ]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the loss falls


def test_patience_stops_a_run_that_no_longer_improves(small):
    out, data, base = small
    cfg = R(**{**base, "lr": 1e-9, "min_lr": 1e-10}, iterations=40, patience=2, out_dir=str(out / "p"))
    # a rate this small never changes Recall@10 after the first check
    r = train_retrieval(cfg, data=data, bar=False)
    assert r["step"] == 12  # validations at 4 (best), 8 and 12 (no better): stop
    assert (out / "p" / "ckpt_step_12.pt").exists() and not (out / "p" / "ckpt_step_16.pt").exists()
    again = train_retrieval(cfg, data=data, bar=False)  # the same command again: it had stopped, and stays stopped
    assert again["step"] == 12 and not (out / "p" / "ckpt_step_16.pt").exists()


def test_code_embeddings_start_at_the_rqvae_codebooks(small):
    _, (_, seq, tokenizer), base = small
    from rdtcourse.retrieval import build_model

    cb = tokenizer.quantizer.codebooks.detach()  # (3 levels, 8 codes, 8 dims)
    torch.manual_seed(0)
    m = build_model(R(**{**base, "init_codes": "rqvae"}), tokenizer, seq.n_items)
    w = m.tok_emb.weight.view(m.L, m.K, -1)
    assert torch.allclose(w[:3, :8, :8], cb / cb.std() * 0.02)  # every level's codes, rescaled
    torch.manual_seed(0)
    r = build_model(R(**{**base, "init_codes": "random"}), tokenizer, seq.n_items)
    assert torch.equal(w[3], r.tok_emb.weight.view(r.L, r.K, -1)[3])  # the collision digit keeps the usual init
    assert not torch.allclose(r.tok_emb.weight.view(r.L, r.K, -1)[:3, :8, :8], w[:3, :8, :8])
    with pytest.raises(ConfigError, match="embedding_dim=4"):
        build_model(R(**{**base, "embedding_dim": 4, "init_codes": "rqvae"}), tokenizer, seq.n_items)


def test_popularity_never_recommends_seen_items(small):
    _, (_, seq, _), _ = small
    ranked = popularity_ranking(seq, "test", k=10)
    for u in range(len(seq)):
        assert not set(ranked[u].tolist()) & set(seq.seen(u, "test").tolist())


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model='gpt'"):
        RetrievalConfig(model="gpt")
    with pytest.raises(ConfigError, match="max_seq_len=1"):
        RetrievalConfig(max_seq_len=1)
    with pytest.raises(ConfigError, match="dataset='ml-20m'"):
        RetrievalConfig(dataset="ml-20m")
    with pytest.raises(ConfigError, match="init_codes='zeros'"):
        RetrievalConfig(init_codes="zeros")
    with pytest.raises(ConfigError, match="ids='titles'"):
        RetrievalConfig(ids="titles")
    with pytest.raises(ConfigError, match="codebook_size=1"):
        RetrievalConfig(codebook_size=1)
    with pytest.raises(ConfigError, match="collab_dim=0"):
        RetrievalConfig(collab_dim=0)
    with pytest.raises(ConfigError, match="content_weight=nan"):
        RetrievalConfig(content_weight=float("nan"))


def test_cli_recommend_eval_and_errors(small):
    out, (_, seq, _), base = small
    ck = str(out / "a" / "best.pt")
    r = subprocess.run(
        [CLI, "retrieval", "recommend", "--checkpoint", ck, "--user", str(seq.users[0]), "--top", "5"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert len([l for l in r.stdout.splitlines() if l.strip()[:2].rstrip(".").isdigit()]) == 5
    r = subprocess.run(
        [CLI, "retrieval", "recommend", "--checkpoint", ck, "--user", "999999"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "user 999999" in r.stderr
    r = subprocess.run([CLI, "retrieval", "eval", "--checkpoint", ck, "--split", "val"], capture_output=True, text=True)
    assert (
        r.returncode == 0
        and "recall_10" in r.stdout
        and ("beats" in r.stdout or "ties" in r.stdout or "loses to" in r.stdout)
    ), r.stderr
    r = subprocess.run(
        [CLI, "retrieval", "eval", "--checkpoint", str(out / "rqvae" / "rqvae.pt")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "not a checkpoint written by" in r.stderr
    r = subprocess.run(
        [CLI, "retrieval", "train", "--set", "ids=rqvae", "--set", "rqvae=/nonexistent/rqvae.pt"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "rqvae train" in r.stderr


def test_collaborative_features_use_the_training_histories_only(small):
    hist = [np.array([0, 1, 2, 5]), np.array([1, 2, 3, 4]), np.array([0, 2, 3, 6])]
    f = collaborative_features([h[:-2] for h in hist], 7, dim=2)  # [0, 1], [1, 2], [0, 2]: items 3 to 6 held out
    assert f.shape == (7, 2) and torch.equal(f[3:], torch.zeros(4, 2))  # never rated in training: zeros
    assert torch.allclose(f[:3].norm(dim=1), torch.ones(3))
    # the IDs built from a config ignore every user's validation and test items: change them all, same IDs
    _, (movie_data, seq, _), base = small
    cfg = R(**{**base, "ids": "collaborative", "codebook_size": 8})
    rng = np.random.default_rng(0)
    other = MovieLensSeqData(
        seq.users,
        [np.concatenate([h[:-2], rng.integers(0, seq.n_items, 2)]) for h in seq.histories],
        seq.n_items,
        seq.max_seq_len,
    )
    assert not all(np.array_equal(a, b) for a, b in zip(seq.histories, other.histories))
    assert torch.equal(semantic_ids(cfg, movie_data, other).corpus_ids, semantic_ids(cfg, movie_data, seq).corpus_ids)


def test_semantic_ids_are_rebuilt_exactly_and_differ_by_kind(small):
    _, (movie_data, seq, tokenizer), base = small
    cfg = {k: R(**{**base, "ids": k, "codebook_size": 8}) for k in ("collaborative", "random")}
    built = {k: semantic_ids(c, movie_data, seq) for k, c in cfg.items()}
    for k, tok in built.items():
        assert torch.equal(semantic_ids(cfg[k], movie_data, seq).corpus_ids, tok.corpus_ids)  # same config, same IDs
        assert len(set(map(tuple, tok.corpus_ids.tolist()))) == seq.n_items and tok.corpus_ids[:, :3].max() < 8
    assert not torch.equal(built["collaborative"].corpus_ids, built["random"].corpus_ids)
    assert torch.equal(semantic_ids(R(**base), movie_data, seq).corpus_ids, tokenizer.corpus_ids)  # ids=rqvae: the file


def _train_cli(cwd, **settings):
    args = sum((["--set", f"{k}={v}"] for k, v in settings.items()), [])
    r = subprocess.run([CLI, "retrieval", "train", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _recommend_cli(checkpoint, user, cwd):
    "The CLI's ten recommendations (titles), run from `cwd`."
    r = subprocess.run(
        [CLI, "retrieval", "recommend", "--checkpoint", str(checkpoint), "--user", str(user)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return [l.split(". ", 1)[1] for l in r.stdout.splitlines() if l.strip()[:2].rstrip(".").isdigit()]


def test_recommend_works_from_another_folder(small, tmp_path):
    """Chapter 7's IDs: the config stores the RQ-VAE path relative to where training ran, the checkpoint also stores
    it relative to itself, so recommend finds it from any folder. Collaborative IDs (the default) travel inside the
    checkpoint. Either way: ten real titles the user has not rated."""
    out, (movie_data, seq, _), base = small
    _train_cli(out, **dict(base, rqvae="rqvae/rqvae.pt", iterations=4, out_dir="rel"))
    collab = {k: v for k, v in base.items() if k not in ("ids", "rqvae")}
    _train_cli(out, **dict(collab, codebook_size=8, iterations=4, out_dir="collab"))
    titles, seen = set(movie_data.movies.title), set(movie_data.movies.title.iloc[seq.histories[0]])
    for run in ("rel", "collab"):
        recs = _recommend_cli(out / run / "best.pt", seq.users[0], cwd=tmp_path)  # rqvae/rqvae.pt is not here
        assert len(recs) == 10 and set(recs) <= titles and not set(recs) & seen, (run, recs)
    r = subprocess.run(
        [CLI, "retrieval", "eval", "--checkpoint", str(out / "collab" / "best.pt"), "--rqvae", "x.pt"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "ids=collaborative" in r.stderr  # a file it would not use is refused


def test_checkpoint_from_before_the_choice_of_ids_reads_as_chapter_7s(small, tmp_path):
    out, _, _ = small
    state = torch.load(out / "a" / "best.pt", weights_only=True)
    del state["config"]["ids"]
    torch.save(state, tmp_path / "old.pt")
    assert read_retrieval_config(tmp_path / "old.pt").ids == "rqvae"
