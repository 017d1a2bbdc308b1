"""Batch scoring with Apache Spark: every image file under a folder through the registered MLflow model.

    python -m aivsreal.batch_score --input photos/ --output predictions.parquet
    python -m aivsreal.batch_score --input photos/ --output out.parquet --model models:/ai-vs-real/3 --master local[2]
    python -m aivsreal.batch_score --input /shared/faces --master spark://head:7077   # a cluster: see the end

Spark reads the files (`binaryFile`, recursively, image suffixes only), a pandas UDF decodes each
one with the same `load_image` the model uses, and only the files that decode go to the model
through MLflow's own `mlflow.pyfunc.spark_udf` (env_manager="local"). The served model rejects a
whole request when one image is bad; here a bad file becomes a row with an `error` instead.

Output: a Parquet folder with one row per image file: `path`, `label`, `p_<class>` per class
(from the model's signature, e.g. `p_ai`, `p_real`) and `error` (null when scored; the reason
when skipped, with null label and probabilities). Read it with `pandas.read_parquet(PATH)`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pandas as pd  # at module level: pandas_udf resolves the `pd.Series` hints in this module's globals

from aivsreal.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

if TYPE_CHECKING:
    from aivsreal.model import ModelConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = "models:/ai-vs-real@champion"
DEFAULT_MASTER = "local[*]"
# Rows per Arrow batch, i.e. images per model call; the pyfunc model takes at most 256 per call.
DEFAULT_BATCH_SIZE = 64
# Files per Spark partition at most: the model is loaded once per partition, so few large partitions
# are cheaper, but at least one per core so every core works.
MAX_FILES_PER_PARTITION = 1000
LOCAL_FILE_SCHEME = r"^file:(//)?"  # Spark writes local files as file:/a/b.png or file:///a/b.png
EMPTY_FILE = "empty file (0 bytes)"  # the reason `load_image` gives for a 0-byte file

CLUSTER_HELP = f"""\
Spark master: a SparkSession already running in this process is used as it is; else --master;
else what spark-submit or spark-defaults.conf set; else local[*] (all cores of this machine).

On a cluster the driver downloads the model and Spark ships it to the executors; the executors
need the project's Python environment (torch, mlflow, this package), e.g. a packed virtual
environment, and the input must be readable by every executor (hdfs://, s3a://, or a shared
file system). The same command with a cluster master, or through spark-submit:
  python -m aivsreal.batch_score --master spark://head:7077 --input /shared/faces --output /shared/scores.parquet
  PYSPARK_PYTHON=./venv/bin/python spark-submit --master yarn --archives venv.tar.gz#venv \\
      src/aivsreal/batch_score.py --input hdfs:///faces --output hdfs:///scores.parquet

