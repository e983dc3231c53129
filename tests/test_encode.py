"""`Runner.encode`: sentence-transformers' call shape for many texts, on the same engine calls as
`send_embedding_request` (same vectors, bit for bit, whatever the batching)."""

from __future__ import annotations

import numpy as np
import pytest

from candle_embed import EmbeddingRequest, calibration_ranges, quantize_embeddings

from fixture_models import GQA, embed, load

TEXTS = [f"text number {i}: " + "word " * (i % 17) for i in range(50)] + ["北京", "😀 emoji", "a"]


def test_encode_equals_one_request(gqa):
    want = embed(gqa, input=TEXTS)
    for batch_size in (1, 7, 64, None):
        np.testing.assert_array_equal(gqa.encode(TEXTS, batch_size=batch_size), want)


def test_a_generator_is_read_in_batches_never_whole(gqa):
    taken = []

    def texts():
        for i, text in enumerate(TEXTS):
            taken.append(i)
            yield text


    got = gqa.encode(texts(), batch_size=8)
    np.testing.assert_array_equal(got, embed(gqa, input=TEXTS))
    assert taken == list(range(len(TEXTS)))


def test_generator_consumption_is_bounded_by_the_batch(gqa):
    pulled = []

    def texts():
        for i in range(100):
            pulled.append(i)
            if i == 20:
                raise RuntimeError("stop here")
            yield f"text {i}"

    with pytest.raises(RuntimeError, match="stop here"):
        gqa.encode(texts(), batch_size=8)
    # The failure surfaced while the third batch was being read: nothing was read far ahead.
    assert max(pulled) == 20


def test_single_string_gives_one_vector(gqa):
    v = gqa.encode("hello")
    assert v.shape == (64,)
    np.testing.assert_array_equal(v, embed(gqa, input=["hello"])[0])


def test_options_follow_sentence_transformers_names(gqa):
    got = gqa.encode(TEXTS[:5], prompt_name="query", dimensions=16, normalize=False)
    np.testing.assert_array_equal(got, embed(gqa, input=TEXTS[:5], prompt_name="query", dimensions=16, normalize=False))
    got = gqa.encode(TEXTS[:5], instruction="Find it")
    np.testing.assert_array_equal(got, embed(gqa, input=TEXTS[:5], instruction="Find it"))


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "uint8", "binary", "ubinary"])
def test_precisions(gqa, precision):
    full = gqa.encode(TEXTS)
    calibration = gqa.encode(["calibration one", "calibration two", "three"])
    kwargs = {"calibration_embeddings": calibration} if precision in ("int8", "uint8") else {}
    got = gqa.encode(TEXTS, precision=precision, batch_size=5, **kwargs)
    ranges = calibration_ranges(calibration) if kwargs else None
    np.testing.assert_array_equal(got, quantize_embeddings(full, precision, ranges=ranges))


def test_int8_without_ranges_is_refused_with_the_reason(gqa):
    with pytest.raises(ValueError) as err:
        gqa.encode(TEXTS, precision="int8")
    assert "needs ranges" in str(err.value) and "batch" in str(err.value)


def test_truncate(gqa):
    long = "word " * 400
    with pytest.raises(ValueError, match="maximum of 128"):
        gqa.encode([long])
    np.testing.assert_array_equal(gqa.encode([long], truncate=True), embed(gqa, input=[long], truncate_sequence=True))


def test_bad_items_name_their_position(gqa):
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        gqa.encode(["a", "b", 3])
    with pytest.raises(ValueError, match="batch_size"):
        gqa.encode(["a"], batch_size=0)


def test_progress_bar_shows_texts_and_tokens(gqa, capsys):
    pytest.importorskip("tqdm")
    gqa.encode(TEXTS, batch_size=10, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "53/53" in err and "tokens/s" in err


def test_empty_input_gives_an_empty_matrix(gqa):
    assert gqa.encode([]).shape == (0, 64)
    assert gqa.encode(iter([]), precision="binary").shape == (0, 8)


def test_runner_subclass_keeps_the_native_api():
    runner = load(GQA)
    assert runner.hidden_size == 64
    assert len(runner.tokenize(EmbeddingRequest(input=["a", "b"]))) == 2
