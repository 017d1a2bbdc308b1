"""Batch scoring with Apache Spark: every image file under a folder through the registered MLflow model.

    python -m aivsreal.serving.batch --input photos/ --output predictions.parquet
    python -m aivsreal.serving.batch --input photos/ --output out.parquet --model models:/ai-vs-real/3 --master local[2]
    python -m aivsreal.serving.batch --input /shared/faces --master spark://head:7077   # a cluster: see the end

The job is spark.py. Output: a Parquet folder with one row per image file: `path`, `label`,
`p_<class>` per class (from the model's signature, e.g. `p_ai`, `p_real`), `warnings`, `engine`,
`expert` and `expert_reason` (which expert answered and why: experts.py), and `error`
(null when scored; the reason when skipped, with null label and probabilities). Read it with
`pandas.read_parquet(PATH)`. The model defaults to params.yaml's registered model at @champion.
A model trained with `data.faces: crop` gives one row per face found instead, with its box:
`path`, `face`, `left`, `top`, `width`, `height`, `label`, `p_<class>`, `warnings`, `engine`,
`expert`, `expert_reason`, `image_label` and `error`; a picture with no face found is one row with the
"no face found" warning.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from aivsreal.images import IMAGE_SUFFIXES
from aivsreal.serving.spark import (
    DEFAULT_BATCH_SIZE,
    BatchScoreError,
    ScoreSummary,
    check_java,
    score_folder,
    spark_session,
)

log = logging.getLogger(__name__)

CLUSTER_HELP = f"""\
Spark master: a SparkSession already running in this process is used as it is; else --master;
else what spark-submit or spark-defaults.conf set; else local[*] (all cores of this machine).

On a cluster the driver downloads the model and Spark ships it to the executors; the executors
need the project's Python environment (torch, mlflow, this package), e.g. a packed virtual
environment, and the input must be readable by every executor (hdfs://, s3a://, or a shared
file system). The same command with a cluster master, or through spark-submit:
  python -m aivsreal.serving.batch --master spark://head:7077 --input /shared/faces --output /shared/scores.parquet
  PYSPARK_PYTHON=./venv/bin/python spark-submit --master yarn --archives venv.tar.gz#venv \\
      src/aivsreal/serving/batch.py --input hdfs:///faces --output hdfs:///scores.parquet

