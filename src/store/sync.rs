//! Postgres: applies other replicas' writes to this replica's registry as
//! they are notified, one row at a time, and resynchronises fully after
//! every reconnection (the resync itself is the server's: it needs the
//! config in force).

use std::future::Future;

use super::{api_key, credential, seal, Change, PgStore, StoreError};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::BoxError;

/// Follows `pg`'s changes forever, applying each to `registry`; after every
/// (re)connection, `resync` reloads everything.
pub(crate) async fn follow<R, FR>(pg: &PgStore, registry: &Registry, metrics: &Metrics, resync: R)
where
    R: Fn() -> FR,
    FR: Future<Output = Result<(), StoreError>>,
{
    let on_change = |change: Change| async move {
        // A rest decided by a replica (this one's own included): no row to
        // read, nothing to order with the writes.
        if let Change::Health(id, rest) = &change {
            registry.snapshot().adopt_health(id, *rest);
            return Ok(());
        }
        if change == Change::Usage {
            registry.snapshot().ledger().refresh_wanted();
            return Ok(());
        }
        // The row is re-read and applied in one turn with this replica's own
        // writes, so the registry ends as the store did.
        let _order = registry.ordered().await;
        match apply(pg, registry, &change).await? {
            Ok(()) => {
                metrics.observe_snapshot(&registry.snapshot());
                tracing::debug!(?change, "applied a change from the store");
            }
            // A row this replica cannot use is skipped, not retried forever.
            Err(e) => tracing::error!(?change, error = %e, "cannot apply a change from the store"),
        }
        Ok(())
    };
    pg.follow(on_change, resync).await;
}

/// Reads the row `change` names and applies it: the outer error is the
/// store's (retried after a reconnection), the inner one the row's.
async fn apply(
    pg: &PgStore,
    registry: &Registry,
    change: &Change,
) -> Result<Result<(), BoxError>, StoreError> {
    Ok(match change {
        Change::Credential(id) => match pg.timed(pg.credential(id)).await? {
            Some(fields) => {
                let snapshot = registry.snapshot();
                let providers = snapshot.providers().clone();
                let applied = fields
                    .and_then(|f| credential(f, &providers))
                    .or_else(|e| {
                        // A secret sealed under a master key this replica
                        // lacks: a rotation under way elsewhere.
                        let in_force = snapshot.credential(id);
                        seal::kept_in_memory(e, in_force.as_deref(), &providers)
                    })
                    .map_err(BoxError::from)
                    .and_then(|cred| {
                        registry
                            .apply(|s| s.upsert_credential(cred))
                            .map_err(BoxError::from)
                    });
                if applied.is_err() {
                    // Fail closed: the version this replica cannot use must
                    // not leave the previous one in force.
                    let _ = registry.apply(|s| s.remove_credential(id));
                }
                applied
            }
            None => registry
                .apply(|s| s.remove_credential(id))
                .map(drop)
                .map_err(BoxError::from),
        },
        Change::ApiKey(hash) => match pg.timed(pg.api_key(*hash)).await? {
            Some(fields) => api_key(fields)
                .map(|key| registry.apply(|s| s.upsert_api_key(key)))
                .map_err(|e| {
                    // Fail closed, as for a credential.
                    registry.apply(|s| s.remove_api_key(hash));
                    BoxError::from(e)
                }),
            None => {
                registry.apply(|s| s.remove_api_key(hash));
                Ok(())
            }
        },
        Change::Health(id, rest) => {
            registry.snapshot().adopt_health(id, *rest);
            Ok(())
        }
        Change::Usage => {
            registry.snapshot().ledger().refresh_wanted();
            Ok(())
        }
    })
}
