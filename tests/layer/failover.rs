//! Failover through the layer: candidate order, which outcomes fail over, and
//! what the client gets when every candidate failed.

use byok_proxy::ByokLayer;

use crate::fixtures::*;

/// The contract order of `ws-fo`'s openai credentials for `gpt-4o`:
/// non-fallback by `sort_order`, then the fallback; `fo-disabled` (sort 0) is
/// disabled and `fo-o1` (sort 2) does not admit `gpt-4o`.
const ORDER: [&str; 3] = ["fo-first", "fo-second", "fo-fallback"];

const SECRET_OF: [(&str, &str); 3] = [
    ("fo-first", "Bearer sk-fo-first-SECRET-a"),
    ("fo-second", "Bearer sk-fo-second-SECRET-b"),
    ("fo-fallback", "Bearer sk-fo-fallback-SECRET-c"),
];

const RETRYABLE: [u16; 9] = [429, 500, 503, 529, 401, 403, 408, 502, 504];

/// Sends a `gpt-4o` chat request of the failover workspace.
async fn run(script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) -> (Resp, Recorder) {
    let (inner, rec) = upstream(script);
    let got = send(&ByokLayer::new(registry()), inner, chat(FO, "gpt-4o")).await;
    (got, rec)
}

/// Every attempt carried the same body and its own credential's secret, and
/// attempts are numbered from 1.
fn assert_attempts_consistent(rec: &Recorder) {
    let all = rec.all();
    for (i, seen) in all.iter().enumerate() {
        assert_eq!(seen.attempt as usize, i + 1);
        assert_eq!(seen.body, all[0].body);
        let want = SECRET_OF
            .iter()
            .find(|(id, _)| *id == seen.credential)
            .unwrap()
            .1;
        let auths: Vec<_> = seen.headers.get_all("authorization").iter().collect();
        assert_eq!(
            auths,
            [want],
            "attempt {} ({})",
            seen.attempt,
            seen.credential
        );
    }
}

#[tokio::test]
async fn fails_over_in_contract_order_on_every_retryable_status() {
    for status in RETRYABLE {
        let (got, rec) = run(move |id, _| {
            if id == "fo-fallback" {
                Reply::Status(200)
            } else {
                Reply::Status(status)
            }
        })
        .await;
        assert_eq!(rec.credentials(), ORDER, "status {status}");
        assert_attempts_consistent(&rec);
        assert_eq!(got.status, 200, "status {status}");
        assert_eq!(got.header("x-byok-credential-id"), Some("fo-fallback"));
        assert_eq!(got.header("x-byok-attempts"), Some("3"));
        assert_eq!(got.text(), upstream_body(200, "fo-fallback"));
    }
}

#[tokio::test]
async fn fails_over_when_the_inner_service_errors() {
    let (got, rec) = run(|id, _| {
        if id == "fo-first" {
            Reply::Fail
        } else {
            Reply::Status(200)
        }
    })
    .await;
    assert_eq!(rec.credentials(), ["fo-first", "fo-second"]);
    assert_attempts_consistent(&rec);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-byok-credential-id"), Some("fo-second"));
    assert_eq!(got.header("x-byok-attempts"), Some("2"));
}

#[tokio::test]
async fn other_statuses_are_returned_at_once() {
    for status in [400, 404, 422, 409, 413, 200, 201, 204, 302, 501] {
        let (got, rec) = run(move |_, _| Reply::Status(status)).await;
        assert_eq!(rec.credentials(), ["fo-first"], "status {status}");
        assert_eq!(got.status, status);
        assert_eq!(got.header("x-byok-credential-id"), Some("fo-first"));
        assert_eq!(got.header("x-byok-attempts"), Some("1"));
        if status != 204 {
            assert_eq!(
                got.text(),
                upstream_body(status, "fo-first"),
                "status {status}"
            );
        }
    }
}

#[tokio::test]
async fn a_last_401_or_403_becomes_502_without_the_providers_words() {
    for status in [401, 403] {
        // Earlier candidates failing differently does not matter: the last decides.
        let (got, rec) = run(move |id, _| match id {
            "fo-first" => Reply::Status(500),
            "fo-second" => Reply::Fail,
            _ => Reply::Status(status),
        })
        .await;
        assert_eq!(rec.credentials(), ORDER);
        assert_eq!(got.status, 502, "status {status}");
        assert_eq!(got.reason(), "upstream_rejected_credential");
        assert_eq!(got.json()["error"]["code"], 502);
        assert!(!got.text().contains("PROVIDER-WORDS"), "{}", got.text());
        assert!(!got.text().contains("upstream_status"), "{}", got.text());
        assert_eq!(got.header("www-authenticate"), None);
        assert_eq!(got.header("x-upstream-header"), None);
        assert_eq!(got.header("x-byok-credential-id"), Some("fo-fallback"));
        assert_eq!(got.header("x-byok-attempts"), Some("3"));
        got.assert_no_secret();
    }
}

