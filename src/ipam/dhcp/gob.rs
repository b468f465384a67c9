//! Go's encoding/gob, as much as the dhcp plugin and daemon exchange over Go net/rpc: pure,
//! no I/O. A gob stream is a sequence of messages, each a byte count then either a type
//! definition (a negative type id and a `wireType`) or a value (a type id and its
//! encoding); type ids are per stream, the first user id is 65.
//!
//! Decoding is schema-less: any type the peer defines is read into a [`Value`] tree with
//! its field names, so fields this side does not know are skipped as Go's decoder skips
//! them. Encoding follows a static [`Type`] and assigns ids and sends definitions in the
//! order Go's encoder does, so a value encodes to the bytes a Go program sends (tested
//! against captures of Debian's 1.1.1 `dhcp`).
//!
//! Not supported (no type in the protocol has them): interface values, whose encoding
//! carries type definitions inside a value; decoding one is an error.

use std::fmt;

/// Predefined type ids (encoding/gob's `doc.go`).
pub mod id {
    pub const BOOL: i64 = 1;
    pub const INT: i64 = 2;
    pub const UINT: i64 = 3;
    pub const FLOAT: i64 = 4;
    pub const BYTES: i64 = 5;
    pub const STRING: i64 = 6;
    pub const COMPLEX: i64 = 7;
    pub const INTERFACE: i64 = 8;
    pub const FIRST_USER: i64 = 65;
}

/// Nesting deeper than this is refused (a recursive type can describe unbounded values).
const MAX_DEPTH: usize = 64;
/// The largest message accepted; Go's own limit is 1 GiB, a dhcp call is a few hundred bytes.
pub const MAX_MESSAGE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobError(pub String);

impl fmt::Display for GobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gob: {}", self.0)
    }
}

impl std::error::Error for GobError {}

fn bad<T>(msg: impl Into<String>) -> Result<T, GobError> {
    Err(GobError(msg.into()))
}

// ---- primitives ------------------------------------------------------------------

