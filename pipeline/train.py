"""Stage `train`: fit ResNet18 on the train split, log one MLflow run, register the model.

Interrupted (Ctrl-C, SIGTERM) it marks its MLflow run KILLED and registers nothing; a run
left RUNNING by a process that died without a word (kill -9) is marked KILLED by the next
train on the same host. The model is registered only once training and calibration are
done, and DVC records nothing for an unfinished stage, so the next `dvc repro` trains again
from scratch.
"""

import hashlib
import logging
import signal
import sys
from pathlib import Path

import mlflow
import pandas as pd

from aivsreal import distributed, face_vote, tracking
from aivsreal.engines import OnnxNetwork, export_onnx
from aivsreal.experts import FORENSIC_FOLDER, FORENSIC_RECIPE, forensic_recipe
from aivsreal.face_vote import FaceWeightsError, fit_face_vote
from aivsreal.fit_calibration import calibrate, int8_accuracy_change, quantize, validation_copies
from aivsreal.hardware import HardwareError, StepSettings
from aivsreal.input_range import DEMO_NOTICE
from aivsreal.manifests import read_manifest
from aivsreal.model import WeightsUnavailableError, save_model
from aivsreal.predictor import Predictor
from aivsreal.serving.artifacts import log_pyfunc_model
from aivsreal.serving.pyfunc import encode_image, signature
from aivsreal.training import train
from pipeline import stage
from pipeline.paths import MANIFESTS, METRICS, MODEL_DIR, PLOTS, dvc_outputs, is_sample_data

log = logging.getLogger("pipeline.train")


