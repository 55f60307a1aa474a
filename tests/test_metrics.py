import numpy as np

from evaluation.metrics import boundary_f, jaccard, track_scores


def _square(x, y, s=10, size=(40, 60)):
    m = np.zeros(size, bool)
    m[y : y + s, x : x + s] = True
    return m


def test_jaccard_and_boundary_by_hand():
    a, b = _square(0, 0), _square(5, 0)
    assert jaccard(a, b) == 50 / 150
    assert jaccard(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert boundary_f(a, a) == 1.0 and boundary_f(a, np.zeros_like(a)) == 0.0
    assert 0 < boundary_f(a, b) < 1


def test_track_scores_counts_a_swap():
    t = 6
    gt = np.stack([np.stack([_square(5, 5), _square(40, 20)]) for _ in range(t)])
    pred = gt.copy()
    assert track_scores(pred, gt) == {"J": [1.0, 1.0], "F": [1.0, 1.0], "J_mean": 1.0, "F_mean": 1.0, "id_switches": 0}
    pred[3:] = pred[3:, ::-1]  # identities swapped from frame 3 on
    s = track_scores(pred, gt)
    assert s["id_switches"] == 2 and s["J"] == [0.5, 0.5]
