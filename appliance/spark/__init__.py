"""Apache Spark: score a DataFrame with a repository version, inside the executors.

``predict(df, repository, model, version, input_cols)`` runs the same artifact with the same
runtime code the server uses (``appliance.runtimes``), through ``mapInPandas``. Executors import
only this package, ``appliance.runtimes`` and ``modelrepo`` (no aiohttp, no data plane), so the
optional extra ``spark`` is all a cluster's Python needs besides the runtimes. See docs/batch.md
for the ``spark-submit`` recipe.
"""

from appliance.spark.predict import PinnedVersion, pin_version, predict

__all__ = ["PinnedVersion", "pin_version", "predict"]
