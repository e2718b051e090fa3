//! The structured cloud key parser (SPEC §9) and the TOML config loader
//! (SPEC §3): no panic, and no secret in what they show.

use secrecy::SecretString;
use serde_json::Value;

use super::text;
use crate::config::Config;
use crate::domain::{AzureEntry, CloudKey};

/// The fields of a structured cloud key that hold a secret.
const SECRET_FIELDS: [&str; 4] = ["secretAccessKey", "sessionToken", "private_key", "api_key"];

/// Shorter values are not checked: a label shows a key's first 3 and last 4
/// characters, and a short value may well equal a field's name or a region.
const MIN_SECRET: usize = 12;

/// What a parse shows must not contain any of `secrets` (those that appear
/// nowhere else in the input, so are not shown for another reason).
fn assert_hidden(shown: &str, secrets: &[String], others: &[String], what: &str) {
    for secret in secrets {
        let elsewhere = others.iter().any(|o| o.contains(secret.as_str()))
            || SECRET_FIELDS
                .iter()
                .chain(&["accessKeyId", "region", "client_email", "model_slug"])
                .any(|f| f.contains(secret.as_str()));
        assert!(
            elsewhere || !shown.contains(secret.as_str()),
            "{what} shows a secret"
        );
    }
}

/// The secret and the other strings (values and names) of a key's JSON.
fn json_strings(key: &str, secrets: &mut Vec<String>, others: &mut Vec<String>) {
    fn walk(
        value: &Value,
        field: Option<&str>,
        secrets: &mut Vec<String>,
        others: &mut Vec<String>,
    ) {
        match value {
            Value::String(s) if field.is_some_and(|f| SECRET_FIELDS.contains(&f)) => {
                if s.trim().chars().count() >= MIN_SECRET {
                    secrets.push(s.trim().to_owned());
                }
            }
            Value::String(s) => others.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| walk(v, None, secrets, others)),
            Value::Object(map) => {
                for (name, v) in map {
                    others.push(name.clone());
                    walk(v, Some(name), secrets, others);
                }
            }
            _ => others.push(value.to_string()),
        }
    }
    if let Ok(json) = serde_json::from_str::<Value>(key.trim()) {
        walk(&json, None, secrets, others);
    }
}

/// The structured cloud key parser. The first byte picks the provider
/// (Bedrock, Vertex, Azure, or one with plain keys), the rest is the key.
pub fn cloud_key(data: &[u8]) {
    let Some((&selector, key)) = data.split_first() else {
        return;
    };
    let Some(key) = text(key) else { return };
    let providers = ["amazon-bedrock", "google-vertex", "azure", "openai"];
    let provider = providers[usize::from(selector) % providers.len()];
    let (mut secrets, mut others) = (Vec::new(), Vec::new());
    json_strings(key, &mut secrets, &mut others);
    let shown = match CloudKey::parse(provider, &SecretString::from(key.to_owned())) {
        Ok(Some(parsed)) => shown_key(&parsed),
        Ok(None) => {
            let opener = key.trim().bytes().next();
            assert!(
                provider == "openai"
                    || (provider == "azure" && opener != Some(b'['))
                    || (provider != "azure" && opener != Some(b'{')),
                "a structured key read as a plain one"
            );
            String::new()
        }
        Err(errors) => format!("{errors}\n{errors:?}"),
    };
    assert_hidden(&shown, &secrets, &others, "a cloud key");
}

/// Everything a parsed key shows: its `Debug`, its parts' and its label.
fn shown_key(key: &CloudKey) -> String {
    let mut shown = format!("{key:?}\n{}", key.label());
    match key {
        CloudKey::Aws(aws) => shown.push_str(&format!("{aws:?}")),
        CloudKey::Vertex(account) => shown.push_str(&format!("{account:?}")),
        CloudKey::Azure(entries) => {
            for entry in entries {
                let (AzureEntry::Resource { api_key, .. } | AzureEntry::Deployment { api_key, .. }) =
                    entry;
                shown.push_str(&format!("{entry:?}{api_key:?}"));
            }
        }
    }
    shown
}

/// Whether a config names a file that reading would hang on or exhaust
/// memory with (`/dev/zero`, a FIFO under `/proc`): not a loader bug.
fn names_a_device(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => ["/dev", "/proc", "/sys"].iter().any(|d| s.contains(d)),
        toml::Value::Array(items) => items.iter().any(names_a_device),
        toml::Value::Table(table) => table.values().any(names_a_device),
        _ => false,
    }
}

/// The TOML config loader: no panic, nothing that is not TOML accepted, and
/// no credential's `key` (nor a secret inside a structured one) nor the store
/// URL (it may hold a password) in the config's `Debug` or in an error.
pub fn config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        assert!(Config::parse(text).is_err(), "a config that is not TOML");
        return;
    };
    if table.values().any(names_a_device) {
        return;
    }
    let (mut secrets, mut others) = (Vec::new(), Vec::new());
    collect(&toml::Value::Table(table), None, &mut secrets, &mut others);
    let shown = match Config::parse(text) {
        Ok(config) => {
            check_durations(&config);
            format!("{config:?}")
        }
        Err(error) => format!("{error}\n{error:?}"),
    };
    assert_hidden(&shown, &secrets, &others, "a config");
}

/// Every duration a loaded config holds can be added to the clock: the
/// proxy computes deadlines as `Instant::now() + timeout`, which panics on
/// overflow.
fn check_durations(config: &Config) {
    let server = &config.server;
    let now = std::time::Instant::now();
    for (name, duration) in [
        ("drain_secs", server.drain),
        ("connect_timeout_secs", server.connect_timeout),
        ("first_byte_timeout_secs", server.first_byte_timeout),
        ("idle_timeout_secs", server.idle_timeout),
        ("body_timeout_secs", server.body_timeout),
        ("max_cooldown_secs", server.max_cooldown),
    ] {
        assert!(
            now.checked_add(duration).is_some(),
            "server.{name} overflows a deadline"
        );
    }
}

/// The secrets (every `key` and `url` string) and the other strings of a
/// config, values and names alike.
fn collect(
    value: &toml::Value,
    field: Option<&str>,
    secrets: &mut Vec<String>,
    others: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) if matches!(field, Some("key" | "url")) => {
            json_strings(s, secrets, others);
            if s.chars().count() >= MIN_SECRET {
                secrets.push(s.clone());
            }
        }
        toml::Value::String(s) => others.push(s.clone()),
        toml::Value::Array(items) => items.iter().for_each(|v| collect(v, None, secrets, others)),
        toml::Value::Table(table) => {
            for (name, v) in table {
                others.push(name.clone());
                collect(v, Some(name), secrets, others);
            }
        }
        other => others.push(other.to_string()),
    }
}
