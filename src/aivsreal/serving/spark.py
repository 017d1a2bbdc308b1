"""The Spark job: every image file under a folder scored through an MLflow model's Spark UDF.

A crop-mode model (`data.faces: crop`) writes one row per face found, with its box (face_rows).

Spark reads the files (`binaryFile`, recursively, image suffixes only), a pandas UDF decodes each
one with the same `load_image` the model uses, and only the files that decode go to the model
through MLflow's own `mlflow.pyfunc.spark_udf` (env_manager="local"). The served model rejects a
whole request when one image is bad; here a bad file becomes a row with an `error` instead.
`batch.py` is its command.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import sys
import time
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

DEFAULT_MASTER = "local[*]"
# Rows per Arrow batch, i.e. images per model call; the pyfunc model takes at most 256 per call.
DEFAULT_BATCH_SIZE = 64
# Files per Spark partition at most: the model is loaded once per partition, so few large partitions
# are cheaper, but at least one per core so every core works.
MAX_FILES_PER_PARTITION = 1000
LOCAL_FILE_SCHEME = r"^file:(//)?"  # Spark writes local files as file:/a/b.png or file:///a/b.png
EMPTY_FILE = "empty file (0 bytes)"  # the reason `load_image` gives for a 0-byte file


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


def check_java() -> None:
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise BatchScoreError(
            "Java not found: Spark needs a Java runtime. Install Java 17 "
            "(e.g. `sudo apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
        )


def model_config(model_dir: Path) -> ModelConfig | None:
    """The saved config the model decodes images under (pixel limit, smallest side), so the check
    here refuses exactly what the model's own `load` would; None for a model without one."""
    from aivsreal.model import ModelConfig
    from aivsreal.serving.artifacts import saved_model_folder

    try:
        return ModelConfig.read(saved_model_folder(model_dir))
    except FileNotFoundError:
        return None


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
    if "faces" in scored.schema["prediction"].dataType.names:  # a crop-mode model: one row per face
        result = face_rows(result)
    else:
        result = result.select("path", "prediction.*", "error")
    mode = "overwrite" if overwrite else "errorifexists"
    try:
        result.write.mode(mode).parquet(output_uri)
    except AnalysisException as error:
        hint = " (pass --overwrite to replace it)" if "already exists" in str(error) else ""
        raise BatchScoreError(f"cannot write {output_uri}: {str(error).splitlines()[0][:300]}{hint}") from None


def face_rows(result):
    """A crop-mode model's answers (path, prediction, error) as one row per face: `face` (1 = the
    largest), its box (`left`, `top`, `width`, `height`), its `label`, `p_<class>`, `warnings`, the
    `engine`, the `expert` that judged it and why (`expert_reason`), and `image_label` (the picture's
    label by the model's face_summary). A picture with no face found is one row with null face, box,
    label and probabilities and the "no face found" warning; a skipped file, one row with its `error`."""
    from pyspark.sql import functions as F

    face_fields = result.schema["prediction"].dataType["faces"].dataType.elementType.names
    classes = [name for name in face_fields if name.startswith("p_")]
    exploded = result.select("path", "prediction", "error", F.posexplode_outer("prediction.faces").alias("at", "f"))
    no_face = F.col("f").isNull()
    return exploded.select(
        "path",
        (F.col("at") + 1).alias("face"),
        *[F.col(f"f.box.{side}").alias(side) for side in ("left", "top", "width", "height")],
        F.col("f.label").alias("label"),
        *[F.col(f"f.{name}").alias(name) for name in classes],
        F.when(no_face, F.col("prediction.warnings")).otherwise(F.col("f.warnings")).alias("warnings"),
        F.col("prediction.engine").alias("engine"),
        F.col("f.expert").alias("expert"),
        F.col("f.expert_reason").alias("expert_reason"),
        # MLflow's UDF hands a null label over as the text "None": no face, no image label
        F.when(F.size("prediction.faces") > 0, F.col("prediction.label")).alias("image_label"),
        "error",
    )


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
