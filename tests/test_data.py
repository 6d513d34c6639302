"""Data: registry, online loaders on local files, token files and batches."""

import zipfile
import numpy as np
import pandas as pd
import pytest
import torch
from rdtcourse.data import (
    CORPORA,
    TokenWriter,
    get_batch,
    get_corpus,
    load_kr3,
    load_movielens_1m,
    load_records,
    load_table,
    load_text,
    load_tokens,
    load_wikitext,
    read_meta,
    token_dtype,
    write_tokens,
)


def test_registry_names_and_licenses():
    assert set(CORPORA) == {"tinyshakespeare", "wikitext2-sample", "nsmc-sample", "movielens-small", "ko-chatbot"}
    for c in CORPORA.values():
        assert (c.path / "README.md").exists(), f"{c.name} has no license/source note"
        for f in c.files.values():
            assert (c.path / f).exists()
    assert (get_corpus("movielens-small").path / "README.txt").exists()  # its license requires it
    with pytest.raises(ValueError, match="tinyshakespeare"):
        get_corpus("tiny")


def test_text_splits():
    tr, va = load_text("tinyshakespeare", "train"), load_text("tinyshakespeare", "val")
    assert len(tr) + len(va) == 1_115_394 and tr.startswith("First Citizen")
    assert load_text("wikitext2-sample", "val").strip().startswith("= Robert <unk> =")
    assert "\t" not in load_text("nsmc-sample", "val")
    assert len(load_records("nsmc-sample", "train")) == 40_000
    assert list(load_records("ko-chatbot", "train").columns) == ["Q", "A", "label"]
    assert len(load_table("movielens-small", "ratings")) == 100_836
    with pytest.raises(ValueError, match="split"):
        load_text("tinyshakespeare", "test")
    with pytest.raises(ValueError, match="load_table"):
        load_text("movielens-small")


@pytest.mark.parametrize(
    "vocab, dtype", [(65, np.uint16), (65_536, np.uint16), (65_537, np.uint32), (250_000, np.uint32)]
)
def test_bin_round_trip_and_dtype(tmp_path, vocab, dtype):
    assert token_dtype(vocab) == dtype
    ids = np.random.default_rng(0).integers(0, vocab, 1000)
    write_tokens(tmp_path / "train.bin", ids, vocab)
    back = load_tokens(tmp_path / "train.bin")
    assert back.dtype == dtype and np.array_equal(back, ids)
    meta = read_meta(tmp_path)
    assert meta["dtype"] == np.dtype(dtype).name and meta["tokens"]["train.bin"] == 1000 and meta["vocab_size"] == vocab


def test_token_writer_streams_and_never_leaves_a_partial_file(tmp_path):
    with TokenWriter(tmp_path / "val.bin", 100) as w:
        for chunk in ([1, 2], [3], []):
            w.write(chunk)
    assert load_tokens(tmp_path / "val.bin").tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="token id 100 is outside the vocabulary 0..99"):
        with TokenWriter(tmp_path / "train.bin", 100) as w:
            w.write([5, 100])
    assert not (tmp_path / "train.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_get_batch_shifts_by_one():
    data = np.arange(100, dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, 8, 5, generator=g)
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(get_batch(data, 8, 5, generator=g2)[0], x)  # repeatable with a seeded generator
    with pytest.raises(ValueError, match="block_size=100"):
        get_batch(data, 100, 2)


def test_wikitext_loader_on_local_parquet(tmp_path):
    f = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["", " = Title = \n", " Some text .\n"]}).to_parquet(f)
    assert load_wikitext("2", "train", data_files=f) == ["", " = Title = \n", " Some text .\n"]
    with pytest.raises(ValueError, match="'2' or '103'"):
        load_wikitext("3")


def test_kr3_loader_on_local_csv(tmp_path):
    f = tmp_path / "kr3.csv"
    pd.DataFrame({"Rating": [1, 0], "Review": ["맛있어요", "별로예요"]}).to_csv(f, index=False)
    df = load_kr3(data_files=f)
    assert df["Review"].tolist() == ["맛있어요", "별로예요"]
    pd.DataFrame({"stars": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="lacks columns"):
        load_kr3(data_files=tmp_path / "bad.csv")


def test_movielens_1m_from_a_local_archive(tmp_path):
    z = tmp_path / "src" / "ml-1m.zip"
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
        f.writestr(
            "ml-1m/movies.dat",
            "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
            "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n",
        )
        f.writestr("ml-1m/users.dat", "1::F::1::10::48067\n")
    out = load_movielens_1m(cache_dir=tmp_path / "cache", url=z.as_uri())
    assert out["ratings"]["rating"].tolist() == [5, 3] and out["ratings"]["user_id"].dtype == np.int64
    assert out["movies"].loc[0, "genres"] == "Drama"
    assert (tmp_path / "cache" / "ml-1m.zip").exists()
