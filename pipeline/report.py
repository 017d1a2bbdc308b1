"""Stage `report`: reports/report.md and report.html from the split, train and evaluate outputs."""

import json
import logging
import shutil

import mlflow

from aivsreal import plots, tracking
from aivsreal.evaluation import confident_mistakes, describe_gate, promotion_gate
from aivsreal.experts import BOTH, FORENSIC, WILD
from aivsreal.images import BadImageError, load_image
from aivsreal.input_range import DEMO_NOTICE
from aivsreal.model import INPUT_FILTERS
from aivsreal.report import Alert, Figure, Heading, Paragraph, Table, to_html, to_markdown
from pipeline import stage
from pipeline.mlflow_run import training_run
from pipeline.paths import METRICS, PLOTS, REPORTS, SPLIT_SUMMARY, is_sample_data, read_metrics

log = logging.getLogger("pipeline.report")


def face_paragraph(split: dict) -> list:
    """Crop mode (data.faces: crop): what the model was trained and tested on, and what it leaves out."""
    if split.get("faces") != "crop":
        return []
    found = split.get("faces_found", {})
    files = sum(found.values())
    several = sum(n for faces, n in found.items() if int(faces) > 1)
    no_face = [r for r in split["rejected"] if r["reason"].startswith("no face found")]
    by_class = ", ".join(f"{label} {sum(r['label'] == label for r in no_face)}" for label in split["counts"]["train"])
    return [Paragraph(
        f"Faces, not files (data.faces: crop): the counts above are face crops found in {files} file(s), "
        f"{several} of them with more than one face; {len(no_face)} file(s) with no face found were left out "
        f"({by_class}). A class that loses more files to the detector than the other is a bias to keep in mind; "
        "at inference such pictures get no verdict (data/processed/faces.csv lists every file)."
    )]  # fmt: skip


def source_blocks(counts: dict) -> list:
    """A folder of sources: which ones were trained on and which split.test_sources held out whole."""
    if "trained_sources" not in counts:
        return []
    trained, held_out = counts["trained_sources"], counts["test_sources"]
    rows = [
        [source, "trained on", *[sum(per_split.get(name, {}).values()) for name in ("train", "val", "test")]]
        for source, per_split in trained.items()
    ]
    rows += [[source, "held out (test only)", 0, 0, sum(per_class.values())] for source, per_class in held_out.items()]
    if held_out:
        words = (
            f"Held out whole in the test split, never trained or validated on (split.test_sources): "
            f"{', '.join(held_out)}. The other sources were split as above; the test split holds their "
            "share and every held-out image, and copies of a held-out image's bytes in other sources."
        )
    else:
        words = "No source held out (split.test_sources: []): every source is split as above."
    return [Paragraph(f"Sources trained on: {', '.join(trained)}. {words}"),
            Table(["source", "role", "train", "val", "test"], rows)]  # fmt: skip


def split_sentence(params, split: dict) -> str:
    """How the splits were made: kept as the data gives them (split.mode: given), or drawn at random."""
    if split.get("layout") != "given":
        return (f"Images from {split['data_dir']}, split {params.split.train}/{params.split.val}/{params.split.test}"
                f" (seed {params.split.seed}), duplicates kept within one split.")  # fmt: skip
    folders = split["dataset_card"].get("split_folders", {})
    share = params.split.val / (params.split.train + params.split.val)
    carved = (
        "" if "val" in folders else f"; no validation folder: val is {share:.0%} of train/, seed {params.split.seed}"
    )
    named = ", ".join(f"{name} = {folder}/" for name, folder in folders.items())
    return f"Images from {split['data_dir']}, in the data's own splits ({named}{carved}), kept file for file."


