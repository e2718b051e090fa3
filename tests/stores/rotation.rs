//! Master-key rotation (issue 24, item 4): `byok-proxy reseal` re-seals
//! every credential under the new `BYOK_MASTER_KEY`, reading the old one as
//! `BYOK_MASTER_KEY_PREVIOUS`, and says when the previous key can go;
//! replicas keep serving meanwhile, a replica that has only the old key
//! included; once the previous key is removed, a row still sealed under it
//! is refused at load.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::node::*;
use crate::pg::PgCluster;
use crate::relay::Relay;
use crate::sealed::{key_id, Db};
use crate::support::*;

const SECRET: &str = "sk-rotate-CANARY-0001";

/// `byok-proxy reseal` on `config` with `env`: (success, stdout, stderr).
fn reseal(config: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.toml");
    std::fs::write(&path, config).unwrap();
    let out = command(&path, "reseal", env).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !format!("{stdout}{stderr}").contains("CANARY"),
        "a secret in the output:\n{stdout}{stderr}"
    );
    (out.status.success(), stdout, stderr)
}

fn command(path: &Path, verb: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byok-proxy"));
    cmd.arg(verb)
        .arg("--config")
        .arg(path)
        .env_remove("BYOK_MASTER_KEY")
        .env_remove("BYOK_MASTER_KEY_PREVIOUS")
        .env_remove("BYOK_PROXY_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `byok-proxy serve` with only `master` refuses to start, naming `id` and
/// never the secret.
fn start_refused(config: &str, master: &str, id: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.toml");
    std::fs::write(&path, config).unwrap();
    let out = command(&path, "serve", &[("BYOK_MASTER_KEY", master)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started:\n{err}");
    assert!(err.contains(&format!("credential {id}: ")), "{err}");
    assert!(
        err.contains("neither BYOK_MASTER_KEY nor BYOK_MASTER_KEY_PREVIOUS"),
        "{err}"
    );
    assert!(!err.contains("CANARY"), "{err}");
}

const ROTATING: [(&str, &str); 2] = [
    ("BYOK_MASTER_KEY", MASTER2),
    ("BYOK_MASTER_KEY_PREVIOUS", MASTER),
];

#[tokio::test]
async fn reseal_rotates_the_master_key_and_the_old_one_is_then_refused() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.db");
    let config = store_config(&mock, &format!("sqlite://{}", path.display()));
    let db = Db::Sqlite(path);
    let (key, id) = {
        let node = Node::start(&config, MASTER).await;
        let id = node
            .create(json!({"provider": "openai", "key": SECRET}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        node.create(json!({"provider": "anthropic", "key": "sk-rotate-CANARY-0002"}))
            .await;
        (node.create_key("user-1").await.0, id)
    };
    let before = db.sealed(&id).await;
    assert_eq!(before.key_id, key_id(MASTER));

    let (ok, out, err) = reseal(&config, &ROTATING);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "re-sealed 2 credentials under master key {}; 0 already were",
            key_id(MASTER2)
        )),
        "{out}"
    );
    assert!(
        out.contains("BYOK_MASTER_KEY_PREVIOUS can be removed"),
        "{out}"
    );
    assert_eq!(db.sealed(&id).await.key_id, key_id(MASTER2));
    // Again: nothing left to do.
    let (ok, out, _) = reseal(&config, &ROTATING);
    assert!(ok && out.contains("re-sealed 0 credentials"), "{out}");
    assert!(out.contains("2 already were"), "{out}");

    // The new key alone serves.
    {
        let node = Node::start(&config, MASTER2).await;
        let r = node.chat(&key, "gpt-4o").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The old key alone is refused: nothing opens under it any more.
    start_refused(&config, MASTER, &id);

    // A row sealed under the old key (a backup written back) is refused at
    // load once the previous key is gone, and reseal says it cannot help.
    db.set_sealed(&id, &before).await;
    start_refused(&config, MASTER2, &id);
    let (ok, _, err) = reseal(&config, &[("BYOK_MASTER_KEY", MASTER2)]);
    assert!(!ok, "{err}");
    assert!(err.contains(&format!("credential {id}: ")), "{err}");
    // With the previous key back, it is re-sealed.
    let (ok, out, err) = reseal(&config, &ROTATING);
    assert!(ok && out.contains("re-sealed 1 credentials"), "{out}{err}");
}

/// A reseal from outside while two replicas serve with the old key only:
/// both keep serving from memory; B, cut off from the database meanwhile,
/// resynchronises on reconnection (the re-sealed row kept from memory, the
/// rest read), keeps following other writes (an unbound field is taken, a
/// moved upstream leaves the credential out rather than trust a row it
/// cannot open), and once restarted with the new key serves it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one rotation, step by step, across two replicas"
)]
async fn replicas_keep_serving_through_a_rotation() {
    let db = PgCluster::start();
    let mock = Mock::ok().await;
    let moved = Mock::ok().await;
    let relay = Relay::start(format!("127.0.0.1:{}", db.port()).parse().unwrap()).await;
    let cfg = store_config(&mock, &db.url());
    let cfg_b = store_config(&mock, &via(&db.url(), &relay));
    let store = Db::Pg(db.url());
    let a = Node::start_following(&cfg, MASTER).await;
    let b = Node::start_following(&cfg_b, MASTER).await;
    let mark = b.proxy.log_len();
    let id = a.create(json!({"provider": "openai", "key": SECRET})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (key, _) = a.create_key("user-1").await;
    b.proxy
        .wait_log_count_after(mark, "applied a change from the store", 2)
        .await;
    let before = store.sealed(&id).await;

    // B loses the database; the operator re-seals under the new key while
    // both run with the old one alone; A restarts with the new key alone
    // (reseal said the old one can go) and writes a new gateway key.
    let mb = b.proxy.log_len();
    relay.cut();
    b.proxy.wait_log_after(mb, "lost the database").await;
    let (ok, out, err) = reseal(&cfg, &ROTATING);
    assert!(ok && out.contains("re-sealed 1 credentials"), "{out}{err}");
    assert_eq!(a.chat(&key, "gpt-4o").await.status, 200);
    drop(a);
    let a = Node::start_following(&cfg, MASTER2).await;
    assert_eq!(a.chat(&key, "gpt-4o").await.status, 200);
    let (key2, _) = a.create_key("user-2").await;

    // B comes back: its full reload keeps the credential it cannot open
    // (said in its log) and takes the new key.
    relay.restore();
    let kept = format!("credential {id} is sealed under master key");
    b.proxy.wait_log_after(mb, &kept).await;
    b.proxy
        .wait_log_after(mb, "database back; resynchronised")
        .await;
    for k in [&key, &key2] {
        let r = b.chat(k, "gpt-4o").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let last = mock.requests().pop().unwrap();
        assert_eq!(
            last.header("authorization"),
            Some(&*format!("Bearer {SECRET}"))
        );
    }

    // A new name, on a row B cannot open but that binds the same upstream.
    let mb = b.proxy.log_len();
    a.admin(
        "PATCH",
        &format!("/api/v1/byok/{id}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    b.proxy.wait_log_after(mb, &kept).await;
    b.proxy
        .wait_log_after(mb, "applied a change from the store")
        .await;
    let got = b.admin("GET", &format!("/api/v1/byok/{id}"), None).await;
    assert_eq!(got.json()["data"]["name"], "renamed");
    assert_eq!(b.chat(&key, "gpt-4o").await.status, 200);

    // A moved upstream B cannot check: B leaves the credential out, and says so.
    let mb = b.proxy.log_len();
    a.admin(
        "PATCH",
        &format!("/api/v1/byok/{id}"),
        Some(json!({"base_url": moved.url(), "key": "sk-rotate-CANARY-moved"})),
    )
    .await;
    let line = b
        .proxy
        .wait_log_after(mb, "cannot apply a change from the store")
        .await;
    assert!(line.contains(&format!("credential {id}: ")), "{line}");
    assert_eq!(b.chat(&key, "gpt-4o").await.reason(), "no_credential");
    assert_eq!(a.chat(&key, "gpt-4o").await.status, 200);
    assert_eq!(moved.count(), 1);
    for node in [&a, &b] {
        let logs = node.proxy.logs();
        assert!(!logs.contains("CANARY"), "a secret in the log:\n{logs}");
    }

    // B restarted with the new key serves the moved credential.
    drop(b);
    let b = Node::start_following(&cfg_b, MASTER2).await;
    assert_eq!(b.chat(&key, "gpt-4o").await.status, 200);
    assert_eq!(moved.count(), 2);

    // The old key's ciphertext written back is refused at load.
    store.set_sealed(&id, &before).await;
    start_refused(&cfg, MASTER2, &id);
}

/// A replica whose database link goes through `relay`.
fn via(url: &str, relay: &Relay) -> String {
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    url.replacen(&format!(":{port}/"), &format!(":{}/", relay.addr.port()), 1)
}
