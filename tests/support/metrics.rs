//! The samples of an OpenMetrics exposition, as `/metrics` serves it.
//!
//! A small parser of sample lines rather than a crate: the one on crates.io
//! for this (`prometheus-parse`) reads the Prometheus text format, folds
//! `_bucket`/`_sum`/`_count` lines into histogram values (the tests look up
//! those series by name) and brings `chrono`; this keeps every sample line as
//! it is served.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::admin::admin_get;

/// One sample of the exposition.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the OpenMetrics text (sample lines only).
pub(crate) fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("bad sample line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            loop {
                let (start, c) = chars.next().unwrap();
                if c == '}' {
                    rest = &inner[start + 1..];
                    break;
                }
                if c == ',' {
                    continue;
                }
                let eq = inner[start..].find("=\"").unwrap() + start;
                let key = inner[start..eq].to_owned();
                for _ in start..eq + 1 {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next().unwrap().1 {
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
        }
        let value = rest.split_whitespace().next().unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// The series of one metric: `k=v,k=v` (labels sorted by name) → value.
pub(crate) fn family(samples: &[Sample], name: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| {
            let key: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (key.join(","), s.value)
        })
        .collect()
}

/// The expected series of [`family`], from `(labels, value)` pairs.
pub(crate) fn expect(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The value of a metric that has exactly one series, without labels.
pub(crate) fn gauge(samples: &[Sample], name: &str) -> f64 {
    let f = family(samples, name);
    assert_eq!(f.len(), 1, "{name}: {f:?}");
    f[""]
}

/// `GET /metrics` with the management key: must be 200 in a text format
/// ending with `# EOF`; its text and its samples.
pub(crate) async fn scrape(admin: SocketAddr) -> (String, Vec<Sample>) {
    let r = admin_get(admin, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"),
        "{ct}"
    );
    let text = r.text();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let samples = parse_metrics(&text);
    (text, samples)
}