#[tokio::test]
async fn a_single_candidate_answering_401_also_becomes_502() {
    let (inner, rec) = upstream(|_, _| Reply::Status(401));
    let got = send(&ByokLayer::new(registry()), inner, chat(ALICE, "gpt-4o")).await;
    assert_eq!(rec.credentials(), ["cred-openai"]);
    assert_eq!(
        (got.status, got.reason().as_str()),
        (502, "upstream_rejected_credential")
    );
    assert!(!got.text().contains("PROVIDER-WORDS"));
    assert_eq!(got.header("x-byok-attempts"), Some("1"));
}

#[tokio::test]
async fn a_last_retryable_response_is_returned_as_it_came() {
    for status in [500, 429, 503, 529, 408, 502, 504] {
        let (got, rec) = run(move |id, _| match id {
            "fo-first" => Reply::Status(401),
            "fo-second" => Reply::Fail,
            _ => Reply::Status(status),
        })
        .await;
        assert_eq!(rec.credentials(), ORDER);
        assert_eq!(got.status, status);
        assert_eq!(
            got.text(),
            upstream_body(status, "fo-fallback"),
            "status {status}"
        );
        assert_eq!(got.header("x-upstream-header"), Some("kept"));
        assert_eq!(got.header("x-byok-credential-id"), Some("fo-fallback"));
        assert_eq!(got.header("x-byok-attempts"), Some("3"));
    }
}

#[tokio::test]
async fn a_last_connection_error_is_502_unreachable() {
    let (got, rec) = run(|id, _| match id {
        "fo-first" => Reply::Status(500),
        "fo-second" => Reply::Status(401),
        _ => Reply::Fail,
    })
    .await;
    assert_eq!(rec.credentials(), ORDER);
    assert_eq!(
        (got.status, got.reason().as_str()),
        (502, "upstream_unreachable")
    );
    assert_eq!(got.header("x-byok-credential-id"), Some("fo-fallback"));
    assert_eq!(got.header("x-byok-attempts"), Some("3"));
    got.assert_no_secret();
}

#[tokio::test(start_paused = true)]
async fn a_hung_upstream_times_out_and_fails_over() {
    // Virtual time: the runtime jumps to the 5 s first-byte timeout when idle.
    let start = tokio::time::Instant::now();
    let (got, rec) = run(|id, _| {
        if id == "fo-first" {
            Reply::Hang
        } else {
            Reply::Status(200)
        }
    })
    .await;
    assert_eq!(rec.credentials(), ["fo-first", "fo-second"]);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-byok-attempts"), Some("2"));
    let waited = start.elapsed().as_secs_f64();
    assert!((5.0..6.0).contains(&waited), "waited {waited}s");
}

#[tokio::test(start_paused = true)]
async fn every_upstream_hung_is_504() {
    let (got, rec) = run(|_, _| Reply::Hang).await;
    assert_eq!(rec.credentials(), ORDER);
    assert_eq!(
        (got.status, got.reason().as_str()),
        (504, "upstream_timeout")
    );
    assert_eq!(got.header("x-byok-credential-id"), Some("fo-fallback"));
    assert_eq!(got.header("x-byok-attempts"), Some("3"));
}

#[tokio::test]
async fn a_model_allowlist_adds_its_credential_in_sort_order() {
    let (inner, rec) = upstream(|_, _| Reply::Status(500));
    let got = send(&ByokLayer::new(registry()), inner, chat(FO, "o1")).await;
    assert_eq!(
        rec.credentials(),
        ["fo-first", "fo-o1", "fo-second", "fo-fallback"]
    );
    assert_eq!(got.header("x-byok-attempts"), Some("4"));
}

#[tokio::test]
async fn the_client_cannot_choose_or_reorder_credentials() {
    let (inner, rec) = upstream(|_, _| Reply::Status(503));
    let mut req = chat(FO, "gpt-4o");
    for (name, value) in [
        ("x-byok-credential-id", "fo-fallback"),
        ("x-byok-attempts", "3"),
        ("x-byok-credential", "fo-disabled"),
    ] {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    let got = send(&ByokLayer::new(registry()), inner, req).await;
    assert_eq!(rec.credentials(), ORDER);
    assert_eq!(got.header("x-byok-credential-id"), Some("fo-fallback"));
}

#[tokio::test]
async fn the_order_is_the_same_every_time() {
    let layer = ByokLayer::new(registry());
    for _ in 0..20 {
        let (inner, rec) = upstream(|_, _| Reply::Status(429));
        let _ = send(&layer, inner, chat(FO, "gpt-4o")).await;
        assert_eq!(rec.credentials(), ORDER);
    }
}
