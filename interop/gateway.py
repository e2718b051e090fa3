"""The byok-proxy binary under test: its config, its process, its answers.

A test module describes its tenants (one gateway key each, in a workspace of
its own, with that workspace's credentials in try order) and gets a running
proxy whose credentials point at the mock upstream (each credential's
`base_url`, by default the mock's URL). Separate tenants keep
one test's failing credentials from changing another test's candidates.

A module that needs several providers (SPEC §11) gives each credential its
`provider` and each provider a mock of its own (`upstream_urls`), and may add
the model catalog (`CatalogModel`) and `[providers.NAME]` tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
CA_FILE = FIXTURES / "ca.pem"
STARTUP_DEADLINE_SECS = 20
STOP_DEADLINE_SECS = 10
# server.max_body_bytes of every proxy here: the 413 tests send more.
MAX_BODY_BYTES = 64 * 1024

_LISTENING = re.compile(r"byok-proxy listening on (https?)://(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _MockUrl:
    def __repr__(self):
        return "MOCK_URL"


# A credential's default base_url: the mock upstream's URL, known once it runs.
MOCK_URL = _MockUrl()


@dataclass
class Credential:
    secret: str  # the credential's `key`: a provider secret, or a structured key's JSON (SPEC §9)
    allowed_models: list[str] | None = None
    is_fallback: bool = False
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    base_url: str | _MockUrl | None = MOCK_URL  # None: the credential sets none
    provider: str | None = None  # None: the provider the proxy is started for
    declared_zdr: bool | None = None


@dataclass
class CatalogModel:
    """One `[models."{slug}"]` entry of the operator's catalog (SPEC §11): its endpoints as
    (provider, provider's model id) pairs, in the default order of preference."""

    endpoints: list[tuple[str, str]]
    name: str | None = None


@dataclass
class Tenant:
    """A gateway key with a workspace of its own and that workspace's credentials, in try order."""

    name: str
    credentials: list[Credential]
    key: str = ""
    limit: float | None = None  # USD for the key's life; 0 refuses every request (SPEC §8)

    def __post_init__(self):
        # Distinctive, so that finding it anywhere upstream means it leaked.
        self.key = self.key or f"gw-{self.name}-{secrets.token_hex(12)}"

    @property
    def workspace(self) -> str:
        return f"ws-{self.name}"

    @property
    def secrets(self) -> list[str]:
        return [c.secret for c in self.credentials]


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _toml(value) -> str:
    """A TOML value for the strings, numbers, booleans and string lists used here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of printable text is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _table(header: str, entries: dict) -> str:
    lines = [header] + [f"{k} = {_toml(v)}" for k, v in entries.items() if v is not None]
    return "\n".join(lines) + "\n"


def render_config(
    provider: str,
    tenants: list[Tenant],
    upstream_url: str,
    *,
    tls: bool,
    upstream_urls: dict[str, str] | None = None,
    models: dict[str, CatalogModel] | None = None,
    providers: dict[str, dict] | None = None,
) -> str:
    """The proxy's TOML config. Each credential is of its own `provider`, else of `provider`;
    a credential whose base_url is MOCK_URL points at `upstream_urls[its provider]` when given,
    else at `upstream_url`. `models` is the catalog, `providers` the `[providers.NAME]` tables."""
    server = {
        "listen": "127.0.0.1:0",
        "max_body_bytes": MAX_BODY_BYTES,
        "drain_secs": 1,
        "connect_timeout_secs": 2,
        "first_byte_timeout_secs": 10,
    }
    tables = [_table("[server]", server)]
    if tls:
        tables.append(
            _table(
                "[server.tls]",
                {"cert_file": str(FIXTURES / "upstream.pem"), "key_file": str(FIXTURES / "upstream.key")},
            )
        )
    for tenant in tenants:
        tables.append(
            _table(
                "[[api_keys]]",
                {
                    "hash": key_hash(tenant.key),
                    "workspace_id": tenant.workspace,
                    "user_id": f"user-{tenant.name}",
                    "limit": tenant.limit,
                    "include_byok_in_limit": True if tenant.limit is not None else None,
                },
            )
        )
        for order, cred in enumerate(tenant.credentials):
            tables.append(
                _table(
                    "[[credentials]]",
                    {
                        "id": cred.id,
                        "workspace_id": tenant.workspace,
                        "provider": cred.provider or provider,
                        "name": f"{tenant.name} #{order}",
                        "key": cred.secret,
                        "base_url": _base_url(cred, provider, upstream_url, upstream_urls),
                        "created_at": "2025-08-24T10:30:00Z",
                        "is_fallback": cred.is_fallback,
                        "sort_order": order,
                        "allowed_models": cred.allowed_models,
                        "allowed_api_key_hashes": [key_hash(tenant.key)],
                        "declared_zdr": cred.declared_zdr,
                    },
                )
            )
    for name, table in (providers or {}).items():
        tables.append(_table(f"[providers.{_toml_key(name)}]", table))
    for slug, model in (models or {}).items():
        endpoints = [{"provider": p, "model": m} for p, m in model.endpoints]
        tables.append(_table(f"[models.{json.dumps(slug)}]", {"name": model.name, "endpoints": endpoints}))
    return "\n".join(tables)


def _base_url(cred: Credential, provider: str, upstream_url: str, upstream_urls: dict[str, str] | None):
    if cred.base_url is not MOCK_URL:
        return cred.base_url
    if upstream_urls is None:
        return upstream_url
    return upstream_urls[cred.provider or provider]


class ProxyStartError(RuntimeError):
    pass


class Proxy:
    """A running `byok-proxy serve`, its stderr collected line by line."""

    def __init__(self, binary: str, config_path: Path, tenants: list[Tenant], *, tls: bool):
        self.config_path = config_path
        self.tenants = {t.name: t for t in tenants}
        self.tls = tls
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._check(binary)
        self.process = subprocess.Popen(
            [binary, "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env={**os.environ, "NO_COLOR": "1"},
        )
        self._address: tuple[str, str] | None = None
        threading.Thread(target=self._read_stderr, name="byok-proxy-stderr", daemon=True).start()
        self._wait_listening()

    def _check(self, binary: str):
        check = subprocess.run(
            [binary, "check", "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=STARTUP_DEADLINE_SECS,
        )
        if check.returncode != 0:
            raise ProxyStartError(
                f"`byok-proxy check` refused the generated config {self.config_path}:\n"
                f"{check.stdout}{check.stderr}"
            )

    def _read_stderr(self):
        for raw in self.process.stderr:
            line = _ANSI.sub("", raw.rstrip("\n"))
            with self._lock:
                self._lines.append(line)
            found = _LISTENING.search(line)
            if found and self._address is None:
                self._address = (found[1], found[2])
                self._listening.set()
        self._listening.set()  # EOF: the process is gone

    def _wait_listening(self):
        in_time = self._listening.wait(STARTUP_DEADLINE_SECS)
        if self._address is None:
            self.stop()
            what = (
                f"exited (code {self.process.returncode})"
                if in_time
                else f"did not log it within {STARTUP_DEADLINE_SECS}s (stopped)"
            )
            raise ProxyStartError(
                f"byok-proxy {what} before 'byok-proxy listening on'; its stderr:\n{self.log()}"
            )
        scheme, _ = self._address
        if scheme != ("https" if self.tls else "http"):
            self.stop()
            raise ProxyStartError(
                f"byok-proxy listens on {scheme}://, expected {'https' if self.tls else 'http'}:// "
                f"(server.tls {'set' if self.tls else 'unset'}); its stderr:\n{self.log()}"
            )

    @property
    def url(self) -> str:
        scheme, address = self._address
        return f"{scheme}://{address}"

    def key(self, tenant: str) -> str:
        return self.tenants[tenant].key

    def secrets(self, tenant: str) -> list[str]:
        return self.tenants[tenant].secrets

    def line_count(self) -> int:
        with self._lock:
            return len(self._lines)

    def log(self, since: int = 0) -> str:
        with self._lock:
            return "\n".join(self._lines[since:])

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_DEADLINE_SECS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_DEADLINE_SECS)


def proxy_error(body) -> tuple[int, str, str]:
    """(code, metadata.reason, message) of an error the proxy made itself (OpenRouter's shape)."""
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not a proxy error body: {body!r}"
    error = body["error"]
    reason = (error.get("metadata") or {}).get("reason")
    assert reason, f"no error.metadata.reason in {body!r}"
    assert error.get("message"), f"no error.message in {body!r}"
    return error["code"], reason, error["message"]
