//! Who a management key speaks for (SPEC §7): the operator (every
//! workspace), or a tenant (its workspaces only). A scoped key never sees a
//! global credential nor the shared tier's, and another workspace's record
//! answers it exactly as a missing one does.

use std::sync::Arc;

use foldhash::HashMap;

use super::error::AdminError;
use crate::config::AdminConfig;
use crate::domain::KeyHash;

/// A management key's reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every workspace, the global and the shared credentials.
    Operator,
    /// These workspaces; the first is the default.
    Workspaces(Arc<[String]>),
}

/// The management keys in force, and the workspace of the shared tier
/// (hidden from scoped keys).
#[derive(Debug, Default)]
pub(crate) struct Access {
    keys: HashMap<KeyHash, Scope>,
    shared_workspace: Option<Box<str>>,
}

impl Access {
    /// From `[admin]` (none: nobody) and `[shared]`'s workspace.
    pub(crate) fn new(admin: Option<&AdminConfig>, shared_workspace: Option<&str>) -> Self {
        let mut keys = HashMap::default();
        if let Some(a) = admin {
            for hash in &a.management_key_hashes {
                keys.insert(*hash, Scope::Operator);
            }
            for k in &a.scoped_keys {
                keys.insert(k.hash, Scope::Workspaces(k.workspaces.clone().into()));
            }
        }
        Access {
            keys,
            shared_workspace: shared_workspace.map(Box::from),
        }
    }

    /// The caller a key hash speaks for, if any.
    pub(crate) fn caller(&self, hash: &KeyHash) -> Option<Caller> {
        self.keys.get(hash).map(|scope| Caller {
            scope: scope.clone(),
            shared_workspace: self.shared_workspace.clone(),
        })
    }
}

/// The caller of one admin request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    scope: Scope,
    shared_workspace: Option<Box<str>>,
}

impl Caller {
    pub(crate) fn is_operator(&self) -> bool {
        self.scope == Scope::Operator
    }

    /// Whether the caller may see a record of `workspace` (`None`: global).
    pub(crate) fn sees(&self, workspace: Option<&str>) -> bool {
        match &self.scope {
            Scope::Operator => true,
            Scope::Workspaces(list) => workspace.is_some_and(|w| {
                list.iter().any(|own| own == w) && self.shared_workspace.as_deref() != Some(w)
            }),
        }
    }

    /// The workspace a record is created in when the body names none.
    pub(crate) fn default_workspace<'a>(
        &'a self,
        operator_default: Option<&'a str>,
    ) -> Option<&'a str> {
        match &self.scope {
            Scope::Operator => operator_default,
            Scope::Workspaces(list) => list.first().map(String::as_str),
        }
    }

    /// Whether the caller may create a record in `workspace` (`None`: a
    /// global credential): 403 otherwise, naming no other workspace.
    pub(crate) fn may_write(&self, workspace: Option<&str>) -> Result<(), AdminError> {
        if self.sees(workspace) {
            return Ok(());
        }
        Err(AdminError::OutsideScope(match workspace {
            None => "a workspace-scoped management key cannot create a global credential",
            Some(_) => "this management key may not write in that workspace",
        }))
    }

    /// The workspace filter of a list: the query's (`*`: every workspace
    /// the caller sees), else the caller's default. `None`: no filter
    /// beyond [`sees`](Self::sees).
    pub(crate) fn listed<'a>(
        &'a self,
        asked: Option<&'a str>,
        operator_default: Option<&'a str>,
    ) -> Option<&'a str> {
        match asked {
            Some("*") => None,
            Some(ws) => Some(ws),
            None => self.default_workspace(operator_default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScopedKey;

    #[test]
    fn a_scoped_key_sees_its_workspaces_only() {
        let op = KeyHash::of(b"op");
        let tenant = KeyHash::of(b"tenant");
        let admin = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            management_key_hashes: vec![op],
            scoped_keys: vec![ScopedKey {
                hash: tenant,
                workspaces: vec!["ws-a".into(), "ws-b".into(), "platform".into()],
            }],
            tls: None,
        };
        let access = Access::new(Some(&admin), Some("platform"));
        assert!(access.caller(&KeyHash::of(b"nobody")).is_none());
        let op = access.caller(&op).unwrap();
        let t = access.caller(&tenant).unwrap();
        for (ws, operator, scoped) in [
            (Some("ws-a"), true, true),
            (Some("ws-b"), true, true),
            (Some("ws-c"), true, false),
            (None, true, false),
            (Some("platform"), true, false),
        ] {
            assert_eq!(op.sees(ws), operator, "{ws:?}");
            assert_eq!(t.sees(ws), scoped, "{ws:?}");
            assert_eq!(t.may_write(ws).is_ok(), scoped, "{ws:?}");
        }
        assert_eq!(t.default_workspace(Some("ws-1")), Some("ws-a"));
        assert_eq!(op.default_workspace(Some("ws-1")), Some("ws-1"));
        assert_eq!(t.listed(None, Some("ws-1")), Some("ws-a"));
        assert_eq!(t.listed(Some("*"), Some("ws-1")), None);
        assert_eq!(t.listed(Some("ws-c"), None), Some("ws-c"));
        assert!(op.is_operator() && !t.is_operator());
    }
}
