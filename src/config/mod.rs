//! The TOML config: serde types, loading, and validation whose errors name the
//! offending entry (`credentials[2].allowed_api_key_hashes[0]: not 64 lowercase
//! hex chars`) and never print a secret or a line of the file.
//!
//! Unknown keys are errors. A loaded [`Config`] holds validated entries only
//! ([`Credential`], [`ApiKey`], [`Providers`], settings): the registry is built
//! from them ([`Registry::from_config`](crate::Registry::from_config)), never
//! by the config itself. Credentials and keys obey the same rules as those
//! from a database or the admin API ([`Credential::validate`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

mod tls;

#[cfg(feature = "server")]
pub(crate) use tls::load as load_certificate;
use tls::RawTls;
pub use tls::TlsConfig;

use crate::domain::{
    valid_model_slug, valid_slug, ApiKey, ApiKeyFields, AuthScheme, Catalog, CatalogModel,
    Credential, CredentialFields, CredentialSpec, Endpoint, FieldErrors, Flat, KeyHash, Provider,
    Providers, SharedTier, Upstream,
};

/// A config that parsed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[admin]`, when present.
    pub admin: Option<AdminConfig>,
    /// `[store]`.
    pub store: StoreConfig,
    /// The built-in providers, with `[providers.NAME]` applied.
    pub providers: Providers,
    /// `[[api_keys]]`, validated.
    pub api_keys: Vec<ApiKey>,
    /// `[[credentials]]`, validated.
    pub credentials: Vec<Credential>,
    /// `[shared]`: the operator's shared tier, when configured.
    pub shared: Option<SharedTier>,
    /// `[prices."provider/model"]`: USD per million tokens.
    pub prices: Prices,
    /// `[models."author/model"]`: the model catalog of the one endpoint
    /// (SPEC §11).
    pub models: Catalog,
}

/// One model's prices, in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Output (completion) tokens.
    pub output: f64,
    /// Input tokens read from the provider's cache.
    pub cache_read: f64,
    /// Input tokens written to the provider's cache.
    pub cache_write: f64,
}

/// The price table: model slug (`provider/model`) → price.
pub type Prices = BTreeMap<String, Price>;

/// `[server]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Request bodies above this get 413.
    pub max_body_bytes: usize,
    /// The most request-body bytes held at once over every request (the
    /// proxy's [`BodyBudget`](crate::BodyBudget)); a request that would take
    /// more gets 503.
    pub max_buffered_body_bytes: usize,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
    /// Per upstream connection attempt.
    pub connect_timeout: Duration,
    /// Until the upstream response head.
    pub first_byte_timeout: Duration,
    /// Longest silence inside a streamed body.
    pub idle_timeout: Duration,
    /// Longest silence inside a request body.
    pub body_timeout: Duration,
    /// The longest a rate-limited credential rests.
    pub max_cooldown: Duration,
    /// The largest request head (request line and headers) a client may send.
    pub max_header_bytes: usize,
    /// The most client connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Extra roots for upstream TLS, from `upstream_ca_file`.
    pub upstream_roots: Vec<CertificateDer<'static>>,
    /// `[server.tls]`: serve HTTPS with this certificate.
    pub tls: Option<TlsConfig>,
}

/// `[store]`: where credentials and gateway keys live.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `file` (the default: this config file), `sqlite://PATH` or
    /// `postgres://…`. A secret: it may carry a database password.
    pub url: SecretString,
    /// The workspace of credentials and keys created without one.
    pub default_workspace_id: Option<String>,
    /// Extra roots for TLS to Postgres, from `store.ca_file` (beside the
    /// webpki roots).
    pub ca_roots: Vec<CertificateDer<'static>>,
    /// The longest one store statement may run or wait for a lock
    /// (`store.statement_timeout_ms`, default 5 s): Postgres's
    /// `statement_timeout`, SQLite's busy timeout.
    pub statement_timeout: Duration,
    /// Usage rows older than this many days are pruned
    /// (`store.usage_retention_days`, default 400).
    pub usage_retention_days: u32,
}

impl StoreConfig {
    /// Whether credentials live in a database rather than this file.
    pub fn is_database(&self) -> bool {
        self.url.expose_secret() != "file"
    }

    /// The kind of store, safe to log: `file`, `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        let url = self.url.expose_secret();
        if url.starts_with("sqlite://") {
            "sqlite"
        } else if url.starts_with("postgres") {
            "postgres"
        } else {
            "file"
        }
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the management API listens.
    pub listen: SocketAddr,
    /// SHA-256 hashes of the operator's management keys (every workspace).
    pub management_key_hashes: Vec<KeyHash>,
    /// `[[admin.management_keys]]`: keys scoped to some workspaces.
    pub scoped_keys: Vec<ScopedKey>,
    /// `[admin.tls]`: serve the management API over HTTPS.
    pub tls: Option<TlsConfig>,
}

/// A management key that reads and writes only some workspaces' records
/// (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedKey {
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Its workspaces; the first is its default.
    pub workspaces: Vec<String>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// One or more entries are wrong; each names its entry.
    #[error("{}", Lines(.0))]
    Invalid(Vec<String>),
}