def card_blocks(split: dict) -> list:
    """The dataset card (dataset_card.py): how each class's files are stored, the warnings where the classes
    differ, and identical files found in two given splits."""
    card = split.get("dataset_card")
    if not card:
        return []
    rows = []
    for label, group in card["classes"].items():
        quality, side = group["jpeg_quality"], group["min_side"]
        rows.append([
            label, group["files"], ", ".join(f"{name} {n}" for name, n in group["formats"].items()),
            f"{quality['median']:g} ({quality['min']}-{quality['max']})" if quality else "no JPEG",
            f"{side['median']:g} ({side['min']}-{side['max']})",
            f"{group['most_common_size']} ({group['most_common_size_share']:.0%})", group["bytes_per_pixel_median"],
        ])  # fmt: skip
    blocks = [
        Paragraph(
            "Dataset card: how each class's files are stored, over every split"
            + (" (data/processed/split_summary.json has it per source too)." if "sources" in card else ".")
        ),  # fmt: skip
        Table(
            [
                "class",
                "files",
                "formats",
                "JPEG quality, median (range)",
                "shorter side px, median (range)",
                "most common size",
                "bytes per pixel (median)",
            ],
            rows,
        ),  # fmt: skip
    ]
    blocks += [Alert(f"The classes differ in how their files are stored: {warning}. A detector can learn this "
                     "instead of the faces: store both classes alike, or read the scores with that in mind.")
               for warning in card["warnings"]]  # fmt: skip
    duplicates = split.get("cross_split_duplicates", {})
    if duplicates.get("images"):
        pairs = ", ".join(f"{pair} {n}" for pair, n in duplicates["pairs"].items())
        blocks.append(Alert(
            f"{duplicates['images']} image(s) are in more than one of the given splits ({pairs}), for example "
            f"{' = '.join(duplicates['examples'][0])}. They were kept where the data put them; a test image that "
            "is also a training image makes the test score look better than it is."
        ))  # fmt: skip
    return blocks


def per_source_blocks(per_source: dict[str, dict], class_names: list[str]) -> list:
    """Per-source results (metrics/per_source.json), worst first, when the test split has several sources."""
    if len(per_source) < 2:
        return []
    rows = [
        [f"{source} (unseen)" if row["unseen"] else source, row["n_images"], row["accuracy"],
         "-" if row["roc_auc"] is None else row["roc_auc"],
         *["-" if row[f"{name}_recall"] is None else row[f"{name}_recall"] for name in class_names],
         row["wild_accuracy"]]
        for source, row in per_source.items()
    ]  # fmt: skip
    return [
        Heading("Per source"),
        Paragraph(
            "Each source's test images (the folder under data.dir, or under the split folder), worst "
            "first; (unseen): held out whole by split.test_sources, never trained on. Wild accuracy: "
            "the same six conditions as above, both classes alike."
        ),  # fmt: skip
        Table(
            ["source", "images", "accuracy", "ROC AUC", *[f"{name} recall" for name in class_names], "wild accuracy"],
            rows,
        ),  # fmt: skip
    ]


def unseen_source_rows(tested: dict) -> list[list]:
    """Test-metric rows on the held-out sources (split.test_sources), when the test split has some."""
    if "unseen_source_accuracy" not in tested:
        return []
    held_out = f"held-out sources ({', '.join(tested['unseen_sources'])}; {tested['unseen_source_images']} images)"
    rows = [
        [f"accuracy on {held_out}", tested["unseen_source_accuracy"]],
        [f"ROC AUC on {held_out}", tested["unseen_source_roc_auc"]],
        [f"wild accuracy on {held_out}", tested["unseen_source_wild_accuracy"]],
    ]
    if "seen_source_accuracy" in tested:
        rows.append(["accuracy on the trained sources' test images", tested["seen_source_accuracy"]])
    return rows


