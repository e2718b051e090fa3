//! [`CredentialSpec`]: a credential's plain fields, written once.
//!
//! Every source of a credential carries these fields the same way: the
//! config's `[[credentials]]` table and the admin API's create body read them
//! beside their own fields ([`Flat`](super::Flat)), the PATCH body reads
//! [`CredentialChanges`], and both SQL stores write and read one column per
//! field ([`CredentialSpec::COLUMNS`]). A validated
//! [`Credential`](super::Credential) keeps its spec and reads as it.
//!
//! Adding a field touches the list below, its rule in
//! [`Credential::validate`](super::Credential::validate) if it has one, and
//! the stores' migrations (a test checks the stores' tables against
//! [`CredentialSpec::COLUMNS`]). OpenRouter's `BYOKKey` view is a contract of
//! its own: a new field is served there only when added to it.
//!
//! The spec holds no secret (the key and the header values live beside it).

use serde::de::MapAccess;
#[cfg(feature = "server")]
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, Visitor};

/// The fields a spec reads from a map, one entry at a time, beside a source's
/// own fields ([`Flat`](super::Flat)).
pub(crate) trait Fields {
    /// The names of its fields, in order.
    const NAMES: &'static [&'static str];

    /// Reads field `NAMES[index]`'s value, the map's next value.
    fn read<'de, A: MapAccess<'de>>(&mut self, index: usize, map: &mut A) -> Result<(), A::Error>;
}

/// One value of a spec field: what `null` means in a PATCH and, for the
/// stores, the column value it is kept as.
#[cfg(feature = "server")]
pub(crate) trait SpecValue: Sized {
    /// What `null` in a PATCH body sets: `Some(v)`, `v` (an optional field is
    /// cleared); `None`, nothing (the field is unchanged).
    fn on_null() -> Option<Self>;

    /// The kind of column it is kept in.
    const KIND: ScalarKind;

    /// The column value.
    fn to_scalar(&self) -> Scalar;

    /// Back from the column value; `Err` says what is wrong with it.
    fn from_scalar(value: Scalar) -> Result<Self, &'static str>;
}

/// A column value, as both SQL stores bind and read it.
#[cfg(feature = "server")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar {
    /// SQL `NULL`.
    Null,
    /// A boolean (SQLite: an INTEGER 0 or 1).
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (the stores' sealed secret).
    Bytes(Vec<u8>),
}

/// The kind of a column: how a store reads it.
#[cfg(feature = "server")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    /// BOOLEAN (SQLite: INTEGER).
    Bool,
    /// BIGINT (SQLite: INTEGER).
    Int,
    /// TEXT.
    Text,
    /// BYTEA (SQLite: BLOB).
    Bytes,
}

#[cfg(feature = "server")]
const NOT_BOOL: &str = "not a boolean";
#[cfg(feature = "server")]
const NOT_INT: &str = "not an integer";
#[cfg(feature = "server")]
const NOT_TEXT: &str = "not text";

#[cfg(feature = "server")]
impl SpecValue for bool {
    fn on_null() -> Option<Self> {
        None
    }
    const KIND: ScalarKind = ScalarKind::Bool;
    fn to_scalar(&self) -> Scalar {
        Scalar::Bool(*self)
    }
    fn from_scalar(value: Scalar) -> Result<Self, &'static str> {
        match value {
            Scalar::Bool(b) => Ok(b),
            _ => Err(NOT_BOOL),
        }
    }
}

#[cfg(feature = "server")]
impl SpecValue for i64 {
    fn on_null() -> Option<Self> {
        None
    }
    const KIND: ScalarKind = ScalarKind::Int;
    fn to_scalar(&self) -> Scalar {
        Scalar::Int(*self)
    }
    fn from_scalar(value: Scalar) -> Result<Self, &'static str> {
        match value {
            Scalar::Int(i) => Ok(i),
            _ => Err(NOT_INT),
        }
    }
}

#[cfg(feature = "server")]
impl SpecValue for String {
    fn on_null() -> Option<Self> {
        None
    }
    const KIND: ScalarKind = ScalarKind::Text;
    fn to_scalar(&self) -> Scalar {
        Scalar::Text(self.clone())
    }
    fn from_scalar(value: Scalar) -> Result<Self, &'static str> {
        match value {
            Scalar::Text(s) => Ok(s),
            _ => Err(NOT_TEXT),
        }
    }
}

