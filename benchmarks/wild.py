"""Wild accuracy: leave one facebench source out, test it as users' images arrive (issue 12).

    python benchmarks/wild.py                              # the three folds, preset params/facebench.yaml
    python benchmarks/wild.py --fold dev                   # one fold: train on extra/ + sd21/, test dev/
    python benchmarks/wild.py --preset params/facebench-lossless.yaml
    python benchmarks/wild.py --fold dev --set train.jpeg_prob=1.0   # an ablation: preset plus overrides

For each source folder (dev/, extra/, sd21/), a model is trained on the other two (a stratified
15 % of that pool validates: best epoch, temperature, threshold) and tested on every image of the
left-out source, once as stored and once per wild condition: JPEG 95, 85, 75, WebP 80, shrunk to
half size (fed at that size), and a social-media chain (resize 0.6-0.9, JPEG 70-90). Each condition
is applied to both classes alike. Wild accuracy is the mean accuracy over the six conditions.
Prints one Markdown table per fold and a summary, for benchmarks/RESULTS.md; `--json` also
writes the rows. Skips (exit 0) when ../shared/facebench is absent.

With `--set data.faces=crop` the faces of every file are found and cropped first (split.crop_faces,
as the crop-mode split stage does; crops under --crops), the model trains on the training pool's
crops and is tested on the left-out source's crops: files with no face found are left out of both
(the summary counts them), and the wild conditions are applied to the crops.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from heldout import preset_params, rows_of, stratified_cut  # benchmarks/heldout.py: the same folds helpers

from aivsreal.fit_calibration import calibrate
from aivsreal.logs import setup_logging
from aivsreal.model import save_model
from aivsreal.params import Params
from aivsreal.predictor import Predictor
from aivsreal.robustness import level, run_sweep, wild_levels, wild_summary
from aivsreal.split import scan_dataset
from aivsreal.training import train

ROOT = Path(__file__).resolve().parents[1]
FACEBENCH = ROOT.parent / "shared" / "facebench"
SOURCES = ("dev", "extra", "sd21")


def run_fold(
    params: Params,
    pool: list[dict],
    test: list[dict],
    seed: int,
    save_to: Path | None = None,
    record: dict | None = None,
) -> tuple[list[dict], float]:
    """Train on `pool`, then the sweep rows (as stored + wild conditions) on `test`; training minutes.
    `record`, if given, receives the threshold, which test images are AI, and p(AI) of every test
    image per condition (benchmarks/wild_ablate.py scores ensembles from them)."""
    train_rows, val_rows = stratified_cut(pool, 0.15, np.random.default_rng(seed))
    started = time.perf_counter()
    result = train(params, train_rows, val_rows)
    calibrate(result, val_rows, params.calibration)
    minutes = (time.perf_counter() - started) / 60
    if save_to is not None:
        save_model(result.model, result.config, save_to)
    predictor = Predictor(result.model, result.config)
    images = predictor.load_many([row["path"] for row in test])
    positive = predictor.class_names[0]
    is_positive = np.array([row["label"] == positive for row in test])

    levels = [level("none", 0)] + wild_levels()
    rows, scores = run_sweep(
        lambda batch: predictor.predict_proba(batch)[:, 0], images, is_positive, result.config.threshold, levels, seed
    )
    if record is not None:
        record.update(threshold=result.config.threshold, is_positive=is_positive, p_positive=scores)
    return rows, minutes


def face_crops(rows: list[dict], folder: Path, params: Params) -> tuple[list[dict], int]:
    """Crop mode: the square face crops of `rows` (split.crop_faces), and how many files had no face."""
    from aivsreal.manifests import ImageRecord
    from aivsreal.split import crop_faces

    records = [ImageRecord(row["path"], row["label"], row["sha256"]) for row in rows]
    splits = {"train": records, "val": [], "test": []}
    crops, no_face, _ = crop_faces(splits, folder, params.data.face_margin, params.split.max_pixels)
    return rows_of(crops["train"]), len(no_face)


def fold_table(rows: list[dict]) -> str:
    lines = ["| condition (both classes) | accuracy | ROC AUC | AI recall | real recall |", "|---|---|---|---|---|"]
    for row in rows:
        name = "as stored (lossless PNG)" if row["kind"] == "none" else f"{row['kind']} {row['level']:g}"
        lines.append(
            f"| {name} | {row['accuracy']:.3f} | {row['roc_auc']:.3f} | "
            f"{row['positive_recall']:.3f} | {row['negative_recall']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", action="append", choices=SOURCES, help="source(s) to leave out (default: all)")
    parser.add_argument("--preset", default="params/facebench.yaml", help="overrides file, or none")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, like dvc -S")
    parser.add_argument("--data", type=Path, default=FACEBENCH, help="folder with dev/, extra/ and sd21/")
    parser.add_argument("--json", type=Path, help="also write the rows of every fold to this file")
    parser.add_argument("--save", type=Path, help="also save each fold's model to SAVE/<left-out source>/")
    parser.add_argument("--crops", type=Path, default=Path(tempfile.gettempdir()) / "aivsreal_wild_crops",
                        help="data.faces=crop: the face crops go here (default: %(default)s)")  # fmt: skip
    args = parser.parse_args()
    setup_logging()  # one line per epoch on stderr
    if not all((args.data / source).is_dir() for source in SOURCES):
        print(f"skipped: {args.data} lacks one of {', '.join(SOURCES)}")
        return
    params, sets = preset_params(args.preset, args.set)
    classes = params.data.class_names
    by_source = {s: rows_of(scan_dataset(args.data / s, classes, params.split.max_pixels)[0]) for s in SOURCES}
    no_face = {}
    if params.data.faces == "crop":
        for source in SOURCES:
            by_source[source], no_face[source] = face_crops(by_source[source], args.crops / source, params)
            print(f"# {source}/: {len(by_source[source])} faces, {no_face[source]} files with no face found")

    print(f"# preset {args.preset}, overrides {sets or 'none'}, data {args.data}")
    results, summary = {}, []
    for number, held_out in enumerate(args.fold or SOURCES, start=1):
        pool = [row for source in SOURCES if source != held_out for row in by_source[source]]
        save_to = args.save / held_out if args.save else None
        rows, minutes = run_fold(params, pool, by_source[held_out], params.split.seed + number, save_to)
        results[held_out] = {"training_minutes": minutes, "rows": rows}
        wild = wild_summary(rows)
        summary.append((held_out, len(pool), len(by_source[held_out]), minutes, rows[0], wild))
        print(f"\n### Left out: {held_out}/ (trained on {len(pool)} images, {minutes:.1f} min)\n", flush=True)
        print(fold_table(rows), flush=True)
    print("\n| left out | train pool | test images | training min | lossless accuracy | lossless AUC | "
          "wild accuracy | wild AUC |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for held_out, n_pool, n_test, minutes, clean, wild in summary:
        print(
            f"| {held_out}/ | {n_pool} | {n_test} | {minutes:.1f} | {clean['accuracy']:.3f} | "
            f"{clean['roc_auc']:.3f} | {wild['wild_accuracy']:.3f} | {wild['wild_roc_auc']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "overrides": sets, "folds": results}, indent=1))


if __name__ == "__main__":
    main()
