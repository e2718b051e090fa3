//! Generated JSON bodies against an independent reading of the contract.
//!
//! One credential admits only `openai/gpt-4o`. The generator writes top-level
//! objects whose keys come from a pool of `model` spellings (plain, JSON-escaped,
//! other cases, near misses) and ordinary keys, with string, number, array and
//! object values (nested objects have `model` keys too), random JSON whitespace,
//! and now and then a byte order mark, a non-JSON whitespace byte or trailing
//! data around the document. The property: the layer forwards a body exactly
//! when `serde_json` parses it, its top level is an object with exactly one key
//! equal to `model` ignoring case, that key is `model` itself (after escapes),
//! and its value is a string the allowlist admits (`gpt-4o` or the canonical
//! `openai/gpt-4o`). Keys are counted from the generated structure, because
//! `serde_json` silently keeps only the last of duplicate keys.

use byok_proxy::ByokLayer;
use proptest::prelude::*;

use crate::fixtures::*;

fn property_config() -> String {
    format!(
        r#"
[providers.openai]
base_url = "http://upstream.test"

[[api_keys]]
hash = "{alice}"
workspace_id = "ws-prop"
user_id = "alice"

[[credentials]]
id = "prop-openai"
workspace_id = "ws-prop"
provider = "openai"
key = "sk-prop-SECRET-0000"
created_at = "2025-01-01T00:00:00Z"
allowed_models = ["openai/gpt-4o"]
"#,
        alice = hash(ALICE)
    )
}

/// A top-level key: as written between the quotes, and as decoded.
#[derive(Debug, Clone)]
struct Key {
    raw: String,
    decoded: String,
}

fn key(raw: &str, decoded: &str) -> Key {
    Key {
        raw: raw.to_owned(),
        decoded: decoded.to_owned(),
    }
}

/// Spellings of `model`, and near misses.
fn model_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        14 => Just(key("model", "model")),
        2 => Just(key(r"\u006dodel", "model")),
        2 => Just(key(r"mod\u0065l", "model")),
        1 => Just(key(r"\u006D\u006F\u0064\u0065\u006C", "model")),
        1 => Just(key("Model", "Model")),
        1 => Just(key("MODEL", "MODEL")),
        1 => Just(key("mOdEl", "mOdEl")),
        1 => Just(key(r"\u004dodel", "Model")),
        1 => Just(key(r"MOD\u0045L", "MODEL")),
        1 => Just(key("model ", "model ")),
        1 => Just(key(" model", " model")),
        1 => Just(key("models", "models")),
        1 => Just(key(r"model\u0000", "model\u{0}")),
        1 => Just(key("mode", "mode")),
    ]
}

/// Any key: mostly ordinary ones, sometimes a `model` spelling.
fn any_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        3 => Just(key("messages", "messages")),
        2 => Just(key("temperature", "temperature")),
        1 => Just(key("stream", "stream")),
        4 => "[a-zA-Z0-9 _-]{0,8}".prop_map(|s| key(&s, &s)),
        1 => model_key(),
    ]
}

/// JSON whitespace only (the four bytes RFC 8259 allows).
fn ws() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![6 => Just(""), 3 => Just(" "), 1 => Just("\n"), 1 => Just("\t"), 1 => Just("\r\n")],
        0..3,
    )
    .prop_map(|v| v.concat())
}

