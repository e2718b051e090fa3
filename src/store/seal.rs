//! What a credential's secret is sealed to, and the one-time migration of
//! the rows the first version sealed to their id alone.
//!
//! The associated data ([`aad`]) binds the secret to every field that
//! decides where it is sent and for whom it is used: the id, the workspace,
//! the provider, the `base_url`, the headers sent with it, and the two
//! allowlists of principals (`allowed_api_key_hashes`, `allowed_user_ids`).
//! Whoever can write the tables but does not hold the master key can still
//! disable, reorder or delete a credential, or change the models it serves;
//! a change of any bound field makes the secret refuse to open, and the
//! credential is not used. docs/security.md says why these fields and not
//! the others.
//!
//! The first version bound a secret to its id only. Such rows are re-sealed
//! once, at the first start of this version ([`migrate`]), in the
//! transaction that records the migration as done (the `byok_meta` row
//! `credential_seal`, [`MARKER_INSERT`]); afterwards an id-only seal never opens again, so a
//! ciphertext kept from before the migration cannot be written back beside
//! another upstream.

use secrecy::{ExposeSecret, SecretString};

use super::crypto::{Aad, CryptoError, Keyring, Sealed};
use super::{credential_row, read_credential_row, StoreError};
use crate::domain::{Credential, CredentialFields, Providers, Scalar};

/// The layout and version of the associated data.
const TAG: &str = "byok-proxy credential secret v2";

/// The table of one-time facts about a database, in both stores' SQL.
pub(crate) const META_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS byok_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)";

/// Whether the migration is done (every secret sealed with [`aad`]): a
/// row, or none.
pub(crate) const MARKER_SELECT: &str = "SELECT value FROM byok_meta WHERE name = 'credential_seal'";

/// Records the migration as done.
pub(crate) const MARKER_INSERT: &str =
    "INSERT INTO byok_meta (name, value) VALUES ('credential_seal', 'v2') ON CONFLICT DO NOTHING";

/// The parts of a credential the seal binds, each as stored.
struct Bound<'a> {
    id: &'a str,
    workspace_id: Option<&'a str>,
    provider: &'a str,
    base_url: Option<&'a str>,
    /// (lowercase name, value), sorted.
    headers: Vec<(String, &'a [u8])>,
    allowed_api_key_hashes: Option<&'a [String]>,
    allowed_user_ids: Option<&'a [String]>,
}

impl Bound<'_> {
    fn aad(mut self) -> Aad {
        self.headers.sort();
        let mut aad = Aad::new(TAG);
        aad.field(self.id.as_bytes())
            .optional(self.workspace_id.map(str::as_bytes))
            .field(self.provider.as_bytes())
            .optional(self.base_url.map(str::as_bytes));
        let names = self.headers.iter().map(|(n, _)| n.as_bytes());
        aad.list(Some(names));
        aad.list(Some(self.headers.iter().map(|(_, v)| *v)));
        aad.list(list(self.allowed_api_key_hashes))
            .list(list(self.allowed_user_ids));
        aad
    }
}

/// An allowlist's entries as fields.
fn list(l: Option<&[String]>) -> Option<impl ExactSizeIterator<Item = &[u8]>> {
    l.map(|l| l.iter().map(String::as_bytes))
}

/// The associated data a credential's secret is sealed with.
pub(crate) fn aad(fields: &CredentialFields) -> Aad {
    Bound {
        id: &fields.id,
        workspace_id: fields.workspace_id.as_deref(),
        provider: &fields.provider,
        base_url: fields.spec.base_url.as_deref(),
        headers: fields
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.expose_secret().as_bytes()))
            .collect(),
        allowed_api_key_hashes: fields.spec.allowed_api_key_hashes.as_deref(),
        allowed_user_ids: fields.spec.allowed_user_ids.as_deref(),
    }
    .aad()
}

/// The same of a validated credential (its `base_url` normalised): two
/// credentials with equal bindings go to the same place for the same
/// principals.
fn binding(cred: &Credential) -> Aad {
    Bound {
        id: &cred.id,
        workspace_id: cred.workspace_id.as_deref(),
        provider: &cred.provider,
        base_url: cred.spec.base_url.as_deref(),
        headers: cred
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes()))
            .collect(),
        allowed_api_key_hashes: cred.spec.allowed_api_key_hashes.as_deref(),
        allowed_user_ids: cred.spec.allowed_user_ids.as_deref(),
    }
    .aad()
}

/// Opens `sealed`, the secret of `fields` (whose key is still empty).
pub(crate) fn open(
    fields: &CredentialFields,
    sealed: &Sealed,
    keyring: &Keyring,
) -> Result<SecretString, CryptoError> {
    open_with(sealed, aad(fields).as_bytes(), keyring)
}