A plain --input/--output path is a local folder; a URI (hdfs://, s3a://, file:) goes to Spark as is.
Only files with an image suffix are read, in any letter case:
{" ".join(IMAGE_SUFFIXES)}. A file that does not decode gets a row with the
reason in `error` (the exit status stays 0).
"""


class BatchScoreError(Exception):
    """A problem the user can fix; main() prints the message without a traceback."""


@dataclass
class ScoreSummary:
    scored: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of files
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall seconds

    @property
    def total(self) -> int:
        return self.scored + sum(self.skipped.values())


def image_glob(suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str:
    """A Hadoop glob matching the suffixes in any letter case: `*.{[jJ][pP][gG],...}`."""

    def any_case(text: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in text)

    return "*.{" + ",".join(any_case(s.lstrip(".")) for s in suffixes) + "}"


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


def check_java() -> None:
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise BatchScoreError(
            "Java not found: Spark needs a Java runtime. Install Java 17 "
            "(e.g. `sudo apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
        )


def download_model(model_uri: str, folder: Path) -> Path:
    """The MLflow model as a local folder, from the store `configure_tracking` points at."""
    import mlflow
    from mlflow.models import Model

    from aivsreal.tracking import configure_tracking, require_store

    store = configure_tracking()
    try:
        if model_uri.startswith(("models:/", "runs:/")):
            require_store(store)  # never create an empty store just to look a model up in it
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder)))
        Model.load(str(local))
    except Exception as error:
        raise BatchScoreError(
            f"cannot load MLflow model {model_uri!r} from {store}: {str(error).splitlines()[0][:300]}\n"
            "Train and register one with `make pipeline` (or `dvc repro`), or pass --model with an MLflow "
            "model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model)."
        ) from None
    return local


def model_config(model_dir: Path) -> ModelConfig | None:
    """The saved config the model decodes images under (pixel limit, smallest side), so the check
    here refuses exactly what the model's own `load` would; None for a model without one."""
    from aivsreal.model import CONFIG_FILE, ModelConfig
    from aivsreal.tracking import saved_model_folder

    config_path = saved_model_folder(model_dir) / CONFIG_FILE
    if not config_path.is_file():
        return None
    return ModelConfig(**json.loads(config_path.read_text()))


def spark_session(master: str | None):
    """(session, created): a running session as is, else a new one on `master`, spark-submit's, or local[*]."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        if master:
            log.warning("a SparkSession is already running: --master %s ignored", master)
        return active, False
    check_java()
    try:
        conf = SparkConf()  # starts the JVM; holds what spark-submit or spark-defaults.conf set
    except Exception as error:
        raise BatchScoreError(
            f"cannot start Spark's Java process ({str(error).splitlines()[0][:200]}): "
            "install Java 17 (e.g. `sudo apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
        ) from None
    master = master or conf.get("spark.master", None) or DEFAULT_MASTER
    if master.startswith("local"):
        # Workers on this machine: run them with this interpreter (its packages), not `python3` on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = SparkSession.builder.appName("aivsreal-batch-score").master(master).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark, True


def image_error_udf(config: ModelConfig | None):
    """A pandas UDF: file bytes -> null when the model can use them, else the reason in a few words."""
    from pyspark.sql.functions import pandas_udf

    max_pixels = config.max_pixels if config is not None else DEFAULT_MAX_PIXELS

    @pandas_udf("string")
    def image_error(content: pd.Series) -> pd.Series:
        from aivsreal.images import BadImageError, load_image
        from aivsreal.input_range import refuse_if_too_small

        def reason(data: bytes) -> str | None:
            try:
                image = load_image(bytes(data), max_pixels=max_pixels)  # the checks the model's `load` runs
                if config is not None:
                    refuse_if_too_small(image, config)
            except BadImageError as error:
                return str(error)
            return None

        return content.map(reason)

    return image_error


def plain_path(column):
    """`file:/a/b.png` -> `/a/b.png` so the path joins with local file lists; other schemes stay."""
    from pyspark.sql import functions as F

    return F.regexp_replace(column, LOCAL_FILE_SCHEME, "")


def score_folder(
    spark, input_uri: str, model_dir: Path, output_uri: str, batch_size: int = DEFAULT_BATCH_SIZE, overwrite=False
) -> ScoreSummary:
    """Check and score every image file under `input_uri`, write the Parquet output, return the counts."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    files, listed = read_image_files(spark, input_uri)
    # Kept so the files are read and checked once, then scored from memory (spilling to disk if large).
    checked = files.select(
        plain_path(F.col("path")).alias("path"),
        "content",
        image_error_udf(model_config(model_dir))("content").alias("error"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    with arrow_batch_size(spark, batch_size):  # images per call of both UDFs
        try:
            errors = checked.groupBy("error").count().collect()  # the first job: reads and checks every file
            scored = sum(row["count"] for row in errors if row["error"] is None)
            skipped = Counter()
            for row in errors:
                if row["error"] is not None:
                    skipped[reason_kind(row["error"])] += row["count"]
            rows_read = sum(row["count"] for row in errors)
            bad = checked.filter(F.col("error").isNotNull()).select("path", "error")
            if rows_read < len(listed):
                bad = bad.unionByName(empty_files(spark, listed, checked))
                skipped[reason_kind(EMPTY_FILE)] += len(listed) - rows_read
            checked_at = time.perf_counter()
            log.info("read and checked %d files in %.1f s: %d to score", len(listed), checked_at - started, scored)
            good = checked.filter(F.col("error").isNull())
            write_predictions(good, bad, model_dir, output_uri, overwrite)  # the second job
        finally:
            checked.unpersist()
    seconds = {"read_and_check": checked_at - started, "score_and_write": time.perf_counter() - checked_at}
    return ScoreSummary(scored, dict(skipped), seconds)


def read_image_files(spark, input_uri: str):
    """(DataFrame of path and content, the listed file URIs): image suffixes only, every subfolder."""
    from pyspark.errors import AnalysisException

    try:
        files = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", image_glob())
            .load(input_uri)
        )
    except AnalysisException as error:
        raise BatchScoreError(f"cannot read {input_uri}: {str(error).splitlines()[0][:300]}") from None
    listed = files.inputFiles()  # the driver's listing; no file is read yet
    if not listed:
        raise BatchScoreError(f"no image files under {input_uri} (looked for {', '.join(IMAGE_SUFFIXES)})")
    partitions = max(spark.sparkContext.defaultParallelism, math.ceil(len(listed) / MAX_FILES_PER_PARTITION))
    if files.rdd.getNumPartitions() > partitions:
        files = files.coalesce(partitions)  # fewer model loads; no shuffle
    log.info("%d image files under %s in %d partitions", len(listed), input_uri, files.rdd.getNumPartitions())
    return files, listed


def write_predictions(good, bad, model_dir: Path, output_uri: str, overwrite: bool) -> None:
    """Score `good` (path, content) with the MLflow model's Spark UDF; write it with `bad` (path, error)."""
    import mlflow.pyfunc
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    with quiet_local_env_warning():
        predict = mlflow.pyfunc.spark_udf(good.sparkSession, str(model_dir), env_manager="local")
    # The model's input column `image` holds base64 text; its output is a struct of label and p_<class>.
    scored = good.select("path", predict(F.struct(F.base64("content").alias("image"))).alias("prediction"))
    no_prediction = F.lit(None).cast(scored.schema["prediction"].dataType)
    result = scored.withColumn("error", F.lit(None).cast("string")).unionByName(
        bad.select("path", no_prediction.alias("prediction"), "error")
    )
    mode = "overwrite" if overwrite else "errorifexists"
    try:
        result.select("path", "prediction.*", "error").write.mode(mode).parquet(output_uri)
    except AnalysisException as error:
        hint = " (pass --overwrite to replace it)" if "already exists" in str(error) else ""
        raise BatchScoreError(f"cannot write {output_uri}: {str(error).splitlines()[0][:300]}{hint}") from None


def reason_kind(error: str) -> str:
    """The kind of problem, without its details: "empty file (0 bytes)" -> "empty file"."""
    return re.split(r"[:(]", error, maxsplit=1)[0].strip()


def empty_files(spark, listed: list[str], checked):
    """Rows (path, error) for the listed files that the scan left out.

    Spark's file sources drop 0-byte files before reading (SPARK-26161), so they would be
    missing from the output: they are found by comparing the listing with the rows read.
    """
    from pyspark.sql import functions as F

    paths = [(re.sub(LOCAL_FILE_SCHEME, "", unquote(uri)),) for uri in listed]  # listed URIs are %-encoded
    listing = spark.createDataFrame(paths, "path string")
    return listing.join(checked.select("path"), "path", "left_anti").withColumn("error", F.lit(EMPTY_FILE))


@contextlib.contextmanager
def quiet_local_env_warning():
    """spark_udf warns that env_manager="local" does not rebuild the training environment: here that is the point."""

    def drop(record: logging.LogRecord) -> bool:
        return 'env_manager="local"' not in record.getMessage()

    logger = logging.getLogger("mlflow.pyfunc")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def arrow_batch_size(spark, rows: int):
    """Rows per Arrow batch (images per UDF call, so per model call) for a block; the session's value after."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


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
        prog="python -m aivsreal.batch_score",
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
        "--model", default=DEFAULT_MODEL, metavar="URI", help=f"MLflow model (default: {DEFAULT_MODEL})"
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
        from aivsreal.serving import MAX_IMAGES_PER_REQUEST  # imports torch: after the cheap checks

        if not 1 <= args.batch_size <= MAX_IMAGES_PER_REQUEST:  # before the model is downloaded
            raise BatchScoreError(f"--batch-size must be between 1 and {MAX_IMAGES_PER_REQUEST}")
        import mlflow  # noqa: F401  (sets its loggers' levels on import: setup_logging must come after)

        from aivsreal.logs import setup_logging

        setup_logging()
        logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines say only that the gateway closes
        with tempfile.TemporaryDirectory(prefix="aivsreal-model-") as folder:
            model_dir = download_model(args.model, Path(folder))
            spark, created = spark_session(args.master)
            start_seconds = time.perf_counter() - started
            log.info("Spark %s on %s; scoring with %s", spark.version, spark.sparkContext.master, args.model)
            try:
                summary = score_folder(
                    spark, location(args.input), model_dir, location(args.output), args.batch_size, args.overwrite
                )
            finally:
                if created:
                    spark.stop()
    except BatchScoreError as error:
        print(f"batch_score: {error}", file=sys.stderr)
        return 2
    summary.seconds["start"] = start_seconds
    print(describe(summary, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