/// Values for `model` (as JSON text): admitted ones, escaped ones, near misses,
/// invalid escapes and non-strings.
fn model_value() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => Just(r#""gpt-4o""#),
        3 => Just(r#""gpt\u002d4o""#),
        1 => Just(r#""\u0067\u0070\u0074-4o""#),
        1 => Just(r#""openai/gpt-4o""#),
        1 => Just(r#""openai\/gpt-4o""#),
        2 => Just(r#""gpt-4o-mini""#),
        1 => Just(r#""GPT-4o""#),
        1 => Just(r#""gpt-4o ""#),
        1 => Just(r#"" gpt-4o""#),
        1 => Just(r#""gpt-4o\u0000""#),
        1 => Just(r#""gpt-4o\n""#),
        1 => Just(r#""openai/*""#),
        1 => Just(r#""openai%2Fgpt-4o""#),
        1 => Just(r#""gpt\ud800-4o""#),
        1 => Just(r#""\ud83d\ude00""#),
        1 => Just(r#""""#),
        1 => Just("null"),
        1 => Just("42"),
        1 => Just(r#"["gpt-4o"]"#),
        1 => Just(r#"{"model":"gpt-4o"}"#),
        1 => Just("true"),
    ]
    .prop_map(str::to_owned)
}

/// Any value, nested up to three levels.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        1 => model_value(),
        1 => Just("12345678901234567890123".to_owned()),
        1 => Just("-0.0e-0".to_owned()),
        1 => Just("1E+2".to_owned()),
        1 => Just("3.14159".to_owned()),
        1 => Just("false".to_owned()),
        2 => "[a-z ]{0,6}".prop_map(|s| format!("\"{s}\"")),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            (
                prop::collection::vec((ws(), inner.clone(), ws()), 0..3),
                ws()
            )
                .prop_map(|(items, empty)| {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|(a, v, b)| format!("{a}{v}{b}"))
                        .collect();
                    if items.is_empty() {
                        format!("[{empty}]")
                    } else {
                        format!("[{}]", items.join(","))
                    }
                }),
            (prop::collection::vec(member(any_key(), inner), 0..3), ws())
                .prop_map(|(members, empty)| { render_object(&members, &empty) }),
        ]
    })
}

/// One object member with the whitespace around its parts.
#[derive(Debug, Clone)]
struct Member {
    key: Key,
    value: String,
    ws: [String; 4],
}

fn member(
    keys: impl Strategy<Value = Key>,
    values: impl Strategy<Value = String>,
) -> impl Strategy<Value = Member> {
    (keys, values, ws(), ws(), ws(), ws()).prop_map(|(key, value, a, b, c, d)| Member {
        key,
        value,
        ws: [a, b, c, d],
    })
}

fn render_object(members: &[Member], empty: &str) -> String {
    if members.is_empty() {
        return format!("{{{empty}}}");
    }
    let members: Vec<String> = members
        .iter()
        .map(|m| {
            let [a, b, c, d] = &m.ws;
            format!("{a}\"{}\"{b}:{c}{}{d}", m.key.raw, m.value)
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A generated body: a top-level object, mostly with one `model`-like member
/// somewhere among the others, and rarely something around it.
#[derive(Debug, Clone)]
struct Doc {
    prefix: &'static str,
    before: Vec<Member>,
    model: Option<Member>,
    after: Vec<Member>,
    empty: String,
    suffix: &'static str,
}

impl Doc {
    fn members(&self) -> Vec<Member> {
        let mut all = self.before.clone();
        all.extend(self.model.clone());
        all.extend(self.after.iter().cloned());
        all
    }

    fn render(&self) -> Vec<u8> {
        format!(
            "{}{}{}",
            self.prefix,
            render_object(&self.members(), &self.empty),
            self.suffix
        )
        .into_bytes()
    }

    /// The decoded top-level keys, duplicates included.
    fn top_keys(&self) -> Vec<String> {
        self.members().into_iter().map(|m| m.key.decoded).collect()
    }
}

fn doc() -> impl Strategy<Value = Doc> {
    let prefix = prop_oneof![
        40 => Just(""),
        2 => Just(" \n"),
        1 => Just("\u{feff}"),
        1 => Just("\u{0c}"),
        1 => Just("\u{a0}"),
        1 => Just("["),
    ];
    let suffix = prop_oneof![
        40 => Just(""),
        2 => Just("\n"),
        1 => Just(" \r\n\t"),
        1 => Just("]"),
        1 => Just(","),
        1 => Just("}"),
        1 => Just(r#"{"model":"gpt-4o-mini"}"#),
        1 => Just("\u{0}"),
        1 => Just("x"),
    ];
    (
        prefix,
        prop::collection::vec(member(any_key(), value()), 0..3),
        prop::option::weighted(0.9, member(model_key(), model_value())),
        prop::collection::vec(member(any_key(), value()), 0..3),
        ws(),
        suffix,
    )
        .prop_map(|(prefix, before, model, after, empty, suffix)| Doc {
            prefix,
            before,
            model,
            after,
            empty,
            suffix,
        })
}

/// The independent reading: `Ok(model)` when the contract says the request
/// must be forwarded, else why not.
fn oracle(body: &[u8], top_keys: &[String]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("top level is not an object")?;
    let variants: Vec<&String> = top_keys
        .iter()
        .filter(|k| k.eq_ignore_ascii_case("model"))
        .collect();
    match variants.as_slice() {
        [] => return Err("no model key".into()),
        [only] if only.as_str() == "model" => {}
        [_] => return Err("the only model key is a case variant".into()),
        _ => return Err(format!("{} model keys", variants.len())),
    }
    let model = object
        .get("model")
        .and_then(serde_json::Value::as_str)
        .ok_or("model is not a string")?;
    match model {
        "gpt-4o" | "openai/gpt-4o" => Ok(model.to_owned()),
        other => Err(format!("model {other:?} is not admitted")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn forwarded_exactly_when_one_unambiguous_admitted_model(doc in doc()) {
        let body = doc.render();
        let expected = oracle(&body, &doc.top_keys());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (got, rec) = rt.block_on(async {
            let (inner, rec) = ok_upstream();
            let layer = ByokLayer::new(registry_from(&property_config()));
            let req = request(
                "POST",
                "/openai/v1/chat/completions",
                &[("authorization", &format!("Bearer {ALICE}")), ("content-type", "application/json")],
                body.clone(),
            );
            (send(&layer, inner, req).await, rec)
        });
        let shown = String::from_utf8_lossy(&body).into_owned();
        let forwarded = rec.all();
        match (&expected, forwarded.as_slice()) {
            (Ok(_), [seen]) => {
                prop_assert_eq!(&seen.body[..], &body[..], "bytes changed: {}", shown);
                prop_assert_eq!(got.status, 200);
            }
            (Err(_), []) => {
                // Refused by the proxy itself: a body it cannot read is 400,
                // a readable one whose model is not admitted is 400 or 403.
                let status = got.status;
                prop_assert!(status == 400 || status == 403, "status {} for {}", status, shown);
                if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                    prop_assert_eq!(status, 400, "unparsable body not refused as 400: {}", shown);
                }
            }
            (want, seen) => {
                prop_assert!(
                    false,
                    "body {:?}: independent reading {:?}, but the layer forwarded {} time(s) and answered {} {}",
                    shown, want, seen.len(), got.status, got.text()
                );
            }
        }
    }
}

/// The generator is only useful if both outcomes are common.
#[test]
fn the_generator_produces_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = doc();
    let (mut yes, mut no) = (0, 0);
    for _ in 0..1000 {
        let doc = strategy.new_tree(&mut runner).unwrap().current();
        match oracle(&doc.render(), &doc.top_keys()) {
            Ok(_) => yes += 1,
            Err(_) => no += 1,
        }
    }
    assert!(yes >= 150 && no >= 150, "forward {yes}, refuse {no}");
}