def data_hash() -> str:
    """Hash of the three manifests: paths, labels and content hashes of every image."""
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        digest.update(MANIFESTS[name].read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    params = stage.start(__doc__, argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, a CI cancel, torchrun stopping its workers
    try:
        _main(params, argv)
    except KeyboardInterrupt:
        sys.exit("train: interrupted; its MLflow run is marked KILLED. `dvc repro` trains again from scratch.")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _main(params, argv: list[str] | None) -> None:
    if params.train.launcher == "torchrun" and not distributed.in_torchrun():
        check_tracking(params)  # before starting processes that would wait on a rank 0 that gave up
        # the same stage again, as nproc processes under torchrun; rank 0 does all the writing
        sys.exit(distributed.relaunch("pipeline.train", params.train.nproc, sys.argv[1:] if argv is None else argv))
    context = distributed.setup(params.train.device)
    try:
        try:  # a setting this device cannot honour (fp16 on a CPU) stops here, before an MLflow run starts
            StepSettings.resolve(params.train.precision, params.train.num_workers, context.device)
        except HardwareError as error:
            sys.exit(f"train: {error}")
        if context.is_main:
            run_stage(params, context)
        else:  # another rank: train on its shard, write nothing, log nothing
            train(params, read_manifest(MANIFESTS["train"]), read_manifest(MANIFESTS["val"]), context=context)
    finally:
        distributed.teardown(context)


def check_tracking(params) -> Path:
    """Configure MLflow and make sure its store answers; the project root."""
    root = tracking.project_root()
    uri = tracking.configure_tracking(params.mlflow.tracking_uri, root)
    try:
        tracking.check_tracking_store(uri)
    except RuntimeError as error:
        sys.exit(f"train: {error}")
    return root


def run_stage(params, context: distributed.Context) -> None:
    root = check_tracking(params)  # before any training time is spent
    train_rows, val_rows = read_manifest(MANIFESTS["train"]), read_manifest(MANIFESTS["val"])

    experiment_id = tracking.experiment_id(params.mlflow.experiment, root)
    tracking.close_orphan_runs(experiment_id)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        try:
            info, result, best, calibrated = _train_and_register(params, context, root, train_rows, val_rows)
        except KeyboardInterrupt:
            mlflow.set_tag("interrupted", "signal")
            mlflow.end_run("KILLED")
            raise
        version = str(info.registered_model_version)

    stage.write_json(
        METRICS / "train.json",
        {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "averaged_epochs": result.averaged_epochs,  # train.swa_start: the model is these epochs' mean weights
            "best_val_loss": best["val_loss"],
            "best_val_accuracy": best["val_accuracy"],
            "train_accuracy_at_best": best["train_accuracy"],
            "pretrained_used": result.config.pretrained_used,
            "precision_used": result.precision,  # train.precision and num_workers as resolved for the device
            "num_workers_used": result.num_workers,
            "augment_on_used": result.augment_on,  # train.augment_on and cache_images as resolved
            "cache_images_used": result.cache_images,
            "augment_graphs_used": result.augment_graphs,
            **calibrated,
        },
    )
    PLOTS.mkdir(exist_ok=True)
    # Timings stay in MLflow (per-epoch metric `seconds`): git-tracked outputs hold only what a rerun reproduces.
    stage.write_csv(
        PLOTS / "train_history.csv", [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]
    )
    log.info(
        "run %s: best epoch %d, val accuracy %.3f; registered %s version %s",
        run.info.run_id, result.best_epoch, best["val_accuracy"], params.mlflow.registered_model, version,
    )  # fmt: skip


def _train_and_register(params, context, root: Path, train_rows, val_rows):
    """Inside the MLflow run: train, calibrate, save, log and register the model."""
    mlflow.log_params(params.flat())
    commit = tracking.git_commit(root, ignore=dvc_outputs(root))  # dvc repro deletes outputs: not "dirty"
    mlflow.set_tags({"git_commit": commit, "data_hash": data_hash(), "stage": "train",
                     "processes": str(context.world_size), "device": str(context.device),
                     **tracking.process_tags()})  # fmt: skip
    try:
        result, calibrated = fit_expert(params, context, train_rows, val_rows, MODEL_DIR, _log_epoch)
        mlflow.log_metrics(calibrated)
        if params.model.forensic:
            forensic_params = forensic_recipe(params)
            log.info("model.forensic: training the forensic expert (%s) for original files", FORENSIC_RECIPE)
            mlflow.log_params({f"forensic.{key}": value for key, value in forensic_params.flat().items()
                               if key.startswith(("model.", "train."))})  # fmt: skip
            forensic, forensic_calibrated = fit_expert(
                forensic_params, context, train_rows, val_rows, MODEL_DIR / FORENSIC_FOLDER, _log_forensic_epoch
            )
            mlflow.log_metrics({f"forensic_{key}": value for key, value in forensic_calibrated.items()})
            calibrated |= {f"forensic_{key}": value for key, value in forensic_calibrated.items()}
            calibrated["forensic_best_epoch"] = forensic.best_epoch
            result.config.forensic = FORENSIC_FOLDER
            result.config.forensic_mix = params.model.forensic_mix
        if params.model.face_vote:
            calibrated |= add_face_vote(params, result, train_rows, val_rows, MODEL_DIR)
    except (WeightsUnavailableError, FaceWeightsError) as error:
        sys.exit(f"train: {error}")
    weights_used = result.config.pretrained_used
    mlflow.log_param("pretrained_used", weights_used)
    mlflow.log_params({"precision_used": result.precision, "num_workers_used": result.num_workers,
                       "augment_on_used": result.augment_on, "cache_images_used": result.cache_images,
                       "augment_graphs_used": result.augment_graphs})  # fmt: skip
    mlflow.set_tag("pretrained_used", weights_used)
    mlflow.set_tag("experts", "forensic+wild" if params.model.forensic else "single")
    mlflow.set_tag("face_vote", str(bool(result.config.face_vote)).lower())
    best = result.history[result.best_epoch - 1]
    mlflow.log_metrics({"best_epoch": result.best_epoch, "best_val_loss": best["val_loss"]})
    mlflow.set_tag("demo_model", str(result.config.demo).lower())
    if result.config.demo:
        log.warning(DEMO_NOTICE)
    if result.config.forensic or result.config.face_vote:
        save_model(result.model, result.config, MODEL_DIR)  # its config now names the forensic expert, the vote
    # evaluate and report find this run by the weights' digest: no run id or version in a git-tracked output
    digest = tracking.model_digest(MODEL_DIR)
    _warn_if_registered_before(params, digest)
    mlflow.set_tag(tracking.MODEL_DIGEST_TAG, digest)
    example = pd.DataFrame({"image": [encode_image(Path(val_rows[0]["path"]).read_bytes())]})
    answers = signature(result.config.class_names, result.config.faces)
    info = log_pyfunc_model(MODEL_DIR, answers, example, params.mlflow.registered_model)
    return info, result, best, calibrated


def add_face_vote(params, result, train_rows, val_rows, folder: Path) -> dict[str, float]:
    """model.face_vote: the face vote fitted on the training and validation faces, saved into `folder`
    (face_vote.FOLDER) and named in the model's config; what validation measured, into metrics."""
    digests = face_vote.ensure_weights(Path(params.model.face_vote_graph))
    mlflow.log_params({f"face_vote_sha256.{name}": digest[:16] for name, digest in digests.items()})
    vote, figures = fit_face_vote(params, train_rows, val_rows, folder / face_vote.FOLDER)
    result.config.face_vote = face_vote.FOLDER
    mlflow.log_metrics(figures)
    log.info("face vote: k %d, threshold %.3f; on validation's degraded copies alone ROC AUC %.3f, accuracy %.3f",
             vote.k, vote.threshold, figures["face_vote_val_roc_auc"], figures["face_vote_val_accuracy"])  # fmt: skip
    return figures


def fit_expert(params, context, train_rows, val_rows, folder: Path, on_epoch) -> tuple:
    """Train one network, calibrate it on the validation images (and their wild copies), export its ONNX graph
    (and int8 copy) into `folder` and save it there; (TrainResult, calibration and int8 figures)."""
    result = train(params, train_rows, val_rows, on_epoch=on_epoch, context=context)
    wild = validation_copies(Predictor(result.model, result.config), val_rows)  # read and degraded once
    calibrated = calibrate(result, val_rows, params.calibration, wild)
    log.info(
        "calibrated on validation: temperature %.3f, threshold p(%s) >= %.3f (rule %s), ECE %.3f -> %.3f",
        calibrated["temperature"], result.config.class_names[0], calibrated["threshold"],
        params.calibration.threshold_rule, calibrated["val_ece_uncalibrated"], calibrated["val_ece_calibrated"],
    )  # fmt: skip
    result.config.demo = is_sample_data(params.data.dir)
    folder.mkdir(parents=True, exist_ok=True)  # the network also as an ONNX graph: ONNX Runtime serves it
    result.config.onnx_file = export_onnx(result.model, result.config.eval_crop, folder).name
    if params.model.int8:
        calibrated |= _quantize(result, wild, val_rows, params.model, folder)  # into metrics/train.json
    save_model(result.model, result.config, folder)
    return result, calibrated


def _quantize(result, wild: dict, val_rows: list[dict], settings, folder: Path) -> dict:
    """The int8 graph, its activation ranges calibrated on validation images preprocessed as at inference,
    kept (config.int8_file) only if accuracy on the validation images and their wild copies falls by at
    most `model.int8_max_drop` points against the float graph; the measured change either way."""
    images = wild[("none", 0)][: settings.int8_images]
    path = quantize(Predictor(result.model, result.config), images, folder)
    float_graph = Predictor(result.model, result.config, OnnxNetwork(folder / result.config.onnx_file), "onnx")
    int8_graph = Predictor(result.model, result.config, OnnxNetwork(path), "onnx-int8")
    change = int8_accuracy_change(float_graph, int8_graph, wild, val_rows)
    drop = change["int8_val_accuracy_drop_points"]
    if drop <= settings.int8_max_drop:
        result.config.int8_file = path.name
        log.info("int8 graph %s kept: validation accuracy (wild copies pooled) %+.2f points against the float "
                 "graph; calibrated on %d images", path.name, -drop, len(images))  # fmt: skip
    else:
        path.unlink()
        log.warning(
            "int8 graph dropped: validation accuracy (wild copies pooled) fell %.2f points (> model.int8_max_drop "
            "%.2f); the model answers on the float ONNX graph", drop, settings.int8_max_drop,
        )  # fmt: skip
    return change | {"int8_kept": float(drop <= settings.int8_max_drop)}


def _warn_if_registered_before(params, digest: str) -> None:
    """Identical weights (same data, params and seed) leave the evaluate stage's inputs unchanged, so
    `dvc repro` will not evaluate or promote the version about to be registered: say so and how."""
    try:
        earlier = tracking.training_run(MODEL_DIR, params.mlflow.experiment, params.mlflow.registered_model, digest)
    except RuntimeError:
        return
    log.warning(
        "these weights are identical to %s version %s (run %s): unless other inputs of the evaluate stage "
        "changed, `dvc repro` will not evaluate the new version (its metrics cannot change); "
        "`dvc repro --force-downstream` evaluates and promotes it",
        earlier["registered_model"], earlier["model_version"], earlier["run_id"],
    )  # fmt: skip


def _log_epoch(row: dict) -> None:
    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


def _log_forensic_epoch(row: dict) -> None:
    mlflow.log_metrics({f"forensic_{k}": v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


if __name__ == "__main__":
    main()
