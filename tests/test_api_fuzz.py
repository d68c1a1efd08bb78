"""Property-based API fuzzing: schemathesis generates requests from the OpenAPI schema (valid and
invalid bodies, parameters and paths) and sends them over HTTP to a live server, logged in as an
operator. Every answer must be a non-5xx that matches the schema (status code documented, body
valid against its schema, content type as declared). Examples per operation are bounded so the
suite stays fast; TUNIX_FUZZ_EXAMPLES raises the bound for a deeper local run."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

EXAMPLES = int(os.environ.get("TUNIX_FUZZ_EXAMPLES", "25"))


def published_schema() -> Any:
    """The schema the server publishes at /api/schema/, generated in-process (no database)."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    document = SchemaGenerator().get_schema(request=None, public=True)
    return schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(document)))


schema = published_schema()


@pytest.fixture
def operator_token(operator: Any, demo_dataset: Any) -> str:
    from rest_framework.authtoken.models import Token

    return str(Token.objects.create(user=operator).key)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_api_answers_every_request_as_its_schema_says(
    case: Any, live_server: Any, operator_token: str
) -> None:
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Token {operator_token}"},
        # "Schema-valid means accepted" cannot hold for this API: a well-formed body can still
        # name an unknown dataset or model, carry a wrong password or a file that is not JSONL.
        # Those answers are checked all the same: 4xx, problem+json, matching the schema.
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/tunix/runs/x/artifacts/a%0Ab",  # an encoded newline: no route pattern matches it
        "/api/tunix/runs/%0A",
        "/api/elsewhere",
    ],
)
def test_unmatched_api_paths_answer_problem_json(viewer_client: Any, path: str) -> None:
    response = viewer_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
