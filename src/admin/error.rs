//! The admin API's own answers: one typed condition each, with its status and
//! stable `metadata.reason` kept together in [`AdminError::parts`], in the
//! proxy's JSON error shape.

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::common::json::{error_json, json_response};
use crate::domain::FieldErrors;
use crate::store::StoreError;

/// Why the admin API did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AdminError {
    /// No valid management key in `Authorization: Bearer`.
    #[error("the admin API needs Authorization: Bearer <management key>")]
    ManagementKeyRequired,
    /// No such route.
    #[error("no such route: the admin API serves /api/v1/byok, /api/v1/keys, /metrics, /healthz and /readyz")]
    NotFound,
    /// No credential with that id (or none the caller may see).
    #[error("no credential with that id")]
    UnknownCredential,
    /// No gateway key with that hash.
    #[error("no gateway key with that hash")]
    UnknownApiKey,
    /// A query parameter out of bounds.
    #[error("{0}")]
    InvalidQuery(&'static str),
    /// A write body with a bad field; the message names the field and never
    /// repeats a value.
    #[error("{0}")]
    InvalidField(String),
    /// A write to a store that cannot be written.
    #[error(
        "the credential store is read-only (the config file): edit the file and reload it (SIGHUP)"
    )]
    ReadOnlyStore,
    /// A workspace-scoped management key asked to write outside its scope.
    #[error("{0}")]
    OutsideScope(&'static str),
    /// A method the route does not have.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The database is unreachable (the proxy keeps serving).
    #[error("the credential store is unavailable; try again")]
    StoreUnavailable,
    /// The store holds something it cannot use (see the logs).
    #[error("the credential store failed; see the proxy's logs")]
    StoreFailed,
}

impl AdminError {
    /// The HTTP status and the stable `metadata.reason` string.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str) {
        use AdminError::*;
        match self {
            ManagementKeyRequired => (StatusCode::UNAUTHORIZED, "invalid_management_key"),
            NotFound | UnknownCredential | UnknownApiKey => (StatusCode::NOT_FOUND, "not_found"),
            InvalidQuery(_) | InvalidField(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ReadOnlyStore => (StatusCode::METHOD_NOT_ALLOWED, "read_only_store"),
            OutsideScope(_) => (StatusCode::FORBIDDEN, "forbidden"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            StoreFailed => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        }
    }

    /// The response, in OpenRouter's error shape.
    pub(crate) fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let (status, reason) = self.parts();
        json_response(status, error_json(status, &self.to_string(), reason))
    }

    /// A record that broke the rules: every broken rule, `; `-separated.
    pub(crate) fn fields(errs: &FieldErrors) -> Self {
        AdminError::InvalidField(errs.to_string().replace('\n', "; "))
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(message) => AdminError::InvalidField(message),
            StoreError::NotFound => AdminError::UnknownCredential,
            StoreError::ReadOnly => AdminError::ReadOnlyStore,
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "credential store unavailable");
                AdminError::StoreUnavailable
            }
            e @ (StoreError::Crypto(_) | StoreError::Sealed { .. } | StoreError::BadRow { .. }) => {
                tracing::error!(error = %e, "credential store failed");
                AdminError::StoreFailed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_code_equals_status() {
        let all = [
            AdminError::ManagementKeyRequired,
            AdminError::NotFound,
            AdminError::UnknownCredential,
            AdminError::UnknownApiKey,
            AdminError::InvalidQuery("x"),
            AdminError::InvalidField("x".into()),
            AdminError::ReadOnlyStore,
            AdminError::OutsideScope("x"),
            AdminError::MethodNotAllowed,
            AdminError::StoreUnavailable,
            AdminError::StoreFailed,
        ];
        for e in all {
            let (status, reason) = e.parts();
            let res: Response<http_body_util::Full<Bytes>> = e.clone().into_response();
            assert_eq!(res.status(), status);
            let body = error_json(status, &e.to_string(), reason);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], status.as_u16(), "{e:?}");
            assert_eq!(v["error"]["metadata"]["reason"], reason);
        }
    }
}