def main(argv: list[str] | None = None) -> None:
    params = stage.start(__doc__, argv)
    run_info = training_run(params, "report")
    split = json.loads(SPLIT_SUMMARY.read_text())
    trained = json.loads((METRICS / "train.json").read_text())
    tested = read_metrics()
    history = [{k: float(v) for k, v in row.items()} for row in stage.read_csv(PLOTS / "train_history.csv")]
    robustness = stage.read_csv(PLOTS / "robustness.csv")
    p_key = f"p_{params.data.class_names[0]}"
    predictions = [row | {p_key: float(row[p_key])} for row in stage.read_csv(PLOTS / "test_predictions.csv")]

    figures = REPORTS / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plots.save(plots.training_curves_figure(history, trained["best_epoch"]), figures / "training_curves.png")
    for name in ("confusion_matrix.png", "roc.png", "reliability.png", "robustness.png"):
        shutil.copyfile(PLOTS / name, figures / name)
    mistakes = confident_mistakes(predictions, params.data.class_names, params.evaluate.gallery_size)
    plots.save(plots.gallery_figure(_gallery(mistakes, params.data.class_names[0])), figures / "mistakes.png")

    blocks = build_blocks(params, split, trained, tested, run_info["model_digest"], figures) + field_blocks(
        params, tested, robustness, mistakes, figures
    )
    (REPORTS / "report.md").write_text(to_markdown(blocks, REPORTS))
    (REPORTS / "report.html").write_text(to_html(blocks, params.report.title))
    with mlflow.start_run(run_id=run_info["run_id"]):
        mlflow.log_artifact(str(REPORTS / "report.html"), "report")
        mlflow.log_artifact(str(REPORTS / "report.md"), "report")
        mlflow.log_artifacts(str(figures), "report/figures")
        if "dataset_card" in split:  # what the data is, beside the run that trained on it
            mlflow.log_dict(split["dataset_card"], "data/dataset_card.json")
            mlflow.set_tag("dataset_card_warnings", str(len(split["dataset_card"]["warnings"])))
    log.info("wrote %s and %s", REPORTS / "report.md", REPORTS / "report.html")


def _gallery(mistakes: dict[str, list[dict]], positive: str) -> dict[str, list]:
    """Images and captions for the gallery; a file that no longer loads is shown by name only."""
    groups = {}
    for title, rows in mistakes.items():
        items = []
        for row in rows:
            try:
                image = load_image(row["path"])
            except BadImageError:
                continue
            items.append(
                (image, f"{row['path'].rsplit('/', 1)[-1]}\np({positive}) = {float(row[f'p_{positive}']):.2f}")
            )
        groups[title] = items
    return groups


