//! Configs for the binary: every provider pointing at a mock, the gateway keys
//! of the tests, and credentials.

use super::hash;
use super::mock::Mock;

pub(crate) const GW: &str = "gw-test-key-alpha";
pub(crate) const GW2: &str = "gw-test-key-bravo";
pub(crate) const GW_OTHER_WS: &str = "gw-test-key-charlie";
pub(crate) const GW_DISABLED: &str = "gw-test-key-disabled";

/// A config whose providers all point at `mock`, with three gateway keys
/// (GW and GW2 in ws-1 as user-1 and user-2, GW_OTHER_WS in ws-2, GW_DISABLED
/// disabled in ws-1), followed by `rest`.
pub(crate) fn config(mock: &Mock, rest: &str) -> String {
    config_with_server(mock, "", rest)
}

pub(crate) fn config_with_server(mock: &Mock, server: &str, rest: &str) -> String {
    config_at(&mock.url(), server, rest)
}

/// Like [`config_with_server`], with the providers pointing at `up` (any
/// upstream, not only a [`Mock`]).
pub(crate) fn config_at(up: &str, server: &str, rest: &str) -> String {
    let timeout = if server.contains("first_byte_timeout_secs") {
        ""
    } else {
        "first_byte_timeout_secs = 10"
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{timeout}
{server}

[providers.openai]
base_url = "{up}"
[providers.anthropic]
base_url = "{up}"
[providers.google-ai-studio]
base_url = "{up}"
[providers.amazon-bedrock]
base_url = "{up}/bedrock"
[providers.openrouter]
base_url = "{up}/api"

[[api_keys]]
hash = "{h1}"
workspace_id = "ws-1"
user_id = "user-1"
name = "alpha"

[[api_keys]]
hash = "{h2}"
workspace_id = "ws-1"
user_id = "user-2"

[[api_keys]]
hash = "{h3}"
workspace_id = "ws-2"
user_id = "user-3"

[[api_keys]]
hash = "{h4}"
workspace_id = "ws-1"
user_id = "user-1"
disabled = true

{rest}
"#,
        h1 = hash(GW),
        h2 = hash(GW2),
        h3 = hash(GW_OTHER_WS),
        h4 = hash(GW_DISABLED),
    )
}

/// A `[[credentials]]` entry in ws-1 with the given id, provider and secret,
/// plus `extra` lines.
pub(crate) fn cred(id: &str, provider: &str, secret: &str, extra: &str) -> String {
    let created = if extra.contains("created_at") {
        ""
    } else {
        "created_at = \"2025-08-24T10:30:00Z\""
    };
    format!(
        r#"
[[credentials]]
id = "{id}"
workspace_id = "ws-1"
provider = "{provider}"
key = "{secret}"
{created}
{extra}
"#
    )
}
