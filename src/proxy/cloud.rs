//! Structured cloud keys at request time (SPEC §9): where each attempt goes
//! and what authenticates it — the candidate's target (upstream, path, auth
//! header). The signing, the JWT and the path rewrites are in
//! [`auth`](crate::auth); a service account's token is minted in the
//! attempt's send phase.

use std::borrow::Cow;

use http::HeaderValue;

use super::error::Rejection;
use crate::auth::{azure, vertex};
use crate::domain::Upstream;
use crate::registry::{Candidate, Cloud};

/// Where one attempt goes and what authenticates it.
#[derive(Debug)]
pub(crate) struct Target<'c> {
    pub(crate) upstream: &'c Upstream,
    /// The value of the provider's auth header; `None` when the attempt is
    /// signed (SigV4) or bears a minted token (Vertex) instead.
    pub(crate) auth: Option<&'c HeaderValue>,
    /// The client's path, with what the key replaces in it.
    pub(crate) path: Cow<'c, str>,
}

/// Where `cand` sends a request for `model` whose path (after the provider)
/// is `rest` (checked by [`check_path`]); `None` when this candidate has no
/// entry for it (an Azure key of deployments alone, for a path that names
/// no deployment).
pub(crate) fn target<'c>(
    cand: &'c Candidate,
    model: Option<&str>,
    rest: &'c str,
) -> Result<Option<Target<'c>>, Rejection> {
    let plain = |auth| Target {
        upstream: &cand.upstream,
        auth,
        path: Cow::Borrowed(rest),
    };
    match &cand.cloud {
        Cloud::None => Ok(Some(plain(Some(&cand.auth_value)))),
        #[cfg(feature = "aws")]
        Cloud::SigV4 => Ok(Some(plain(None))),
        #[cfg(feature = "vertex")]
        Cloud::Vertex(_) => {
            let Some(account) = cand.record.service_account() else {
                return Ok(None);
            };
            Ok(Some(Target {
                path: vertex::path(rest, &account.project_id, &account.region)?,
                ..plain(None)
            }))
        }
        Cloud::Azure(routes) => {
            // A deployment entry serves a path naming a deployment, which it
            // replaces; a path without one leaves the body's `model` to
            // pick the deployment, which only a resource entry may let it do.
            let names_deployment = azure::path(rest, "")? != rest;
            let deployment = routes.iter().find(|r| {
                names_deployment
                    && r.model
                        .as_ref()
                        .is_some_and(|m| model.is_some_and(|model| m.admits(model)))
            });
            let Some(route) = deployment.or_else(|| routes.iter().find(|r| r.model.is_none()))
            else {
                return Ok(None);
            };
            Ok(Some(Target {
                upstream: &route.upstream,
                auth: Some(&route.auth_value),
                path: match &route.deployment {
                    Some(d) => azure::path(rest, d)?,
                    None => Cow::Borrowed(rest),
                },
            }))
        }
    }
}

/// Whether `cand`'s key is a service account, whose project and location
/// a Vertex path takes (SPEC §9).
pub(crate) fn is_service_account(cand: &Candidate) -> bool {
    #[cfg(feature = "vertex")]
    if let Cloud::Vertex(_) = cand.cloud {
        return cand.record.service_account().is_some();
    }
    let _ = cand;
    false
}

/// Refuses, before any attempt, a path that a cloud key's rewrite could
/// not read as the upstream would (see [`vertex::path`], [`azure::path`]).
pub(crate) fn check_path(provider: &str, rest: &str) -> Result<(), Rejection> {
    match provider {
        "google-vertex" => vertex::path(rest, "-", "-").map(drop),
        "azure" => azure::path(rest, "-").map(drop),
        _ => Ok(()),
    }
    .map_err(Rejection::from)
}
