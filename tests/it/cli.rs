//! SPEC §3: `check` and `hash-key`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::hash;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byok-proxy"));
    c.env_remove("BYOK_PROXY_CONFIG");
    c
}

fn hash_key(stdin: &[u8]) -> (bool, String) {
    let mut child = bin()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
    )
}

#[test]
fn hash_key_drops_one_trailing_newline() {
    assert_eq!(hash_key(b"gw-key"), (true, hash("gw-key")));
    assert_eq!(hash_key(b"gw-key\n"), (true, hash("gw-key")));
    assert_eq!(hash_key(b"gw-key\r\n"), (true, hash("gw-key")));
    assert_eq!(hash_key(b"gw-key\n\n"), (true, hash("gw-key\n")));
    assert_eq!(hash_key(b" gw-key"), (true, hash(" gw-key")));
    assert!(!hash_key(b"").0);
}

fn check(text: &str, via_env: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = bin();
    cmd.arg("check");
    if via_env {
        cmd.env("BYOK_PROXY_CONFIG", &path);
    } else {
        cmd.arg("--config").arg(&path);
    }
    let out = cmd.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[test]
fn check_accepts_a_good_config_by_flag_or_env() {
    let good = "[[credentials]]\nid = \"c1\"\nworkspace_id = \"ws\"\nprovider = \"openai\"\nkey = \"sk-canary-check-0001\"\n";
    for via_env in [false, true] {
        let (ok, out) = check(good, via_env);
        assert!(ok, "{out}");
        assert!(!out.contains("canary"), "{out}");
    }
}

#[test]
fn check_names_the_bad_entry_and_never_prints_the_secret() {
    let bad = "[[credentials]]\nid = \"c1\"\nworkspace_id = \"ws\"\nprovider = \"openai\"\nkey = \"sk-canary-check-0001\"\n\
               [[credentials]]\nid = \"c2\"\nworkspace_id = \"ws\"\nprovider = \"openai\"\nkey = \"sk-canary-check-0002\"\n\
               [[credentials]]\nid = \"c3\"\nworkspace_id = \"ws\"\nprovider = \"openai\"\nkey = \"sk-canary-check-0003\"\nallowed_api_key_hashes = [\"ABC\"]\n";
    let (ok, out) = check(bad, false);
    assert!(!ok);
    assert!(
        out.contains("credentials[2].allowed_api_key_hashes[0]: not 64 lowercase hex chars"),
        "{out}"
    );
    assert!(!out.contains("canary"), "{out}");

    let (ok, out) = check(
        "[[credentials]]\nid = 1\nkey = \"sk-canary-check-0004\"\n",
        false,
    );
    assert!(!ok);
    assert!(out.contains("credentials[0].id"), "{out}");
    assert!(!out.contains("canary"), "{out}");
}

#[test]
fn check_refuses_a_body_budget_of_zero_or_below_one_body() {
    for bad in [
        "max_buffered_body_bytes = 0",
        "max_body_bytes = 4096\nmax_buffered_body_bytes = 4095",
    ] {
        let (ok, out) = check(&format!("[server]\n{bad}\n"), false);
        assert!(!ok, "{bad}");
        assert!(out.contains("server.max_buffered_body_bytes"), "{out}");
    }
    let (ok, out) = check("[server]\nmax_buffered_body_bytes = 67108864\n", false);
    assert!(ok, "{out}");
}

#[test]
fn serve_with_a_bad_config_exits_non_zero_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[server]\nlisten = \"not an address\"\n").unwrap();
    let out = bin()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");
}
