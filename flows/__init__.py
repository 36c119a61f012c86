"""Prefect flows: one per pipeline stage, each run by ``dvc.yaml`` as ``python -m flows.<stage>``.

Flows only sequence tasks; the work lives in :mod:`pimc`. Defaults below are set before Prefect
is imported: the first start of Prefect's temporary local server (migrations) can take longer
than its 20 s default, and analytics would try to reach the internet.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
