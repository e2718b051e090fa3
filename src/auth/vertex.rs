//! Vertex paths (SPEC §9): which name a model, and the service account's
//! project and location put in them. The account's token is in
//! [`jwt`](super::jwt) and [`token`](super::token) (the `vertex` feature).

use std::borrow::Cow;

use super::{replaced, segment, BadPath, Segment, DISGUISED};

/// Whether a Vertex path names its model where Vertex reads it: a
/// publisher's model (`…/publishers/{p}/models/{m}:{method}`), or the
/// OpenAI-compatible endpoint (`…/endpoints/openapi/…`, the body's
/// `model`). Any other path (jobs, datasets, endpoints of one's own) names
/// none, whatever its body says.
pub(crate) fn names_model(rest: &str) -> bool {
    let segments: Vec<&str> = rest.split('/').collect();
    segments.contains(&"publishers") || segments.windows(2).any(|w| w == ["endpoints", "openapi"])
}

/// `rest` with every project and location it names replaced by the
/// credential's (`…/projects/{p}/locations/{l}/…`, a `:method` suffix
/// kept), the keywords read percent-decoded; a path naming neither, but a
/// publisher, gets them before `publishers` (Vertex's express-mode paths).
/// Refused: a segment hiding a separator (`%2F`, `\`), or a keyword spelt
/// another way (`Projects`, `projects;x`), where the upstream could read a
/// project the rewrite did not see.
pub(crate) fn path<'a>(
    rest: &'a str,
    project: &str,
    location: &str,
) -> Result<Cow<'a, str>, BadPath> {
    let hidden = |seg: &str| {
        seg.contains('\\') || {
            let lower = seg.to_ascii_lowercase();
            lower.contains("%2f") || lower.contains("%5c")
        }
    };
    let keywords = ["projects", "locations", "publishers"];
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut named = false;
    let mut replace_next: Option<&str> = None;
    for seg in rest.split('/') {
        if hidden(seg) {
            return Err(BadPath(
                "encoded separators are not allowed in a Vertex path",
            ));
        }
        if let Some(with) = replace_next.take() {
            out.push(Cow::Owned(replaced(seg, with)));
            continue;
        }
        match segment(seg, &keywords) {
            Segment::Disguised => return Err(DISGUISED),
            Segment::Keyword("projects") => {
                named = true;
                replace_next = Some(project);
            }
            Segment::Keyword("locations") => {
                named = true;
                replace_next = Some(location);
            }
            Segment::Keyword(_publishers) if !named => {
                out.extend(["projects", project, "locations", location].map(Cow::Borrowed));
                named = true;
            }
            _ => {}
        }
        out.push(Cow::Borrowed(seg));
    }
    let joined = out.join("/");
    Ok(if joined == rest {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(joined)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertex_paths_take_the_credentials_project_and_location() {
        let p = |rest| path(rest, "proj-cred", "us-central1").map(Cow::into_owned);
        let want = "/v1/projects/proj-cred/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent";
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("/v1/projects/client/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent", Ok(want)),
            ("/v1/projects/proj-cred/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent", Ok(want)),
            // spelt encoded, still a keyword
            ("/v1/project%73/client/location%73/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent", Ok("/v1/project%73/proj-cred/location%73/us-central1/publishers/google/models/gemini-2.0-flash:generateContent")),
            // express mode: no project, a publisher
            ("/v1/publishers/google/models/gemini-2.0-flash:generateContent", Ok(want)),
            // anthropic's publisher alike
            ("/v1/projects/x/locations/y/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict", Ok("/v1/projects/proj-cred/locations/us-central1/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict")),
            // every project named, not only the first
            ("/v1/projects/a/locations/b/operations/projects/c", Ok("/v1/projects/proj-cred/locations/us-central1/operations/projects/proj-cred")),
            ("/v1/projects/other/operations/1", Ok("/v1/projects/proj-cred/operations/1")),
            ("/v1/models", Ok("/v1/models")),
            // a hidden separator
            ("/v1/projects/a%2Fb/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects%2fother/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects/a\\b/locations/y", Err(())),
            ("/v1/projects/a%5cb/locations/y", Err(())),
            // a keyword spelt another way
            ("/v1/Projects/other/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects;v=1/other/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects/p/LOCATIONS/other/publishers/google/models/m:gen", Err(())),
            ("/v1/projects/p/locations/l/Publishers/google/models/m:gen", Err(())),
            // a method on the location is kept
            ("/v1/projects/p/locations/l:retrieveContexts", Ok("/v1/projects/proj-cred/locations/us-central1:retrieveContexts")),
        ];
        for (rest, want) in cases {
            let got = p(rest).map_err(|_| ());
            assert_eq!(got.as_deref(), want.as_deref(), "{rest}");
        }
    }
}
