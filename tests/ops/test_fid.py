import numpy as np
import pytest

from curate.ops.fid import frechet_distance, frechet_from_stats, gap_report, precision_recall


def test_frechet_known_answers():
    eye = np.eye(2)
    assert frechet_from_stats(np.zeros(2), eye, np.zeros(2), eye) == pytest.approx(0.0, abs=1e-9)
    # ||mu||^2 = 25; Tr(I + 4I - 2*2I) = 2
    assert frechet_from_stats(np.zeros(2), eye, np.array([3.0, 4.0]), 4 * eye) == pytest.approx(27.0, abs=1e-6)


def test_frechet_from_samples_matches_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    b = rng.normal(size=(4000, 4)) + np.array([1.0, 0, 0, 0])
    assert frechet_distance(a, b) == pytest.approx(1.0, abs=0.1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_fidelity_and_diversity():
    rng = np.random.default_rng(1)
    # real: two well separated clusters
    real = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 20])
    same = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 20])
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    # mode collapse: all generated samples in one real cluster -> high precision, recall about 1/2
    collapsed = rng.normal(size=(600, 2))
    p, r = precision_recall(real, collapsed)
    assert p > 0.9 and 0.35 < r < 0.6
    # off-manifold: nothing generated lies near real data
    far = rng.normal(size=(600, 2)) + 100
    p, r = precision_recall(real, far)
    assert p == 0.0 and r == 0.0


def test_gap_report_has_noise_floor():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(1000, 3))
    rep = gap_report(real, rng.normal(size=(500, 3)) + 2)
    assert rep["fd"] > 10 * rep["fd_real_split"]
    assert set(rep) >= {"fd", "precision", "recall", "k", "n_real", "n_fake"}
