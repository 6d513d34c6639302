"""Loss interpretation: conversions, bands scaled to the vocabulary, the over-fitting detector."""

import math
import pytest
from rdtcourse.loss import band_edges, bits_per_token, detect_overfitting, interpret_loss, loss_band, perplexity


def test_conversions():
    assert perplexity(math.log(65)) == pytest.approx(65)
    assert bits_per_token(math.log(2)) == pytest.approx(1.0)
    r = interpret_loss(2 * math.log(2), 1024, chars_per_token=2.0)
    assert r["bits_per_token"] == pytest.approx(2.0) and r["bits_per_char"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "loss, band",
    [
        (10.5, "random (initial state)"),
        (6.0, "grammar patterns starting"),
        (4.0, "format and patterns"),
        (2.5, "meaningful text"),
        (1.0, "good (watch for over-fitting)"),
    ],
)
def test_brief_bands_hold_for_its_vocabulary(loss, band):
    assert loss_band(loss, 24_000) == band


def test_bands_scale_with_vocabulary():
    assert loss_band(math.log(65), 65).startswith("random")  # the initial loss of any vocabulary is "random"
    assert loss_band(1.9, 65) == "format and patterns"  # 1.9 / ln 65 = 0.46
    edges = [e for e, _ in band_edges(65)]
    assert edges == sorted(edges) and edges[0] == pytest.approx(0.2 * math.log(65))


def _log(pairs):
    return [{"step": 100 * (i + 1), "train/eval_loss": t, "val/loss": v} for i, (t, v) in enumerate(pairs)]


def test_detector_fires_on_overfitting():
    recs = _log([(3.0, 3.1), (2.5, 2.6), (2.0, 2.3), (1.6, 2.35), (1.3, 2.5), (1.1, 2.7)])
    found = detect_overfitting(recs, patience=2)
    assert found["best_step"] == 300 and found["detected_at"] == 500 and found["gap"] == pytest.approx(1.2)


def test_detector_ignores_noise_and_healthy_runs():
    assert detect_overfitting(_log([(3.0, 3.1), (2.5, 2.6), (2.2, 2.3), (2.0, 2.1)])) is None
    # one bump in val is noise, not over-fitting
    assert detect_overfitting(_log([(3.0, 3.1), (2.5, 2.65), (2.2, 2.7), (2.0, 2.4), (1.9, 2.3)]), patience=2) is None
    # val rising while train rises too is not over-fitting (a diverging run)
    assert detect_overfitting(_log([(2.0, 2.1), (2.2, 2.3), (2.4, 2.5), (2.6, 2.7)])) is None
    assert detect_overfitting([]) is None
