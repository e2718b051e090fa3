//! Azure's deployment entries (SPEC §9): the deployment an entry serves,
//! put in the client's path in place of the one it names.

use std::borrow::Cow;

use super::{replaced, segment, BadPath, Segment, DISGUISED};

/// `rest` with the deployment it names (`…/deployments/{d}/…`, the keyword
/// read percent-decoded as the model is) replaced by `deployment`;
/// unchanged when it names none. Refused: the keyword spelt another way.
pub(crate) fn path<'a>(rest: &'a str, deployment: &str) -> Result<Cow<'a, str>, BadPath> {
    let mut out = String::with_capacity(rest.len() + deployment.len());
    let mut after_keyword = false;
    let mut replaced_any = false;
    for (i, seg) in rest.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if after_keyword {
            out.push_str(&replaced(seg, deployment));
            replaced_any = true;
        } else {
            out.push_str(seg);
        }
        after_keyword = match segment(seg, &["deployments"]) {
            Segment::Disguised => return Err(DISGUISED),
            Segment::Keyword(_) => true,
            Segment::Other => false,
        };
    }
    Ok(if replaced_any {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_paths_take_the_entrys_deployment() {
        let cases = [
            (
                "/openai/deployments/gpt-4o/chat/completions",
                "/openai/deployments/prod-4o/chat/completions",
            ),
            (
                "/openai/deployments/gpt-4o/embeddings",
                "/openai/deployments/prod-4o/embeddings",
            ),
            ("/openai/v1/chat/completions", "/openai/v1/chat/completions"),
            ("/models/chat/completions", "/models/chat/completions"),
            ("/openai/deployments", "/openai/deployments"),
            (
                "/openai/deploy%6Dents/gpt-4o/chat/completions",
                "/openai/deploy%6Dents/prod-4o/chat/completions",
            ),
            (
                "/openai/deployments/gpt%2D4o/chat/completions",
                "/openai/deployments/prod-4o/chat/completions",
            ),
        ];
        for (rest, want) in cases {
            assert_eq!(path(rest, "prod-4o").unwrap(), want, "{rest}");
        }
        for disguised in [
            "/openai/Deployments/gpt-4o/chat/completions",
            "/openai/deployments;v=1/gpt-4o/chat/completions",
        ] {
            assert!(path(disguised, "prod-4o").is_err(), "{disguised}");
        }
    }
}
