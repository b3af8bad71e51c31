"""Property-based fuzzing of the Turing-test server: no request may get a 5xx.

schemathesis generates requests from the app's own OpenAPI schema (`app.openapi()`; the server does
not publish it) for every operation, both schema-conforming (positive) and violating (negative),
and sends them in-process through ASGI, so nothing listens on a network port. Half the requests
carry real handles in place of the generated ones (a live reader token, the study id, the reader's
current image id) so that the handlers past the 404s get fuzzed too; every request carries the
admin token, so the admin endpoints are fuzzed past authentication. Bounded and derandomised:
the same few hundred requests on every run, a few seconds in all.
"""
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.generation import GenerationMode

from retina_fast.turing.app import create_app

TOKEN = "fuzz-admin-token-0123"
ADMIN = {"X-Admin-Token": TOKEN}
EXAMPLES = 25  # per operation and generation mode
# Operations whose every input is a free string (or absent): no request can violate their schema.
NOTHING_TO_VIOLATE = {"GET /admin", "GET /api/admin/studies", "GET /r/{token}", "GET /api/reader/{token}/state",
                      "GET /api/reader/{token}/image/{image_id}"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(app, study id, reader tokens): a 6-image study, one reader profiled and one answer given."""
    root = tmp_path_factory.mktemp("turing_fuzz")
    rng = np.random.default_rng(5)
    for kind in ("real", "synthetic"):
        (root / "data" / kind).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(root / "data" / kind / f"{i}.png")
    app = create_app(f"sqlite:///{root / 'fuzz.db'}", admin_token=TOKEN, image_store=root / "store",
                     data_root=root / "data")
    client = TestClient(app)
    r = client.post("/api/admin/studies", headers=ADMIN, json={
        "name": "fuzz", "real_dir": str(root / "data" / "real"), "synthetic_dir": str(root / "data" / "synthetic"),
        "seed": 1})
    sid = r.json()["study_id"]
    tokens = [x["token"] for x in client.post(f"/api/admin/studies/{sid}/readers", headers=ADMIN,
                                              json={"count": 3}).json()]
    client.post(f"/api/reader/{tokens[0]}/profile", json={"specialty": "retina", "years": 3})
    st_ = client.get(f"/api/reader/{tokens[0]}/state").json()
    client.get(f"/api/reader/{tokens[0]}/image/{st_['image_id']}")
    client.post(f"/api/reader/{tokens[0]}/answer", json={"image_id": st_["image_id"], "answer": "real"})
    return app, sid, tokens


def _operations(app):
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app  # in-process ASGI calls, as schemathesis.openapi.from_asgi sets up
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_covers_every_endpoint(study):
    app = study[0]
    paths = {op.path for op in _operations(app)}
    assert {"/api/admin/studies", "/api/admin/studies/{study_id}/readers", "/api/admin/studies/{study_id}/progress",
            "/api/admin/studies/{study_id}/export", "/api/reader/{token}/state", "/api/reader/{token}/profile",
            "/api/reader/{token}/image/{image_id}", "/api/reader/{token}/answer", "/r/{token}"} <= paths


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_server_error(study, mode):
    app, sid, tokens = study
    client = TestClient(app, raise_server_exceptions=False)
    handles = st.sampled_from(tokens)

    for op in _operations(app):
        if mode == GenerationMode.NEGATIVE and f"{op.method.upper()} {op.path}" in NOTHING_TO_VIOLATE:
            continue  # hypothesis would search in vain for a violating request
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode), real=st.booleans(), token=handles)
        def check(case, real, token):
            if real and case.path_parameters:
                params = dict(case.path_parameters)
                if "token" in params:
                    params["token"] = token
                    if "image_id" in params:
                        params["image_id"] = client.get(f"/api/reader/{token}/state").json()["image_id"] or ""
                if "study_id" in params:
                    params["study_id"] = sid
                case.path_parameters = params
            response = case.call(session=client, headers=ADMIN)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:300])

        check()
