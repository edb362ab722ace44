//! Strict JSON decoding of request bodies: a JSON array is never read as an
//! object.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence of its
//! field values (`["k"]` for `{"key":"k"}`), at the top and at every level
//! below; serde_json offers that to every caller. A request API should not:
//! a client that sends an array where an object is expected made a mistake
//! and must hear about it (400), rather than have its values bound to fields
//! by position. [`from_slice`] wraps serde_json's deserializer so that
//! wherever a struct (or a struct-like enum variant) is expected, an array
//! is refused. Arrays stay arrays where the type is a sequence or a tuple
//! (`[1,2,3]` for a set of ids).

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

/// Parses `body` as one JSON value of type `T`, refusing an array wherever
/// an object is expected, and anything but whitespace after the value.
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// A deserializer that hands out only strict visitors and accessors.
struct Strict<D>(D);

/// A visitor that refuses a sequence when `object` is set (a struct is
/// expected), and keeps everything below it strict.
struct Wrap<V> {
    inner: V,
    object: bool,
}

fn wrap<V>(inner: V) -> Wrap<V> {
    Wrap {
        inner,
        object: false,
    }
}

fn object<V>(inner: V) -> Wrap<V> {
    Wrap {
        inner,
        object: true,
    }
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(wrap(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct(name, fields, object(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.object {
            return Err(de::Error::invalid_type(
                Unexpected::Other("array"),
                &"a JSON object",
            ));
        }
        self.inner.visit_seq(StrictSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(StrictMap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(StrictEnum(data))
    }
}

/// A seed whose deserializer is strict.
struct StrictSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

struct StrictSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StrictMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(StrictSeed(seed))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StrictEnum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for StrictEnum<A> {
    type Error = A::Error;
    type Variant = StrictVariant<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(StrictSeed(seed))?;
        Ok((value, StrictVariant(variant)))
    }
}

struct StrictVariant<A>(A);

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for StrictVariant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(StrictSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, object(visitor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Deserialize, PartialEq)]
    struct Read {
        key: String,
        #[serde(default)]
        consistency: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Command {
        Set { key: String, value: String },
        Delete { key: String },
        Pair(String, String),
        Wrapped(Read),
        Ping,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        inner: Read,
        list: Vec<Read>,
        maybe: Option<Read>,
    }

    #[test]
    fn objects_are_read_as_before() {
        let r: Read = from_slice(br#" {"key":"k","consistency":"stale"} "#).unwrap();
        assert_eq!(r.key, "k");
        let c: Command = from_slice(br#"{"Set":{"key":"k","value":"v"}}"#).unwrap();
        assert_eq!(
            c,
            Command::Set {
                key: "k".into(),
                value: "v".into()
            }
        );
        let c: Command = from_slice(br#"{"Wrapped":{"key":"k"}}"#).unwrap();
        assert!(matches!(c, Command::Wrapped(_)));
        let c: Command = from_slice(br#""Ping""#).unwrap();
        assert_eq!(c, Command::Ping);
        let o: Outer =
            from_slice(br#"{"inner":{"key":"a"},"list":[{"key":"b"}],"maybe":{"key":"c"}}"#)
                .unwrap();
        assert_eq!(o.list.len(), 1);
        assert_eq!(o.maybe.map(|r| r.key), Some("c".into()));
    }

    #[test]
    fn sequences_and_tuples_stay_arrays() {
        let s: BTreeSet<u64> = from_slice(b"[1,2,3]").unwrap();
        assert_eq!(s.len(), 3);
        let t: (u64, Read) = from_slice(br#"[2,{"key":"k"}]"#).unwrap();
        assert_eq!(t.0, 2);
        let p: Command = from_slice(br#"{"Pair":["a","b"]}"#).unwrap();
        assert_eq!(p, Command::Pair("a".into(), "b".into()));
        let m: BTreeMap<u64, Read> = from_slice(br#"{"1":{"key":"k"}}"#).unwrap();
        assert_eq!(m.len(), 1);
        let pairs: Vec<(String, String)> = from_slice(br#"[["a","1"]]"#).unwrap();
        assert_eq!(pairs.len(), 1);
    }

    #[test]
    fn an_array_where_an_object_is_expected_is_refused() {
        fn refused<T: DeserializeOwned + fmt::Debug>(body: &str) {
            let e = from_slice::<T>(body.as_bytes()).unwrap_err().to_string();
            assert!(
                e.contains("invalid type: array, expected a JSON object"),
                "{body}: {e}"
            );
        }
        refused::<Read>(r#"["k"]"#);
        refused::<Read>(r#"["k","stale"]"#);
        refused::<Command>(r#"{"Set":["k","v"]}"#);
        refused::<Outer>(r#"{"inner":["a"],"list":[],"maybe":null}"#);
        refused::<Outer>(r#"{"inner":{"key":"a"},"list":[["b"]],"maybe":null}"#);
        refused::<Outer>(r#"{"inner":{"key":"a"},"list":[],"maybe":["c"]}"#);
        refused::<(u64, Read)>(r#"[2,["k"]]"#);
        refused::<BTreeMap<u64, Read>>(r#"{"1":["k"]}"#);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert!(from_slice::<Read>(br#"{"key":"k"} x"#).is_err());
        assert!(from_slice::<Read>(br#"{"key":"k"}{"key":"k"}"#).is_err());
    }
}
