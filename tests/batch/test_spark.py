"""The Spark path on local[2] (loopback only): the same artifact and runtime inside the executors
give the runtime's outputs; the version is pinned by its manifest hash; executors need neither
aiohttp nor the data plane."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batch_testlib import digits_rows, reference

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("no Java runtime (run-tests.sh installs default-jre-headless as root)", allow_module_level=True)

from appliance.spark import PinnedVersion, pin_version, predict
from appliance.spark.predict import PinError, session


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local[2] session for the module: starting the JVM costs seconds."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only, whatever the hostname resolves to
    builder = (SparkSession.builder.master("local[2]").appName("appliance-tests")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_outputs_equal_the_runtime(spark: Any, repository: Path, tmp_path: Path) -> None:
    import pandas as pd

    x = digits_rows(repository, 2000)
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(len(x)), "input": list(x)}),
                               "id long, input array<float>")
    scored = predict(df.repartition(2), repository, "digits", input_cols=["input"], keep_cols=["id"], batch_size=64)
    rows = sorted(scored.collect(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(len(x)))
    got = np.asarray([r["probabilities"] for r in rows], dtype=np.float32)
    # Spark decides where a partition's Arrow batches start, so request sizes may differ: 1e-6.
    np.testing.assert_allclose(got, reference(repository, tmp_path, x), rtol=1e-6, atol=1e-7)


def test_scalar_feature_columns(spark: Any, repository: Path, tmp_path: Path) -> None:
    import pandas as pd

    x = digits_rows(repository, 200)
    names = [f"f{j}" for j in range(x.shape[1])]
    df = spark.createDataFrame(pd.DataFrame(x.astype(np.float64), columns=names))
    rows = predict(df.coalesce(1), repository, "digits", "1", input_cols=names, batch_size=64).collect()
    got = np.asarray([r["probabilities"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, reference(repository, tmp_path, x), rtol=1e-6, atol=1e-7)


def test_a_version_that_is_not_the_pinned_one_is_refused(repository: Path) -> None:
    pinned = pin_version(repository, "digits")
    assert pinned.version == 1 and len(pinned.manifest_sha256) == 64
    forged = PinnedVersion(pinned.path, "digits", 1, "0" * 64, pinned.runtime)
    with pytest.raises(PinError, match="not the pinned"):
        session(forged)
    (repository / "digits" / "1" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(PinError):
        pin_version(repository, "digits", 1)


def test_executors_import_neither_aiohttp_nor_the_data_plane() -> None:
    probe = ("import sys, appliance.spark; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp' "
             "or m.startswith(('appliance.dataplane', 'appliance.protocol', 'appliance.jobs'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
