//! The management API and `/metrics`, on their own listener (`admin.listen`).
//!
//! Everything but `/healthz` and `/readyz` needs `Authorization: Bearer
//! <management key>`, compared by SHA-256 against `admin.management_key_hashes`.
//! The credential routes mirror OpenRouter's `/api/v1/byok`: each item is a
//! `BYOKKey` with its 12 fields in snake_case; the secret is never part of it.
//!
//! ```text
//! GET    /healthz                      {"status":"ok"}
//! GET    /readyz                       {"ready":true,"generation":N,"loaded_at":"…"}
//! GET    /metrics                      OpenMetrics text
//! GET    /api/v1/byok?workspace_id=&provider=&offset=0&limit=100
//!                                      {"data":[BYOKKey…],"total_count":N}
//! GET    /api/v1/byok/{id}             {"data":BYOKKey} or 404
//! POST   /api/v1/byok                  201 {"data":BYOKKey}      (405 on the file store)
//! PATCH  /api/v1/byok/{id}             {"data":BYOKKey}          (405 on the file store)
//! DELETE /api/v1/byok/{id}             {"deleted":true}          (405 on the file store)
//! GET    /api/v1/keys?workspace_id=&user_id=&offset=&limit=
//!                                      {"data":[key…],"total_count":N}
//! GET    /api/v1/keys/{hash}           {"data":key}
//! POST   /api/v1/keys                  201 {"data":key,"key":"byok-…"} (the raw key, once)
//! PATCH  /api/v1/keys/{hash}           {"data":key}              (name, disabled)
//! DELETE /api/v1/keys/{hash}           {"deleted":true}
//! ```
//!
//! A write goes to the store first, then into the registry, so it is in force
//! for the next request on this replica (other replicas follow the store).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

use secrecy::ExposeSecret;

mod body;
mod error;
mod scope;

use body::{CreateApiKey, CreateCredential, UpdateApiKey, UpdateCredential};
use error::AdminError;
pub(crate) use scope::Access;
use scope::Caller;

use crate::common::bearer::bearer_token;
use crate::common::openrouter::{key_json, rfc3339_ms};
use crate::domain::{ApiKey, ApiKeyFields, Credential, CredentialFields, KeyHash};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::registry::SnapshotError;
use crate::store::{self, Store, StoreError};

/// The most items one list page holds.
const MAX_LIMIT: usize = 100;
/// A list's page size when the query gives none (OpenRouter's).
const DEFAULT_LIMIT: usize = 50;

/// The admin service; cheap to clone. Serve it with hyper on its own listener.
#[derive(Clone, Debug)]
pub(crate) struct Admin {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    registry: Registry,
    metrics: Arc<Metrics>,
    access: ArcSwap<Access>,
    store: Arc<Store>,
    default_workspace_id: Option<String>,
}

/// The largest write body the admin API reads.
const MAX_ADMIN_BODY: usize = 1 << 20;

type AdminResult = Result<Response<Full<Bytes>>, AdminError>;

impl Admin {
    /// An admin service over the proxy's registry, metrics and store.
    pub(crate) fn new(
        registry: Registry,
        metrics: Arc<Metrics>,
        access: Access,
        store: Arc<Store>,
        default_workspace_id: Option<String>,
    ) -> Self {
        Admin {
            state: Arc::new(State {
                registry,
                metrics,
                access: ArcSwap::from_pointee(access),
                store,
                default_workspace_id,
            }),
        }
    }

    /// Replaces the accepted management keys and their scopes (on reload).
    pub(crate) fn set_access(&self, access: Access) {
        self.state.access.store(Arc::new(access));
    }

    /// Answers one request. Never fails: errors are JSON responses.
    pub(crate) async fn respond<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<crate::BoxError>,
    {
        match self.route(req).await {
            Ok(res) => res,
            Err(e) => e.into_response(),
        }
    }

