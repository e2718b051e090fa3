//! Secrets sealed to where and for whom they are used (issue 24, item 3):
//! the associated data binds the id, workspace, provider, `base_url`,
//! headers and the principals' allowlists. Rows the previous version sealed
//! to their id alone are re-sealed once, at the first start; afterwards a
//! row whose upstream was changed behind the proxy's back, or an id-only
//! ciphertext written back, does not open and its credential is not used.
//!
//! The associated data is computed here independently of the crate, from
//! its documented layout (docs/security.md), and the rows read and written
//! with plain SQL.

use std::path::PathBuf;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::node::*;
use crate::pg::PgCluster;
use crate::support::*;

/// A row's sealed secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) key_id: String,
    pub(crate) nonce: Vec<u8>,
    pub(crate) secret: Vec<u8>,
}

fn cipher(master: &str) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(&hex::decode(master).unwrap()).unwrap()
}

/// The id a row stores for a master key: the first 16 hex of its SHA-256.
pub(crate) fn key_id(master: &str) -> String {
    hex::encode(&Sha256::digest(hex::decode(master).unwrap())[..8])
}

/// Seals `plain` under `master` with `aad`, as a row holds it.
pub(crate) fn seal(master: &str, plain: &str, aad: &[u8]) -> Sealed {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let secret = cipher(master)
        .encrypt(
            &nonce,
            Payload {
                msg: plain.as_bytes(),
                aad,
            },
        )
        .unwrap();
    Sealed {
        key_id: key_id(master),
        nonce: nonce.to_vec(),
        secret,
    }
}

/// The plaintext, if `sealed` opens under `master` with `aad`.
pub(crate) fn opens(master: &str, sealed: &Sealed, aad: &[u8]) -> Option<String> {
    cipher(master)
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.secret,
                aad,
            },
        )
        .ok()
        .map(|p| String::from_utf8(p).unwrap())
}

/// The fields the seal binds, as a row stores them (no headers: rows have none).
pub(crate) struct Bound<'a> {
    pub(crate) id: &'a str,
    pub(crate) workspace_id: Option<&'a str>,
    pub(crate) provider: &'a str,
    pub(crate) base_url: Option<&'a str>,
    pub(crate) allowed_api_key_hashes: Option<Vec<&'a str>>,
    pub(crate) allowed_user_ids: Option<Vec<&'a str>>,
}

/// The associated data of the current layout: each field its length
/// (8 bytes, big-endian) and bytes; an optional field or list behind a
/// presence byte; a list its length and entries; the tag first.
pub(crate) fn aad(b: &Bound<'_>) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, f: &str) {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    fn optional(out: &mut Vec<u8>, f: Option<&str>) {
        out.push(u8::from(f.is_some()));
        if let Some(f) = f {
            field(out, f);
        }
    }
    fn list(out: &mut Vec<u8>, l: Option<&[&str]>) {
        out.push(u8::from(l.is_some()));
        if let Some(l) = l {
            out.extend_from_slice(&(l.len() as u64).to_be_bytes());
            for e in l {
                field(out, e);
            }
        }
    }
    let mut out = Vec::new();
    field(&mut out, "byok-proxy credential secret v2");
    field(&mut out, b.id);
    optional(&mut out, b.workspace_id);
    field(&mut out, b.provider);
    optional(&mut out, b.base_url);
    list(&mut out, Some(&[])); // header names
    list(&mut out, Some(&[])); // header values
    list(&mut out, b.allowed_api_key_hashes.as_deref());
    list(&mut out, b.allowed_user_ids.as_deref());
    out
}

/// A database the test reads and writes behind the proxy's back.
pub(crate) enum Db {
    Sqlite(PathBuf),
    Pg(String),
}

impl Db {
    pub(crate) async fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Db::Pg(url) => {
                let (client, _) = crate::connect(url).await.unwrap();
                client.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// One column of the credential `id`, as text (NULL: `None`).
    pub(crate) async fn text(&self, id: &str, column: &str) -> Option<String> {
        let sql = format!("SELECT {column} FROM byok_credentials WHERE id = '{id}'");
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(&sql, [], |r| r.get(0))
                .unwrap(),
            Db::Pg(url) => {
                let (client, _) = crate::connect(url).await.unwrap();
                client.query_one(&sql, &[]).await.unwrap().get(0)
            }
        }
    }

    /// The sealed secret of the credential `id`.
    pub(crate) async fn sealed(&self, id: &str) -> Sealed {
        let sql = format!("SELECT key_id, nonce, secret FROM byok_credentials WHERE id = '{id}'");
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(&sql, [], |r| {
                    Ok(Sealed {
                        key_id: r.get(0)?,
                        nonce: r.get(1)?,
                        secret: r.get(2)?,
                    })
                })
                .unwrap(),
            Db::Pg(url) => {
                let (client, _) = crate::connect(url).await.unwrap();
                let r = client.query_one(&sql, &[]).await.unwrap();
                Sealed {
                    key_id: r.get(0),
                    nonce: r.get(1),
                    secret: r.get(2),
                }
            }
        }
    }

    /// Writes `sealed` onto the credential `id`.
    pub(crate) async fn set_sealed(&self, id: &str, sealed: &Sealed) {
        let bytes = |b: &[u8]| match self {
            Db::Sqlite(_) => format!("X'{}'", hex::encode(b)),
            Db::Pg(_) => format!("'\\x{}'::bytea", hex::encode(b)),
        };
        self.exec(&format!(
            "UPDATE byok_credentials SET key_id = '{}', nonce = {}, secret = {} WHERE id = '{id}'",
            sealed.key_id,
            bytes(&sealed.nonce),
            bytes(&sealed.secret)
        ))
        .await;
    }
}

