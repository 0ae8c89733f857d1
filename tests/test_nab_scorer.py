"""The NAB scorer (toto_jax.eval.nab) against NAB's published final scores.

The tests marked ``shared_data`` read ``../shared/data/nab`` (NAB's data, labels, thresholds and the result files
of the ``numenta`` and ``windowedGaussian`` detectors, read-only); skipped where absent, failed under CI=true
(tests/conftest.py).
"""

import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from toto_jax.eval import nab


@pytest.fixture(scope="module")
def root():
    return SHARED_DATA / "nab"


@pytest.fixture(scope="module")
def corpus(root):
    return nab.read_corpus(root)


@pytest.mark.shared_data
@pytest.mark.parametrize("detector", ["numenta", "windowedGaussian"])
def test_published_scores_reproduced(root, corpus, detector):
    """With NAB's stored thresholds every profile's final score is NAB's to 0.05; with our own threshold
    optimisation too, except where NAB's stored threshold is not the optimum of its own result files (numenta,
    reward_low_FP_rate): there our threshold scores higher, and scoring NAB's threshold gives NAB's number."""
    published = json.loads((root / "results" / "final_results.json").read_text())[detector]
    stored = nab.stored_thresholds(root, detector)
    scores = nab.read_results(root / "results" / detector, corpus)
    for profile in nab.PROFILES:
        at_stored = nab.score_corpus(corpus, scores, profile, stored[profile])
        assert at_stored.score == pytest.approx(published[profile], abs=0.05), profile
        optimised = nab.score_corpus(corpus, scores, profile)
        assert optimised.raw >= at_stored.raw - 1e-9, profile
        if (detector, profile) != ("numenta", "reward_low_FP_rate"):
            assert optimised.score == pytest.approx(published[profile], abs=0.05), profile
        else:
            assert optimised.score > published[profile] + 0.05


@pytest.mark.shared_data
def test_null_and_perfect_detectors(corpus):
    """The normalisation's ends: a constant detector scores 0, one detecting each window's first row (and
    nothing else) 100, in every profile."""
    perfect = {}
    for name, labels in corpus.labels.items():
        scores = np.zeros(labels.rows)
        for first, _ in labels.windows:
            scores[max(first, nab.probationary_length(labels.rows))] = 1.0
        perfect[name] = scores
    constant = {name: np.full(f.rows, 0.3) for name, f in corpus.labels.items()}
    for profile in nab.PROFILES:
        assert nab.score_corpus(corpus, constant, profile).score == pytest.approx(0.0, abs=1e-9)
        assert nab.score_corpus(corpus, perfect, profile).score == pytest.approx(100.0, abs=1e-6)


def test_sweep_rules_on_a_small_file():
    """One file of 100 rows (15 probationary), one window [40, 49]: an early detection in it, a late one, a
    false positive right after it and one before any window, and the optimiser's choice of >= thresholds."""
    stamps = np.arange(100).astype("datetime64[s]")
    labels = nab.FileLabels(stamps, ((40, 49),))
    profile = nab.PROFILES["standard"]
    scores = np.zeros(100)
    scores[[10, 20, 41, 48, 50]] = [0.9, 0.3, 0.8, 0.8, 0.8]  # row 10 is probationary
    sweep = nab.sweep_file(scores, labels, profile)
    early = float(nab.scaled_sigmoid(-(49 - 41 + 1) / 10) / nab.scaled_sigmoid(-1.0))
    after = 0.11 * float(nab.scaled_sigmoid(1 / 9))
    assert nab.score_at(sweep, 0.8)[0] == pytest.approx(early + after)
    assert nab.score_at(sweep, 0.3)[0] == pytest.approx(early + after - 0.11)
    assert nab.score_at(sweep, 0.81)[0] == pytest.approx(-1.0)
    thresholds, totals = nab.threshold_curve(sweep)
    np.testing.assert_allclose(thresholds, [1.1, 0.8, 0.3, 0.0])
    assert nab.optimize_threshold(sweep) == (0.8, pytest.approx(early + after))
    with pytest.raises(nab.NabError, match="100 rows"):
        nab.sweep_file(scores[:-1], labels, profile)