/// A cursor over one message.
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    pub fn remaining(&self) -> usize {
        self.b.len()
    }

    fn byte(&mut self) -> Result<u8, GobError> {
        let (&x, rest) = self
            .b
            .split_first()
            .ok_or_else(|| GobError("unexpected end of data".into()))?;
        self.b = rest;
        Ok(x)
    }

    /// An unsigned integer: one byte below 128, else the negated byte count and the bytes
    /// big-endian.
    pub fn uint(&mut self) -> Result<u64, GobError> {
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(first as u64);
        }
        let n = (first as i8).unsigned_abs() as usize;
        if n > 8 {
            return bad(format!("invalid uint length {n}"));
        }
        let bytes = self.take(n)?;
        Ok(bytes.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    /// A signed integer: bit 0 says whether the rest is complemented.
    pub fn int(&mut self) -> Result<i64, GobError> {
        let u = self.uint()?;
        Ok(if u & 1 == 1 { !(u >> 1) as i64 } else { (u >> 1) as i64 })
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], GobError> {
        if n > self.b.len() {
            return bad("unexpected end of data");
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(x)
    }

    /// A length (of a string, a slice, a map) that cannot be more than what is left: every
    /// element takes at least one byte.
    fn count(&mut self) -> Result<usize, GobError> {
        let n = self.uint()?;
        if n > self.b.len() as u64 {
            return bad(format!("length {n} exceeds the {} bytes left", self.b.len()));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, GobError> {
        let n = self.count()?;
        Ok(self.take(n)?.to_vec())
    }
}

pub fn put_uint(out: &mut Vec<u8>, x: u64) {
    if x < 0x80 {
        out.push(x as u8);
        return;
    }
    let be = x.to_be_bytes();
    let skip = be.iter().take_while(|&&b| b == 0).count();
    out.push((-((8 - skip) as i8)) as u8);
    out.extend_from_slice(&be[skip..]);
}

pub fn put_int(out: &mut Vec<u8>, x: i64) {
    let u = if x < 0 { (!(x as u64) << 1) | 1 } else { (x as u64) << 1 };
    put_uint(out, u);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

// ---- values ------------------------------------------------------------------------

/// A decoded value; a struct holds the fields that were sent (Go omits zero fields).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Complex(f64, f64),
    /// `[]byte`, and the marshalled form of a GobEncoder / BinaryMarshaler / TextMarshaler.
    Bytes(Vec<u8>),
    /// Go strings are bytes, not necessarily UTF-8.
    Str(Vec<u8>),
    Struct(Vec<(String, Value)>),
    /// A slice or an array.
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// A string value for a struct.
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }

    /// A struct field by name; None when it was not sent (zero) or this is not a struct.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fs) => fs.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::Complex(..) => "complex",
            Value::Bytes(_) => "[]byte",
            Value::Str(_) => "string",
            Value::Struct(_) => "struct",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
        }
    }

    /// Field `name` as a string: "" when absent, an error when of another type.
    pub fn get_str(&self, name: &str) -> Result<String, GobError> {
        match self.field(name) {
            None => Ok(String::new()),
            Some(Value::Str(b)) => {
                String::from_utf8(b.clone()).or_else(|_| bad(format!("field {name}: string is not UTF-8")))
            }
            Some(v) => bad(format!("field {name}: expected string, got {}", v.kind())),
        }
    }

    /// Field `name` as bytes: empty when absent.
    pub fn get_bytes(&self, name: &str) -> Result<Vec<u8>, GobError> {
        match self.field(name) {
            None => Ok(Vec::new()),
            Some(Value::Bytes(b)) => Ok(b.clone()),
            Some(v) => bad(format!("field {name}: expected []byte, got {}", v.kind())),
        }
    }

    /// Field `name` as a signed integer: 0 when absent.
    pub fn get_int(&self, name: &str) -> Result<i64, GobError> {
        match self.field(name) {
            None => Ok(0),
            Some(Value::Int(i)) => Ok(*i),
            Some(v) => bad(format!("field {name}: expected int, got {}", v.kind())),
        }
    }

    /// Field `name` as an unsigned integer: 0 when absent.
    pub fn get_uint(&self, name: &str) -> Result<u64, GobError> {
        match self.field(name) {
            None => Ok(0),
            Some(Value::Uint(i)) => Ok(*i),
            Some(v) => bad(format!("field {name}: expected uint, got {}", v.kind())),
        }
    }

    /// Field `name` as a list: empty when absent.
    pub fn get_list(&self, name: &str) -> Result<&[Value], GobError> {
        match self.field(name) {
            None => Ok(&[]),
            Some(Value::List(l)) => Ok(l),
            Some(v) => bad(format!("field {name}: expected slice, got {}", v.kind())),
        }
    }

    /// Field `name` as a struct (an empty one when absent).
    pub fn get_struct(&self, name: &str) -> Result<Value, GobError> {
        match self.field(name) {
            None => Ok(Value::Struct(Vec::new())),
            Some(v @ Value::Struct(_)) => Ok(v.clone()),
            Some(v) => bad(format!("field {name}: expected struct, got {}", v.kind())),
        }
    }

    /// Field `name` as a list of strings.
    pub fn get_strings(&self, name: &str) -> Result<Vec<String>, GobError> {
        self.get_list(name)?
            .iter()
            .map(|v| match v {
                Value::Str(b) => String::from_utf8(b.clone()).or_else(|_| bad(format!("field {name}: not UTF-8"))),
                v => bad(format!("field {name}: expected []string, got []{}", v.kind())),
            })
            .collect()
    }
}

// ---- decoding ------------------------------------------------------------------------