struct Lines<'a>(&'a [String]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Invalid(vec![describe(text, &e, "")]);
        let de = toml::Deserializer::parse(text).map_err(syntax)?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            ConfigError::Invalid(vec![describe(text, e.inner(), &e.path().to_string())])
        })?;
        validate(raw)
    }

    /// The config without its gateway keys and credentials: what a server
    /// keeps once the registry holds those (one copy of them is enough).
    pub fn into_settings(mut self) -> Config {
        self.api_keys = Vec::new();
        self.credentials = Vec::new();
        self
    }

    /// How many gateway keys and credentials it holds.
    pub fn counts(&self) -> (usize, usize) {
        (self.api_keys.len(), self.credentials.len())
    }
}

/// Reads a config file into memory that is wiped when dropped (it holds secrets).
pub(crate) fn read(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
}

// ---- the file's shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    admin: Option<RawAdmin>,
    store: Option<RawStore>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
    #[serde(default)]
    credentials: Vec<Flat<RawCredential, CredentialSpec>>,
    shared: Option<RawShared>,
    #[serde(default)]
    prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Option<String>,
    context_length: Option<u64>,
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    provider: String,
    model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    #[serde(default)]
    input: f64,
    #[serde(default)]
    output: f64,
    #[serde(default)]
    cache_read: f64,
    #[serde(default)]
    cache_write: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShared {
    workspace_id: String,
    workspaces: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    max_body_bytes: u64,
    max_buffered_body_bytes: u64,
    drain_secs: f64,
    connect_timeout_secs: f64,
    first_byte_timeout_secs: f64,
    idle_timeout_secs: f64,
    body_timeout_secs: f64,
    max_cooldown_secs: f64,
    max_header_bytes: u64,
    max_connections: u64,
    upstream_ca_file: Option<PathBuf>,
    tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 10 * 1024 * 1024,
            max_buffered_body_bytes: DEFAULT_BUFFERED_BODY_BYTES,
            drain_secs: 30.0,
            connect_timeout_secs: 10.0,
            first_byte_timeout_secs: 120.0,
            idle_timeout_secs: 300.0,
            body_timeout_secs: 60.0,
            max_cooldown_secs: 300.0,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            upstream_ca_file: None,
            tls: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: SecretString,
    default_workspace_id: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_statement_timeout_ms")]
    statement_timeout_ms: u64,
    #[serde(default = "default_usage_retention_days")]
    usage_retention_days: u64,
}

/// `store.statement_timeout_ms` when absent.
const fn default_statement_timeout_ms() -> u64 {
    5_000
}

/// `store.usage_retention_days` when absent.
const fn default_usage_retention_days() -> u64 {
    400
}

/// The bounds of `store.statement_timeout_ms`: from 100 ms to 10 minutes.
const STATEMENT_TIMEOUT_MS: std::ops::RangeInclusive<usize> = 100..=600_000;

/// The bounds of `store.usage_retention_days`: at least the oldest day a
/// limit reads (this month's 1st, or the Monday before it: 36 days back at
/// most), at most a century.
const USAGE_RETENTION_DAYS: std::ops::RangeInclusive<usize> = 40..=36_500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    #[serde(default)]
    management_key_hashes: Vec<String>,
    #[serde(default)]
    management_keys: Vec<RawScopedKey>,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopedKey {
    hash: String,
    workspaces: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: Option<String>,
    auth: Option<AuthScheme>,
    zdr: Option<bool>,
    openai_compatible: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, SecretString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    hash: String,
    workspace_id: String,
    user_id: String,
    name: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    require_zdr: bool,
    expires_at: Option<String>,
    limit: Option<f64>,
    limit_reset: Option<String>,
    #[serde(default)]
    include_byok_in_limit: bool,
    external_user: Option<String>,
}

/// A `[[credentials]]` table's own fields; the rest are its
/// [`CredentialSpec`], read beside them ([`Flat`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    id: String,
    /// Left out: a global credential.
    workspace_id: Option<String>,
    provider: String,
    key: Option<SecretString>,
    key_env: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, SecretString>,
    created_at: Option<String>,
}

// ---- parse errors without secrets ---------------------------------------------

/// `path: message (line L, column C)`. The message is serde's, minus any value it
/// quotes (`invalid type: string "sk-…"` becomes `invalid type: string`), and the
/// source line that toml's own `Display` would print is left out.
fn describe(text: &str, inner: &toml::de::Error, path: &str) -> String {
    let message = scrub(inner.message());
    let location = inner
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" (line {line}, column {column})")
        })
        .unwrap_or_default();
    if path.is_empty() || path == "." {
        format!("{message}{location}")
    } else {
        format!("{path}: {message}{location}")
    }
}

pub(crate) fn scrub(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(at) = rest.find(", expected") {
                let kind = rest[..at].split([' ', '`', '"']).next().unwrap_or("");
                return format!("{prefix}{kind}{}", &rest[at..]);
            }
        }
    }
    // Other messages (unknown field, missing field, syntax errors) name keys
    // and positions only; keep their first line.
    message.lines().next().unwrap_or("").to_owned()
}

// ---- validation ---------------------------------------------------------------

struct Errors(Vec<String>);

