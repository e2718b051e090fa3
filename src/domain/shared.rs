//! [`SharedTier`]: the operator's shared credentials (`[shared]`), tried
//! between a workspace's own credentials and its fallback ones (SPEC §5).

use foldhash::HashSet;

/// Whose credentials form the shared tier, and which workspaces may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTier {
    /// The workspace whose credentials form it.
    pub workspace_id: Box<str>,
    /// The workspaces that may use it; `None`: every workspace (`["*"]`).
    pub workspaces: Option<HashSet<Box<str>>>,
}

impl SharedTier {
    /// Whether `workspace` may use the shared tier. Never the shared
    /// workspace itself: its credentials are already its own BYOK tier.
    pub fn serves(&self, workspace: &str) -> bool {
        *self.workspace_id != *workspace
            && self
                .workspaces
                .as_ref()
                .is_none_or(|set| set.contains(workspace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_listed_workspaces_never_its_own() {
        let all = SharedTier {
            workspace_id: "platform".into(),
            workspaces: None,
        };
        assert!(all.serves("ws-1"));
        assert!(!all.serves("platform"));
        let some = SharedTier {
            workspace_id: "platform".into(),
            workspaces: Some(["ws-1".into()].into_iter().collect()),
        };
        assert!(some.serves("ws-1"));
        assert!(!some.serves("ws-2"));
    }
}