    async fn route<B>(&self, req: Request<B>) -> AdminResult
    where
        B: Body,
        B::Error: Into<crate::BoxError>,
    {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let read = matches!(method, Method::GET | Method::HEAD);
        match path.as_str() {
            "/healthz" if read => {
                return Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
            }
            "/readyz" if read => return Ok(self.readyz()),
            _ => {}
        }
        let caller = self.authorize(&req)?;
        let query = req.uri().query().map(str::to_owned);
        let body = req.into_body();
        if path == "/metrics" && read {
            // Every workspace's figures: the operator's only.
            if !caller.is_operator() {
                return Err(AdminError::OutsideScope(
                    "the metrics are every workspace's: they need an operator management key",
                ));
            }
            self.state
                .metrics
                .observe_health(&self.state.registry.snapshot());
            let mut res = Response::new(Full::new(Bytes::from(self.state.metrics.encode())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return Ok(res);
        }
        if let Some(id) = path
            .strip_prefix("/api/v1/byok/")
            .and_then(|rest| rest.strip_suffix("/health"))
        {
            return match method {
                Method::GET | Method::HEAD => self.health(&caller, &segment(&format!("/{id}"))?),
                _ => Err(AdminError::MethodNotAllowed),
            };
        }
        if let Some(rest) = path.strip_prefix("/api/v1/byok") {
            return match (rest, method) {
                ("", Method::GET | Method::HEAD) => self.list(&caller, query.as_deref()),
                ("", Method::POST) => self.create(&caller, read_json(body).await?).await,
                ("", _) => Err(AdminError::MethodNotAllowed),
                (id, m) => match (segment(id)?, m) {
                    (id, Method::GET | Method::HEAD) => self.get(&caller, &id),
                    (id, Method::PATCH) => self.update(&caller, &id, read_json(body).await?).await,
                    (id, Method::DELETE) => self.delete(&caller, &id).await,
                    _ => Err(AdminError::MethodNotAllowed),
                },
            };
        }
        if let Some(rest) = path.strip_prefix("/api/v1/keys") {
            return match (rest, method) {
                ("", Method::GET | Method::HEAD) => self.list_keys(&caller, query.as_deref()),
                ("", Method::POST) => self.create_key(&caller, read_json(body).await?).await,
                ("", _) => Err(AdminError::MethodNotAllowed),
                (hash, m) => {
                    let hash = segment(hash)?;
                    let hash = KeyHash::from_hex(&hash).ok_or(AdminError::UnknownApiKey)?;
                    match m {
                        Method::GET | Method::HEAD => self.get_key(&caller, hash),
                        Method::PATCH => {
                            self.update_key(&caller, hash, read_json(body).await?).await
                        }
                        Method::DELETE => self.delete_key(&caller, hash).await,
                        _ => Err(AdminError::MethodNotAllowed),
                    }
                }
            };
        }
        Err(AdminError::NotFound)
    }

    /// The caller behind the one `Authorization: Bearer` management key.
    fn authorize<B>(&self, req: &Request<B>) -> Result<Caller, AdminError> {
        let access = self.state.access.load();
        let mut presented = req.headers().get_all(header::AUTHORIZATION).iter();
        match (presented.next(), presented.next()) {
            (Some(value), None) => bearer_token(value.as_bytes())
                .filter(|t| !t.is_empty())
                .and_then(|t| access.caller(&KeyHash::of(t)))
                .ok_or(AdminError::ManagementKeyRequired),
            _ => Err(AdminError::ManagementKeyRequired),
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let snapshot = self.state.registry.snapshot();
        let loaded_at = OffsetDateTime::from(snapshot.loaded_at())
            .format(&Rfc3339)
            .unwrap_or_default();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "ready": true,
                "generation": snapshot.generation(),
                "loaded_at": loaded_at,
                "store": self.store_kind(),
            }),
        )
    }