impl Errors {
    fn at(&mut self, path: impl fmt::Display, msg: impl fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    /// A record's own errors, under its path in the file.
    fn fields(&mut self, path: &str, errs: FieldErrors) {
        self.0
            .extend(errs.prefixed(path).iter().map(ToString::to_string));
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut errs = Errors(Vec::new());
    let server = validate_server(&raw.server, &mut errs);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| validate_admin(a, &mut errs));
    if let (Some(s), Some(a)) = (&server, &admin) {
        // Port 0 asks the OS for a free port: two of those never collide.
        if s.listen == a.listen && s.listen.port() != 0 {
            errs.at("admin.listen", "must differ from server.listen");
        }
    }
    let store = validate_store(raw.store.as_ref(), &mut errs);
    if store.is_database() {
        for (list, len) in [
            ("api_keys", raw.api_keys.len()),
            ("credentials", raw.credentials.len()),
        ] {
            if len > 0 {
                errs.at(
                    list,
                    "must be empty when store.url is a database: they live in the store (use the admin API)",
                );
            }
        }
    }
    let providers = validate_providers(raw.providers, &mut errs);
    let api_keys = validate_api_keys(raw.api_keys, &mut errs);
    let credentials = validate_credentials(raw.credentials, &providers, &mut errs);
    let shared = raw.shared.map(|s| validate_shared(s, &mut errs));
    let prices = validate_prices(raw.prices, &mut errs);
    let models = validate_models(raw.models, &providers, &mut errs);
    match (server, errs.0.is_empty()) {
        (Some(server), true) => Ok(Config {
            server,
            admin,
            store,
            providers,
            api_keys,
            credentials,
            shared,
            prices,
            models,
        }),
        _ => Err(ConfigError::Invalid(errs.0)),
    }
}

/// The longest duration a setting may hold: more means "never" for every
/// one of them, and a deadline `Instant::now() + timeout` beyond the clock's
/// range panics (1e19 seconds did).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn duration(path: &str, secs: &f64, errs: &mut Errors) -> Duration {
    match Duration::try_from_secs_f64(*secs) {
        Ok(d) if !d.is_zero() && d <= MAX_DURATION => d,
        _ => {
            errs.at(
                path,
                "must be a positive number of seconds, at most a year (31536000)",
            );
            Duration::from_secs(1)
        }
    }
}

fn bounded(
    path: &str,
    value: u64,
    range: std::ops::RangeInclusive<usize>,
    errs: &mut Errors,
) -> usize {
    match usize::try_from(value) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            errs.at(
                path,
                format_args!("must be from {} to {}", range.start(), range.end()),
            );
            *range.start()
        }
    }
}

/// `server.max_buffered_body_bytes` by default: 256 MiB, 25 bodies of the
/// default `max_body_bytes` at once.
const DEFAULT_BUFFERED_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// The most `server.max_buffered_body_bytes` may be: 1 TiB.
const MOST_BUFFERED_BODY_BYTES: u64 = 1 << 40;

/// `server.max_buffered_body_bytes`: at least `max_body_bytes` (else a body
/// of the largest size allowed could never be read), at most 1 TiB.
fn body_budget(raw: u64, max_body_bytes: usize, errs: &mut Errors) -> usize {
    match usize::try_from(raw) {
        Ok(n) if n >= max_body_bytes && raw <= MOST_BUFFERED_BODY_BYTES => n,
        _ => {
            errs.at(
                "server.max_buffered_body_bytes",
                format_args!(
                    "must be from server.max_body_bytes ({max_body_bytes}) to 1 TiB \
                     ({MOST_BUFFERED_BODY_BYTES}): below it, a body of the largest size \
                     allowed could never be read"
                ),
            );
            max_body_bytes
        }
    }
}

fn socket_addr(path: &str, value: &str, errs: &mut Errors) -> Option<SocketAddr> {
    value
        .parse()
        .map_err(|_| {
            errs.at(
                path,
                format_args!("{value:?} is not an address like 127.0.0.1:8080"),
            );
        })
        .ok()
}

fn validate_server(raw: &RawServer, errs: &mut Errors) -> Option<ServerConfig> {
    let listen = socket_addr("server.listen", &raw.listen, errs);
    let max_body_bytes = match usize::try_from(raw.max_body_bytes) {
        Ok(n) if n > 0 => n,
        _ => {
            errs.at(
                "server.max_body_bytes",
                "must be a positive number of bytes",
            );
            1
        }
    };
    let server = ServerConfig {
        listen: listen?,
        max_body_bytes,
        max_buffered_body_bytes: body_budget(raw.max_buffered_body_bytes, max_body_bytes, errs),
        drain: duration("server.drain_secs", &raw.drain_secs, errs),
        connect_timeout: duration(
            "server.connect_timeout_secs",
            &raw.connect_timeout_secs,
            errs,
        ),
        first_byte_timeout: duration(
            "server.first_byte_timeout_secs",
            &raw.first_byte_timeout_secs,
            errs,
        ),
        idle_timeout: duration("server.idle_timeout_secs", &raw.idle_timeout_secs, errs),
        body_timeout: duration("server.body_timeout_secs", &raw.body_timeout_secs, errs),
        max_cooldown: duration("server.max_cooldown_secs", &raw.max_cooldown_secs, errs),
        max_header_bytes: bounded(
            "server.max_header_bytes",
            raw.max_header_bytes,
            8 * 1024..=16 * 1024 * 1024,
            errs,
        ),
        max_connections: bounded(
            "server.max_connections",
            raw.max_connections,
            1..=1_000_000,
            errs,
        ),
        upstream_roots: raw
            .upstream_ca_file
            .as_deref()
            .map(|path| roots("server.upstream_ca_file", path, errs))
            .unwrap_or_default(),
        tls: raw
            .tls
            .as_ref()
            .and_then(|t| certificate("server.tls", t, errs)),
    };
    Some(server)
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor.
fn roots(field: &str, path: &Path, errs: &mut Errors) -> Vec<CertificateDer<'static>> {
    let certs: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter.collect(),
        Err(e) => {
            errs.at(field, format_args!("cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let certs = match certs {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            errs.at(
                field,
                format_args!("{} holds no PEM certificate", path.display()),
            );
            return Vec::new();
        }
        Err(e) => {
            errs.at(field, format_args!("{}: {e}", path.display()));
            return Vec::new();
        }
    };
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        if store.add(cert.clone()).is_err() {
            errs.at(
                field,
                format_args!(
                    "certificate {} in {} is not a usable CA certificate",
                    i + 1,
                    path.display()
                ),
            );
        }
    }
    certs
}