A plain --input/--output path is a local folder; a URI (hdfs://, s3a://, file:) goes to Spark as is.
Only files with an image suffix are read, in any letter case:
{" ".join(IMAGE_SUFFIXES)}. A file that does not decode gets a row with the
reason in `error` (the exit status stays 0).
"""


def is_uri(location: str) -> bool:
    return "://" in location or location.startswith("file:")


def check_local_input(folder: Path) -> None:
    """Fail before Spark starts when a local input folder is missing or holds no image file."""
    if not folder.exists():
        raise BatchScoreError(f"input folder {folder} does not exist: pass the folder that holds your images")
    if not folder.is_dir():
        raise BatchScoreError(f"--input {folder} is a file: pass the folder that holds it")
    for _, _, names in os.walk(folder, followlinks=True):
        if any(Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") for name in names):
            return
    raise BatchScoreError(
        f"no image files under {folder} (looked for {', '.join(IMAGE_SUFFIXES)} in every subfolder): "
        "pass the folder that holds your images"
    )


def default_model() -> str:
    """params.yaml's registered model at @champion (tracking.default_model_uri)."""
    from aivsreal.tracking import default_model_uri

    try:
        return default_model_uri()
    except FileNotFoundError as error:
        raise BatchScoreError(str(error)) from None


def local_model(model_uri: str, folder: Path) -> Path:
    """The MLflow model downloaded into `folder` and checked, or a BatchScoreError saying what to do."""
    import mlflow
    from mlflow.models import Model

    from aivsreal.serving.artifacts import download_model
    from aivsreal.tracking import NO_MODEL_HINT

    try:
        local = download_model(model_uri, folder)
        Model.load(str(local))
    except Exception as error:
        raise BatchScoreError(
            f"cannot load MLflow model {model_uri!r} from {mlflow.get_tracking_uri()}: "
            f"{str(error).splitlines()[0][:300]}\n"
            f"{NO_MODEL_HINT}, or pass --model with an MLflow model URI (models:/NAME@ALIAS, "
            "models:/NAME/VERSION, runs:/RUN_ID/model)."
        ) from None
    return local


def describe(summary: ScoreSummary, output: str) -> str:
    """The closing report: counts, reasons, timings."""
    lines = [f"scored {summary.scored} of {summary.total} image files -> {output}"]
    if summary.skipped:
        lines.append(f"skipped {sum(summary.skipped.values())} (reason in the `error` column):")
        lines += [f"  {count:6d}  {reason}" for reason, count in sorted(summary.skipped.items(), key=lambda x: -x[1])]
    seconds = summary.seconds
    if summary.scored and seconds.get("score_and_write"):
        lines.append(
            f"time: start {seconds.get('start', 0):.1f} s, read and check {seconds['read_and_check']:.1f} s, "
            f"score and write {seconds['score_and_write']:.1f} s "
            f"({summary.scored / seconds['score_and_write']:.1f} images/s)"
        )
    return "\n".join(lines)


def location(value: str) -> str:
    """A plain path made absolute (a local file), a URI as given."""
    return value if is_uri(value) else Path(value).expanduser().resolve().as_uri()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aivsreal.serving.batch",
        description=__doc__,
        epilog=CLUSTER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, metavar="DIR", help="folder of image files, searched recursively")
    parser.add_argument(
        "--output",
        default="predictions.parquet",
        metavar="PATH",
        help="Parquet output (a folder of part files; default: predictions.parquet)",
    )
    parser.add_argument(
        "--model", metavar="URI", help="MLflow model (default: models:/<registered model in params.yaml>@champion)"
    )
    parser.add_argument(
        "--master", metavar="URL", help="Spark master, e.g. local[2], spark://host:7077, yarn (default: see below)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"images per model call (default {DEFAULT_BATCH_SIZE}, at most 256)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)

    # PySpark 4.3 warns on every UDF that pandas 3 is "not fully supported"; the columns used here convert fine.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    started = time.perf_counter()
    try:
        if not is_uri(args.input):  # checks that need neither Spark nor the model come first: they answer at once
            check_local_input(Path(args.input).expanduser())
        if not is_uri(args.output) and Path(args.output).exists() and not args.overwrite:
            raise BatchScoreError(f"{args.output} exists: pass --overwrite to replace it, or choose another --output")
        check_java()
        from aivsreal.serving.pyfunc import MAX_IMAGES_PER_REQUEST  # imports torch: after the cheap checks

        if not 1 <= args.batch_size <= MAX_IMAGES_PER_REQUEST:  # before the model is downloaded
            raise BatchScoreError(f"--batch-size must be between 1 and {MAX_IMAGES_PER_REQUEST}")
        import mlflow  # noqa: F401  (sets its loggers' levels on import: setup_logging must come after)

        from aivsreal.logs import setup_logging

        setup_logging()
        logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines say only that the gateway closes
        model = args.model or default_model()
        with tempfile.TemporaryDirectory(prefix="aivsreal-model-") as folder:
            model_dir = local_model(model, Path(folder))
            spark, created = spark_session(args.master)
            start_seconds = time.perf_counter() - started
            log.info("Spark %s on %s; scoring with %s", spark.version, spark.sparkContext.master, model)
            try:
                summary = score_folder(
                    spark, location(args.input), model_dir, location(args.output), args.batch_size, args.overwrite
                )
            finally:
                if created:
                    spark.stop()
    except BatchScoreError as error:
        print(f"batch: {error}", file=sys.stderr)
        return 2
    summary.seconds["start"] = start_seconds
    print(describe(summary, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
