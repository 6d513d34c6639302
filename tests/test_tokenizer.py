"""Tokenizers: round trips on edge strings, vocabulary and special tokens, save/load, corpus encoding."""

import pytest
from rdtcourse.data import load_tokens, read_meta
from rdtcourse.tokenizer import (
    BERT_SPECIALS,
    EOT,
    CharTokenizer,
    encode_corpus,
    load_tokenizer,
    train_bpe,
    train_wordpiece,
)

EDGE = [
    "",
    "hello world",
    "Hello, World!\n",
    "안녕하세요, 세계!",
    "emoji 🤖🎉👩‍👩‍👧",
    "tabs\tand  spaces \n\n",
    "café naïve",
]
CORPUS = (
    "The quick brown fox jumps over the lazy dog. " * 50 + "한국어 문장도 조금 있습니다. " * 20 + "🤖 " * 5 + "\n"
) * 3


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(CORPUS, vocab_size=400)


@pytest.mark.parametrize("s", EDGE)
def test_bpe_round_trip(bpe, s):
    assert bpe.decode(bpe.encode(s)) == s


@pytest.mark.parametrize("s", EDGE)
def test_char_round_trip(s):
    tok = CharTokenizer.from_text("".join(EDGE))
    assert tok.decode(tok.encode(s)) == s
    assert len(tok.encode(s)) == len(s)


def test_char_unknown_and_specials(tmp_path):
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    unk = CharTokenizer.from_text("abc", special_tokens=[EOT], unk_token="<unk>")
    assert len(unk) == 5 and unk.eos_token_id == 3
    assert unk.decode(unk.encode("abz")) == "ab<unk>"
    assert unk.decode(unk.encode("ab") + [unk.eos_token_id], skip_special_tokens=True) == "ab"
    p = unk.save(tmp_path / "c.json")
    back = load_tokenizer(p)
    assert isinstance(back, CharTokenizer) and back.itos == unk.itos and back.unk_token == "<unk>"


def test_bpe_vocab_and_special_tokens(bpe, tmp_path):
    assert len(bpe) <= 400 and bpe.eos_token == EOT and bpe.convert_tokens_to_ids(EOT) == bpe.eos_token_id
    big = train_bpe(CORPUS, vocab_size=300)
    assert len(big) == 300  # enough text to fill the vocabulary
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe(CORPUS, vocab_size=100)
    bpe.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").exists()
    for src in (tmp_path / "tok", tmp_path / "tok" / "tokenizer.json"):
        back = load_tokenizer(src)
        assert back.eos_token == EOT and back.encode("quick fox") == bpe.encode("quick fox") and len(back) == len(bpe)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="cannot load tokenizer"):
        load_tokenizer("no-such-org/no-such-tokenizer-xyz")  # offline in tests: a clear error, not a hang


def test_shipped_wordpiece_is_found_in_the_data_folder(tmp_path, monkeypatch):
    # not beside data/: the lookup, not the working directory
    monkeypatch.chdir(tmp_path)
    for n in (1000, 8000):
        tok = load_tokenizer(f"wikitext2-sample/wordpiece-{n}.json")
        assert len(tok) == n and tok.convert_ids_to_tokens(tok.mask_token_id) == "[MASK]"
        # lower-cased, round-trips
        assert tok.decode(tok("The City", add_special_tokens=False)["input_ids"]) == "the city"
    with pytest.raises(FileNotFoundError, match="wordpiece-12.json"):
        load_tokenizer("wikitext2-sample/wordpiece-12.json")
    monkeypatch.setenv("RDTCOURSE_DATA", str(tmp_path / "nowhere"))  # no data folder at all: the same clear error
    with pytest.raises(FileNotFoundError, match="wordpiece-1000.json"):
        load_tokenizer("wikitext2-sample/wordpiece-1000.json")


def test_wordpiece_specials_and_lowercase():
    wp = train_wordpiece(CORPUS, vocab_size=300)
    assert [wp.convert_ids_to_tokens(i) for i in range(5)] == list(BERT_SPECIALS)
    enc = wp("The QUICK fox")["input_ids"]
    assert enc[0] == wp.cls_token_id and enc[-1] == wp.sep_token_id
    assert wp.decode(enc, skip_special_tokens=True) == "the quick fox"
    assert wp.mask_token == "[MASK]" and wp.pad_token_id == 0


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_bin_equals_encoder_output(tmp_path, bpe, kind):
    tok = CharTokenizer.from_text(CORPUS) if kind == "char" else bpe
    st = encode_corpus(tok, CORPUS, tmp_path / "train.bin", batch_size=2, chunk_lines=1)
    ids = load_tokens(tmp_path / "train.bin")
    chunks = CORPUS.splitlines(keepends=True)
    expected = [i for c in chunks for i in tok.encode(c)]
    assert ids.tolist() == expected and st == {"tokens": len(expected), "chars": len(CORPUS)}
    assert tok.decode(ids.tolist()) == CORPUS
    meta = read_meta(tmp_path)
    assert meta["tokens"]["train.bin"] == len(expected) and meta["chars"]["train.bin"] == len(CORPUS)


def test_documents_with_eos(tmp_path, bpe):
    docs = ["first review", "두 번째 리뷰", ""]
    encode_corpus(bpe, docs, tmp_path / "d.bin", eos=True)
    ids = load_tokens(tmp_path / "d.bin").tolist()
    assert ids.count(bpe.eos_token_id) == 3 and ids[-1] == bpe.eos_token_id
    with pytest.raises(ValueError, match="no eos"):
        encode_corpus(CharTokenizer.from_text("ab"), ["ab"], tmp_path / "e.bin", eos=True)
