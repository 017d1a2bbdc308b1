"""Calibration before and after issue 13, on a trained model: ECE on the test split and on the
evaluate stage's robustness sweep pooled (every level together), and the most extreme probability
reported.

    python benchmarks/calibration.py --model models/model --val data/processed/val.csv \\
        --test data/processed/test.csv

The network's logits are computed once (validation images and their wild copies; test images and
every sweep level, with the same seeds as the evaluate stage); each calibration rule is then
applied to the same logits:
- T = 1: no temperature;
- before: temperature fitted on the validation images only, T in [0.05, 20], no clipping (the rule
  until issue 13);
- bounded: the same fit with T >= calibration.min_temperature, probabilities clipped;
- after (the default now): fitted on the validation images and their wild copies, T >= the bound,
  probabilities clipped to [1 - calibration.max_confidence, max_confidence].
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from aivsreal.calibration import clip_confidence, expected_calibration_error, fit_temperature, probabilities
from aivsreal.manifests import read_manifest
from aivsreal.params import Params
from aivsreal.predictor import Predictor
from aivsreal.robustness import level, run_sweep, sweep_levels, wild_levels

ROOT = Path(__file__).resolve().parents[1]


def logits_per_level(predictor: Predictor, rows: list[dict], levels, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(logits of every image at each level, is_positive), degraded exactly as run_sweep does."""
    images = predictor.load_many([row["path"] for row in rows])
    is_positive = np.array([row["label"] == predictor.class_names[0] for row in rows])
    recorded: list[np.ndarray] = []

    def predict_positive(batch):
        recorded.append(predictor.predict_logits(batch))
        return probabilities(recorded[-1])[:, 0]

    run_sweep(predict_positive, images, is_positive, 0.5, levels, seed)
    return recorded, is_positive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models/model", help="saved model folder")
    parser.add_argument("--val", type=Path, default=ROOT / "data/processed/val.csv", help="validation manifest")
    parser.add_argument("--test", type=Path, default=ROOT / "data/processed/test.csv", help="test manifest")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="evaluate.* and calibration.*")
    args = parser.parse_args()
    params = Params.load(args.params)
    settings, evaluate = params.calibration, params.evaluate
    predictor = Predictor.from_dir(args.model)
    val_rows, test_rows = read_manifest(args.val), read_manifest(args.test)

    val_logits, val_positive = logits_per_level(predictor, val_rows, [level("none", 0)] + wild_levels(), 0)
    sweep = sweep_levels(evaluate.jpeg_qualities, evaluate.blur_sigmas, evaluate.downscales)
    test_logits, test_positive = logits_per_level(predictor, test_rows, [level("none", 0)] + sweep, evaluate.sweep_seed)
    val_targets = np.where(val_positive, 0, 1)

    def fitted(on: list[np.ndarray], minimum: float) -> float:
        return fit_temperature(np.concatenate(on), np.tile(val_targets, len(on)), minimum)

    rules = {
        "T = 1": (1.0, 1.0),
        "before: validation only, T >= 0.05, no clipping": (fitted(val_logits[:1], 0.05), 1.0),
        f"bounded: validation only, T >= {settings.min_temperature:g}, clipped": (
            fitted(val_logits[:1], settings.min_temperature),
            settings.max_confidence,
        ),
        f"after: validation + wild copies, T >= {settings.min_temperature:g}, clipped": (
            fitted(val_logits, settings.min_temperature),
            settings.max_confidence,
        ),
    }
    print(f"# model {args.model}, {len(val_rows)} validation and {len(test_rows)} test images, "
          f"{len(sweep)} sweep levels")  # fmt: skip
    print("| rule | T | test ECE | sweep ECE (pooled) | most extreme p on test |")
    print("|---|---|---|---|---|")
    for name, (temperature, max_confidence) in rules.items():

        def p_positive(logits, t=temperature, c=max_confidence):
            return clip_confidence(probabilities(logits, t), c)[:, 0]

        test_p = p_positive(test_logits[0])
        pooled = np.concatenate([p_positive(logits) for logits in test_logits[1:]])
        pooled_truth = np.tile(test_positive, len(test_logits) - 1)
        extreme = min(test_p.min(), 1 - test_p.max())
        print(
            f"| {name} | {temperature:.3f} | {expected_calibration_error(test_p, test_positive):.4f} | "
            f"{expected_calibration_error(pooled, pooled_truth):.4f} | {extreme:.1e} |"
        )


if __name__ == "__main__":
    main()