    fn store_kind(&self) -> &'static str {
        match *self.state.store {
            Store::File => "file",
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Refreshes the registry gauges after a write.
    fn observe(&self) {
        self.state
            .metrics
            .observe_snapshot(&self.state.registry.snapshot());
    }

    /// The store to write to, and the turn (see `Registry::ordered`) held
    /// until the write is applied to the registry: writes reach the
    /// registry in the order the store committed them.
    async fn writable(&self) -> Result<(&Store, OwnedMutexGuard<()>), AdminError> {
        let store = &*self.state.store;
        if !store.is_writable() {
            return Err(AdminError::ReadOnlyStore);
        }
        Ok((store, self.state.registry.ordered().await))
    }

    fn list(&self, caller: &Caller, query: Option<&str>) -> AdminResult {
        let q = ListQuery::parse(query)?;
        let snapshot = self.state.registry.snapshot();
        let all = snapshot.credentials();
        let workspace = self.listed_workspace(caller, &q);
        let matching = all.iter().filter(|c| {
            caller.sees(c.workspace_id.as_deref())
                && workspace.is_none_or(|w| c.workspace_id.as_deref() == Some(w))
                && q.provider.as_deref().is_none_or(|p| c.provider == p)
        });
        let ledger = snapshot.ledger();
        let (data, total_count) = page(matching.map(|c| ByokKey::of(c, ledger)), &q);
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": data, "total_count": total_count }),
        ))
    }

    /// The workspace a list shows: the query's; without one, the caller's
    /// default workspace; `*` (or, for the operator, no default workspace)
    /// lists every workspace the caller sees (the operator: the global
    /// credentials too). `None`: no filter beyond what the caller sees.
    fn listed_workspace<'q>(&'q self, caller: &'q Caller, q: &'q ListQuery) -> Option<&'q str> {
        caller.listed(
            q.workspace_id.as_deref(),
            self.state.default_workspace_id.as_deref(),
        )
    }

    /// A credential the caller may see: another workspace's answers as a
    /// missing one does.
    fn visible(&self, caller: &Caller, id: &str) -> Result<Arc<Credential>, AdminError> {
        self.state
            .registry
            .snapshot()
            .credential(id)
            .filter(|c| caller.sees(c.workspace_id.as_deref()))
            .ok_or(AdminError::UnknownCredential)
    }

    /// A gateway key the caller may see, likewise.
    fn visible_key(&self, caller: &Caller, hash: KeyHash) -> Result<Arc<ApiKey>, AdminError> {
        self.state
            .registry
            .snapshot()
            .api_key(&hash)
            .filter(|k| caller.sees(Some(&k.workspace_id)))
            .ok_or(AdminError::UnknownApiKey)
    }

    /// `GET /api/v1/byok/{id}/health` (SPEC §10).
    fn health(&self, caller: &Caller, id: &str) -> AdminResult {
        let cred = self.visible(caller, id)?;
        let now = crate::clock::now_ms();
        let health = self.state.registry.snapshot().health(&cred.id);
        let (state, until) = health
            .as_ref()
            .map_or((crate::policy::health::State::Healthy, None), |h| {
                h.state(now)
            });
        let (last_status, failures, last_used) =
            health.as_ref().map_or((None, 0, None), |h| h.counters());
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": {
                "id": cred.id,
                "state": state.as_str(),
                "until": until.map(rfc3339_ms),
                "last_status": last_status,
                "consecutive_failures": failures,
                "last_used_at": last_used.map(rfc3339_ms),
            }}),
        ))
    }

    fn get(&self, caller: &Caller, id: &str) -> AdminResult {
        let cred = self.visible(caller, id)?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": ByokKey::of(&cred, self.state.registry.snapshot().ledger()) }),
        ))
    }

    /// Validates fields under the one set of rules, against the providers in
    /// force.
    fn credential(&self, fields: CredentialFields) -> Result<Credential, AdminError> {
        let snapshot = self.state.registry.snapshot();
        Credential::validate(fields, snapshot.providers()).map_err(|e| AdminError::fields(&e))
    }

    async fn create(&self, caller: &Caller, body: CreateCredential) -> AdminResult {
        let (store, _turn) = self.writable().await?;
        let fields =
            body.into_fields(caller.default_workspace(self.state.default_workspace_id.as_deref()))?;
        caller.may_write(fields.workspace_id.as_deref())?;
        let cred = self.credential(fields)?;
        store.create_credential(cred.to_fields()).await?;
        let view = serde_json::json!({ "data": ByokKey::of(&cred, self.state.registry.snapshot().ledger()) });
        self.state
            .registry
            .apply(|s| s.upsert_credential(cred))
            .map_err(snapshot_rejection)?;
        self.observe();
        Ok(json(StatusCode::CREATED, &view))
    }

    async fn update(&self, caller: &Caller, id: &str, patch: UpdateCredential) -> AdminResult {
        let (store, _turn) = self.writable().await?;
        self.visible(caller, id)?;
        let admin = self.clone();
        let caller = caller.clone();
        let edit = Box::new(move |rec: &mut CredentialFields| {
            // The row as stored decides, not the registry's copy.
            if !caller.sees(rec.workspace_id.as_deref()) {
                return Err(StoreError::NotFound);
            }
            patch.apply(rec).map_err(StoreError::Invalid)?;
            admin
                .credential(rec.clone())
                .map(drop)
                .map_err(|e| StoreError::Invalid(e.to_string()))
        });
        let fields = store.update_credential(id, edit).await?;
        let cred = self.credential(fields)?;
        let view = serde_json::json!({ "data": ByokKey::of(&cred, self.state.registry.snapshot().ledger()) });
        self.state
            .registry
            .apply(|s| s.upsert_credential(cred))
            .map_err(snapshot_rejection)?;
        self.observe();
        Ok(json(StatusCode::OK, &view))
    }

    async fn delete(&self, caller: &Caller, id: &str) -> AdminResult {
        let (store, _turn) = self.writable().await?;
        // A credential never changes workspace: the registry's copy decides.
        self.visible(caller, id)?;
        if !store.delete_credential(id).await? {
            return Err(AdminError::UnknownCredential);
        }
        self.state
            .registry
            .apply(|s| s.remove_credential(id))
            .map_err(snapshot_rejection)?;
        self.observe();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "deleted": true }),
        ))
    }

    fn list_keys(&self, caller: &Caller, query: Option<&str>) -> AdminResult {
        let q = ListQuery::parse(query)?;
        let snapshot = self.state.registry.snapshot();
        let all = snapshot.api_keys();
        let workspace = self.listed_workspace(caller, &q);
        let matching = all.iter().filter(|k| {
            caller.sees(Some(&k.workspace_id))
                && workspace.is_none_or(|w| &*k.workspace_id == w)
                && q.user_id.as_deref().is_none_or(|u| &*k.user_id == u)
                && (q.include_disabled || !k.disabled)
        });
        let ledger = snapshot.ledger();
        let (data, total_count) = page(matching.map(|k| key_json(k, ledger)), &q);
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": data, "total_count": total_count }),
        ))
    }

    fn get_key(&self, caller: &Caller, hash: KeyHash) -> AdminResult {
        let key = self.visible_key(caller, hash)?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": key_json(&key, self.state.registry.snapshot().ledger()) }),
        ))
    }

    async fn create_key(&self, caller: &Caller, body: CreateApiKey) -> AdminResult {
        let (store, _turn) = self.writable().await?;
        let (raw, fields) =
            body.into_fields(caller.default_workspace(self.state.default_workspace_id.as_deref()))?;
        caller.may_write(Some(&fields.workspace_id))?;
        let key = ApiKey::validate(fields).map_err(|e| AdminError::fields(&e))?;
        store.create_api_key(key.to_fields()).await?;
        let view = serde_json::json!({
            "data": key_json(&key, self.state.registry.snapshot().ledger()),
            "key": raw.expose_secret(),
        });
        self.state.registry.apply(|s| s.upsert_api_key(key));
        self.observe();
        Ok(json(StatusCode::CREATED, &view))
    }

    async fn update_key(&self, caller: &Caller, hash: KeyHash, patch: UpdateApiKey) -> AdminResult {
        let (store, _turn) = self.writable().await?;
        self.visible_key(caller, hash)?;
        let caller = caller.clone();
        let edit = Box::new(move |rec: &mut ApiKeyFields| {
            if !caller.sees(Some(&rec.workspace_id)) {
                return Err(StoreError::NotFound);
            }
            patch.apply(rec);
            ApiKey::validate(rec.clone())
                .map(drop)
                .map_err(|e| StoreError::Invalid(AdminError::fields(&e).to_string()))
        });
        let fields = store
            .update_api_key(hash, edit)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => AdminError::UnknownApiKey,
                e => e.into(),
            })?;
        let key = store::api_key(fields)?;
        let view =
            serde_json::json!({ "data": key_json(&key, self.state.registry.snapshot().ledger()) });
        self.state.registry.apply(|s| s.upsert_api_key(key));
        self.observe();
        Ok(json(StatusCode::OK, &view))
    }

    async fn delete_key(&self, caller: &Caller, hash: KeyHash) -> AdminResult {
        let (store, _turn) = self.writable().await?;
        self.visible_key(caller, hash)?;
        if !store.delete_api_key(hash).await? {
            return Err(AdminError::UnknownApiKey);
        }
        self.state.registry.apply(|s| s.remove_api_key(&hash));
        self.observe();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "deleted": true }),
        ))
    }
}

