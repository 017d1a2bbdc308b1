"""`benchmarks/wild_ablate.py --ensemble` scores the average of saved p(AI) (a trained try's, a frozen probe's):
the mean of the probabilities against the mean of the thresholds, per fold; files that scored other test faces
are refused rather than averaged."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import PROJECT

FOLDS = ("dev", "extra", "sd21", "sd15")  # benchmarks/wild.py's SOURCES
IS_AI = np.array([True, True, False, False])


def save(folder, name, p, is_positive=IS_AI, threshold=0.5):
    for fold in FOLDS:  # the as-stored row and wild.py's six conditions, the same scores in each
        np.savez(folder / f"{name}__{fold}.npz", p_positive=np.tile(p, (7, 1)), is_positive=is_positive,
                 threshold=threshold)  # fmt: skip


def ensemble(folder, names):
    command = [sys.executable, str(PROJECT / "benchmarks/wild_ablate.py"), "--ensemble", names, "--out", str(folder)]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, timeout=120)


def test_ensemble_thresholds_the_mean_probability(tmp_path):
    save(tmp_path, "right", np.array([0.9, 0.8, 0.3, 0.2]))  # every face right
    save(tmp_path, "probe", np.array([0.2, 0.6, 0.4, 0.2]), threshold=0.1)  # calls every face AI
    # mean p (0.55, 0.7, 0.35, 0.2) against the mean threshold 0.3: AI, AI, AI, real -> 3 of 4
    # (against the first try's 0.5 it would be 4 of 4, against the probe's 0.1 it would be 2 of 4)
    done = ensemble(tmp_path, "right,probe")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wild 0.750 / 1.000") == len(FOLDS)
    assert "unseen-source wild accuracy 0.750, lowest AUC 1.000" in done.stdout
    alone = ensemble(tmp_path, "probe")
    assert "unseen-source wild accuracy 0.500, lowest AUC 0.625" in alone.stdout


def test_ensemble_refuses_scores_of_other_faces(tmp_path):
    save(tmp_path, "right", np.array([0.9, 0.8, 0.3, 0.2]))
    save(tmp_path, "shuffled", np.array([0.9, 0.8, 0.3, 0.2]), is_positive=IS_AI[::-1])
    done = ensemble(tmp_path, "right,shuffled")
    assert done.returncode != 0
    assert "shuffled__dev.npz scored other test faces than right__dev.npz" in done.stderr
    assert "unseen-source" not in done.stdout
