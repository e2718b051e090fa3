//! The checks behind the fuzz targets: each function takes the fuzzer's bytes,
//! runs one reader of untrusted input and panics when it breaks a rule. The
//! libFuzzer targets in `fuzz/` are one line each around them
//! (`scripts/fuzz`), and the stable test suite replays the committed corpus
//! (`fuzz/corpus/TARGET`) through the same functions, without nightly.
//!
//! Not an API: compiled for the crate's own tests and with the `fuzzing`
//! feature (off by default), which only `fuzz/` turns on.
//!
//! The oracles:
//!
//! * [`body_model`]: the body's model as the proxy reads it (SPEC §4) agrees
//!   with a plain `serde_json` parse wherever that parse succeeds and the
//!   body is unambiguous; where `serde_json` rejects the document, the proxy
//!   refuses it too; OpenRouter's `models`/`fallbacks` lists are read as
//!   `serde_json` reads them.
//! * [`path_model`]: the path's model agrees with a slow reading of SPEC §4's
//!   rules written apart from the proxy's; a `model` query parameter is
//!   always refused and a `key` one never forwarded.
//! * [`cloud_key`]: no panic, and no secret of a structured cloud key
//!   (SPEC §9) in its `Debug`, its label or its errors.
//! * [`config`]: no panic, nothing that is not TOML accepted, and no
//!   credential secret in the loaded config's `Debug` or in an error.

use std::borrow::Cow;

mod body;
mod path;
mod secrets;

pub use body::body_model;
pub use path::path_model;
pub use secrets::{cloud_key, config};

/// `data` as text, when it is UTF-8.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `data` with each `%XX` decoded. A `%` not followed by two hex digits
/// makes it `None` when `strict`, and stays as it is otherwise. Written apart
/// from `percent_encoding`, for the oracles.
fn percent_decode(data: &str, strict: bool) -> Option<Vec<u8>> {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let decoded = hex
            .filter(|h| b == b'%' && h.bytes().all(|d| d.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None if b == b'%' && strict => return None,
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// `text`, lowercased the way the proxy compares keys ignoring case.
fn folded(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| b.is_ascii_lowercase()) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every committed corpus file of `target`, through `check`.
    fn replay(target: &str, check: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("the committed corpus") {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            count += 1;
        }
        assert!(count >= 10, "{target}: only {count} corpus files");
    }

    #[test]
    fn body_model_corpus() {
        replay("body_model", super::body_model);
    }

    #[test]
    fn path_model_corpus() {
        replay("path_model", super::path_model);
    }

    #[test]
    fn cloud_key_corpus() {
        replay("cloud_key", super::cloud_key);
    }

    #[test]
    fn config_corpus() {
        replay("config", super::config);
    }
}