impl<B> hyper::service::Service<Request<B>> for Admin
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let admin = self.clone();
        Box::pin(async move { Ok(admin.respond(req).await) })
    }
}

/// One path segment after the route, percent-decoded; a nested path is 404.
fn segment(rest: &str) -> Result<String, AdminError> {
    match rest.strip_prefix('/') {
        Some(seg) if !seg.is_empty() && !seg.contains('/') => {
            Ok(percent_decode_str(seg).decode_utf8_lossy().into_owned())
        }
        _ => Err(AdminError::NotFound),
    }
}

/// Reads a JSON write body (at most 1 MiB). Errors name the field and never
/// repeat a value (a secret could be one).
async fn read_json<B, T>(body: B) -> Result<T, AdminError>
where
    B: Body,
    B::Error: Into<crate::BoxError>,
    T: serde::de::DeserializeOwned,
{
    let bytes = http_body_util::Limited::new(body, MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|_| {
            AdminError::InvalidField(format!(
                "the body must be JSON of at most {MAX_ADMIN_BODY} bytes"
            ))
        })?
        .to_bytes();
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = crate::config::scrub(&e.inner().to_string());
        if path.is_empty() || path == "." {
            AdminError::InvalidField(format!("invalid body: {message}"))
        } else {
            AdminError::InvalidField(format!("{path}: {message}"))
        }
    })?;
    de.end().map_err(|_| {
        AdminError::InvalidField("invalid body: trailing characters after the JSON".into())
    })?;
    Ok(value)
}