fn open_with(sealed: &Sealed, aad: &[u8], keyring: &Keyring) -> Result<SecretString, CryptoError> {
    let plain = keyring.open(sealed, aad)?;
    // The secret was UTF-8 when it was sealed; anything else was not sealed here.
    String::from_utf8(plain.to_vec())
        .map(SecretString::from)
        .map_err(|_| CryptoError::Corrupt)
}

/// What the migration does with the live rows: the rows to write back,
/// re-sealed with [`aad`]. `Err` when a row is sealed under a master key
/// this process does not have: the migration must wait for it (started
/// with `BYOK_MASTER_KEY_PREVIOUS`), or that row would be lost.
pub(crate) fn migrate(
    rows: Vec<Vec<Scalar>>,
    keyring: &Keyring,
) -> Result<Vec<Vec<Scalar>>, StoreError> {
    let (mut current, mut legacy, mut refused) = (0usize, Vec::new(), Vec::new());
    for row in rows {
        let (mut fields, sealed) = read_credential_row(row)?;
        match open(&fields, &sealed, keyring) {
            Ok(_) => current += 1,
            Err(e @ CryptoError::UnknownKeyId(_)) => return Err(StoreError::sealed(fields, e)),
            Err(_) => match open_with(&sealed, fields.id.as_bytes(), keyring) {
                Ok(key) => {
                    fields.key = key;
                    legacy.push(fields);
                }
                Err(_) => refused.push(fields.id),
            },
        }
    }
    for id in &refused {
        tracing::error!(credential = %id, "credential {id}: its secret opens neither sealed to its upstream nor to its id alone; left as it is, it will not be used");
    }
    if current > 0 && !legacy.is_empty() {
        // Rows sealed with the new associated data exist, so this database
        // was migrated: its marker was removed. Accepting id-only seals now
        // would let whoever removed it move them.
        for f in &legacy {
            tracing::error!(credential = %f.id, "credential {}: sealed to its id alone in a database already migrated (its byok_meta row is gone); not accepted, it will not be used", f.id);
        }
        return Ok(Vec::new());
    }
    if !legacy.is_empty() {
        tracing::info!(
            credentials = legacy.len(),
            "sealed every credential's secret to its upstream, workspace and allowlists (it was bound to its id alone)"
        );
    }
    Ok(legacy.iter().map(|f| credential_row(f, keyring)).collect())
}

