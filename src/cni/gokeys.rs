//! JSON object keys matched the way Go's encoding/json matches them, for every config and
//! result type, before serde sees them.
//!
//! The reference plugins decode with Go's `json.Unmarshal`: a key goes to the struct field
//! whose name matches exactly, else to the first field (in declaration order, embedded structs'
//! fields in place) whose name matches under Unicode case folding; a key that appears twice,
//! in any spelling, is decoded into the same field again (the last scalar wins; objects merge
//! into the struct or map already there; a list is decoded element by element into the list
//! already there); `null` clears pointers, slices, maps and interfaces and leaves anything
//! else as it was. Keys of maps (`sysctl`, a delegate's config, `labels` …) are data and are
//! never changed. So `"isgateway"`, `"IPMasq"`, `"RuntimeConfig"` or `"PortMappings"` work
//! with every reference plugin.
//!
//! serde matches exact names only, and `#[serde(flatten)]` (every plugin flattens `NetConf`)
//! hides the nested types' fields from a deserializer. So the matching happens here, on the
//! JSON itself: the document is read with its keys in order and duplicates kept ([`Node`]),
//! rewritten along the target type's [`Shape`] — the compile-time list of each struct's keys
//! that `#[derive(GoKeys)]` makes from the same serde attributes `Deserialize` reads — into the
//! canonical spellings, and only then deserialised. A config type needs the derive and no
//! per-field annotation.

use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

pub use cni_multi_derive::GoKeys;

/// What a type expects at one place in the JSON document.
#[derive(Clone, Copy)]
pub enum Shape {
    /// Any JSON (serde_json::Value): taken as sent; object keys are data.
    Any,
    /// A string, number or bool (or a unit enum): `null` leaves it as it was.
    Scalar,
    /// `Option<T>`: `null` clears it (a Go pointer).
    Nullable(fn() -> Shape),
    /// A list of T.
    Seq(fn() -> Shape),
    /// A map with data keys and values of shape T.
    Map(fn() -> Shape),
    /// An object with named fields.
    Struct(&'static [Field]),
}

/// One field of a struct: its JSON key (serde's name for it) and shape; a flattened field's
/// own fields sit beside the struct's (its key is empty).
pub struct Field {
    pub key: &'static str,
    pub shape: fn() -> Shape,
    pub flatten: bool,
}

/// A type whose JSON keys are matched as Go matches them. Derive it beside `Deserialize`.
pub trait GoKeys {
    fn shape() -> Shape;
}

/// Deserialise `T` from JSON text with Go's key matching. Errors are serde's, without a
/// position (it would point into the rewritten document, not the one sent).
pub fn from_slice<T: DeserializeOwned + GoKeys>(data: &[u8]) -> serde_json::Result<T> {
    let node: Node = serde_json::from_slice(data)?;
    T::deserialize(canonical(&node, T::shape()))
}

/// An already parsed value (a prevResult, a delegate's result) read as `T` with Go's key
/// matching.
pub fn from_value<T: DeserializeOwned + GoKeys>(v: &Value) -> serde_json::Result<T> {
    T::deserialize(canonical(&Node::from(v), T::shape()))
}

/// The document rewritten along `shape`: every key a field of the type takes in its canonical
/// spelling, the spellings of one key merged as Go merges them; map keys, unknown keys and the
/// order of everything kept. `Node` is itself a serde Deserializer.
pub fn canonical(node: &Node, shape: Shape) -> Node {
    decode(None, node, shape).unwrap_or(Node::Null)
}

/// A JSON document as sent: object entries in order, duplicate keys kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// The object's entries, if it is one.
    pub fn entries(&self) -> Option<&[(String, Node)]> {
        match self {
            Node::Object(e) => Some(e),
            _ => None,
        }
    }
}

