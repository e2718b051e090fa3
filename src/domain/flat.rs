//! [`Flat`]: a source's own fields and a spec, read from one map — what
//! `#[serde(flatten)]` does, but keeping the path of a bad value and refusing
//! unknown fields.
//!
//! serde's `flatten` buffers the entries it does not know and reads the spec
//! from that buffer after the map: an error in a spec field then names only
//! the table (`credentials[0]: invalid type…` instead of
//! `credentials[0].sort_order: invalid type…`), and `deny_unknown_fields` does
//! not work beside it. Here every entry is read where it stands, by the
//! format's own deserializer, so its errors carry the field's path
//! (`serde_path_to_error`) and position (toml) exactly as a derived struct's
//! do.
//!
//! ```text
//! [[credentials]]              Flat<RawCredential, CredentialSpec>
//! id = "c1"                    → own   (RawCredential's derived Deserialize)
//! sort_order = 2               → spec  (CredentialSpec, by name)
//! kye = "oops"                 → credentials[0].kye: unknown field `kye`, expected one of …
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::spec::Fields;

/// A source's own fields (`T`, a derived `Deserialize` struct) and a spec
/// (`S`), read from one map. A field neither has is refused with serde's
/// message (`unknown field `kye`, expected one of …`), naming both sets.
#[derive(Debug, Clone)]
pub(crate) struct Flat<T, S> {
    /// The source's own fields.
    pub(crate) own: T,
    /// The spec's.
    pub(crate) spec: S,
}

impl<'de, T: Deserialize<'de>, S: Fields + Default> Deserialize<'de> for Flat<T, S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, own) = shape::<T>();
        d.deserialize_map(FlatVisitor {
            name,
            own,
            marker: PhantomData,
        })
    }
}

struct FlatVisitor<T, S> {
    name: &'static str,
    own: &'static [&'static str],
    marker: PhantomData<fn() -> (T, S)>,
}

impl<'de, T: Deserialize<'de>, S: Fields + Default> Visitor<'de> for FlatVisitor<T, S> {
    type Value = Flat<T, S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct {}", self.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Flat<T, S>, A::Error> {
        let mut spec = S::default();
        let own = T::deserialize(Split {
            map,
            spec: &mut spec,
            own: self.own,
            seen: vec![false; S::NAMES.len()],
        })?;
        Ok(Flat { own, spec })
    }
}

/// The map as `T` sees it: the spec's entries are read into the spec on the
/// way, the others handed on.
struct Split<'s, A, S> {
    map: A,
    spec: &'s mut S,
    own: &'static [&'static str],
    /// The spec fields read so far (a second one is a duplicate).
    seen: Vec<bool>,
}

impl<'de, A: MapAccess<'de>, S: Fields> Deserializer<'de> for Split<'_, A, S> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>, S: Fields> MapAccess<'de> for Split<'_, A, S> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let key = self.map.next_key_seed(KeySeed {
                own_seed: &mut seed,
                own: self.own,
                spec: S::NAMES,
                seen: &mut self.seen,
            })?;
            match key {
                None => return Ok(None),
                Some(Key::Own(key)) => return Ok(Some(key)),
                Some(Key::Spec(index)) => self.spec.read(index, &mut self.map)?,
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

enum Key<K> {
    /// One of `T`'s, as `T`'s key seed read it.
    Own(K),
    /// The spec's field of this index.
    Spec(usize),
}

/// Reads one key inside the format's own key deserializer, so that an
/// unknown or duplicate field is reported at its path, as serde's derive does.
struct KeySeed<'a, K> {
    own_seed: &'a mut Option<K>,
    own: &'static [&'static str],
    spec: &'static [&'static str],
    seen: &'a mut [bool],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = Key<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<'_, K> {
    type Value = Key<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if let Some(index) = self.spec.iter().position(|n| *n == key) {
            if std::mem::replace(&mut self.seen[index], true) {
                return Err(E::duplicate_field(self.spec[index]));
            }
            return Ok(Key::Spec(index));
        }
        if !self.own.contains(&key) {
            return Err(E::custom(Unknown {
                key,
                expected: self.own.iter().chain(self.spec),
            }));
        }
        let seed = self
            .own_seed
            .take()
            .ok_or_else(|| E::custom("a second key before a value"))?;
        seed.deserialize(de::value::StrDeserializer::<E>::new(key))
            .map(Key::Own)
    }
}

/// serde's unknown-field message, over both sets of names.
struct Unknown<'a, I> {
    key: &'a str,
    expected: I,
}

impl<'a, I: Iterator<Item = &'a &'static str> + Clone> fmt::Display for Unknown<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field `{}`, expected one of ", self.key)?;
        for (i, name) in self.expected.clone().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        Ok(())
    }
}

/// The name and field names a derived `Deserialize` struct passes to
/// `deserialize_struct` (empty for anything else).
fn shape<'de, T: Deserialize<'de>>() -> (&'static str, &'static [&'static str]) {
    let mut found = ("", &[][..]);
    // The probe always fails: only what it saw is wanted.
    let _ = T::deserialize(Probe(&mut found));
    found
}

struct Probe<'a>(&'a mut (&'static str, &'static [&'static str]));

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = (name, fields);
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CredentialSpec;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        id: String,
        #[serde(default)]
        tag: Option<String>,
    }

    type Both = Flat<Own, CredentialSpec>;

    fn json(text: &str) -> Result<Both, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn both_sets_are_read_and_errors_keep_their_path() {
        let both = json(r#"{"sort_order": 3, "id": "c", "is_byok_only": true}"#).unwrap();
        assert_eq!(both.own.id, "c");
        assert_eq!(both.own.tag, None);
        assert_eq!(both.spec.sort_order, 3);
        assert!(both.spec.is_byok_only);
        assert_eq!(both.spec.allowed_models, None);
        let cases = [
            (
                r#"{"id": "c", "sort_order": "x"}"#,
                "sort_order: invalid type: string \"x\", expected i64",
            ),
            (
                r#"{"id": 1}"#,
                "id: invalid type: integer `1`, expected a string",
            ),
            (
                r#"{"id": "c", "kye": 1}"#,
                "kye: unknown field `kye`, expected one of `id`, `tag`, `name`, `disabled`",
            ),
            (
                r#"{"id": "c", "disabled": true, "disabled": false}"#,
                "disabled: duplicate field `disabled`",
            ),
            (r#"{"id": "c", "id": "d"}"#, ".: duplicate field `id`"),
            (r#"{"sort_order": 1}"#, ".: missing field `id`"),
            (r#"[1]"#, ".: invalid type: sequence, expected struct Own"),
        ];
        for (text, want) in cases {
            let got = json(text).unwrap_err();
            assert!(got.starts_with(want), "{text}: want {want:?}, got {got:?}");
        }
    }
}