fn validate_store(raw: Option<&RawStore>, errs: &mut Errors) -> StoreConfig {
    let Some(raw) = raw else {
        return StoreConfig {
            url: SecretString::from("file"),
            default_workspace_id: None,
            ca_roots: Vec::new(),
            statement_timeout: Duration::from_millis(default_statement_timeout_ms()),
            usage_retention_days: 400,
        };
    };
    let url = raw.url.expose_secret();
    let known = url == "file"
        || url.strip_prefix("sqlite://").is_some_and(|p| !p.is_empty())
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://");
    if !known {
        // The URL is not repeated: it may hold a password.
        errs.at(
            "store.url",
            "use \"file\", \"sqlite://PATH\" or \"postgres://USER:PASSWORD@HOST:PORT/DB\"",
        );
    }
    if let Some(ws) = &raw.default_workspace_id {
        non_empty("store.default_workspace_id", ws, errs);
    }
    StoreConfig {
        url: raw.url.clone(),
        default_workspace_id: raw.default_workspace_id.clone(),
        ca_roots: raw
            .ca_file
            .as_deref()
            .map(|path| roots("store.ca_file", path, errs))
            .unwrap_or_default(),
        statement_timeout: Duration::from_millis(
            u64::try_from(bounded(
                "store.statement_timeout_ms",
                raw.statement_timeout_ms,
                STATEMENT_TIMEOUT_MS,
                errs,
            ))
            .unwrap_or(u64::MAX),
        ),
        usage_retention_days: u32::try_from(bounded(
            "store.usage_retention_days",
            raw.usage_retention_days,
            USAGE_RETENTION_DAYS,
            errs,
        ))
        .unwrap_or(u32::MAX),
    }
}

fn validate_admin(raw: &RawAdmin, errs: &mut Errors) -> Option<AdminConfig> {
    let listen = socket_addr("admin.listen", &raw.listen, errs);
    let hashes = hashes(
        "admin.management_key_hashes",
        &raw.management_key_hashes,
        errs,
    );
    if raw.management_key_hashes.is_empty() && raw.management_keys.is_empty() {
        errs.at(
            "admin.management_key_hashes",
            "needs at least one hash (or an [[admin.management_keys]] entry), or nobody can use the admin API",
        );
    }
    let mut scoped_keys = Vec::with_capacity(raw.management_keys.len());
    for (i, k) in raw.management_keys.iter().enumerate() {
        let path = format!("admin.management_keys[{i}]");
        let hash = KeyHash::from_hex(&k.hash);
        match hash {
            None => errs.at(format_args!("{path}.hash"), "not 64 lowercase hex chars"),
            Some(h)
                if hashes.contains(&h) || scoped_keys.iter().any(|s: &ScopedKey| s.hash == h) =>
            {
                errs.at(
                    format_args!("{path}.hash"),
                    "the same key is listed twice (a key has one scope)",
                )
            }
            Some(_) => {}
        }
        if k.workspaces.is_empty() {
            errs.at(
                format_args!("{path}.workspaces"),
                "lists no workspace: such a key could do nothing",
            );
        }
        for (j, w) in k.workspaces.iter().enumerate() {
            non_empty(format_args!("{path}.workspaces[{j}]"), w, errs);
        }
        if let Some(hash) = hash {
            scoped_keys.push(ScopedKey {
                hash,
                workspaces: k.workspaces.clone(),
            });
        }
    }
    let tls = raw
        .tls
        .as_ref()
        .and_then(|t| certificate("admin.tls", t, errs));
    Some(AdminConfig {
        listen: listen?,
        management_key_hashes: hashes,
        scoped_keys,
        tls,
    })
}

/// A `[….tls]` table's files, read and checked.
fn certificate(table: &str, raw: &RawTls, errs: &mut Errors) -> Option<TlsConfig> {
    raw.validate()
        .map_err(|(field, message)| errs.at(format_args!("{table}.{field}"), message))
        .ok()
}

fn non_empty(path: impl fmt::Display, value: &str, errs: &mut Errors) {
    if value.is_empty() {
        errs.at(path, "must not be empty");
    }
}