def field_blocks(params, tested, robustness, mistakes, figures):
    """Operating points, calibration, robustness, shortcut check and error gallery (issue 4)."""
    positive = params.data.class_names[0]
    shortcut = tested["metadata_shortcut"]
    blocks = [
        Heading("Operating points"),
        Paragraph(
            f"Positive class: {positive}. TPR at x % FPR: the share of {positive} images caught while at most "
            "x % of real photos are wrongly flagged. EER: where misses and false alarms are equal."
        ),
        Table(
            ["metric", "value"],
            [
                ["balanced accuracy", tested["balanced_accuracy"]],
                *[[f"{name}-class accuracy", tested[f"{name}_accuracy"]] for name in params.data.class_names],
                ["TPR at 10 % FPR", tested["tpr_at_fpr_10pct"]],
                ["TPR at 5 % FPR", tested["tpr_at_fpr_5pct"]],
                ["TPR at 1 % FPR", tested["tpr_at_fpr_1pct"]],
                ["equal error rate", tested["eer"]],
            ],
        ),
        Heading("Calibration"),
        Paragraph(
            f"Fitted by the train stage on the validation split"
            f"{' and its wild copies (JPEG, WebP, shrunk, social)' if params.calibration.perturbed else ''}: "
            f"temperature {tested['temperature']:.3f} (at least {params.calibration.min_temperature:g}), decision "
            f"threshold p({positive}) >= {tested['threshold']:.3f} (rule {params.calibration.threshold_rule}); "
            f"no probability above {params.calibration.max_confidence:g} is reported. All of it travels with "
            "the model: the server, the CLI and the web app use it."
        ),
        Table(
            ["expected calibration error", "value"],
            [
                ["test split, before (T = 1)", tested["ece_uncalibrated"]],
                ["test split, after temperature scaling", tested["ece_calibrated"]],
                ["robustness sweep, every level pooled", tested["ece_sweep_pooled"]],
            ],
        ),  # fmt: skip
        Figure(figures / "reliability.png", "Reliability diagram: test split before and after scaling, sweep pooled"),
        Heading("Robustness"),
        Paragraph(
            "The test images of both classes, degraded before preprocessing; mean PSNR shows how much each "
            "level changed the pixels (inf = unchanged, the clean reference; a shrunk image is compared "
            "after scaling it back). Wild accuracy is the mean accuracy over JPEG 95, 85, 75, WebP 80, "
            "shrink 0.5 and social."
        ),
        Table(
            [
                "degradation",
                "level",
                "accuracy",
                "ROC AUC",
                f"{params.data.class_names[0]} recall",
                f"{params.data.class_names[1]} recall",
                "mean PSNR (dB)",
            ],
            [
                [
                    r["kind"],
                    r["level"],
                    float(r["accuracy"]),
                    float(r["roc_auc"]),
                    float(r["positive_recall"]),
                    float(r["negative_recall"]),
                    float(r["mean_psnr_db"]),
                ]
                for r in robustness
            ],  # fmt: skip
        ),
        Figure(
            figures / "robustness.png",
            "Accuracy and ROC AUC under JPEG, blur, downscaling, WebP, shrinking and a social-media chain",
        ),
        Heading("Shortcut check"),
    ]
    verdict = (
        f"A depth-3 decision tree on file metadata alone (size, format, dimensions, JPEG tables) reaches "
        f"{shortcut['balanced_accuracy']:.1%} balanced accuracy on the test split, mostly from "
        f"`{shortcut['top_feature']}`."
    )
    if shortcut["warning"]:
        blocks.append(
            Alert(
                verdict + " The dataset leaks the label through how the files are stored: part of the "
                "model's score may come from that, not from the faces. Re-encode both classes the same "
                "way before trusting the numbers."
            )
        )
    else:
        blocks.append(Paragraph(verdict + " That is close to chance: no sign of a storage shortcut."))
    blocks += [
        Heading("Most confident mistakes"),
        Paragraph(
            ", ".join(f"{title}: {len(rows)}" for title, rows in mistakes.items()) + " shown (at most "
            f"{params.evaluate.gallery_size} each)."
        ),
        Figure(figures / "mistakes.png", "Most confident mistakes of each kind on the test split"),
    ]
    return blocks  # fmt: skip


def expert_paragraph(tested: dict) -> list:
    """A two-expert model (model.forensic): which expert answered the test images as stored."""
    counts = tested.get("experts_as_stored")
    if not counts:
        return []
    originals = counts.get(FORENSIC, 0) + counts.get(BOTH, 0)
    who = "both experts, averaged (model.forensic_mix: mean)" if BOTH in counts else "the forensic expert"
    return [Paragraph(
        f"Two experts: of the test images as stored, {originals} are originals (lossless files, not resized) "
        f"answered by {who} and {counts.get(WILD, 0)} went to the wild expert; the wild conditions "
        "(re-encoded or shrunk copies) all go to the wild expert. Each row of plots/test_predictions.csv "
        "names its expert."
    )]  # fmt: skip


def face_vote_paragraph(trained: dict) -> list:
    """model.face_vote: how the vote was set up on validation (metrics/train.json's face_vote_* figures)."""
    if "face_vote_k" not in trained:
        return []
    return [Paragraph(
        f"Face vote (model.face_vote): every answer averages the network's p(AI) with the share of AI faces "
        f"among the {trained['face_vote_k']:.0f} training faces nearest to it in a face network's description "
        f"(HSE FaceRes), deciding at the mean of both thresholds (the vote's: {trained['face_vote_threshold']:.2f}). "
        f"On the validation faces' degraded copies the vote alone reached ROC AUC "
        f"{trained['face_vote_val_roc_auc']:.3f} and accuracy {trained['face_vote_val_accuracy']:.3f}; the test "
        "metrics below are the joined answer's. Measured on facebench, the vote helps on unseen GAN faces and "
        "hurts on unseen diffusion faces (docs/training.md)."
    )]  # fmt: skip


