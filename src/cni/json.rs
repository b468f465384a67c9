//! JSON printed the way the Go library prints it (results and errors alike).

use serde::Serialize;

/// Pretty JSON with a 4-space indent and no trailing newline, like Go's MarshalIndent.
pub fn to_pretty_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut out = Vec::with_capacity(512);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("serialising to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}
