"""Held-out estimate on real faces: train with the lossless facebench preset, test on faces it never saw.

    python benchmarks/heldout.py                          # 5 folds over dev/: train on extra/ + 4/5 of dev/
    python benchmarks/heldout.py --protocol cross         # train on extra/ only, test on all of dev/
    python benchmarks/heldout.py --preset none            # the same without the preset (params.yaml as is)
    python benchmarks/heldout.py --set model.input_filter=none   # an ablation: preset plus overrides

`dev-folds` answers "trained on dev/ + extra/, how well does it do on more faces like dev/?":
each dev/ face is tested once, by the model whose training never saw it. `cross` answers the
harder question of a source never seen at all. Validation (best epoch, temperature, threshold)
is a stratified 15 % of each training pool. Prints per-run rows and the pooled result as a
Markdown table for benchmarks/RESULTS.md. Skips (exit 0) when ../shared/facebench is absent.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from aivsreal.degradations import blur, jpeg
from aivsreal.fit_calibration import calibrate
from aivsreal.params import Params, load_overrides, parse_sets
from aivsreal.predictor import Predictor
from aivsreal.split import scan_dataset
from aivsreal.training import train

ROOT = Path(__file__).resolve().parents[1]
FACEBENCH = ROOT.parent / "shared" / "facebench"


def rows_of(records) -> list[dict[str, str]]:
    return [{"path": r.path, "label": r.label, "sha256": r.sha256} for r in records]


def stratified_cut(rows: list[dict], fraction: float, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """(rest, cut): a stratified `fraction` of the rows in `cut`."""
    rest, cut = [], []
    for label in sorted({row["label"] for row in rows}):
        members = [row for row in rows if row["label"] == label]
        order = rng.permutation(len(members))
        n_cut = round(len(members) * fraction)
        cut += [members[i] for i in order[:n_cut]]
        rest += [members[i] for i in order[n_cut:]]
    return rest, cut


def preset_params(preset: str, settings: list[str]) -> tuple[Params, dict[str, object]]:
    """params.yaml, then the preset file (unless "none"), then KEY=VALUE overrides like dvc -S."""
    params = Params.load(ROOT / "params.yaml")
    if preset != "none":
        params = params.with_overrides(load_overrides(ROOT / preset))
    sets = parse_sets(settings)
    return params.with_overrides(sets), sets


def stratified_folds(rows: list[dict], k: int, rng: np.random.Generator) -> list[list[dict]]:
    folds: list[list[dict]] = [[] for _ in range(k)]
    for label in sorted({row["label"] for row in rows}):
        members = [row for row in rows if row["label"] == label]
        for position, index in enumerate(rng.permutation(len(members))):
            folds[position % k].append(members[index])
    return folds


# What the test faces go through besides being read as they are: one mild step of each
# robustness sweep (JPEG quality 90, Gaussian blur sigma 1).
CONDITIONS = {
    "clean": lambda image: image,
    "jpeg90": lambda image: jpeg(image, 90),
    "blur1": lambda image: blur(image, 1),
}


def train_and_score(params: Params, pool: list[dict], test: list[dict], seed: int) -> tuple[dict, float]:
    """Train on `pool` (15 % of it for validation); {condition: (p(first class), labels)} on `test`, minutes."""
    train_rows, val_rows = stratified_cut(pool, 0.15, np.random.default_rng(seed))
    started = time.perf_counter()
    result = train(params, train_rows, val_rows)
    calibrate(result, val_rows, params.calibration)
    minutes = (time.perf_counter() - started) / 60
    predictor = Predictor(result.model, result.config)
    images = predictor.load_many([row["path"] for row in test])
    scores = {}
    for name, change in CONDITIONS.items():
        proba = predictor.predict_proba([change(image) for image in images])
        scores[name] = (proba[:, 0], predictor.labels(proba))
    return scores, minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("dev-folds", "cross"), default="dev-folds")
    parser.add_argument("--folds", type=int, default=5, help="folds over dev/ (dev-folds only, default 5)")
    parser.add_argument("--preset", default="params/facebench-lossless.yaml", help="overrides file, or none")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, like dvc -S")
    parser.add_argument("--data", type=Path, default=FACEBENCH, help="folder with dev/ and extra/")
    args = parser.parse_args()
    if not (args.data / "dev").is_dir() or not (args.data / "extra").is_dir():
        print(f"skipped: {args.data} has no dev/ and extra/")
        return
    params, sets = preset_params(args.preset, args.set)
    classes, positive = params.data.class_names, params.data.class_names[0]
    dev = rows_of(scan_dataset(args.data / "dev", classes, params.split.max_pixels)[0])
    extra = rows_of(scan_dataset(args.data / "extra", classes, params.split.max_pixels)[0])
    if args.protocol == "cross":
        runs = [(extra, dev)]
    else:
        folds = stratified_folds(dev, args.folds, np.random.default_rng(params.split.seed))
        runs = [(extra + [r for j, f in enumerate(folds) if j != i for r in f], fold) for i, fold in enumerate(folds)]

    print(f"# protocol {args.protocol}, preset {args.preset}, overrides {sets or 'none'}, data {args.data}")
    columns = " | ".join(f"{name} accuracy | {name} ROC AUC" for name in CONDITIONS)
    print(f"| run | train pool | test images | training min | {columns} |")
    print("|---" * (4 + 2 * len(CONDITIONS)) + "|")
    pooled: dict[str, tuple[list, list]] = {name: ([], []) for name in CONDITIONS}
    all_truth: list[str] = []
    for number, (pool, test) in enumerate(runs, start=1):
        scores, minutes = train_and_score(params, pool, test, params.split.seed + number)
        truth = [row["label"] for row in test]
        all_truth += truth
        cells = []
        for name, (p_positive, predicted) in scores.items():
            pooled[name][0].extend(p_positive)
            pooled[name][1].extend(predicted)
            cells.append(score_cells(truth, p_positive, predicted, positive))
        print(f"| {number} | {len(pool)} | {len(test)} | {minutes:.1f} | {' | '.join(cells)} |", flush=True)
    cells = [score_cells(all_truth, np.array(p), predicted, positive) for p, predicted in pooled.values()]
    print(f"| pooled | | {len(all_truth)} | | {' | '.join(cells)} |")


def score_cells(truth: list[str], p_positive, predicted: list[str], positive: str) -> str:
    auc = roc_auc_score([label == positive for label in truth], p_positive)
    return f"{accuracy_score(truth, predicted):.3f} | {auc:.3f}"


if __name__ == "__main__":
    main()
