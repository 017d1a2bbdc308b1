"""Ablations of the wild recipe (issue 12): benchmarks/wild.py's folds (four since sd15/), one try per run,
and ensembles scored afterwards from the saved probabilities.

    python benchmarks/wild_ablate.py --list                        # the tries in benchmarks/RESULTS.md
    python benchmarks/wild_ablate.py --try gray --out runs/        # one try, every fold (about 50 min on 2 CPU cores)
    python benchmarks/wild_ablate.py --try base --set train.color_jitter=0.4 --out runs/G   # the preset + overrides
    python benchmarks/wild_ablate.py --try base --set train.device=cuda --out runs/
    python benchmarks/wild_ablate.py --ensemble base,seed1,seed2 --out runs/   # average saved p(AI)
    python benchmarks/wild_ablate.py --copy-to facebench128 --side 128  # the 128 px copy the GPU round used

Each try is the preset (params/facebench.yaml) plus overrides, and optionally one extra training
augmentation from torchvision inserted into the training transform (the pipeline has no param
for these: none of them helped, see RESULTS.md). The validation cut and the test conditions
depend on the fold only, so every try sees the same images and ensembles can average them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from heldout import preset_params, rows_of
from PIL import Image
from sklearn.metrics import roc_auc_score
from torchvision import transforms as T
from wild import FACEBENCH, SOURCES, run_fold, unseen_source_headline

import aivsreal.training
from aivsreal.logs import setup_logging
from aivsreal.robustness import wild_summary
from aivsreal.split import scan_dataset

# name: (extra training augmentation, overrides on top of the preset)
TRIES: dict[str, tuple[str, list[str]]] = {
    "base": ("none", []),
    "seed1": ("none", ["train.seed=1"]),
    "seed2": ("none", ["train.seed=2"]),
    "seed3": ("none", ["train.seed=3"]),
    "seed4": ("none", ["train.seed=4"]),
    "jpeg_p0.5": ("none", ["train.jpeg_prob=0.5"]),
    "epochs48": ("none", ["train.epochs=48", "train.patience=48"]),
    "lr3e-4": ("none", ["train.lr=0.0003"]),
    "weight_decay0.05": ("none", ["train.weight_decay=0.05"]),
    "dropout0.5": ("none", ["model.dropout=0.5"]),
    "residual": ("none", ["model.input_filter=residual"]),
    "resized_crop": ("resized_crop", []),
    "gray": ("gray", []),
    "affine": ("affine", []),
    "color_jitter": ("color_jitter", []),
    "erase": ("erase", []),
    "geometry+gray": ("resized_crop+gray+affine", []),
}


def augmentation(name: str, image_size: int) -> tuple[str, object]:
    """(where, torchvision transform): where = replace the crop, after the resize, or before/after ToTensor."""
    if name == "resized_crop":  # 35-100 % of the face: breaks the fixed alignment of FFHQ-style faces
        return "crop", T.RandomResizedCrop(image_size, scale=(0.35, 1.0), ratio=(0.85, 1.15), antialias=True)
    if name == "gray":  # half the faces grey: colour grading differs between sources
        return "before_tensor", T.RandomGrayscale(0.5)
    if name == "affine":  # rotation, shift, zoom: again against alignment
        return "after_resize", T.RandomAffine(12, translate=(0.08, 0.08), scale=(0.9, 1.15))
    if name == "color_jitter":
        return "before_tensor", T.ColorJitter(0.3, 0.3, 0.3, 0.05)
    if name == "erase":  # cut-out: no single face region decides
        return "after_tensor", T.RandomErasing(0.5, scale=(0.05, 0.25))
    raise SystemExit(f"unknown augmentation {name!r}")


def add_augmentations(names: str) -> None:
    """Make the training transform carry the extra augmentations (evaluation is unchanged)."""
    if names == "none":
        return
    build = aivsreal.training.build_transforms

    def build_with_extras(image_size, resize, train, **kwargs):
        compose = build(image_size, resize, train, **kwargs)
        if not train:
            return compose
        steps = list(compose.transforms)
        for name in names.split("+"):
            where, step = augmentation(name, image_size)
            if where == "crop":
                at = next(i for i, s in enumerate(steps) if isinstance(s, (T.RandomCrop, T.CenterCrop)))
                steps[at] = step
            elif where == "after_resize":
                steps.insert(next(i for i, s in enumerate(steps) if isinstance(s, T.Resize)) + 1, step)
            elif where == "before_tensor":
                steps.insert(next(i for i, s in enumerate(steps) if isinstance(s, T.ToTensor)), step)
            else:
                steps.append(step)
        return T.Compose(steps)

    aivsreal.training.build_transforms = build_with_extras


def run_try(name: str, extra_sets: list[str], data: Path, out: Path) -> None:
    augment, sets = TRIES[name]
    add_augmentations(augment)
    params, applied = preset_params("params/facebench.yaml", sets + extra_sets)
    classes = params.data.class_names
    by_source = {s: rows_of(scan_dataset(data / s, classes, params.split.max_pixels)[0]) for s in SOURCES}
    out.mkdir(parents=True, exist_ok=True)
    summary = {"try": name, "augmentation": augment, "overrides": applied, "data": str(data), "folds": {}}
    for number, held_out in enumerate(SOURCES, start=1):
        pool = [row for source in SOURCES if source != held_out for row in by_source[source]]
        record: dict = {}
        rows, minutes = run_fold(params, pool, by_source[held_out], params.split.seed + number, record=record)
        np.savez(out / f"{name}__{held_out}.npz", p_positive=np.stack(record["p_positive"]),
                 is_positive=record["is_positive"], threshold=record["threshold"])  # fmt: skip
        summary["folds"][held_out] = {"training_minutes": minutes, "rows": rows, **wild_summary(rows)}
        print(f"{name} {held_out}/: {fold_line(rows[0]['accuracy'], rows[0]['roc_auc'], wild_summary(rows))}")
        (out / f"{name}.json").write_text(json.dumps(summary, indent=1))


def fold_line(accuracy: float, auc: float, wild: dict) -> str:
    return f"as stored {accuracy:.3f} / {auc:.3f}, wild {wild['wild_accuracy']:.3f} / {wild['wild_roc_auc']:.3f}"


def score_ensemble(names: list[str], out: Path) -> None:
    """Average p(AI) of the named tries per fold and condition; threshold = mean of theirs."""
    folds = []
    for held_out in SOURCES:
        saved = [np.load(out / f"{name}__{held_out}.npz") for name in names]
        is_positive = saved[0]["is_positive"]
        for name, s in zip(names, saved):
            if s["p_positive"].shape != saved[0]["p_positive"].shape or (s["is_positive"] != is_positive).any():
                raise SystemExit(f"{name}__{held_out}.npz scored other test faces than {names[0]}__{held_out}.npz")
        p_positive = np.mean([s["p_positive"] for s in saved], axis=0)
        threshold = float(np.mean([s["threshold"] for s in saved]))
        accuracy = [float(((p >= threshold) == is_positive).mean()) for p in p_positive]
        auc = [float(roc_auc_score(is_positive, p)) for p in p_positive]
        wild = {"wild_accuracy": float(np.mean(accuracy[1:])), "wild_roc_auc": float(np.mean(auc[1:]))}
        folds.append(wild)
        print(f"ensemble of {len(names)} {held_out}/: {fold_line(accuracy[0], auc[0], wild)}")
    headline = unseen_source_headline(folds)
    print(f"unseen-source wild accuracy {headline['wild_accuracy']:.3f}, lowest AUC {headline['min_roc_auc']:.3f}")


def copy_at(source: Path, target: Path, side: int) -> None:
    """A lossless (PNG) copy of every facebench image at side x side, Lanczos, as the folder was made."""
    for path in sorted(source.glob("*/*/*.png")):
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((side, side), Image.LANCZOS).save(copy, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the tries and exit")
    parser.add_argument("--try", dest="name", choices=TRIES, help="run one try on every fold")
    parser.add_argument("--ensemble", help="comma-separated tries already run into --out: score their average")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override (device...)")
    parser.add_argument("--data", type=Path, default=FACEBENCH, help="folder with the sources of wild.py")
    parser.add_argument("--out", type=Path, default=Path("wild_ablations"), help="where results are saved")
    parser.add_argument("--copy-to", type=Path, help="write a lossless copy of --data at --side pixels here")
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args()
    if args.list:
        tries = {name: {"augmentation": augment, "overrides": sets} for name, (augment, sets) in TRIES.items()}
        print(yaml.safe_dump(tries, sort_keys=False))
    elif args.copy_to:
        copy_at(args.data, args.copy_to, args.side)
    elif args.ensemble:
        score_ensemble(args.ensemble.split(","), args.out)
    elif args.name:
        if not all((args.data / source).is_dir() for source in SOURCES):
            print(f"skipped: {args.data} lacks one of {', '.join(SOURCES)}")
            return
        setup_logging()
        run_try(args.name, args.set, args.data, args.out)
    else:
        parser.error("give --list, --try, --ensemble or --copy-to")


if __name__ == "__main__":
    main()