/// A credential whose row this replica cannot open because it lacks the
/// master key that sealed it (another replica re-sealed it under a new
/// key): the version in force here keeps serving with the secret it holds,
/// taking the row's other fields, as long as the row binds the secret to
/// the same place and principals (`binding`); otherwise `err` (the row
/// changed what this replica cannot check: it is left out).
pub(crate) fn kept_in_memory(
    err: StoreError,
    in_force: Option<&Credential>,
    providers: &Providers,
) -> Result<Credential, StoreError> {
    let StoreError::Sealed {
        source: CryptoError::UnknownKeyId(key_id),
        unopened: Some(fields),
        ..
    } = &err
    else {
        return Err(err);
    };
    let Some(in_force) = in_force else {
        return Err(err);
    };
    let mut fields = CredentialFields::clone(fields);
    fields.key = in_force.key.clone();
    let Ok(cred) = Credential::validate(fields, providers) else {
        return Err(err);
    };
    if binding(&cred) != binding(in_force) {
        return Err(err);
    }
    tracing::warn!(
        credential = %cred.id,
        master_key_id = %key_id,
        "credential {} is sealed under master key {key_id}, which this replica does not have: it keeps the secret it holds in memory; restart it with that key as BYOK_MASTER_KEY",
        cred.id
    );
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CredentialSpec;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn fields() -> CredentialFields {
        CredentialFields {
            id: "c-1".into(),
            workspace_id: Some("ws-1".into()),
            provider: "openai".into(),
            key: SecretString::from("sk-bound-0001"),
            created_at: "2025-01-01T00:00:00Z".into(),
            headers: Default::default(),
            spec: CredentialSpec {
                base_url: Some("https://api.example".into()),
                allowed_api_key_hashes: Some(vec!["a".repeat(64)]),
                allowed_user_ids: Some(vec!["u-1".into()]),
                ..Default::default()
            },
        }
    }

    type Change = fn(&mut CredentialFields);

    /// Each bound field, changed, makes the secret refuse to open; an
    /// unbound one does not.
    #[test]
    fn a_secret_opens_only_with_the_fields_it_was_sealed_to() {
        let ring = Keyring::from_hex(K1, None).unwrap();
        let f = fields();
        let sealed = ring.seal(f.key.expose_secret().as_bytes(), aad(&f).as_bytes());
        assert_eq!(
            open(&f, &sealed, &ring).unwrap().expose_secret(),
            "sk-bound-0001"
        );
        let changes: [(&str, Change); 9] = [
            ("id", |f| f.id = "c-2".into()),
            ("workspace", |f| f.workspace_id = Some("ws-2".into())),
            ("global", |f| f.workspace_id = None),
            ("provider", |f| f.provider = "anthropic".into()),
            ("base_url", |f| {
                f.spec.base_url = Some("https://evil.example".into())
            }),
            ("no base_url", |f| f.spec.base_url = None),
            ("headers", |f| {
                f.headers.insert("x-extra".into(), SecretString::from("1"));
            }),
            ("hashes", |f| f.spec.allowed_api_key_hashes = None),
            ("users", |f| {
                f.spec.allowed_user_ids = Some(vec!["u-1".into(), "u-2".into()]);
            }),
        ];
        for (what, change) in changes {
            let mut moved = fields();
            change(&mut moved);
            assert_eq!(
                open(&moved, &sealed, &ring).map(drop),
                Err(CryptoError::Corrupt),
                "{what}"
            );
        }
        let mut renamed = fields();
        renamed.spec.name = Some("renamed".into());
        renamed.spec.disabled = true;
        renamed.spec.allowed_models = Some(vec!["openai/gpt-4o".into()]);
        assert!(open(&renamed, &sealed, &ring).is_ok());
        // The first version's id-only seal does not open as a current one.
        let legacy = ring.seal(b"sk-bound-0001", f.id.as_bytes());
        assert_eq!(
            open(&f, &legacy, &ring).map(drop),
            Err(CryptoError::Corrupt)
        );
    }

    /// A row as the first version wrote it: sealed to its id alone.
    fn legacy_row(f: &CredentialFields, ring: &Keyring) -> Vec<Scalar> {
        let mut row = credential_row(f, ring);
        let sealed = ring.seal(f.key.expose_secret().as_bytes(), f.id.as_bytes());
        let n = row.len();
        row[n - 2] = Scalar::Bytes(sealed.nonce);
        row[n - 1] = Scalar::Bytes(sealed.ciphertext);
        row
    }

    #[test]
    fn the_migration_reseals_id_only_rows_and_only_in_a_database_not_yet_migrated() {
        let ring = Keyring::from_hex(K1, None).unwrap();
        let mut other = fields();
        other.id = "c-2".into();
        // The first version's database: every row re-sealed, each opens.
        let rows = migrate(vec![legacy_row(&fields(), &ring)], &ring).unwrap();
        assert_eq!(rows.len(), 1);
        let (f, sealed) = read_credential_row(rows[0].clone()).unwrap();
        assert_eq!(
            open(&f, &sealed, &ring).unwrap().expose_secret(),
            "sk-bound-0001"
        );
        // Bound rows beside id-only ones: the marker was removed, nothing is accepted.
        let mixed = vec![credential_row(&other, &ring), legacy_row(&fields(), &ring)];
        assert!(migrate(mixed, &ring).unwrap().is_empty());
        // A row under a master key this process lacks stops the migration.
        let foreign = Keyring::from_hex(&"2".repeat(64), None).unwrap();
        let err = migrate(vec![legacy_row(&fields(), &foreign)], &ring).unwrap_err();
        assert!(err.is_unknown_key(), "{err}");
        assert!(err.to_string().starts_with("credential c-1: "), "{err}");
    }

    #[test]
    fn a_replica_without_the_key_keeps_its_secret_only_for_the_same_binding() {
        let old = Keyring::from_hex(K1, None).unwrap();
        let new = Keyring::from_hex(&"2".repeat(64), None).unwrap();
        let providers = Providers::builtins();
        let in_force = Credential::validate(fields(), &providers).unwrap();
        let unopened = |change: fn(&mut CredentialFields)| {
            let mut f = fields();
            change(&mut f);
            crate::store::open_credential_row(credential_row(&f, &new), &old).unwrap_err()
        };
        // Renamed: kept, with the new name and the secret held.
        let kept = kept_in_memory(
            unopened(|f| f.spec.name = Some("renamed".into())),
            Some(&in_force),
            &providers,
        )
        .unwrap();
        assert_eq!(kept.name.as_deref(), Some("renamed"));
        assert_eq!(kept.key.expose_secret(), "sk-bound-0001");
        // Moved, or nothing in force: refused.
        let moved = unopened(|f| f.spec.base_url = Some("https://evil.example".into()));
        assert!(kept_in_memory(moved, Some(&in_force), &providers).is_err());
        assert!(kept_in_memory(unopened(|_| {}), None, &providers).is_err());
        // A row that does not open under a key this replica has: refused.
        let corrupt = crate::store::open_credential_row(legacy_row(&fields(), &old), &old);
        assert!(kept_in_memory(corrupt.unwrap_err(), Some(&in_force), &providers).is_err());
    }
}