/// A list is kept as JSON text (`["a","b"]`).
#[cfg(feature = "server")]
impl SpecValue for Vec<String> {
    fn on_null() -> Option<Self> {
        None
    }
    const KIND: ScalarKind = ScalarKind::Text;
    fn to_scalar(&self) -> Scalar {
        Scalar::Text(serde_json::to_string(self).unwrap_or_else(|_| "[]".to_owned()))
    }
    fn from_scalar(value: Scalar) -> Result<Self, &'static str> {
        const NOT_LIST: &str = "not a JSON array of strings";
        match value {
            Scalar::Text(t) => serde_json::from_str(&t).map_err(|_| NOT_LIST),
            _ => Err(NOT_LIST),
        }
    }
}

/// An optional field: `NULL` in its column, and cleared by `null` in a PATCH.
#[cfg(feature = "server")]
impl<T: SpecValue> SpecValue for Option<T> {
    fn on_null() -> Option<Self> {
        Some(None)
    }
    const KIND: ScalarKind = T::KIND;
    fn to_scalar(&self) -> Scalar {
        self.as_ref().map_or(Scalar::Null, T::to_scalar)
    }
    fn from_scalar(value: Scalar) -> Result<Self, &'static str> {
        match value {
            Scalar::Null => Ok(None),
            value => T::from_scalar(value).map(Some),
        }
    }
}

/// Reads one PATCH value: `None` when the field is to stay as it is.
#[cfg(feature = "server")]
struct Change<T>(std::marker::PhantomData<T>);

#[cfg(feature = "server")]
impl<'de, T: SpecValue + Deserialize<'de>> DeserializeSeed<'de> for Change<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(self)
    }
}

#[cfg(feature = "server")]
impl<'de, T: SpecValue + Deserialize<'de>> Visitor<'de> for Change<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(T::on_null())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(T::on_null())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        T::deserialize(d).map(Some)
    }
}