fn snapshot_rejection(e: SnapshotError) -> AdminError {
    use crate::registry::CompileError;
    AdminError::InvalidField(match e {
        SnapshotError::Compile(CompileError::UnknownProvider { .. }) => {
            "provider: unknown provider".to_owned()
        }
        SnapshotError::Compile(CompileError::NoUpstream { provider, .. }) => {
            format!("base_url: required, provider {provider} has no default")
        }
        SnapshotError::Compile(CompileError::BadHeader { .. }) => {
            "key: not usable in an HTTP header".to_owned()
        }
        SnapshotError::Compile(CompileError::NotBuilt { feature, .. }) => {
            format!("key: needs byok-proxy built with the `{feature}` feature")
        }
        SnapshotError::DuplicateId { id } => format!("id: {id} exists already"),
    })
}

/// One page of `items`, and how many there were in all.
fn page<T>(items: impl Iterator<Item = T>, q: &ListQuery) -> (Vec<T>, usize) {
    let mut total = 0usize;
    let mut data = Vec::new();
    for (i, item) in items.enumerate() {
        total += 1;
        if i >= q.offset && data.len() < q.limit {
            data.push(item);
        }
    }
    (data, total)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `BYOKKey` on the wire: exactly OpenRouter's fields, snake_case, in
/// OpenRouter's order; `name` omitted when unset. Built from a [`Credential`],
/// whose secret it never reads.
///
/// Written out rather than derived from the
/// [`CredentialSpec`](crate::domain::CredentialSpec): the shape is
/// OpenRouter's contract (SPEC §2, tested with its SDK), so a field added to
/// the spec is served here only when it is added here too.
#[derive(Debug, Serialize)]
pub(crate) struct ByokKey<'a> {
    id: &'a str,
    /// `null`: a global credential.
    workspace_id: Option<&'a str>,
    provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    label: &'a str,
    created_at: &'a str,
    disabled: bool,
    is_fallback: bool,
    is_required: bool,
    is_byok_only: bool,
    declared_zdr: Option<bool>,
    sort_order: i64,
    allowed_api_key_hashes: Option<&'a [String]>,
    allowed_models: Option<&'a [String]>,
    allowed_user_ids: Option<&'a [String]>,
    /// An extra field (OpenRouter's SDK ignores it): when the credential
    /// last served a response, as of the last flush (SPEC §8).
    last_used_at: Option<String>,
}