fn hashes(path: &str, list: &[String], errs: &mut Errors) -> Vec<KeyHash> {
    list.iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let parsed = KeyHash::from_hex(h);
            if parsed.is_none() {
                errs.at(format_args!("{path}[{i}]"), "not 64 lowercase hex chars");
            }
            parsed
        })
        .collect()
}

fn validate_providers(raw: BTreeMap<String, RawProvider>, errs: &mut Errors) -> Providers {
    let mut providers = Providers::builtins();
    for (slug, p) in raw {
        let path = format!("providers.{slug}");
        if !valid_slug(&slug) {
            errs.at(
                &path,
                "a provider name is lowercase letters, digits, '.', '_' and '-'",
            );
            continue;
        }
        if slug == "api" {
            errs.at(
                &path,
                "\"api\" is reserved: /api/v1/… is the one endpoint (OpenRouter's API), not a provider's route",
            );
            continue;
        }
        let mut field_errs = FieldErrors::default();
        let upstream = p.base_url.as_deref().and_then(|u| {
            Upstream::parse(u)
                .map_err(|why| field_errs.at("base_url", why))
                .ok()
        });
        let headers = crate::domain::header_list("headers", &p.headers, &mut field_errs);
        errs.fields(&path, field_errs);
        let entry = providers.get_or_insert_with(&slug, || Provider {
            slug: slug.clone(),
            upstream: None,
            auth: AuthScheme::Bearer,
            headers: Vec::new(),
            zdr: false,
            openai_compatible: false,
        });
        if let Some(zdr) = p.zdr {
            entry.zdr = zdr;
        }
        if let Some(compatible) = p.openai_compatible {
            entry.openai_compatible = compatible;
        }
        if upstream.is_some() {
            entry.upstream = upstream;
        }
        if let Some(auth) = p.auth {
            entry.auth = auth;
        }
        for (name, value) in headers {
            entry.headers.retain(|(n, _)| n != name);
            entry.headers.push((name, value));
        }
    }
    providers
}

/// `[prices."provider/model"]`: finite, non-negative USD per million tokens.
fn validate_prices(raw: BTreeMap<String, RawPrice>, errs: &mut Errors) -> Prices {
    let mut out = Prices::new();
    for (model, p) in raw {
        if model.is_empty() || !model.contains('/') {
            errs.at(
                format_args!("prices.{model:?}"),
                "a price is for a model slug like \"openai/gpt-4o\"",
            );
        }
        for (field, v) in [
            ("input", p.input),
            ("output", p.output),
            ("cache_read", p.cache_read),
            ("cache_write", p.cache_write),
        ] {
            if !v.is_finite() || v < 0.0 {
                errs.at(
                    format_args!("prices.{model:?}.{field}"),
                    "must be a non-negative number (USD per million tokens)",
                );
            }
        }
        out.insert(
            model,
            Price {
                input: p.input,
                output: p.output,
                cache_read: p.cache_read,
                cache_write: p.cache_write,
            },
        );
    }
    out
}

/// The most endpoints one model of the catalog may list.
const MAX_ENDPOINTS: usize = 16;

/// `[models."author/model"]`: a slug, and 1–16 endpoints, each a known
/// provider and a model id, none listed twice.
fn validate_models(
    raw: BTreeMap<String, RawModel>,
    providers: &Providers,
    errs: &mut Errors,
) -> Catalog {
    let mut out = Vec::with_capacity(raw.len());
    for (slug, m) in raw {
        let path = format!("models.{slug:?}");
        if !valid_model_slug(&slug) {
            errs.at(
                &path,
                "a model slug is \"author/model\" (printable ASCII, no spaces), like \"anthropic/claude-sonnet-4\"",
            );
            continue;
        }
        if m.endpoints.is_empty() || m.endpoints.len() > MAX_ENDPOINTS {
            errs.at(
                format_args!("{path}.endpoints"),
                format_args!("lists 1 to {MAX_ENDPOINTS} endpoints"),
            );
        }
        if m.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            errs.at(format_args!("{path}.name"), "must not be empty");
        }
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(m.endpoints.len());
        for (i, e) in m.endpoints.into_iter().enumerate() {
            let at = format!("{path}.endpoints[{i}]");
            let Some(provider) = providers
                .entry(&e.provider)
                .map(|(slug, _)| Arc::clone(slug))
            else {
                errs.at(
                    format_args!("{at}.provider"),
                    "names no provider (a built-in one, or one of [providers])",
                );
                continue;
            };
            if e.model.is_empty()
                || e.model.len() > 256
                || e.model.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                errs.at(
                    format_args!("{at}.model"),
                    "is the provider's model id: 1 to 256 characters, no spaces",
                );
                continue;
            }
            let endpoint = Endpoint {
                provider,
                model: Arc::from(e.model),
            };
            if endpoints.contains(&endpoint) {
                errs.at(&at, "lists the same provider and model twice");
                continue;
            }
            endpoints.push(endpoint);
        }
        out.push(CatalogModel {
            slug: Arc::from(slug),
            name: m.name,
            context_length: m.context_length,
            endpoints,
        });
    }
    Catalog::new(out)
}