def chosen_weights(trained: dict) -> str:
    """Which weights the model kept: the best validation epoch, or the average of several (train.swa_start)."""
    best = (
        f"{trained['best_epoch']} of {trained['epochs_run']} (validation loss {trained['best_val_loss']:.4f}, "
        f"validation accuracy {trained['best_val_accuracy']:.4f})"
    )
    averaged = trained.get("averaged_epochs") or []  # absent in metrics written before train.swa_start
    if averaged:
        return (
            f"Weights averaged over epochs {averaged[0]}-{averaged[-1]} of {trained['epochs_run']} (stochastic "
            f"weight averaging, batch-norm statistics recomputed); the best single epoch was {best}."
        )
    return f"Best epoch {best}."


def build_blocks(params, split, trained, tested, digest: str, figures):
    class_names = params.data.class_names
    counts = split["counts"]
    seed = params.report.seed_accuracy
    accuracy = tested["accuracy"]
    verdict = "better than" if accuracy > seed else "not better than"
    demo = [Alert(f"This is a {DEMO_NOTICE}.")] if is_sample_data(params.data.dir) else []
    return [
        Heading(params.report.title, 1),
        *demo,
        Paragraph(
            f"Model {params.mlflow.registered_model}, weights digest `{digest[:16]}` "
            f"(the training run's MLflow tag `{tracking.MODEL_DIGEST_TAG}`; its version number and run: "
            f"`python -m pipeline.summary` or `make ui`). Pretrained weights used: {trained['pretrained_used']}. "
            f"Promoted to @champion: {'yes' if tested['promoted'] else 'no'} "
            f"(gate: {describe_gate(promotion_gate(params.evaluate, unseen_sources=bool(params.split.test_sources)))})."
        ),
        Heading("Data"),
        Paragraph(split_sentence(params, split)),
        Table(
            ["split", *class_names, "total"],
            [[name, *[counts[name].get(c, 0) for c in class_names], sum(counts[name].values())]
             for name in ("train", "val", "test", "rejected")],
        ),
        Paragraph(f"{counts['total_rejected']} file(s) left out; reasons in data/processed/split_summary.json."),
        *source_blocks(counts),
        *card_blocks(split),
        *face_paragraph(split),
        Heading("Training"),
        Paragraph(
            f"ResNet18, fine-tuning `{params.train.finetune}`, {params.train.optimizer} (learning rate "
            f"{params.train.lr:g}, {params.train.lr_schedule} schedule), batch {params.train.batch_size}, "
            f"{params.train.image_size} px training crops, "
            f"{params.train.eval_size or params.train.image_size} px at inference, input "
            f"{INPUT_FILTERS[params.model.input_filter].description}. {chosen_weights(trained)}"
        ),
        *face_vote_paragraph(trained),
        Figure(figures / "training_curves.png", "Loss and accuracy per epoch"),
        Heading("Test metrics"),
        Table(["metric", "value"], [["accuracy (test images as stored)", accuracy], ["ROC AUC", tested["roc_auc"]],
                                    ["wild accuracy (mean over JPEG 95/85/75, WebP 80, half size, social chain; "
                                     "both classes alike)", tested["wild_accuracy"]],
                                    ["average precision", tested["average_precision"]],
                                    ["images", tested["n_images"]], *unseen_source_rows(tested)]),
        *expert_paragraph(tested),
        Table(["class", "precision", "recall", "F1", "support"],
              [[c, tested[c]["precision"], tested[c]["recall"], tested[c]["f1"], tested[c]["support"]]
               for c in class_names]),
        *per_source_blocks(json.loads((METRICS / "per_source.json").read_text()), class_names),
        Figure(figures / "confusion_matrix.png", "Confusion matrix on the test split"),
        Figure(figures / "roc.png", "ROC curve on the test split"),
        Heading("Compared with the seed project"),
        Paragraph(
            f"The seed reported {seed:.2%} test accuracy (F1 0.70 AI / 0.69 real) on its own data. "
            f"This run: {accuracy:.2%}, {verdict} the seed's figure. The datasets differ, so the comparison "
            "only means something when this pipeline runs on comparable face data."
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
