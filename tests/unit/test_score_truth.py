"""sftgo score --truth: precision and recall of a grouping against the tokens known to be important."""

import numpy as np

from sftgo.score_cmd import importance_stats, recovery


def test_recovery_precision_recall():
    imp = np.array([1, 1, 0, 0, 1, 0], bool)
    truth = np.array([1, 0, 1, 0, 1, 0], bool)
    assert recovery(imp, truth) == {"precision": round(2 / 3, 4), "recall": round(2 / 3, 4), "true_positives": 2}
    assert recovery(imp, np.array([1, 1, 1, 1, 1, 0], bool)) == {"precision": 1.0, "recall": 0.6, "true_positives": 3}
    assert recovery(np.zeros(3, bool), np.ones(3, bool))["precision"] is None  # nothing marked important


def test_importance_stats_with_truth_per_scorer():
    class Tok:
        def decode(self, ids):
            return str(ids[0])

    ids = [[5, 6, 7], [8, 9]]
    scores = {"a": [np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.0])]}
    groups = {"a": [np.array([1, 0, 0], bool), np.array([0, 1], bool)]}
    truth = [np.array([0, 0, 1], bool), np.array([0, 1], bool)]
    st = importance_stats(scores, groups, ids, Tok(), truth=truth)
    assert (st["scorers"]["a"]["precision"], st["scorers"]["a"]["recall"]) == (0.5, 0.5)
    assert st["truth_fraction"] == 0.4
    assert "precision" not in importance_stats(scores, groups, ids, Tok())["scorers"]["a"]