/// `[shared]`: a workspace id, and `["*"]` or a list of workspace ids.
fn validate_shared(raw: RawShared, errs: &mut Errors) -> SharedTier {
    non_empty("shared.workspace_id", &raw.workspace_id, errs);
    let all = raw.workspaces.iter().any(|w| w == "*");
    if raw.workspaces.is_empty() {
        errs.at(
            "shared.workspaces",
            "lists no workspace: use [\"*\"] for every workspace, or leave [shared] out",
        );
    } else if all && raw.workspaces.len() > 1 {
        errs.at(
            "shared.workspaces",
            "\"*\" means every workspace: it stands alone",
        );
    }
    for (i, w) in raw.workspaces.iter().enumerate() {
        non_empty(format_args!("shared.workspaces[{i}]"), w, errs);
    }
    SharedTier {
        workspace_id: raw.workspace_id.into(),
        workspaces: (!all).then(|| {
            raw.workspaces
                .into_iter()
                .map(String::into_boxed_str)
                .collect()
        }),
    }
}

fn validate_api_keys(raw: Vec<RawApiKey>, errs: &mut Errors) -> Vec<ApiKey> {
    let mut seen: HashMap<KeyHash, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, k) in raw.into_iter().enumerate() {
        let path = format!("api_keys[{i}]");
        let fields = ApiKeyFields {
            hash: k.hash,
            workspace_id: k.workspace_id,
            user_id: k.user_id,
            name: k.name,
            disabled: k.disabled,
            require_zdr: k.require_zdr,
            expires_at: k.expires_at,
            limit: k.limit,
            limit_reset: k.limit_reset,
            include_byok_in_limit: k.include_byok_in_limit,
            external_user: k.external_user,
            ..ApiKeyFields::default()
        };
        let duplicate = KeyHash::from_hex(&fields.hash).and_then(|h| seen.insert(h, i));
        if let Some(first) = duplicate {
            errs.at(
                format_args!("{path}.hash"),
                format_args!("same hash as api_keys[{first}]"),
            );
        }
        match ApiKey::validate(fields) {
            Ok(key) if duplicate.is_none() => out.push(key),
            Ok(_) => {}
            Err(e) => errs.fields(&path, e),
        }
    }
    out
}

