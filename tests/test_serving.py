"""The raw-observation pyfunc: rows of (pixel, date, bands) in, the `pimc predict` answer out,
through a real `mlflow models serve` (`pimc serve`) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch

from pimc import tracking
from pimc.core.errors import InputError
from pimc.predict import load_deployed, predict_patch, read_patch
from pimc.tracking.raw_model import rows_to_patch
from pimc.tracking.serving import raw_rows, register_raw_model
from tests import test_predict
from tests.helpers import REPO

registered = test_predict.registered  # the registered test models (a module fixture)
PIXELS = [(0, 0), (3, 7), (10, 2), (15, 15), (8, 8)]


def _raw(name: str, patch) -> str:
    """Register ``<name>-raw`` around ``name``'s champion, as the finetune flow does."""
    _, meta = load_deployed(f"{name}@champion")
    version = tracking.get_alias(name, "champion")
    with tracking.start_run("finetune@test", {}, experiment="test-serving") as run:
        example = raw_rows(patch.image.numpy(), patch.dates, PIXELS[:2])
        uri = f"models:/{name}/{version}"
        raw = register_raw_model(run, uri, meta, example, f"{name}-raw")
        again = register_raw_model(run, uri, meta, None, f"{name}-raw")
    assert raw == again  # once per run
    tracking.set_alias(f"{name}-raw", "champion", raw)
    return f"{name}-raw"


@pytest.fixture(scope="module")
def patch(tiny_data):
    _, s2 = test_predict._first_patch(tiny_data)
    return read_patch(s2)


def _expected(name, patch):
    model, meta = load_deployed(f"{name}@champion")
    return predict_patch(model, meta, patch, progress=False), meta


def test_rows_become_a_patch_with_missing_observations_as_nan():
    table = pd.DataFrame(
        {"pixel_id": [7, 7, 3], "date": ["2019-01-02", "2019-01-01", "2019-01-02"],
         **{b: [1.0, 2.0, 3.0] for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                          "B11", "B12")}}
    )  # fmt: skip
    image, dates, ids = rows_to_patch(table)
    assert image.shape == (2, 10, 1, 2) and ids.tolist() == [3, 7]
    assert [str(d) for d in dates] == ["2019-01-01", "2019-01-02"]
    assert torch.isnan(image[0, :, 0, 0]).all() and image[1, 0, 0, 0] == 3.0
    assert image[0, 0, 0, 1] == 2.0 and image[1, 0, 0, 1] == 1.0
    with pytest.raises(InputError, match="appears twice"):
        rows_to_patch(pd.concat([table, table]))
    with pytest.raises(InputError, match="lacks column"):
        rows_to_patch(table.drop(columns="B8A"))
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        rows_to_patch(table.assign(date="14/05/2019"))


@pytest.mark.parametrize("name", ["pimc-test-classifier", "pimc-test-forecaster"])
def test_the_pyfunc_answers_as_pimc_predict(registered, patch, name):
    import mlflow.pyfunc

    raw = _raw(name, patch)
    model = mlflow.pyfunc.load_model(f"models:/{raw}@champion")
    out = model.predict(raw_rows(patch.image.numpy(), patch.dates, PIXELS))
    pred, meta = _expected(name, patch)
    if "classes" in pred:
        assert out["class"].tolist() == [int(pred["classes"][r, c]) for r, c in PIXELS]
        np.testing.assert_allclose(
            out["confidence"], [pred["confidence"][r, c] for r, c in PIXELS], rtol=1e-5
        )
        probs = out[[f"p_{c}" for c in meta["class_ids"]]].to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    else:
        got = out.pivot_table(index=["index", "date"], columns="pixel_id", values="value")
        want = np.stack([pred["forecast"][:, :, r, c] for r, c in PIXELS], -1)  # (I, h, N)
        order = [meta["indices"].index(i) for i in got.index.get_level_values(0).unique()]
        np.testing.assert_allclose(got.to_numpy().reshape(want.shape)[np.argsort(order)], want,
                                   rtol=1e-5)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_models_serve_answers_a_raw_observation_request(registered, patch, tmp_path):
    """What the README's curl does: `pimc serve`, then POST rows to /invocations."""
    raw = _raw("pimc-test-classifier", patch)
    port = _free_port()
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # the documented command, venv not active
    server = subprocess.Popen(  # its own session: stop mlflow and its uvicorn together
        [os.path.join(os.path.dirname(sys.executable), "pimc"), "serve", "--model",
         f"{raw}@champion", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.stdout.read()[-3000:]) from None
                time.sleep(1)
        rows = raw_rows(patch.image.numpy(), patch.dates, PIXELS)
        split = rows.to_dict(orient="split")
        answer = _post(port, {"dataframe_split": {k: split[k] for k in ("columns", "data")}})
        readme = _post(port, json.loads(_readme_curl_body()))  # the README's curl, verbatim
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    pred, meta = _expected("pimc-test-classifier", patch)
    got = pd.DataFrame(answer["predictions"])
    assert got["class"].tolist() == [int(pred["classes"][r, c]) for r, c in PIXELS]
    (row,) = readme["predictions"]
    assert row["pixel_id"] == 0 and row["class"] in meta["class_ids"]
    assert row["class_name"] == meta["class_names"][meta["class_ids"].index(row["class"])]


def _post(port: int, payload: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    return json.loads(urllib.request.urlopen(request, timeout=60).read())


def _readme_curl_body() -> str:
    text = (REPO / "README.md").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("curl -s http://127.0.0.1:5001/")]
    return shlex.split(line)[shlex.split(line).index("-d") + 1]
