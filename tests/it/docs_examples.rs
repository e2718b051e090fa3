//! The config examples of the documentation are configs the binary accepts.
//!
//! A complete config example, in `docs/*.md` or `README.md`, opens with the
//! fence ```` ```toml check ```` (GitHub highlights it as TOML: it reads the
//! first word of the info string only). Each such block is run through
//! `byok-proxy check --config`, as a file of its own. A partial snippet stays
//! ```` ```toml ```` and is not checked. Checked examples are self-contained:
//! no `key_env`, no files to read.

use std::path::{Path, PathBuf};

use crate::support::check_config;

/// How many checked examples the docs hold at least, so that a renamed
/// marker or a moved folder cannot make the test pass on nothing.
const AT_LEAST: usize = 8;

/// A fenced block marked for checking: where it starts, and its text.
#[derive(Debug, PartialEq)]
struct Example {
    line: usize,
    text: String,
}

/// A fence being read: its character and length, whether it is marked, and
/// what it holds so far.
struct Open {
    fence: char,
    len: usize,
    marked: bool,
    line: usize,
    text: String,
}

/// The blocks of `markdown` whose info string is `toml check`. A fence is
/// three or more backticks or tildes (a backtick fence's info string holds no
/// backtick: that line is inline code); it closes on a line of at least as
/// many of the same character and nothing else (CommonMark).
fn checked_examples(markdown: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut open: Option<Open> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(block) = &mut open else {
            let Some(fence) = trimmed.chars().next().filter(|c| *c == '`' || *c == '~') else {
                continue;
            };
            let len = trimmed.chars().take_while(|c| *c == fence).count();
            // The fence characters are ASCII: `len` bytes.
            let info = &trimmed[len..];
            if len >= 3 && !(fence == '`' && info.contains('`')) {
                let mut info = info.split_whitespace();
                let marked = info.next() == Some("toml") && info.next() == Some("check");
                open = Some(Open {
                    fence,
                    len,
                    marked,
                    line: i + 1,
                    text: String::new(),
                });
            }
            continue;
        };
        let closing = trimmed.trim_end();
        if closing.len() >= block.len && closing.chars().all(|c| c == block.fence) {
            if block.marked {
                found.push(Example {
                    line: block.line,
                    text: std::mem::take(&mut block.text),
                });
            }
            open = None;
        } else {
            block.text.push_str(line);
            block.text.push('\n');
        }
    }
    // An unclosed block runs to the end of the document (CommonMark).
    if let Some(block) = open.filter(|b| b.marked) {
        found.push(Example {
            line: block.line,
            text: block.text,
        });
    }
    found
}

/// `README.md` and every `docs/*.md`.
fn documentation() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn every_checked_config_example_passes_check() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in documentation() {
        let markdown = std::fs::read_to_string(&file).unwrap();
        for example in checked_examples(&markdown) {
            checked += 1;
            let (ok, err) = check_config(&example.text);
            if !ok {
                failures.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    example.line,
                    err.trim_end()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        checked >= AT_LEAST,
        "found {checked} ```toml check blocks, expected at least {AT_LEAST}"
    );
}

#[test]
fn only_blocks_marked_toml_check_are_taken() {
    let markdown = "\
```toml
[server]
```

```toml check
[server]
listen = \"127.0.0.1:8080\"
```

````md
```toml check
inside another block
```
````

  ~~~toml   check
a = 1
  ~~~

```` ```toml check ```` in a sentence
is inline code, not a fence.
";
    assert_eq!(
        checked_examples(markdown),
        vec![
            Example {
                line: 5,
                text: "[server]\nlisten = \"127.0.0.1:8080\"\n".into(),
            },
            Example {
                line: 16,
                text: "a = 1\n".into(),
            },
        ]
    );
}