/// A type the peer defined.
#[derive(Debug, Clone, PartialEq)]
enum Wire {
    Struct {
        fields: Vec<(String, i64)>,
    },
    Slice {
        elem: i64,
    },
    Array {
        elem: i64,
        len: u64,
    },
    Map {
        key: i64,
        elem: i64,
    },
    /// GobEncoder, BinaryMarshaler or TextMarshaler: the value is opaque bytes.
    Encoded,
}

/// One direction of a gob stream: the types defined so far.
#[derive(Default, Debug)]
pub struct Decoder {
    types: Vec<(i64, Wire)>,
}

/// What the next complete message held.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A type definition, now known to the decoder.
    Type,
    Value(Value),
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    fn wire(&self, t: i64) -> Option<&Wire> {
        self.types.iter().find(|(i, _)| *i == t).map(|(_, w)| w)
    }

    /// Reads the message at the start of `buf`: Ok(None) when it is not complete yet,
    /// else what it held and how many bytes it took.
    pub fn message(&mut self, buf: &[u8]) -> Result<Option<(Message, usize)>, GobError> {
        // The count itself may be cut short.
        let need = match buf.first() {
            None => return Ok(None),
            Some(&b) if b >= 0x80 => 1 + (b as i8).unsigned_abs() as usize,
            Some(_) => 1,
        };
        if buf.len() < need && need <= 9 {
            return Ok(None);
        }
        let mut r = Reader::new(buf);
        let len = r.uint()?;
        if len == 0 || len > MAX_MESSAGE {
            return bad(format!("invalid message length {len}"));
        }
        if (r.remaining() as u64) < len {
            return Ok(None);
        }
        let head = buf.len() - r.remaining();
        let body = &buf[head..head + len as usize];
        let msg = self.decode_message(body)?;
        Ok(Some((msg, head + len as usize)))
    }

    /// Reads messages from the start of `buf` up to and including the first value:
    /// Ok(None) when it is not all there yet.
    pub fn value(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, GobError> {
        let mut at = 0;
        loop {
            match self.message(&buf[at..])? {
                None => return Ok(None),
                Some((Message::Type, n)) => at += n,
                Some((Message::Value(v), n)) => return Ok(Some((v, at + n))),
            }
        }
    }

    fn decode_message(&mut self, body: &[u8]) -> Result<Message, GobError> {
        let mut r = Reader::new(body);
        let t = r.int()?;
        if t < 0 {
            // i64::MIN has no positive counterpart (found by fuzzing).
            let t = t
                .checked_neg()
                .ok_or_else(|| GobError(format!("invalid type id {t}")))?;
            if t < id::FIRST_USER {
                return bad(format!("type id {t} is reserved"));
            }
            let w = wire_type(&mut r, t)?;
            if r.remaining() != 0 {
                return bad("extra data after a type definition");
            }
            match self.wire(t) {
                Some(old) if *old != w => return bad(format!("type id {t} defined twice")),
                Some(_) => {}
                None => {
                    if self.types.len() >= 1024 {
                        return bad("too many types");
                    }
                    self.types.push((t, w))
                }
            }
            return Ok(Message::Type);
        }
        if t == 0 {
            return bad("type id 0");
        }
        let v = if matches!(self.wire(t), Some(Wire::Struct { .. })) {
            self.decode(&mut r, t, 0)?
        } else {
            // A top-level non-struct value is sent as a field with delta 0.
            if r.uint()? != 0 {
                return bad("singleton value without its 0 field delta");
            }
            self.decode(&mut r, t, 0)?
        };
        if r.remaining() != 0 {
            return bad("extra data after a value");
        }
        Ok(Message::Value(v))
    }

    fn decode(&self, r: &mut Reader, t: i64, depth: usize) -> Result<Value, GobError> {
        if depth > MAX_DEPTH {
            return bad("value nested too deeply");
        }
        Ok(match t {
            id::BOOL => match r.uint()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                n => return bad(format!("invalid bool {n}")),
            },
            id::INT => Value::Int(r.int()?),
            id::UINT => Value::Uint(r.uint()?),
            id::FLOAT => Value::Float(float(r.uint()?)),
            id::COMPLEX => Value::Complex(float(r.uint()?), float(r.uint()?)),
            id::BYTES => Value::Bytes(r.bytes()?),
            id::STRING => Value::Str(r.bytes()?),
            id::INTERFACE => return bad("interface values are not supported"),
            _ => match self.wire(t) {
                None => return bad(format!("unknown type id {t}")),
                Some(Wire::Encoded) => Value::Bytes(r.bytes()?),
                Some(Wire::Struct { fields }) => {
                    let mut out = Vec::new();
                    let mut f: i64 = -1;
                    loop {
                        let delta = r.uint()?;
                        if delta == 0 {
                            break;
                        }
                        f = f.saturating_add(i64::try_from(delta).unwrap_or(i64::MAX));
                        let Some((name, ft)) = usize::try_from(f).ok().and_then(|i| fields.get(i)) else {
                            return bad(format!("field number {f} out of range"));
                        };
                        out.push((name.clone(), self.decode(r, *ft, depth + 1)?));
                    }
                    Value::Struct(out)
                }
                Some(Wire::Slice { elem }) => {
                    let n = r.count()?;
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        out.push(self.decode(r, *elem, depth + 1)?);
                    }
                    Value::List(out)
                }
                Some(Wire::Array { elem, len }) => {
                    let n = r.count()?;
                    if n as u64 != *len {
                        return bad(format!("array of {n} elements for a type of {len}"));
                    }
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        out.push(self.decode(r, *elem, depth + 1)?);
                    }
                    Value::List(out)
                }
                Some(Wire::Map { key, elem }) => {
                    let n = r.count()?;
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        let k = self.decode(r, *key, depth + 1)?;
                        let v = self.decode(r, *elem, depth + 1)?;
                        out.push((k, v));
                    }
                    Value::Map(out)
                }
            },
        })
    }
}

