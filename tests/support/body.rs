//! Byte-level helpers for bodies and files.

use std::io::Write;

/// Whether `needle` occurs anywhere in `hay`, which need not be UTF-8.
pub(crate) fn contains_bytes(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `data`, gzip-compressed.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
