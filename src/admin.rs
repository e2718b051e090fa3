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
//! POST   /api/v1/byok                  405 on the file store (read-only)
//! PATCH  /api/v1/byok/{id}             405 on the file store
//! DELETE /api/v1/byok/{id}             405 on the file store
//! ```

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cache::Credential;
use crate::error::Rejection;
use crate::key::{bearer_token, KeyHash};
use crate::{Metrics, Registry};

/// The most items one list page holds.
const MAX_LIMIT: usize = 100;

/// The admin service; cheap to clone. Serve it with hyper on its own listener.
#[derive(Clone, Debug)]
pub struct Admin {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    registry: Registry,
    metrics: Arc<Metrics>,
    management_keys: ArcSwap<HashSet<KeyHash>>,
}

impl Admin {
    /// An admin service over the proxy's registry and metrics.
    pub fn new(
        registry: Registry,
        metrics: Arc<Metrics>,
        management_keys: impl IntoIterator<Item = KeyHash>,
    ) -> Self {
        Admin {
            state: Arc::new(State {
                registry,
                metrics,
                management_keys: ArcSwap::from_pointee(management_keys.into_iter().collect()),
            }),
        }
    }

    /// Replaces the accepted management keys (on reload).
    pub fn set_management_keys(&self, keys: impl IntoIterator<Item = KeyHash>) {
        self.state
            .management_keys
            .store(Arc::new(keys.into_iter().collect()));
    }

    /// Answers one request. Never fails: errors are JSON responses.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match self.route(req) {
            Ok(res) => res,
            Err(rejection) => rejection.into_response(),
        }
    }

    fn route<B>(&self, req: &Request<B>) -> Result<Response<Full<Bytes>>, Rejection> {
        let path = req.uri().path();
        let method = req.method();
        let read = matches!(*method, Method::GET | Method::HEAD);
        match path {
            "/healthz" if read => {
                return Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
            }
            "/readyz" if read => return Ok(self.readyz()),
            _ => {}
        }
        self.authorize(req)?;
        match path {
            "/metrics" if read => {
                let mut res = Response::new(Full::new(Bytes::from(self.state.metrics.encode())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(res)
            }
            "/api/v1/byok" => match *method {
                Method::GET | Method::HEAD => self.list(req.uri().query()),
                Method::POST => Err(Rejection::ReadOnlyStore),
                _ => Err(Rejection::AdminMethodNotAllowed),
            },
            _ => match path.strip_prefix("/api/v1/byok/") {
                Some(id) if !id.is_empty() && !id.contains('/') => match *method {
                    Method::GET | Method::HEAD => self.get(id),
                    Method::PATCH | Method::DELETE => Err(Rejection::ReadOnlyStore),
                    _ => Err(Rejection::AdminMethodNotAllowed),
                },
                _ => Err(Rejection::NotFound),
            },
        }
    }

    fn authorize<B>(&self, req: &Request<B>) -> Result<(), Rejection> {
        let keys = self.state.management_keys.load();
        let mut presented = req.headers().get_all(header::AUTHORIZATION).iter();
        match (presented.next(), presented.next()) {
            (Some(value), None) => {
                let token = bearer_token(value.as_bytes()).filter(|t| !t.is_empty());
                match token {
                    Some(t) if keys.contains(&KeyHash::of(t)) => Ok(()),
                    _ => Err(Rejection::ManagementKeyRequired),
                }
            }
            _ => Err(Rejection::ManagementKeyRequired),
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
            }),
        )
    }

    fn list(&self, query: Option<&str>) -> Result<Response<Full<Bytes>>, Rejection> {
        let q = ListQuery::parse(query)?;
        let snapshot = self.state.registry.snapshot();
        let all = snapshot.credentials();
        let matching = all.iter().filter(|c| {
            q.workspace_id
                .as_deref()
                .is_none_or(|w| c.workspace_id == w)
                && q.provider.as_deref().is_none_or(|p| c.provider == p)
        });
        let mut total_count = 0usize;
        let mut data = Vec::new();
        for (i, cred) in matching.enumerate() {
            total_count += 1;
            if i >= q.offset && data.len() < q.limit {
                data.push(ByokKey::from(&**cred));
            }
        }
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": data, "total_count": total_count }),
        ))
    }

    fn get(&self, raw_id: &str) -> Result<Response<Full<Bytes>>, Rejection> {
        let id = percent_decode_str(raw_id).decode_utf8_lossy();
        let snapshot = self.state.registry.snapshot();
        let cred = snapshot
            .credential(&id)
            .ok_or(Rejection::UnknownCredential)?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "data": ByokKey::from(&*cred) }),
        ))
    }
}

impl<B> hyper::service::Service<Request<B>> for Admin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        ready(Ok(self.respond(&req)))
    }
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

/// `BYOKKey` on the wire: exactly OpenRouter's fields, snake_case; `name`
/// omitted when unset. Built from a [`Credential`], whose secret it never reads.
#[derive(Debug, Serialize)]
pub(crate) struct ByokKey<'a> {
    id: &'a str,
    workspace_id: &'a str,
    provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    label: &'a str,
    created_at: &'a str,
    disabled: bool,
    is_fallback: bool,
    sort_order: i64,
    allowed_api_key_hashes: Option<&'a [String]>,
    allowed_models: Option<&'a [String]>,
    allowed_user_ids: Option<&'a [String]>,
}

impl<'a> From<&'a Credential> for ByokKey<'a> {
    fn from(c: &'a Credential) -> Self {
        ByokKey {
            id: &c.id,
            workspace_id: &c.workspace_id,
            provider: &c.provider,
            name: c.name.as_deref(),
            label: &c.label,
            created_at: &c.created_at,
            disabled: c.disabled,
            is_fallback: c.is_fallback,
            sort_order: c.sort_order,
            allowed_api_key_hashes: c.allowed_api_key_hashes.as_deref(),
            allowed_models: c.allowed_models.as_deref(),
            allowed_user_ids: c.allowed_user_ids.as_deref(),
        }
    }
}

/// `?workspace_id=&provider=&offset=&limit=`; other parameters are ignored.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    workspace_id: Option<String>,
    provider: Option<String>,
    offset: usize,
    limit: usize,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Result<Self, Rejection> {
        let mut q = ListQuery {
            workspace_id: None,
            provider: None,
            offset: 0,
            limit: MAX_LIMIT,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace('+', " ");
            let value = percent_decode_str(&value).decode_utf8_lossy().into_owned();
            match name {
                "workspace_id" => q.workspace_id = Some(value),
                "provider" => q.provider = Some(value),
                "offset" => {
                    q.offset = value
                        .parse()
                        .map_err(|_| Rejection::InvalidQuery("offset must be a whole number"))?
                }
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(Rejection::InvalidQuery(
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
        let q = |s: &str| ListQuery::parse(Some(s)).map_err(|r| r.reason());
        assert_eq!(
            q("").unwrap(),
            ListQuery {
                workspace_id: None,
                provider: None,
                offset: 0,
                limit: 100
            }
        );
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
                "disabled",
                "id",
                "is_fallback",
                "label",
                "provider",
                "sort_order",
                "workspace_id"
            ]
        );
        c.name = Some("n".into());
        let v = serde_json::to_value(ByokKey::from(&c)).unwrap();
        assert_eq!(v["name"], "n");
        assert!(!v.to_string().contains("sk-test-secret"));
    }
}
