"""Prefect flows: one per pipeline stage, each run by ``dvc.yaml`` as ``python -m flows.<stage>``.

Flows only sequence tasks; the work lives in :mod:`pimc`. Defaults below are set before Prefect
is imported: the first start of Prefect's temporary local server (migrations) can take longer
than its 20 s default, analytics would try to reach the internet, and a dead API should fail a
stage in seconds, not minutes.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A Prefect API that went away mid-stage stalled the stage for ~240 s (5 retries of 60 s
# requests) before it failed; with 1 retry of 20 s it fails ~50 s after the server's death.
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "1")
os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "20")
