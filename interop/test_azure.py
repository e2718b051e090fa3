"""Azure OpenAI through byok-proxy with a JSON-array key (SPEC §9), driven by the
official `openai` SDK's AzureOpenAI client (azure_endpoint = http://ADDR/azure,
api_key = the gateway key), which sends
POST /azure/openai/deployments/{model}/chat/completions?api-version=… with `api-key`.

A credential's key mixes resource entries (every model, at the credential's
base_url, here the mock) and per-deployment entries (one model, at their
endpoint_url's origin, here the mock again, under a path prefix where the
test wants to see that the endpoint, not the base_url, was used).
"""

from __future__ import annotations

import json

import openai
import pytest

import mock_upstream as up
from checks import assert_hits, assert_refusal, assert_upstream_got
from gateway import Credential, Tenant

PROVIDER = "azure"
AUTH = "api-key"  # Azure's upstream auth
API_VERSION = "2024-10-21"
QUERY = f"api-version={API_VERSION}"


def resource(api_key: str, name: str = "myres") -> dict:
    return {"api_key": api_key, "resource_name": name, "resource_type": "openai"}


def deployment(mock_url: str, slug: str, model_id: str, api_key: str, prefix: str = "") -> dict:
    return {
        "model_slug": slug,
        "endpoint_url": f"{mock_url}{prefix}/openai/deployments/{model_id}/chat/completions?{QUERY}",
        "api_key": api_key,
        "model_id": model_id,
    }


def tenants(mock_url: str) -> list[Tenant]:
    return [
        # A resource entry first, then the deployment of gpt-4o: the deployment wins for gpt-4o
        # whatever the order; every other model goes to the resource.
        Tenant("mixed", [Credential(json.dumps([
            resource("az-res-key-1"),
            deployment(mock_url, "gpt-4o", "prod-4o", "az-dep-key-2"),
        ]))]),
        # model_slug as the canonical slug.
        Tenant("slug", [Credential(json.dumps([
            resource("az-res-key-3"),
            deployment(mock_url, "azure/gpt-4o", "prod-4o-b", "az-dep-key-4"),
        ]))]),
        # Deployments only: their models and no other. The endpoint has a path prefix, which the
        # credential's base_url (the mock's bare URL) has not.
        Tenant("deployments", [Credential(json.dumps([
            deployment(mock_url, "gpt-4o", "prod-4o-c", "az-dep-key-5", prefix="/dep-prefix"),
            deployment(mock_url, "azure/o3-mini", "prod-o3", "az-dep-key-6", prefix="/dep-prefix"),
        ]))]),
        # Deployments only, and no base_url at all: the endpoint_url is all there is.
        Tenant("no-base-url", [Credential(json.dumps([
            deployment(mock_url, "gpt-4o", "prod-4o-d", "az-dep-key-7", prefix="/dep-prefix"),
        ]), base_url=None)]),
    ]


@pytest.fixture(scope="module")
def gateway(start_proxy, mock):
    return start_proxy(PROVIDER, tenants(mock.url))


def sdk(gateway, tenant: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{gateway.url}/{PROVIDER}",
        api_key=gateway.key(tenant),
        api_version=API_VERSION,
        max_retries=0,
        timeout=10,
    )


def chat(client: openai.AzureOpenAI, model: str, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **options)


def assert_went_to(mock: up.MockUpstream, path: str):
    (request,) = mock.requests
    assert (request.path, request.query) == (path, QUERY)
    assert "authorization" not in request.headers


# --- Which entry serves which model -----------------------------------------------


def test_a_deployment_entry_wins_for_its_model(gateway, mock):
    completion = chat(sdk(gateway, "mixed"), "gpt-4o")

    assert completion.choices[0].message.content == up.TEXT
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, ["az-dep-key-2"], gateway.key("mixed"))
    assert_went_to(mock, "/openai/deployments/prod-4o/chat/completions")
    assert mock.requests[0].json()["model"] == "gpt-4o"  # the body as the client sent it


def test_the_resource_entry_serves_every_other_model(gateway, mock):
    completion = chat(sdk(gateway, "mixed"), "gpt-4o-mini")

    assert completion.choices[0].message.content == up.TEXT
    assert_upstream_got(mock, AUTH, ["az-res-key-1"], gateway.key("mixed"))
    assert_went_to(mock, "/openai/deployments/gpt-4o-mini/chat/completions")


def test_a_model_slug_matches_as_the_canonical_slug(gateway, mock):
    completion = chat(sdk(gateway, "slug"), "gpt-4o")

    assert completion.choices[0].message.content == up.TEXT
    assert_upstream_got(mock, AUTH, ["az-dep-key-4"], gateway.key("slug"))
    assert_went_to(mock, "/openai/deployments/prod-4o-b/chat/completions")


def test_streaming(gateway, mock):
    stream = chat(sdk(gateway, "mixed"), "gpt-4o", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == up.STREAM_TEXT
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, ["az-dep-key-2"], gateway.key("mixed"))
    assert_went_to(mock, "/openai/deployments/prod-4o/chat/completions")


# --- Deployment entries only ------------------------------------------------------


@pytest.mark.parametrize(
    "tenant, model, model_id, secret",
    [
        ("deployments", "gpt-4o", "prod-4o-c", "az-dep-key-5"),
        ("deployments", "o3-mini", "prod-o3", "az-dep-key-6"),
        ("no-base-url", "gpt-4o", "prod-4o-d", "az-dep-key-7"),
    ],
)
def test_a_deployment_goes_to_its_endpoints_origin_and_prefix(gateway, mock, tenant, model, model_id, secret):
    completion = chat(sdk(gateway, tenant), model)

    assert completion.choices[0].message.content == up.TEXT
    assert_upstream_got(mock, AUTH, [secret], gateway.key(tenant))
    assert_went_to(mock, f"/dep-prefix/openai/deployments/{model_id}/chat/completions")


def test_deployment_entries_only_serve_their_models(gateway, mock):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(sdk(gateway, "deployments"), "gpt-4o-mini")

    e = caught.value
    message = assert_refusal(e.response.json(), 403, "no_eligible_credential")
    assert message in str(e)
    assert e.type == "permission_error"
    assert_hits(mock, 0)