impl From<&Value> for Node {
    fn from(v: &Value) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.clone()),
            Value::String(s) => Node::String(s.clone()),
            Value::Array(a) => Node::Array(a.iter().map(Node::from).collect()),
            Value::Object(o) => Node::Object(o.iter().map(|(k, v)| (k.clone(), Node::from(v))).collect()),
        }
    }
}

/// Decode `new` into what is already at that place (`old`, from an earlier spelling of the
/// same key), Go's way. None: the key is (or stays) absent, so serde's default applies.
fn decode(old: Option<Node>, new: &Node, shape: Shape) -> Option<Node> {
    let is_null = matches!(new, Node::Null);
    match shape {
        Shape::Nullable(inner) => match new {
            Node::Null => Some(Node::Null),
            _ => decode(old.filter(|v| !matches!(v, Node::Null)), new, inner()),
        },
        // Go ignores null for a non-pointer scalar or struct.
        Shape::Scalar | Shape::Struct(_) if is_null => old,
        // A nil slice or map: absent, i.e. empty.
        Shape::Seq(_) | Shape::Map(_) if is_null => None,
        Shape::Struct(fields) => {
            let Node::Object(entries) = new else {
                // The wrong JSON type: serde names it.
                return Some(new.clone());
            };
            let mut obj = match old {
                Some(Node::Object(o)) => o,
                _ => Vec::new(),
            };
            let fields = flat_fields(fields);
            for (key, value) in entries {
                match resolve(&fields, key) {
                    Some(f) => {
                        let at = obj.iter().position(|(k, _)| k == f.key);
                        let prev = at.map(|i| obj.remove(i).1);
                        if let Some(v) = decode(prev, value, (f.shape)()) {
                            obj.insert(at.unwrap_or(obj.len()), (f.key.to_string(), v));
                        }
                    }
                    // No field takes it: serde ignores it too (or a flattened map takes it).
                    None => obj.push((key.clone(), value.clone())),
                }
            }
            Some(Node::Object(obj))
        }
        Shape::Map(inner) => {
            let Node::Object(entries) = new else {
                return Some(new.clone());
            };
            // Each value is decoded afresh under its key as sent; a key seen before is seen
            // again (a map keeps the last, as Go's does; tuning's sysctl refuses the repeat,
            // as the reference's does).
            let mut obj = match old {
                Some(Node::Object(o)) => o,
                _ => Vec::new(),
            };
            for (key, value) in entries {
                obj.push((key.clone(), decode(None, value, inner()).unwrap_or(Node::Null)));
            }
            Some(Node::Object(obj))
        }
        Shape::Seq(inner) => {
            let Node::Array(items) = new else {
                return Some(new.clone());
            };
            // Go decodes element i into the old list's element i, then cuts the list.
            let mut old_items = match old {
                Some(Node::Array(a)) => a.into_iter(),
                _ => Vec::new().into_iter(),
            };
            let out = items
                .iter()
                .map(|item| decode(old_items.next(), item, inner()).unwrap_or(Node::Null))
                .collect();
            Some(Node::Array(out))
        }
        Shape::Scalar | Shape::Any => Some(new.clone()),
    }
}

/// A struct's fields with flattened structs' fields in place; a name that also appears at a
/// shallower level is hidden there (Go's dominance rule for embedded structs).
fn flat_fields(fields: &'static [Field]) -> Vec<&'static Field> {
    fn walk(fields: &'static [Field], depth: usize, out: &mut Vec<(usize, &'static Field)>) {
        for f in fields {
            if f.flatten {
                let shape = match (f.shape)() {
                    Shape::Nullable(inner) => inner(),
                    s => s,
                };
                // A flattened map takes the keys no field takes: nothing to list.
                if let Shape::Struct(inner) = shape {
                    walk(inner, depth + 1, out);
                }
            } else {
                out.push((depth, f));
            }
        }
    }
    let mut all = Vec::new();
    walk(fields, 0, &mut all);
    let shallowest = |key: &str| all.iter().filter(|(_, f)| f.key == key).map(|(d, _)| *d).min();
    all.iter()
        .filter(|(d, f)| shallowest(f.key) == Some(*d))
        .map(|(_, f)| *f)
        .collect()
}