fn float(u: u64) -> f64 {
    f64::from_bits(u.swap_bytes())
}

/// Calls `f(reader, field number)` for each field of a struct encoding.
fn fields(r: &mut Reader, mut f: impl FnMut(&mut Reader, u64) -> Result<(), GobError>) -> Result<(), GobError> {
    let mut n: u64 = 0;
    loop {
        let delta = r.uint()?;
        if delta == 0 {
            return Ok(());
        }
        n = n
            .checked_add(delta)
            .ok_or_else(|| GobError("field delta overflow".into()))?;
        f(r, n - 1)?;
    }
}

/// CommonType {Name string; Id int}: the id, which must be the one being defined.
fn common(r: &mut Reader, t: i64) -> Result<(), GobError> {
    let mut seen = 0;
    fields(r, |r, f| {
        match f {
            0 => {
                r.bytes()?;
            }
            1 => seen = r.int()?,
            _ => return bad("unknown CommonType field"),
        }
        Ok(())
    })?;
    if seen != t {
        return bad(format!("type definition {t} names itself {seen}"));
    }
    Ok(())
}

/// A `wireType`: {ArrayT, SliceT, StructT, MapT, GobEncoderT, BinaryMarshalerT, TextMarshalerT}.
fn wire_type(r: &mut Reader, t: i64) -> Result<Wire, GobError> {
    let mut out = None;
    fields(r, |r, f| {
        if out.is_some() {
            return bad("type definition of more than one kind");
        }
        let mut elem = 0;
        let mut key = 0;
        let mut len = 0;
        let mut fl = Vec::new();
        fields(r, |r, g| {
            match (f, g) {
                (_, 0) => common(r, t)?,
                (0, 1) | (1, 1) | (3, 2) => elem = r.int()?,
                (0, 2) => {
                    let l = r.int()?;
                    len = u64::try_from(l).or_else(|_| bad("negative array length"))?;
                }
                (3, 1) => key = r.int()?,
                (2, 1) => {
                    let n = r.count()?;
                    for _ in 0..n {
                        let mut name = Vec::new();
                        let mut fid = 0;
                        fields(r, |r, h| {
                            match h {
                                0 => name = r.bytes()?,
                                1 => fid = r.int()?,
                                _ => return bad("unknown fieldType field"),
                            }
                            Ok(())
                        })?;
                        let name = String::from_utf8(name).or_else(|_| bad("field name is not UTF-8"))?;
                        fl.push((name, fid));
                    }
                }
                _ => return bad(format!("unknown field {g} in a type definition")),
            }
            Ok(())
        })?;
        let valid = |x: i64| x > 0;
        out = Some(match f {
            0 if valid(elem) => Wire::Array { elem, len },
            1 if valid(elem) => Wire::Slice { elem },
            2 if fl.iter().all(|(_, x)| valid(*x)) => Wire::Struct { fields: fl },
            3 if valid(key) && valid(elem) => Wire::Map { key, elem },
            4..=6 => Wire::Encoded,
            0..=3 => return bad("type definition with an invalid type id"),
            _ => return bad(format!("unknown wireType field {f}")),
        });
        Ok(())
    })?;
    out.ok_or_else(|| GobError("empty type definition".into()))
}

