"""Wild accuracy: leave one facebench source out, test it as users' images arrive (issue 12).

    python benchmarks/wild.py                              # the four folds, preset params/facebench.yaml
    python benchmarks/wild.py --fold dev                   # one fold: train on extra/, sd21/, sd15/, test dev/
    python benchmarks/wild.py --preset params/facebench-lossless.yaml
    python benchmarks/wild.py --fold dev --set train.jpeg_prob=1.0   # an ablation: preset plus overrides

For each source folder (dev/, extra/, sd21/, sd15/), a model is trained on the other three (a stratified
15 % of that pool validates: best epoch, temperature, threshold) and tested on every image of the
left-out source, once as stored and once per wild condition: JPEG 95, 85, 75, WebP 80, shrunk to
half size (fed at that size), and a social-media chain (resize 0.6-0.9, JPEG 70-90). Each condition
is applied to both classes alike. Wild accuracy is the mean accuracy over the six conditions.
Prints one Markdown table per fold, a summary and the headline, unseen-source wild accuracy: the mean
of the folds' wild accuracies (each fold's ROC AUC beside it: below 0.5 is an inverted fold, a
failure), for benchmarks/RESULTS.md; `--json` also
writes the rows. Skips (exit 0) when ../shared/facebench is absent.

Two experts (experts.py): `--json` a run of the wild preset and one of the forensic preset
(`--preset params/facebench-lossless.yaml`), then `--combine WILD.json FORENSIC.json` prints each
fold's two-expert result: originals (as stored) answered by the forensic expert, the wild
conditions by the wild one, exactly as the routing sends them.

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

from aivsreal import face_vote
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
SOURCES = ("dev", "extra", "sd21", "sd15")


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
    vote = None
    if params.model.face_vote:  # as the train stage adds it (pipeline/train.py add_face_vote), in a scratch folder
        face_vote.ensure_weights(Path(params.model.face_vote_graph))
        scratch = tempfile.TemporaryDirectory(prefix="face_vote_")  # removed when run_fold returns
        vote, _ = face_vote.fit_face_vote(params, train_rows, val_rows, Path(scratch.name))
        minutes = (time.perf_counter() - started) / 60
    if save_to is not None:
        save_model(result.model, result.config, save_to)
    predictor = Predictor(result.model, result.config, face_vote=vote)
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
    crops, no_face, _ = crop_faces(splits, folder, params.data.face_margin, params.split.max_pixels,
                                   detector=params.data.face_detector)  # fmt: skip
    return rows_of(crops["train"]), len(no_face)


def two_expert_rows(wild_rows: list[dict], forensic_rows: list[dict]) -> list[dict]:
    """A fold's rows for the two-expert model (experts.route), from a wild run and a forensic run of the same
    fold: the test faces as stored are 256 px PNG originals, so the forensic expert answers them (its
    decisions and ranking are kept by experts.shift_to_threshold); every wild condition is a JPEG, a WebP
    or a shrunk copy, so the wild expert answers those."""
    if [(r["kind"], r["level"]) for r in wild_rows] != [(r["kind"], r["level"]) for r in forensic_rows]:
        raise SystemExit("the two runs did not test the same conditions")
    return [forensic_rows[0] | {"expert": "forensic"}] + [row | {"expert": "wild"} for row in wild_rows[1:]]


def combine(wild_json: Path, forensic_json: Path) -> None:
    """Print the two-expert tables from two `--json` results (a wild preset run and a forensic one)."""
    wild, forensic = json.loads(wild_json.read_text()), json.loads(forensic_json.read_text())
    print(f"# two experts: wild {wild_json} ({wild['preset']}, {wild['overrides'] or 'no overrides'}), "
          f"forensic {forensic_json} ({forensic['preset']}, {forensic['overrides'] or 'no overrides'})")  # fmt: skip
    print("\n| left out | originals accuracy (forensic) | originals AUC | wild accuracy (wild) | wild AUC |"
          "\n|---|---|---|---|---|")  # fmt: skip
    for fold in wild["folds"]:
        rows = two_expert_rows(wild["folds"][fold]["rows"], forensic["folds"][fold]["rows"])
        summary = wild_summary(rows)
        print(f"| {fold}/ | {rows[0]['accuracy']:.3f} | {rows[0]['roc_auc']:.3f} | "
              f"{summary['wild_accuracy']:.3f} | {summary['wild_roc_auc']:.3f} |")  # fmt: skip


def unseen_source_headline(folds: list[dict[str, float]]) -> dict[str, float]:
    """The headline over the leave-one-source-out folds: mean wild accuracy and mean and lowest wild ROC AUC."""
    return {
        "folds": len(folds),
        "wild_accuracy": float(np.mean([fold["wild_accuracy"] for fold in folds])),
        "wild_roc_auc": float(np.mean([fold["wild_roc_auc"] for fold in folds])),
        "min_roc_auc": float(min(fold["wild_roc_auc"] for fold in folds)),
    }


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
    parser.add_argument("--data", type=Path, default=FACEBENCH, help="folder with dev/, extra/, sd21/ and sd15/")
    parser.add_argument("--json", type=Path, help="also write the rows of every fold to this file")
    parser.add_argument("--save", type=Path, help="also save each fold's model to SAVE/<left-out source>/")
    parser.add_argument("--crops", type=Path, default=Path(tempfile.gettempdir()) / "aivsreal_wild_crops",
                        help="data.faces=crop: the face crops go here (default: %(default)s)")  # fmt: skip
    parser.add_argument("--combine", nargs=2, type=Path, metavar=("WILD_JSON", "FORENSIC_JSON"),
                        help="train nothing: two-expert tables from a wild and a forensic run's --json")  # fmt: skip
    args = parser.parse_args()
    if args.combine:
        combine(*args.combine)
        return
    setup_logging()  # one line per epoch on stderr
    if not all((args.data / source).is_dir() for source in SOURCES):
        print(f"skipped: {args.data} lacks one of {', '.join(SOURCES)}")
        return
    params, sets = preset_params(args.preset, args.set)
    classes = params.data.class_names
    by_source = {
        s: [row | {"source": s} for row in rows_of(scan_dataset(args.data / s, classes, params.split.max_pixels)[0])]
        for s in SOURCES
    }
    no_face = {}
    if params.data.faces == "crop":
        for source in SOURCES:
            crops, no_face[source] = face_crops(by_source[source], args.crops / source, params)
            by_source[source] = [row | {"source": source} for row in crops]
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
    headline = unseen_source_headline([wild for *_, wild in summary])
    print(
        f"\nunseen-source wild accuracy (mean over {headline['folds']} folds): {headline['wild_accuracy']:.3f}; "
        f"lowest fold ROC AUC {headline['min_roc_auc']:.3f}"
        + ("  (an inverted fold: AUC below 0.5)" if headline["min_roc_auc"] < 0.5 else "")
    )
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "overrides": sets, "folds": results,
                                         "unseen_source": headline}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