impl<'a> ByokKey<'a> {
    /// The view of `c`, with its last use from `ledger`.
    fn of(c: &'a Credential, ledger: &Ledger) -> Self {
        let mut view = ByokKey::from(c);
        view.last_used_at = ledger.credential_last_used_ms(&c.id).map(rfc3339_ms);
        view
    }
}

impl<'a> From<&'a Credential> for ByokKey<'a> {
    fn from(c: &'a Credential) -> Self {
        ByokKey {
            id: &c.id,
            workspace_id: c.workspace_id.as_deref(),
            provider: &c.provider,
            name: c.name.as_deref(),
            label: &c.label,
            created_at: &c.created_at,
            disabled: c.disabled,
            is_fallback: c.is_fallback,
            is_required: c.is_required,
            is_byok_only: c.is_byok_only,
            declared_zdr: c.declared_zdr,
            sort_order: c.sort_order,
            allowed_api_key_hashes: c.allowed_api_key_hashes.as_deref(),
            allowed_models: c.allowed_models.as_deref(),
            allowed_user_ids: c.allowed_user_ids.as_deref(),
            last_used_at: None,
        }
    }
}

/// `?workspace_id=&provider=&user_id=&offset=&limit=`; other parameters are ignored.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    workspace_id: Option<String>,
    provider: Option<String>,
    user_id: Option<String>,
    /// Gateway keys only, as OpenRouter's: disabled keys are listed only
    /// when asked for.
    include_disabled: bool,
    offset: usize,
    limit: usize,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Result<Self, AdminError> {
        let mut q = ListQuery {
            workspace_id: None,
            provider: None,
            user_id: None,
            include_disabled: false,
            offset: 0,
            limit: DEFAULT_LIMIT,
        };
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.into_owned();
            match &*name {
                "workspace_id" => q.workspace_id = Some(value),
                "provider" => q.provider = Some(value),
                "user_id" => q.user_id = Some(value),
                "include_disabled" => {
                    q.include_disabled = match &*value {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(AdminError::InvalidQuery(
                                "include_disabled must be true or false",
                            ))
                        }
                    }
                }
                "offset" => {
                    q.offset = value
                        .parse()
                        .map_err(|_| AdminError::InvalidQuery("offset must be a whole number"))?
                }
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(AdminError::InvalidQuery(
                            "limit must be a whole number from 1 to 100",
                        ))?
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_table() {
        let q = |s: &str| ListQuery::parse(Some(s)).map_err(|r| r.parts().1);
        assert_eq!(
            q("").unwrap(),
            ListQuery {
                workspace_id: None,
                provider: None,
                user_id: None,
                include_disabled: false,
                offset: 0,
                limit: 50
            }
        );
        assert!(q("include_disabled=true").unwrap().include_disabled);
        let got = q("workspace_id=ws%2D1&provider=openai&offset=5&limit=1&x=y").unwrap();
        assert_eq!(got.workspace_id.as_deref(), Some("ws-1"));
        assert_eq!(got.provider.as_deref(), Some("openai"));
        assert_eq!((got.offset, got.limit), (5, 1));
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=x",
            "offset=-1",
            "offset=1.5",
            "include_disabled=1",
            "limit=",
        ] {
            assert_eq!(q(bad).unwrap_err(), "invalid_request", "{bad}");
        }
    }

    #[test]
    fn byok_key_has_exactly_the_openrouter_fields() {
        let mut c = Credential::for_tests("id-1", "ws", "openai");
        let v = serde_json::to_value(ByokKey::from(&c)).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "allowed_api_key_hashes",
                "allowed_models",
                "allowed_user_ids",
                "created_at",
                "declared_zdr",
                "disabled",
                "id",
                "is_byok_only",
                "is_fallback",
                "is_required",
                "label",
                "last_used_at",
                "provider",
                "sort_order",
                "workspace_id"
            ]
        );
        assert_eq!(v["declared_zdr"], serde_json::Value::Null);
        c.name = Some("n".into());
        c.workspace_id = None;
        let v = serde_json::to_value(ByokKey::from(&c)).unwrap();
        assert_eq!(v["name"], "n");
        assert_eq!(
            v["workspace_id"],
            serde_json::Value::Null,
            "a global credential"
        );
        assert!(!v.to_string().contains("sk-test-secret"));
    }
}
