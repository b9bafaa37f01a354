"""schemathesis against the server's own OpenAPI schema: no generated request gets a 5xx."""

import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (the test extra brings it)")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from conftest import live_server  # noqa: E402
from serving.app import create_app  # noqa: E402

EXAMPLES = int(os.environ.get("ZHIJIAN_FUZZ_EXAMPLES", 40))


def test_no_generated_request_gets_a_server_error(tiny_model):
    with live_server(create_app(tiny_model, "cpu")) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        calls = {}
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def call(case):
                response = case.call()
                calls[operation.label] = calls.get(operation.label, 0) + 1
                assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"

            call()
        print("schemathesis calls per operation:", calls)  # `pytest -s` shows them (ZHIJIAN_FUZZ_EXAMPLES=400 for the long run)
        assert {"POST /v1/score", "POST /v1/utterances", "GET /v1/model"} <= set(calls)