/// The field `key` goes to: the exact name, else the first that folds to the same.
fn resolve(fields: &[&'static Field], key: &str) -> Option<&'static Field> {
    if let Some(f) = fields.iter().find(|f| f.key == key) {
        return Some(f);
    }
    let folded = fold(key);
    fields.iter().find(|f| fold(f.key) == folded).copied()
}

/// Go's `foldName` (encoding/json, Go 1.21+): each rune to upper(lower(r)) with Unicode's
/// simple mappings. The keys fields have are ASCII (a test checks it); the only other runes
/// that fold onto ASCII letters are the Kelvin sign, the long s and the dotted and dotless i,
/// so those four are mapped by hand and any other rune stays itself (it can never match).
pub fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            '\u{212A}' => 'K',              // KELVIN SIGN: lower is 'k'
            '\u{017F}' => 'S',              // LATIN SMALL LETTER LONG S: upper is 'S'
            '\u{0130}' | '\u{0131}' => 'I', // capital I with dot (lower 'i'), dotless i (upper 'I')
            _ => c,
        })
        .collect()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element()? {
            items.push(n);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Object(entries))
    }
}

// ---- a Node is a Deserializer ------------------------------------------------------------

impl<'de> Deserializer<'de> for Node {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self {
            Node::Null => v.visit_unit(),
            Node::Bool(b) => v.visit_bool(b),
            Node::Number(n) => {
                if let Some(u) = n.as_u64() {
                    v.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    v.visit_i64(i)
                } else {
                    v.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Node::String(s) => v.visit_string(s),
            Node::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter());
                let out = v.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Node::Object(entries) => {
                let mut map = MapDeserializer::new(entries.into_iter());
                let out = v.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self {
            Node::Null => v.visit_none(),
            other => v.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    /// As serde_json reads enums: a string is a unit variant, `{"Variant": value}` any other.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        match self {
            Node::String(s) => v.visit_enum(s.into_deserializer()),
            Node::Object(mut entries) if entries.len() == 1 => {
                let (variant, value) = entries.remove(0);
                v.visit_enum(MapAccessDeserializer::new(MapDeserializer::new(std::iter::once((
                    variant, value,
                )))))
            }
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"a string or an object of one key",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Node {
    type Deserializer = Node;
    fn into_deserializer(self) -> Node {
        self
    }
}

impl Node {
    fn unexpected(&self) -> de::Unexpected<'_> {
        match self {
            Node::Null => de::Unexpected::Unit,
            Node::Bool(b) => de::Unexpected::Bool(*b),
            Node::Number(_) => de::Unexpected::Other("number"),
            Node::String(s) => de::Unexpected::Str(s),
            Node::Array(_) => de::Unexpected::Seq,
            Node::Object(_) => de::Unexpected::Map,
        }
    }
}

// ---- the shapes of the types configs are made of --------------------------------------

macro_rules! scalars {
    ($($t:ty),*) => {$(
        impl GoKeys for $t {
            fn shape() -> Shape {
                Shape::Scalar
            }
        }
    )*};
}

scalars!(
    bool,
    char,
    String,
    i8,
    i16,
    i32,
    i64,
    isize,
    u8,
    u16,
    u32,
    u64,
    usize,
    f32,
    f64,
    std::net::IpAddr,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
    ipnet::IpNet,
    ipnet::Ipv4Net,
    ipnet::Ipv6Net,
    std::path::PathBuf
);

impl GoKeys for Value {
    fn shape() -> Shape {
        Shape::Any
    }
}

/// The document as sent, for code that reads it with a shape of its own.
impl GoKeys for Node {
    fn shape() -> Shape {
        Shape::Any
    }
}

impl<T: GoKeys> GoKeys for Option<T> {
    fn shape() -> Shape {
        Shape::Nullable(T::shape)
    }
}

impl<T: GoKeys> GoKeys for Box<T> {
    fn shape() -> Shape {
        T::shape()
    }
}

impl<T: GoKeys> GoKeys for Vec<T> {
    fn shape() -> Shape {
        Shape::Seq(T::shape)
    }
}

impl<T: GoKeys> GoKeys for BTreeSet<T> {
    fn shape() -> Shape {
        Shape::Seq(T::shape)
    }
}

impl<T: GoKeys, const N: usize> GoKeys for [T; N] {
    fn shape() -> Shape {
        Shape::Seq(T::shape)
    }
}

impl<V: GoKeys, S> GoKeys for HashMap<String, V, S> {
    fn shape() -> Shape {
        Shape::Map(V::shape)
    }
}

impl<V: GoKeys> GoKeys for BTreeMap<String, V> {
    fn shape() -> Shape {
        Shape::Map(V::shape)
    }
}

impl GoKeys for Map<String, Value> {
    fn shape() -> Shape {
        Shape::Map(Value::shape)
    }
}

/// Every key a struct shape lists (flattened ones included) is ASCII and no two of them fold
/// to the same: then the only fold matches are the ones Go makes, and a key can never be
/// taken by a field Go would not give it to. Checked for each plugin's config in its tests.
#[cfg(test)]
pub fn check_keys(shape: Shape) -> Result<(), String> {
    fn walk(shape: Shape, seen: &mut Vec<usize>, path: &str) -> Result<(), String> {
        match shape {
            Shape::Nullable(inner) | Shape::Seq(inner) | Shape::Map(inner) => walk(inner(), seen, path),
            Shape::Struct(fields) => {
                // Recursive types are walked once.
                let id = fields.as_ptr() as usize;
                if seen.contains(&id) {
                    return Ok(());
                }
                seen.push(id);
                let flat = flat_fields(fields);
                for (i, f) in flat.iter().enumerate() {
                    if !f.key.is_ascii() {
                        return Err(format!("{path}{}: not ASCII", f.key));
                    }
                    if let Some(g) = flat[..i].iter().find(|g| fold(g.key) == fold(f.key)) {
                        return Err(format!("{path}: {} and {} fold to the same key", g.key, f.key));
                    }
                    walk((f.shape)(), seen, &format!("{path}{}.", f.key))?;
                }
                Ok(())
            }
            Shape::Any | Shape::Scalar => Ok(()),
        }
    }
    walk(shape, &mut Vec::new(), "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Default, PartialEq, Deserialize, GoKeys)]
    struct Inner {
        #[serde(default)]
        a: i64,
        #[serde(default)]
        b: i64,
    }

    #[derive(Debug, Default, PartialEq, Deserialize, GoKeys)]
    struct Common {
        #[serde(default)]
        name: String,
        #[serde(rename = "runtimeConfig", default)]
        runtime_config: Option<Inner>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize, GoKeys)]
    enum Mode {
        #[default]
        #[serde(rename = "bridge")]
        Bridge,
        #[serde(rename = "private")]
        Private,
    }

    #[derive(Debug, Default, PartialEq, Deserialize, GoKeys)]
    struct Conf {
        #[serde(flatten)]
        common: Common,
        #[serde(rename = "isGateway", default)]
        is_gateway: bool,
        #[serde(rename = "ipMasq", default)]
        ip_masq: bool,
        #[serde(default)]
        mtu: i64,
        #[serde(default)]
        inner: Inner,
        #[serde(default)]
        maybe: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        nums: Vec<i64>,
        #[serde(default)]
        sysctl: HashMap<String, String>,
        #[serde(default)]
        raw: Option<Value>,
        #[serde(default)]
        mode: Mode,
        #[serde(default)]
        opt: Option<String>,
    }

    fn conf(json: &str) -> Conf {
        from_slice(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn exact_then_any_case() {
        for json in [
            r#"{"isGateway":true}"#,
            r#"{"isgateway":true}"#,
            r#"{"ISGATEWAY":true}"#,
            r#"{"IsGateway":true}"#,
        ] {
            assert!(conf(json).is_gateway, "{json}");
        }
        assert!(conf(r#"{"IPMasq":true}"#).ip_masq);
        // The runes Go's foldName maps onto ASCII: Kelvin sign, long s, dotless and dotted i.
        assert!(conf("{\"ipMa\u{017F}q\":true}").ip_masq);
        assert!(conf("{\"\u{0131}pMasq\":true}").ip_masq);
        assert!(conf("{\"\u{0130}PMASQ\":true}").ip_masq);
        assert_eq!(fold("\u{212A}ey"), "KEY");
        // Anything else is not the same key.
        assert!(!conf(r#"{"is_gateway":true}"#).is_gateway);
        assert!(!conf(r#"{"isGateway ":true}"#).is_gateway);
    }

    #[test]
    fn two_spellings_of_one_key_decode_in_order() {
        assert_eq!(conf(r#"{"mtu":1400,"MTU":1500}"#).mtu, 1500);
        assert_eq!(conf(r#"{"MTU":1500,"mtu":1400}"#).mtu, 1400);
        // A repeated exact key too (serde alone would say "duplicate field").
        assert_eq!(conf(r#"{"mtu":1400,"mtu":1500}"#).mtu, 1500);
        // Objects merge into the struct already there …
        assert_eq!(conf(r#"{"inner":{"a":1},"Inner":{"b":2}}"#).inner, Inner { a: 1, b: 2 });
        assert_eq!(
            conf(r#"{"maybe":{"a":1},"MAYBE":{"B":2}}"#).maybe,
            Some(Inner { a: 1, b: 2 })
        );
        // … and into a map, whose keys are data and stay as written.
        let c = conf(r#"{"sysctl":{"net.Foo":"1"},"SysCtl":{"net.bar":"2","net.Foo":"3"}}"#);
        let want: HashMap<String, String> = [("net.Foo", "3"), ("net.bar", "2")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(c.sysctl, want);
        // A list is decoded element by element into the one already there, then cut.
        assert_eq!(
            conf(r#"{"list":[{"a":1,"b":2},{"a":5}],"List":[{"a":3}]}"#).list,
            vec![Inner { a: 3, b: 2 }]
        );
        assert_eq!(conf(r#"{"nums":[1,2,3],"Nums":[4]}"#).nums, vec![4]);
        // interface{} (raw JSON) is replaced, not merged.
        assert_eq!(
            conf(r#"{"raw":{"x":1},"RAW":{"y":2}}"#).raw,
            Some(serde_json::json!({"y": 2}))
        );
    }

    #[test]
    fn null_is_what_go_makes_of_it() {
        // Ignored for a non-pointer scalar or struct …
        assert_eq!(conf(r#"{"mtu":1400,"MTU":null}"#).mtu, 1400);
        assert_eq!(conf(r#"{"mtu":null}"#).mtu, 0);
        assert_eq!(conf(r#"{"inner":{"a":1},"inner":null}"#).inner, Inner { a: 1, b: 0 });
        // … clears a pointer, a slice, a map.
        assert_eq!(conf(r#"{"opt":"x","OPT":null}"#).opt, None);
        assert_eq!(conf(r#"{"maybe":{"a":1},"maybe":null}"#).maybe, None);
        assert_eq!(conf(r#"{"nums":[1],"nums":null}"#).nums, Vec::<i64>::new());
        assert!(conf(r#"{"sysctl":{"a":"b"},"sysctl":null}"#).sysctl.is_empty());
    }

    #[test]
    fn nested_and_flattened_keys() {
        let c = conf(r#"{"NAME":"n","RuntimeConfig":{"A":7},"Mode":"private","Inner":{"B":3}}"#);
        assert_eq!(c.common.name, "n");
        assert_eq!(c.common.runtime_config, Some(Inner { a: 7, b: 0 }));
        assert_eq!(c.mode, Mode::Private);
        assert_eq!(c.inner.b, 3);
        // Values are not keys: the enum's string is matched as serde matches it.
        assert!(from_slice::<Conf>(br#"{"mode":"Private"}"#).is_err());
        // Unknown keys are ignored, as before.
        assert_eq!(conf(r#"{"unknown":{"x":1},"mtu":5}"#).mtu, 5);
    }

    #[test]
    fn exact_match_beats_an_earlier_field_of_another_case() {
        #[derive(Debug, Deserialize, GoKeys)]
        struct Two {
            #[serde(rename = "key", default)]
            lower: i64,
            #[serde(rename = "KEY", default)]
            upper: i64,
        }
        let t: Two = from_slice(br#"{"KEY":1}"#).unwrap();
        assert_eq!((t.lower, t.upper), (0, 1));
        let t: Two = from_slice(br#"{"Key":2}"#).unwrap();
        assert_eq!(
            (t.lower, t.upper),
            (2, 0),
            "the first field in order takes a fold match"
        );
        assert!(check_keys(Two::shape()).is_err());
    }

    #[test]
    fn an_outer_field_hides_a_flattened_one_of_the_same_name() {
        #[derive(GoKeys)]
        #[allow(dead_code)]
        struct Outer {
            #[serde(flatten)]
            common: Common,
            #[serde(default)]
            name: String,
        }
        let node: Node = serde_json::from_slice(br#"{"Name":"x"}"#).unwrap();
        assert_eq!(
            canonical(&node, Outer::shape()),
            Node::Object(vec![("name".into(), Node::String("x".into()))])
        );
    }

    #[test]
    fn values_are_read_as_serde_json_reads_them() {
        #[derive(Debug, PartialEq, Deserialize, GoKeys)]
        struct Scalars {
            u: u64,
            i: i64,
            f: f64,
            ip: std::net::IpAddr,
            net: ipnet::IpNet,
            list: [u8; 2],
        }
        let s: Scalars =
            from_slice(br#"{"U":18446744073709551615,"I":-5,"F":1.5,"IP":"10.0.0.1","Net":"10.0.0.0/8","LIST":[1,2]}"#)
                .unwrap();
        assert_eq!(s.u, u64::MAX);
        assert_eq!(s.i, -5);
        assert_eq!(s.f, 1.5);
        assert_eq!(s.list, [1, 2]);
        // Errors name the problem, without a position in the rewritten document.
        let e = from_slice::<Conf>(br#"{"MTU":"x"}"#).unwrap_err().to_string();
        assert_eq!(e, "invalid type: string \"x\", expected i64");
        assert!(from_slice::<Conf>(br#"{"mtu":1"#).is_err());
        assert!(from_slice::<Conf>(br#"["x"]"#).is_err());
    }

    /// Where cni-multi's one-pass reading differs from Go's decoder (doc/differences.md): Go
    /// reports a bad value even when a later spelling of the key sets the field again, and
    /// stores a zero value for a null map or list element of a scalar type; cni-multi decodes
    /// the merged document, so the later value wins without an error, and the null element is
    /// a type error.
    #[test]
    fn the_documented_differences_from_gos_decoder() {
        assert_eq!(conf(r#"{"mtu":"x","MTU":1400}"#).mtu, 1400);
        assert!(from_slice::<Conf>(br#"{"sysctl":{"a":null}}"#).is_err());
        assert!(from_slice::<Conf>(br#"{"nums":[1,null]}"#).is_err());
    }

    #[test]
    fn the_common_keys_fold_uniquely() {
        check_keys(crate::cni::config::NetConf::shape()).unwrap();
        check_keys(Conf::shape()).unwrap();
    }
}
