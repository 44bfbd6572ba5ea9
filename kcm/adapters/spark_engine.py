"""``kcm score --engine spark``: the table answered on Spark by the registered champion, served
as MLflow's ``spark_udf`` (``pip install "kcm[spark]"``; Java 17). The pyfunc is given the
workspace's folder and the job's id as parameters, so its large-model calls go through the
workspace's answer store, spend record and rate limiter like every other engine's (executors
must reach that folder: a shared file system on a real cluster)."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

from kcm.errors import KCMError
from kcm.scoring import Engine, ScoreJob

log = logging.getLogger(__name__)

RESULT = "answer string, confidence double, answered_by string, cost double"


class SparkEngine(Engine):
    """``address``: a Spark master URL (default ``local[<workers>]``); the session is the
    job's, started in ``run``."""

    def run(self, job: ScoreJob) -> list[dict[str, Any]]:
        try:
            from pyspark.sql import SparkSession
            from pyspark.sql import functions as F
        except ImportError as err:
            raise KCMError(
                "--engine spark needs pyspark: pip install 'kcm[spark]' (and Java 17)"
            ) from err
        if job.model_uri is None:
            raise KCMError("--engine spark serves the registered champion: turn the registry on")
        import mlflow
        from mlflow.types import DataType

        master = self.address or f"local[{self.workers or os.cpu_count() or 1}]"
        if not self.address:  # local mode: the executors' Python is this one (kcm, pandas)
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = (
            SparkSession.builder.master(master)
            .appName(f"kcm-score-{job.scorer.job}")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(job.partition_rows))
            .getOrCreate()
        )
        t0 = time.perf_counter()
        try:
            if job.source.lower().endswith((".parquet", ".pq")):
                frame = spark.read.parquet(job.source)
            else:
                frame = spark.read.csv(job.source, header=True, inferSchema=True)
            cores = spark.sparkContext.defaultParallelism
            if frame.rdd.getNumPartitions() < cores:  # one big file: spread it (order: --keep id)
                want = max(cores, math.ceil(frame.count() / job.partition_rows))
                frame = frame.repartition(want)
            mlflow.set_tracking_uri(job.tracking_uri)
            udf = mlflow.pyfunc.spark_udf(
                spark,
                job.model_uri,
                result_type=RESULT,
                env_manager="local",
                params={"workspace": job.scorer.workdir, "job": job.scorer.job},
            )
            schema = mlflow.models.get_model_info(job.model_uri).signature.inputs
            missing = [c for c in schema.input_names() if c not in frame.columns]
            if missing:
                raise KCMError(f"{job.source}: the model reads columns it lacks: {missing[:8]}")
            inputs = [  # by name, numbers as the doubles the signature declares
                F.col(i.name).cast("double") if i.type == DataType.double else F.col(i.name)
                for i in schema.inputs
            ]
            out = frame.withColumn("_kcm", udf(*inputs)).select(*job.scorer.keep, "_kcm.*")
            writer = out.write.mode("overwrite")
            target = f"{job.out.rstrip('/')}/parts"
            (writer.parquet(target) if job.fmt == "parquet" else writer.csv(target, header=True))
            if job.fmt == "parquet":  # the figures, from what was written (not answered again)
                done = spark.read.parquet(target)
            else:
                done = spark.read.csv(target, header=True, inferSchema=True)
            by = {}
            rows, cost = 0, 0.0
            for r in (
                done.groupBy("answered_by")
                .agg(F.count("*").alias("n"), F.sum("cost").alias("cost"))
                .collect()
            ):
                by[str(r["answered_by"])] = int(r["n"])
                rows += int(r["n"])
                cost += float(r["cost"] or 0.0)
            log.info("spark: %d rows answered on %s", rows, master)
            return [
                {
                    "part": 0,
                    "rows": rows,
                    "seconds": time.perf_counter() - t0,
                    "answered_by": by,
                    "cost": cost,
                }
            ]
        finally:
            spark.stop()