fn validate_credentials(
    raw: Vec<Flat<RawCredential, CredentialSpec>>,
    providers: &Providers,
    errs: &mut Errors,
) -> Vec<Credential> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, Flat { own: c, spec }) in raw.into_iter().enumerate() {
        let path = format!("credentials[{i}]");
        if let Some(first) = seen.insert(c.id.clone(), i) {
            errs.at(
                format_args!("{path}.id"),
                format_args!("same id as credentials[{first}]"),
            );
        }
        let (key, from_env) = match (c.key, &c.key_env) {
            (Some(key), None) => (Some(key), false),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => (Some(SecretString::from(v)), true),
                _ => {
                    errs.at(
                        format_args!("{path}.key_env"),
                        format_args!("environment variable {var} is not set or empty"),
                    );
                    (None, true)
                }
            },
            _ => {
                errs.at(&path, "needs exactly one of key and key_env");
                (None, false)
            }
        };
        let resolved = key.is_some();
        let fields = CredentialFields {
            id: c.id,
            workspace_id: c.workspace_id,
            provider: c.provider,
            // A stand-in for a key that could not be read, so that the other
            // fields are still checked; the error above keeps it out.
            key: key.unwrap_or_else(|| SecretString::from("unresolved-key")),
            created_at: c
                .created_at
                .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned()),
            headers: c.headers,
            spec,
        };
        match Credential::validate(fields, providers) {
            Ok(cred) if resolved => out.push(cred),
            Ok(_) => {}
            Err(e) => {
                let e = if from_env {
                    e.renamed("key", "key_env")
                } else {
                    e
                };
                errs.fields(&path, e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid(v)) => v,
            Err(e) => vec![e.to_string()],
        }
    }

    fn cred(extra: &str) -> String {
        format!(
            r#"
[[credentials]]
id = "c1"
workspace_id = "ws"
provider = "openai"
key = "sk-canary-SECRET-123456"
{extra}
"#
        )
    }

    #[test]
    fn the_body_budget_holds_at_least_one_largest_body_and_is_not_absurd() {
        for bad in [
            "max_buffered_body_bytes = 0",
            "max_buffered_body_bytes = 1048576", // below max_body_bytes (10 MiB)
            "max_body_bytes = 2000\nmax_buffered_body_bytes = 1999",
            "max_buffered_body_bytes = 1099511627777", // above 1 TiB
            "max_buffered_body_bytes = 18446744073709551615",
        ] {
            let errs = errors(&format!("[server]\n{bad}\n"));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert!(
                errs[0].starts_with("server.max_buffered_body_bytes: must be from"),
                "{bad}: {errs:?}"
            );
        }
        for (good, want) in [
            ("max_buffered_body_bytes = 10485760", 10 << 20),
            (
                "max_body_bytes = 2000\nmax_buffered_body_bytes = 2000",
                2000,
            ),
            ("max_buffered_body_bytes = 1099511627776", 1 << 40),
        ] {
            let c = Config::parse(&format!("[server]\n{good}\n")).unwrap();
            assert_eq!(c.server.max_buffered_body_bytes, want, "{good}");
        }
    }

    #[test]
    fn minimal_and_defaults() {
        let c = Config::parse(&cred("")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.server.max_buffered_body_bytes, 256 * 1024 * 1024);
        assert_eq!(c.server.drain, Duration::from_secs(30));
        assert_eq!(c.credentials[0].label, "sk-...3456");
        let c = Config::parse("[server]\nfirst_byte_timeout_secs = 0.5\n").unwrap();
        assert_eq!(c.server.first_byte_timeout, Duration::from_millis(500));
        assert_eq!(c.store.statement_timeout, Duration::from_secs(5));
        assert_eq!(c.store.usage_retention_days, 400);
        let c = Config::parse(
            "[store]\nurl = \"file\"\nstatement_timeout_ms = 250\nusage_retention_days = 40\n",
        )
        .unwrap();
        assert_eq!(c.store.statement_timeout, Duration::from_millis(250));
        assert_eq!(c.store.usage_retention_days, 40);
    }

    #[test]
    fn errors_name_the_entry() {
        let cases: &[(String, &str)] = &[
            (cred(r#"allowed_api_key_hashes = ["nope"]"#), "credentials[0].allowed_api_key_hashes[0]: not 64 lowercase hex chars"),
            (cred(&format!(r#"allowed_api_key_hashes = ["{H1}", "{}"]"#, H1.to_uppercase())), "credentials[0].allowed_api_key_hashes[1]: not 64 lowercase hex chars"),
            (cred(r#"created_at = "yesterday""#), "credentials[0].created_at: not an RFC 3339"),
            (cred(r#"key_env = "X""#), "credentials[0]: needs exactly one of key and key_env"),
            (cred(r#"base_url = "ftp://x""#), "credentials[0].base_url: must start with"),
            (cred(r#"headers = { "Authorization" = "x" }"#), r#"credentials[0].headers."Authorization": hop-by-hop"#),
            (cred(r#"allowed_models = ["openai/gpt-4o", ""]"#), "credentials[0].allowed_models[1]: must not be empty"),
            (cred(r#"kye = "oops""#), "credentials[0].kye: unknown field `kye`"),
            (cred(r#"sort_order = "first""#), "credentials[0].sort_order: invalid type: string, expected"),
            (cred("").replace("openai", "nope"), r#"credentials[0].provider: unknown provider "nope""#),
            (cred("").replace("openai", "azure"), "credentials[0].base_url: required: provider azure"),
            (format!("{}{}", cred(""), cred("")), "credentials[1].id: same id as credentials[0]"),
            ("[server]\nlisten = \"nowhere\"\n".into(), "server.listen:"),
            ("[server]\ndrain_secs = 0\n".into(), "server.drain_secs: must be a positive"),
            ("[store]\nurl = \"file\"\nstatement_timeout_ms = 0\n".into(), "store.statement_timeout_ms: must be from 100 to 600000"),
            ("[store]\nurl = \"file\"\nusage_retention_days = 30\n".into(), "store.usage_retention_days: must be from 40 to 36500"),
            // Loaded, they overflowed `Instant::now() + timeout` at the first
            // request (found by fuzz/config's deadline check).
            ("[server]\nidle_timeout_secs = 1e19\n".into(), "server.idle_timeout_secs: must be a positive number of seconds, at most a year"),
            ("[server]\nfirst_byte_timeout_secs = 31536000.5\n".into(), "server.first_byte_timeout_secs: must be a positive"),
            ("[server]\nbogus = 1\n".into(), "server.bogus: unknown field `bogus`"),
            (format!("[[api_keys]]\nhash = \"{H1}\"\nworkspace_id = \"w\"\nuser_id = \"u\"\n[[api_keys]]\nhash = \"{H1}\"\nworkspace_id = \"w\"\nuser_id = \"\"\n"), "api_keys[1].hash: same hash as api_keys[0]"),
            ("[providers.Bad]\nbase_url = \"https://x\"\n".into(), "providers.Bad: a provider name"),
            ("[providers.mine]\nauth = \"basic\"\n".into(), "providers.mine.auth: unknown variant"),
            ("[admin]\nlisten = \"127.0.0.1:9\"\nmanagement_key_hashes = [\"x\"]\n".into(), "admin.management_key_hashes[0]: not 64"),
            (format!("[admin]\nlisten = \"127.0.0.1:9\"\n[[admin.management_keys]]\nhash = \"{H1}\"\nworkspaces = []\n"), "admin.management_keys[0].workspaces: lists no workspace"),
            ("[admin]\nlisten = \"127.0.0.1:9\"\n[[admin.management_keys]]\nhash = \"X\"\nworkspaces = [\"w\"]\n".into(), "admin.management_keys[0].hash: not 64"),
            (format!("[admin]\nlisten = \"127.0.0.1:9\"\nmanagement_key_hashes = [\"{H1}\"]\n[[admin.management_keys]]\nhash = \"{H1}\"\nworkspaces = [\"w\", \"\"]\n"), "admin.management_keys[0].hash: the same key is listed twice"),
            (format!("[admin]\nlisten = \"127.0.0.1:9\"\n[[admin.management_keys]]\nhash = \"{H1}\"\nworkspaces = [\"w\", \"\"]\n"), "admin.management_keys[0].workspaces[1]: must not be empty"),
            ("[admin]\nlisten = \"127.0.0.1:9\"\n".into(), "admin.management_key_hashes: needs at least one hash"),
            ("[shared]\nworkspace_id = \"p\"\nworkspaces = [\"\"]\n".into(), "shared.workspaces[0]: must not be empty"),
            ("[providers.api]\nbase_url = \"https://x\"\n".into(), "providers.api: \"api\" is reserved"),
            ("[models.\"claude\"]\nendpoints = [{ provider = \"anthropic\", model = \"m\" }]\n".into(), "models.\"claude\": a model slug is"),
            ("[models.\"a/b\"]\nendpoints = []\n".into(), "models.\"a/b\".endpoints: lists 1 to 16 endpoints"),
            ("[models.\"a/b\"]\nendpoints = [{ provider = \"nope\", model = \"m\" }]\n".into(), "models.\"a/b\".endpoints[0].provider: names no provider"),
            ("[models.\"a/b\"]\nendpoints = [{ provider = \"openai\", model = \"m x\" }]\n".into(), "models.\"a/b\".endpoints[0].model: is the provider's model id"),
            ("[models.\"a/b\"]\nendpoints = [{ provider = \"openai\", model = \"m\" }, { provider = \"openai\", model = \"m\" }]\n".into(), "models.\"a/b\".endpoints[1]: lists the same provider and model twice"),
            ("[models.\"a/b\"]\nendpoints = [{ provider = \"openai\", model = \"m\", weight = 2 }]\n".into(), "models.a/b.endpoints[0].weight: unknown field"),
            ("[models.\"a/b\"]\nname = \" \"\nendpoints = [{ provider = \"openai\", model = \"m\" }]\n".into(), "models.\"a/b\".name: must not be empty"),
        ];
        for (text, want) in cases {
            let errs = errors(text);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "want {want:?}, got {errs:?}"
            );
        }
    }

    #[test]
    fn errors_never_print_a_secret() {
        let texts = [
            cred(r#"key_env = "X""#),
            cred("disabled = \"sk-canary-SECRET-123456\""),
            "[[credentials]]\nid = \"c\"\nworkspace_id = \"w\"\nprovider = \"openai\"\nkey = [\"sk-canary-SECRET-123456\"]\n".into(),
            "[[credentials]]\nid = \"c\"\nworkspace_id = \"w\"\nprovider = \"openai\"\nkey = \"sk-canary SECRET-123456\"\n".into(),
            "[[credentials]]\nid = \"c\"\nkey = \"sk-canary-SECRET-123456\"\nworkspace_id = \"w\"\nprovider = \"openai\"\n= broken".into(),
            "[[credentials]]\nid = \"c\"\nkey = \"sk-canary-SECRET-123456".into(),
        ];
        for text in texts {
            let errs = errors(&text);
            assert!(!errs.is_empty(), "{text}");
            for e in &errs {
                assert!(!e.contains("canary"), "{e}");
            }
        }
        let dbg = format!("{:?}", Config::parse(&cred("")).unwrap());
        assert!(!dbg.contains("canary"), "{dbg}");
    }

    #[test]
    fn the_catalog_maps_slugs_to_endpoints_of_known_providers() {
        let config = Config::parse(
            r#"
[providers.local]
base_url = "http://127.0.0.1:9"
openai_compatible = true

[providers.openai]
openai_compatible = false

[models."anthropic/claude-sonnet-4"]
name = "Claude Sonnet 4"
context_length = 200000
endpoints = [
  { provider = "anthropic", model = "claude-sonnet-4-20250514" },
  { provider = "amazon-bedrock", model = "anthropic.claude-sonnet-4-20250514-v1:0" },
]

[models."meta/llama-3"]
endpoints = [{ provider = "local", model = "llama3" }]
"#,
        )
        .unwrap();
        assert!(config.providers.get("local").unwrap().openai_compatible);
        assert!(!config.providers.get("openai").unwrap().openai_compatible);
        assert!(config.providers.get("mistral").unwrap().openai_compatible);
        assert!(
            !config
                .providers
                .get("amazon-bedrock")
                .unwrap()
                .openai_compatible
        );
        assert_eq!(config.models.len(), 2);
        let claude = config.models.get("anthropic/claude-sonnet-4").unwrap();
        assert_eq!(claude.name.as_deref(), Some("Claude Sonnet 4"));
        assert_eq!(claude.context_length, Some(200_000));
        let ids: Vec<(&str, &str)> = claude
            .endpoints
            .iter()
            .map(|e| (&*e.provider, &*e.model))
            .collect();
        assert_eq!(
            ids,
            [
                ("anthropic", "claude-sonnet-4-20250514"),
                ("amazon-bedrock", "anthropic.claude-sonnet-4-20250514-v1:0")
            ]
        );
    }

    #[test]
    fn providers_override_and_add() {
        let c = Config::parse(
            "[providers.openai]\nbase_url = \"http://127.0.0.1:1/v\"\n[providers.local]\nbase_url = \"http://127.0.0.1:2\"\nauth = \"x-api-key\"\nheaders = { \"x-extra\" = \"1\" }\n",
        )
        .unwrap();
        let openai = c.providers.get("openai").unwrap();
        assert_eq!(
            openai.upstream.as_ref().unwrap().to_string(),
            "http://127.0.0.1:1/v"
        );
        let local = c.providers.get("local").unwrap();
        assert_eq!(local.auth, AuthScheme::XApiKey);
        assert_eq!(local.headers.len(), 1);
    }
}
