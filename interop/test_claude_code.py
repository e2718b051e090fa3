"""Claude Code (the `claude` CLI of @anthropic-ai/claude-code, pinned in interop/claude-code/)
through byok-proxy's one endpoint (SPEC §11): ANTHROPIC_BASE_URL=http://ADDR/api and the gateway
key as ANTHROPIC_API_KEY, `claude -p PROMPT` in a fresh HOME, offline (no telemetry, no
nonessential traffic; nothing but the proxy is reachable anyway).

Claude Code sends `POST /api/v1/messages?beta=true`, streamed, with its own model name: told
`sonnet`, the pinned CLI asks for the bare `claude-sonnet-5-5`, which the proxy reads as
`anthropic/claude-sonnet-5-5`, here a catalog model on Anthropic and on Bedrock (AWS keys, SigV4).
A newer CLI may name another model: then the catalog below follows it.

scripts/interop-claude-code installs the CLI and runs this module (CLAUDE_CODE_BIN names it);
without CLAUDE_CODE_BIN the module is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import mock_upstream as up
from checks import botocore_signature
from gateway import CatalogModel, Credential, Tenant
from mock_upstream import MockUpstream
from test_one_endpoint import ANTHROPIC_OVERLOADED, AWS_KEY, assert_auth, assert_hits, bedrock_path

CLAUDE = os.environ.get("CLAUDE_CODE_BIN")
if not CLAUDE:
    pytest.skip("Claude Code is run by scripts/interop-claude-code (CLAUDE_CODE_BIN unset)", allow_module_level=True)

pytestmark = pytest.mark.claude_code

PROVIDERS = ("anthropic", "amazon-bedrock")
ALIAS = "sonnet"  # what Claude Code is told to use (ANTHROPIC_MODEL)
MODEL = "claude-sonnet-5-5"  # what the pinned CLI then asks for
SLUG = f"anthropic/{MODEL}"
MODEL_ID = {"anthropic": MODEL, "amazon-bedrock": f"anthropic.{MODEL}-v1:0"}
PROMPT = "Say hi."
RUN_DEADLINE_SECS = 120

TENANTS = {
    "direct": [Credential("sk-ant-claude-code-direct-01", provider="anthropic")],
    "failover": [
        Credential("sk-ant-claude-code-failover-01", provider="anthropic"),
        Credential(json.dumps(AWS_KEY), provider="amazon-bedrock"),
    ],
}


@pytest.fixture(scope="module")
def mocks():
    started = {p: MockUpstream().start() for p in PROVIDERS}
    yield started
    for m in started.values():
        m.stop()


@pytest.fixture(autouse=True)
def fresh_mocks(mocks):
    for m in mocks.values():
        m.reset()
    yield


@pytest.fixture(scope="module")
def gateway(start_proxy, mocks):
    catalog = {SLUG: CatalogModel([(p, MODEL_ID[p]) for p in PROVIDERS], "Claude Sonnet 5.5")}
    tenants = [Tenant(name, creds) for name, creds in TENANTS.items()]
    return start_proxy("anthropic", tenants, upstream_urls={p: m.url for p, m in mocks.items()}, models=catalog)


def claude_p(gateway, tenant: str, tmp_path) -> subprocess.CompletedProcess:
    """`claude -p PROMPT` against the proxy, in an environment of its own."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TERM": "dumb",
        "NO_PROXY": "127.0.0.1,localhost",
        "ANTHROPIC_BASE_URL": f"{gateway.url}/api",
        "ANTHROPIC_API_KEY": gateway.key(tenant),
        "ANTHROPIC_MODEL": ALIAS,
        # Its small model (titles, summaries) too, should it ask for one: a model with Bedrock behind it.
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    return subprocess.run(
        [CLAUDE, "-p", PROMPT],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_SECS,
    )


def assert_printed_the_mocks_answer(run: subprocess.CompletedProcess):
    assert run.returncode == 0, f"claude exited {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    assert run.stdout.strip() == up.STREAM_TEXT, f"stdout: {run.stdout!r}\nstderr: {run.stderr}"


def test_claude_code_answers_through_anthropic(gateway, mocks, tmp_path):
    run = claude_p(gateway, "direct", tmp_path)

    assert_printed_the_mocks_answer(run)
    requests = mocks["anthropic"].requests
    assert requests, "nothing reached Anthropic"
    assert_hits(mocks, anthropic=len(requests))
    for request in requests:
        assert (request.method, request.path) == ("POST", "/v1/messages")
        assert_auth(request, "x-api-key", "sk-ant-claude-code-direct-01", gateway.key("direct"))
        assert request.json()["model"] == MODEL_ID["anthropic"]
    assert any(r.json().get("stream") is True for r in requests)


def test_claude_code_fails_over_from_anthropic_to_bedrock(gateway, mocks, tmp_path):
    # The proxy must answer from Bedrock: a 529 that reached Claude Code would be retried ten
    # times over about three minutes (and a 400 re-sent five times; a 403 is not).
    mocks["anthropic"].reply_for_secret("sk-ant-claude-code-failover-01", 529, ANTHROPIC_OVERLOADED)

    run = claude_p(gateway, "failover", tmp_path)

    assert_printed_the_mocks_answer(run)
    streamed = [r for r in mocks["amazon-bedrock"].requests if r.path == bedrock_path(MODEL_ID["amazon-bedrock"], True)]
    assert streamed, f"no streamed invoke reached Bedrock: {[r.path for r in mocks['amazon-bedrock'].requests]}"
    request = streamed[0]
    assert request.query == "", f"Bedrock got Claude Code's query {request.query!r}"
    assert request.headers["authorization"] == botocore_signature(request, AWS_KEY)
    body = request.json()
    assert body["anthropic_version"] == up.BEDROCK_ANTHROPIC_VERSION
    assert "model" not in body and "stream" not in body
    assert "claude-code-20250219" in body.get("anthropic_beta", []), body.get("anthropic_beta")
    sent = " ".join(up.everything_sent(request))
    assert gateway.key("failover") not in sent and AWS_KEY["secretAccessKey"] not in sent