const SECRET: &str = "sk-seal-CANARY-0024";

/// Refused: the credential is not used, the log names it, and neither the
/// secret nor a part of it is in any log line.
async fn refused(config: &str, key: &str, id: &str) {
    let node = Node::start(config, MASTER).await;
    let r = node.chat(key, "gpt-4o").await;
    assert_eq!(r.reason(), "no_credential", "{}", r.text());
    let line = node.proxy.wait_log(&format!("credential {id}: ")).await;
    assert!(line.contains("does not open"), "{line}");
    let logs = node.proxy.logs();
    assert!(!logs.contains("CANARY"), "a secret in the log:\n{logs}");
}

/// The scenario on either store: a row as the previous version wrote it
/// (sealed to its id, no `byok_meta`), the first start, then a tampered
/// `base_url`, then the old ciphertext written back.
async fn sealed_to_its_upstream_once_and_for_all(db: Db, config: String, mock: &Mock) {
    let evil = Mock::ok().await;
    let (key, id) = {
        let node = Node::start(&config, MASTER).await;
        let id = node
            .create(json!({"provider": "openai", "key": SECRET}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        (node.create_key("user-1").await.0, id)
    };
    // As the previous version left it.
    let legacy = seal(MASTER, SECRET, id.as_bytes());
    db.set_sealed(&id, &legacy).await;
    db.exec("DROP TABLE IF EXISTS byok_meta").await;

    // The first start opens it, and re-seals it to its upstream.
    {
        let node = Node::start(&config, MASTER).await;
        let r = node.chat(&key, "gpt-4o").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let last = mock.requests().pop().unwrap();
        assert_eq!(
            last.header("authorization"),
            Some(&*format!("Bearer {SECRET}"))
        );
    }
    let now = db.sealed(&id).await;
    let bound = Bound {
        id: &id,
        workspace_id: Some("ws-1"),
        provider: "openai",
        base_url: None,
        allowed_api_key_hashes: None,
        allowed_user_ids: None,
    };
    assert_eq!(opens(MASTER, &now, &aad(&bound)).as_deref(), Some(SECRET));
    assert_eq!(opens(MASTER, &now, id.as_bytes()), None, "still id-only");

    // A database writer points it at an upstream of theirs.
    let evil_url = evil.url();
    db.exec(&format!(
        "UPDATE byok_credentials SET base_url = '{evil_url}' WHERE id = '{id}'"
    ))
    .await;
    refused(&config, &key, &id).await;
    // Or writes back the ciphertext of before the migration, which opened
    // with the id alone: the migration is done, it is never accepted again.
    db.set_sealed(&id, &legacy).await;
    refused(&config, &key, &id).await;
    assert_eq!(evil.count(), 0, "the secret went to the moved upstream");

    // Put back as it was sealed, it serves again.
    db.exec(&format!(
        "UPDATE byok_credentials SET base_url = NULL WHERE id = '{id}'"
    ))
    .await;
    db.set_sealed(&id, &now).await;
    let node = Node::start(&config, MASTER).await;
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn sqlite_rows_of_the_previous_version_are_sealed_to_their_upstream_once() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.db");
    let config = store_config(&mock, &format!("sqlite://{}", path.display()));
    sealed_to_its_upstream_once_and_for_all(Db::Sqlite(path), config, &mock).await;
}

#[tokio::test]
async fn postgres_rows_of_the_previous_version_are_sealed_to_their_upstream_once() {
    let cluster = PgCluster::start();
    let mock = Mock::ok().await;
    let config = store_config(&mock, &cluster.url());
    sealed_to_its_upstream_once_and_for_all(Db::Pg(cluster.url()), config, &mock).await;
}

/// A PATCH of bound fields re-seals the secret to the new ones in the same
/// write: the row opens with them (and not with the old), and after a
/// restart the credential serves where it was moved.
#[tokio::test]
async fn a_patch_of_a_bound_field_reseals_in_the_same_write() {
    let mock = Mock::ok().await;
    let moved = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.db");
    let config = store_config(&mock, &format!("sqlite://{}", path.display()));
    let db = Db::Sqlite(path);
    let (key, id) = {
        let node = Node::start(&config, MASTER).await;
        let id = node
            .create(json!({"provider": "openai", "key": SECRET, "allowed_user_ids": ["user-1"]}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = node.create_key("user-1").await.0;
        let r = node
            .admin(
                "PATCH",
                &format!("/api/v1/byok/{id}"),
                Some(json!({
                    "base_url": moved.url(),
                    "key": "sk-seal-CANARY-moved",
                    "allowed_user_ids": ["user-1", "user-2"],
                })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        (key, id)
    };
    let base_url = db.text(&id, "base_url").await.unwrap();
    let sealed = db.sealed(&id).await;
    let bound = |base_url, users| Bound {
        id: &id,
        workspace_id: Some("ws-1"),
        provider: "openai",
        base_url,
        allowed_api_key_hashes: None,
        allowed_user_ids: Some(users),
    };
    assert_eq!(
        opens(
            MASTER,
            &sealed,
            &aad(&bound(Some(&base_url), vec!["user-1", "user-2"]))
        )
        .as_deref(),
        Some("sk-seal-CANARY-moved")
    );
    assert_eq!(
        opens(MASTER, &sealed, &aad(&bound(None, vec!["user-1"]))),
        None
    );
    let node = Node::start(&config, MASTER).await;
    let r = node.chat(&key, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((mock.count(), moved.count()), (0, 1));
}
