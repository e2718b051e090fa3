"""Fixtures of the SDK interoperability suite: a recording mock upstream and a
real byok-proxy in front of it, one of each per test module.

    mock      MockUpstream (mock_upstream.py), reset before every test
    gateway   a module defines it with `start_proxy(provider, tenants, tls=...)`

Run it with scripts/interop; BYOK_PROXY_BIN names the binary.
"""

from __future__ import annotations

import os

import pytest

from gateway import REPO, Proxy, Tenant, render_config
from mock_upstream import MockUpstream

# Settings from the environment that would point an SDK elsewhere, add
# credentials of its own, or change its retries.
_SDK_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GOOGLE_", "GEMINI_", "AWS_", "BOTO_")
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(scope="session", autouse=True)
def offline_sdks(tmp_path_factory):
    """No SDK may reach the internet or read this machine's credentials."""
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(_SDK_ENV_PREFIXES) or name in _PROXY_ENV:
                env.delenv(name)
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", str(empty))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        yield


def proxy_binary() -> str:
    binary = os.environ.get("BYOK_PROXY_BIN") or str(REPO / "target" / "debug" / "byok-proxy")
    if not os.access(binary, os.X_OK):
        pytest.exit(
            f"no byok-proxy binary at {binary}: build it with `cargo build --locked --bin byok-proxy` "
            "or set BYOK_PROXY_BIN",
            returncode=1,
        )
    return binary


@pytest.fixture(scope="module")
def mock():
    upstream = MockUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(autouse=True)
def fresh_mock(mock):
    mock.reset()
    yield


_RUNNING: list[Proxy] = []


@pytest.fixture(scope="module")
def start_proxy(mock, tmp_path_factory):
    """start_proxy(provider, tenants, tls=False, **extra) -> a running Proxy, stopped after the
    module; `extra` (upstream_urls, models, providers) goes to gateway.render_config."""
    started: list[Proxy] = []

    def start(provider: str, tenants: list[Tenant], *, tls: bool = False, **extra) -> Proxy:
        config = tmp_path_factory.mktemp(f"byok-{provider}") / "config.toml"
        config.write_text(render_config(provider, tenants, mock.url, tls=tls, **extra))
        proxy = Proxy(proxy_binary(), config, tenants, tls=tls)
        started.append(proxy)
        _RUNNING.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
        _RUNNING.remove(proxy)


# --- On failure, show what the proxy logged and what the upstream got --------

_LOG_START = pytest.StashKey[dict]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_LOG_START] = {id(p): p.line_count() for p in _RUNNING}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    starts = item.stash.get(_LOG_START, {})
    for proxy in _RUNNING:
        report.sections.append((f"byok-proxy stderr ({proxy.url})", proxy.log(starts.get(id(proxy), 0))))
    # `mock`, and a module's mocks per provider (a dict named `mocks`).
    upstreams = {"": item.funcargs.get("mock")}
    upstreams.update({f" ({name})": m for name, m in (item.funcargs.get("mocks") or {}).items()})
    for name, upstream in upstreams.items():
        if not isinstance(upstream, MockUpstream) or (name and not upstream.requests and not upstream.token_requests):
            continue
        seen = "\n".join(f"{r.method} {r.path}?{r.query} secret={r.secret!r}" for r in upstream.requests)
        report.sections.append((f"mock upstream requests{name}", seen or "(none)"))
        tokens = "\n".join(
            f"{t.request.method} {t.path} -> {t.status} {t.access_token or t.error or ''}"
            for t in upstream.token_requests
        )
        if tokens:
            report.sections.append((f"mock token endpoint requests{name}", tokens))