// ---- encoding ------------------------------------------------------------------------

/// A type this side sends.
#[derive(Clone, Copy)]
pub enum Type {
    Bool,
    Int,
    Uint,
    Bytes,
    String,
    Struct(&'static StructType),
    Slice(&'static SliceType),
}

/// A struct type as Go names it on the wire ("" for a struct reached through a pointer).
pub struct StructType {
    pub name: &'static str,
    pub fields: &'static [(&'static str, Type)],
}

pub struct SliceType {
    pub name: &'static str,
    pub elem: Type,
}

impl Type {
    fn key(self) -> Option<*const ()> {
        match self {
            Type::Struct(s) => Some(s as *const StructType as *const ()),
            Type::Slice(s) => Some(s as *const SliceType as *const ()),
            _ => None,
        }
    }
}

/// One direction of a gob stream: the types assigned and sent so far.
#[derive(Default)]
pub struct Encoder {
    ids: Vec<(*const (), i64)>,
    sent: Vec<*const ()>,
    next: i64,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            next: id::FIRST_USER,
            ..Default::default()
        }
    }

    fn known(&self, t: Type) -> Option<i64> {
        match t {
            Type::Bool => Some(id::BOOL),
            Type::Int => Some(id::INT),
            Type::Uint => Some(id::UINT),
            Type::Bytes => Some(id::BYTES),
            Type::String => Some(id::STRING),
            _ => {
                let k = t.key()?;
                self.ids.iter().find(|(p, _)| *p == k).map(|(_, i)| *i)
            }
        }
    }

    /// The id of `t`, assigning ids as Go does: a struct before its fields (so it can refer
    /// to itself), a slice after its element.
    fn assign(&mut self, t: Type) -> i64 {
        if let Some(i) = self.known(t) {
            return i;
        }
        match t {
            Type::Struct(s) => {
                let i = self.next;
                self.next += 1;
                self.ids.push((t.key().unwrap_or(std::ptr::null()), i));
                for (_, f) in s.fields {
                    self.assign(*f);
                }
                i
            }
            Type::Slice(s) => {
                self.assign(s.elem);
                let i = self.next;
                self.next += 1;
                self.ids.push((t.key().unwrap_or(std::ptr::null()), i));
                i
            }
            _ => unreachable!("predefined types are known"),
        }
    }

    /// The definitions of `t` and the types in it not sent yet: each type's before its
    /// components', as Go sends them.
    fn send_types(&mut self, t: Type, out: &mut Vec<u8>) {
        let Some(k) = t.key() else { return };
        if self.sent.contains(&k) {
            return;
        }
        self.sent.push(k);
        let me = self.assign(t);
        let mut def = Vec::new();
        put_int(&mut def, -me);
        let common = |def: &mut Vec<u8>, name: &str| {
            def.push(1); // CommonType
            if !name.is_empty() {
                def.push(1);
                put_bytes(def, name.as_bytes());
                def.push(1);
            } else {
                def.push(2);
            }
            put_int(def, me);
            def.push(0);
        };
        match t {
            Type::Struct(s) => {
                def.push(3); // wireType.StructT
                common(&mut def, s.name);
                if !s.fields.is_empty() {
                    def.push(1);
                    put_uint(&mut def, s.fields.len() as u64);
                    for (name, ft) in s.fields {
                        let fid = self.assign(*ft);
                        def.push(1);
                        put_bytes(&mut def, name.as_bytes());
                        def.push(1);
                        put_int(&mut def, fid);
                        def.push(0);
                    }
                }
                def.extend_from_slice(&[0, 0]);
            }
            Type::Slice(s) => {
                def.push(2); // wireType.SliceT
                common(&mut def, s.name);
                def.push(1);
                let e = self.assign(s.elem);
                put_int(&mut def, e);
                def.extend_from_slice(&[0, 0]);
            }
            _ => {}
        }
        put_uint(out, def.len() as u64);
        out.extend_from_slice(&def);
        match t {
            Type::Struct(s) => {
                for (_, ft) in s.fields {
                    self.send_types(*ft, out);
                }
            }
            Type::Slice(s) => self.send_types(s.elem, out),
            _ => {}
        }
    }

    /// Appends `v`, a value of struct type `t`, with the definitions it needs first.
    /// Fields of `t` missing from `v` are zero; fields of `v` not in `t` are not sent.
    pub fn encode(&mut self, t: &'static StructType, v: &Value, out: &mut Vec<u8>) -> Result<(), GobError> {
        let ty = Type::Struct(t);
        self.send_types(ty, out);
        let mut msg = Vec::new();
        put_int(&mut msg, self.assign(ty));
        self.value(ty, v, &mut msg)?;
        put_uint(out, msg.len() as u64);
        out.extend_from_slice(&msg);
        Ok(())
    }

    fn value(&mut self, t: Type, v: &Value, out: &mut Vec<u8>) -> Result<(), GobError> {
        match (t, v) {
            (Type::Bool, Value::Bool(b)) => out.push(*b as u8),
            (Type::Int, Value::Int(i)) => put_int(out, *i),
            (Type::Uint, Value::Uint(i)) => put_uint(out, *i),
            (Type::Bytes, Value::Bytes(b)) | (Type::String, Value::Str(b)) => put_bytes(out, b),
            (Type::Slice(s), Value::List(l)) => {
                put_uint(out, l.len() as u64);
                for e in l {
                    self.value(s.elem, e, out)?;
                }
            }
            (Type::Struct(s), Value::Struct(_)) => {
                let mut last: i64 = -1;
                for (i, (name, ft)) in s.fields.iter().enumerate() {
                    let Some(fv) = v.field(name) else { continue };
                    // Go omits zero fields, but not structs.
                    let zero = match fv {
                        Value::Bool(b) => !b,
                        Value::Int(i) => *i == 0,
                        Value::Uint(i) => *i == 0,
                        Value::Bytes(b) | Value::Str(b) => b.is_empty(),
                        Value::List(l) => l.is_empty(),
                        _ => false,
                    };
                    if zero {
                        continue;
                    }
                    put_uint(out, (i as i64 - last) as u64);
                    last = i as i64;
                    self.value(*ft, fv, out)?;
                }
                out.push(0);
            }
            (_, v) => return bad(format!("cannot encode a {} here", v.kind())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_doc_go_shows() {
        let enc = |f: fn(&mut Vec<u8>, i64), x: i64| {
            let mut o = Vec::new();
            f(&mut o, x);
            o
        };
        let u = |o: &mut Vec<u8>, x: i64| put_uint(o, x as u64);
        assert_eq!(enc(u, 0), [0x00]);
        assert_eq!(enc(u, 7), [0x07]);
        assert_eq!(enc(u, 256), [0xfe, 0x01, 0x00]);
        assert_eq!(enc(put_int, -129), [0xfe, 0x01, 0x01]);
        assert_eq!(enc(put_int, -65), [0xff, 0x81]);
        assert_eq!(enc(put_int, 65), [0xff, 0x82]);
        for x in [0i64, 1, -1, 63, 64, -64, 1 << 40, i64::MIN, i64::MAX] {
            assert_eq!(Reader::new(&enc(put_int, x)).int().unwrap(), x);
        }
        assert_eq!(
            Reader::new(&[0xf8, 1, 2, 3, 4, 5, 6, 7, 8]).uint().unwrap(),
            0x0102030405060708
        );
        assert!(Reader::new(&[0xf7, 1, 2, 3, 4, 5, 6, 7, 8, 9]).uint().is_err());
    }

    static POINT: StructType = StructType {
        name: "Point",
        fields: &[("X", Type::Int), ("Y", Type::Int)],
    };

    /// The example of encoding/gob's doc.go, byte for byte.
    #[test]
    fn point_as_doc_go_shows() {
        let want: Vec<u8> = [
            "1fff810301010550 6f696e7401ff8200",
            "0102010158010400 0101590104000000",
            "07ff82012c014200",
        ]
        .concat()
        .split_whitespace()
        .collect::<String>()
        .as_bytes()
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect();
        let v = Value::Struct(vec![("X".into(), Value::Int(22)), ("Y".into(), Value::Int(33))]);
        let mut e = Encoder::new();
        let mut out = Vec::new();
        e.encode(&POINT, &v, &mut out).unwrap();
        assert_eq!(out, want);
        // A second value on the same stream carries no definition.
        let mut again = Vec::new();
        e.encode(&POINT, &v, &mut again).unwrap();
        assert_eq!(again, want[32..]);
        let mut d = Decoder::new();
        let (got, n) = d.value(&want).unwrap().unwrap();
        assert_eq!((got, n), (v, want.len()));
        // Cut anywhere: not complete yet, never an error.
        for cut in 0..want.len() {
            let mut d = Decoder::new();
            assert_eq!(d.value(&want[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_input_is_refused() {
        let mut d = Decoder::new();
        // A value of a type never defined.
        assert!(d.value(&[0x05, 0xff, 0x82, 0x01, 0x7f, 0x00]).is_err());
        // Unknown type id.
        assert!(Decoder::new().value(&[0x03, 0xff, 0x82, 0x00]).is_err());
        // Reserved id defined.
        assert!(Decoder::new().value(&[0x02, 0x03, 0x00]).is_err());
        // A type id of i64::MIN (negated, it overflows).
        assert!(Decoder::new()
            .value(&[0x09, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .is_err());
        // Interface value.
        assert!(Decoder::new().value(&[0x03, 0x10, 0x00, 0x00]).is_err());
        // A self-recursive slice type: nesting is bounded.
        let mut msg = vec![];
        let mut def = vec![];
        put_int(&mut def, -65);
        def.extend_from_slice(&[2, 1, 2, 0xff, 0x82, 0, 1, 0xff, 0x82, 0, 0]);
        put_uint(&mut msg, def.len() as u64);
        msg.extend_from_slice(&def);
        let mut val = vec![0xff, 0x82, 0x00];
        val.extend(std::iter::repeat_n(1u8, 100));
        val.extend(std::iter::repeat_n(0u8, 1));
        put_uint(&mut msg, val.len() as u64);
        msg.extend_from_slice(&val);
        let e = Decoder::new().value(&msg).unwrap_err();
        assert!(e.0.contains("nested too deeply"), "{e}");
    }
}