/// Declares the spec once: the struct, its PATCH twin (each field an
/// `Option`: `None`, unchanged), how both read a field by name, and the
/// columns the stores keep it in.
macro_rules! spec {
    (
        $(#[$meta:meta])*
        pub struct $spec:ident;
        $(#[$cmeta:meta])*
        pub(crate) struct $changes:ident;
        {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $spec {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        $(#[$cmeta])*
        #[cfg(feature = "server")]
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub(crate) struct $changes {
            $( pub(crate) $field: Option<$ty>, )*
        }

        impl Fields for $spec {
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            fn read<'de, A: MapAccess<'de>>(
                &mut self,
                index: usize,
                map: &mut A,
            ) -> Result<(), A::Error> {
                let name = Self::NAMES.get(index).copied().unwrap_or_default();
                $( if name == stringify!($field) {
                    self.$field = map.next_value()?;
                } )*
                Ok(())
            }
        }

        #[cfg(feature = "server")]
        impl Fields for $changes {
            const NAMES: &'static [&'static str] = <$spec as Fields>::NAMES;

            fn read<'de, A: MapAccess<'de>>(
                &mut self,
                index: usize,
                map: &mut A,
            ) -> Result<(), A::Error> {
                let name = Self::NAMES.get(index).copied().unwrap_or_default();
                $( if name == stringify!($field) {
                    self.$field = map.next_value_seed(Change::<$ty>(std::marker::PhantomData))?;
                } )*
                Ok(())
            }
        }

        #[cfg(feature = "server")]
        impl $spec {
            /// One column per field: its name and kind, in field order.
            pub(crate) const COLUMNS: &'static [(&'static str, ScalarKind)] =
                &[$( (stringify!($field), <$ty as SpecValue>::KIND) ),*];

            /// Sets every field the PATCH gives.
            pub(crate) fn apply(&mut self, changes: $changes) {
                $( if let Some(v) = changes.$field {
                    self.$field = v;
                } )*
            }

            /// The column values, in [`COLUMNS`](Self::COLUMNS) order.
            pub(crate) fn to_scalars(&self) -> Vec<Scalar> {
                vec![$( SpecValue::to_scalar(&self.$field) ),*]
            }

            /// Back from the column values in [`COLUMNS`](Self::COLUMNS)
            /// order; `Err` names the column that does not read.
            pub(crate) fn from_scalars(
                values: impl IntoIterator<Item = Scalar>,
            ) -> Result<Self, String> {
                let mut values = values.into_iter();
                Ok($spec {
                    $( $field: {
                        let v = values.next().unwrap_or(Scalar::Null);
                        SpecValue::from_scalar(v).map_err(|why| {
                            format!("column {}: {why}", stringify!($field))
                        })?
                    }, )*
                })
            }
        }
    };
}

spec! {
    /// A credential's plain fields: OpenRouter's `BYOKKey` settings and the
    /// per-credential upstream, as every source gives them (defaults: `false`,
    /// `0`, `null`). The record's identity (`id`, `workspace_id`, `provider`,
    /// `created_at`), its secret (`key`) and the config-only `headers` live
    /// beside it, in [`CredentialFields`](super::CredentialFields).
    pub struct CredentialSpec;
    /// A PATCH of a [`CredentialSpec`]: per field, `None` when the body leaves
    /// it unchanged (absent, or `null` for a field that cannot be null),
    /// `Some(v)` otherwise (`Some(None)`: `null` cleared it).
    pub(crate) struct CredentialChanges;
    {
        /// Human name, at most [`MAX_NAME`](super::MAX_NAME) characters.
        name: Option<String>,
        /// A disabled credential is never used.
        disabled: bool,
        /// Used only after every non-fallback credential and the shared tier.
        is_fallback: bool,
        /// The shared tier is never used for the models `allowed_models`
        /// admits (every model when `None`).
        is_required: bool,
        /// The shared tier is never used for this provider.
        is_byok_only: bool,
        /// The operator's declaration that the account retains no data;
        /// `None` inherits the provider's `zdr`.
        declared_zdr: Option<bool>,
        /// Ascending try order within its group.
        sort_order: i64,
        /// Hex SHA-256 hashes of the gateway keys that may use it; `None` = any.
        allowed_api_key_hashes: Option<Vec<String>>,
        /// Model slugs it may serve; `None` = any.
        allowed_models: Option<Vec<String>>,
        /// User ids that may use it; `None` = any.
        allowed_user_ids: Option<Vec<String>>,
        /// An upstream of its own (Azure resource, Bedrock region), overriding
        /// the provider's; in a [`Credential`](super::Credential), as
        /// normalised (the parsed one is `Credential::base_url`).
        base_url: Option<String>,
    }
}

#[cfg(test)]
#[cfg(feature = "server")]
mod tests {
    use super::*;
    use crate::domain::Flat;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoOwn {}

    fn changes(json: &str) -> CredentialChanges {
        serde_json::from_str::<Flat<NoOwn, CredentialChanges>>(json)
            .unwrap()
            .spec
    }

    /// In a PATCH, `null` clears a field that may be null and leaves one
    /// that may not as it is; an absent field is unchanged.
    #[test]
    fn null_clears_only_what_may_be_null() {
        let mut spec = CredentialSpec {
            name: Some("n".into()),
            disabled: true,
            declared_zdr: Some(true),
            sort_order: 4,
            allowed_models: Some(vec!["m".into()]),
            ..CredentialSpec::default()
        };
        let c = changes(r#"{"name":null,"disabled":null,"declared_zdr":null,"sort_order":null}"#);
        assert_eq!(c.disabled, None);
        assert_eq!(c.sort_order, None);
        assert_eq!(c.name, Some(None));
        spec.apply(c);
        assert_eq!(spec.name, None);
        assert!(spec.disabled, "null leaves a boolean as it is");
        assert_eq!(spec.declared_zdr, None);
        assert_eq!(spec.sort_order, 4);
        assert_eq!(spec.allowed_models, Some(vec!["m".to_owned()]), "absent");
        spec.apply(changes(r#"{"disabled":false,"allowed_models":[]}"#));
        assert!(!spec.disabled);
        assert_eq!(spec.allowed_models, Some(vec![]));
    }

    #[test]
    fn columns_round_trip_and_name_the_bad_one() {
        let spec = CredentialSpec {
            name: Some("n".into()),
            is_byok_only: true,
            declared_zdr: Some(false),
            sort_order: -3,
            allowed_api_key_hashes: Some(vec!["a".repeat(64)]),
            allowed_user_ids: Some(vec![]),
            base_url: Some("https://x.example".into()),
            ..CredentialSpec::default()
        };
        let values = spec.to_scalars();
        assert_eq!(values.len(), CredentialSpec::COLUMNS.len());
        assert_eq!(CredentialSpec::COLUMNS.len(), CredentialSpec::NAMES.len());
        assert_eq!(CredentialSpec::from_scalars(values.clone()).unwrap(), spec);
        let at = |name| {
            CredentialSpec::NAMES
                .iter()
                .position(|n| *n == name)
                .unwrap()
        };
        let mut bad = values.clone();
        bad[at("allowed_models")] = Scalar::Text("{".into());
        assert_eq!(
            CredentialSpec::from_scalars(bad).unwrap_err(),
            "column allowed_models: not a JSON array of strings"
        );
        let mut bad = values;
        bad[at("disabled")] = Scalar::Null;
        assert_eq!(
            CredentialSpec::from_scalars(bad).unwrap_err(),
            "column disabled: not a boolean"
        );
    }
}
