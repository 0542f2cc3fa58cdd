//! The whole metadata as JSON, driven by the schema through Cap'n Proto's
//! dynamic reflection, so new fields appear without code changes here.
//!
//! Rules: field names as in the schema (camelCase) in schema order; enums as
//! their enumerant names (a number when unknown); a union as its active
//! member only (`"kind": {"regular": {...}}`, `"backing": {"anonymous": null}`);
//! integers as JSON numbers (exact for u64/i64); Void as null; Text as a
//! string; Data as a string when it is valid UTF-8 without control
//! characters other than tab and newline, else `{"base64": "..."}`. Unset
//! fields are printed with their defaults, so the output is complete and
//! deterministic.

use crate::ckpt_capnp::image;
use crate::codec::{capnp_err, reader_options};
use capnp::dynamic_value;
use capnp::schema_capnp::field;
use serde_json::{Map, Value};

/// Convert a metadata message (standard stream serialization, root `Image`) to JSON.
pub fn metadata_to_json(message: &[u8]) -> crate::Result<Value> {
    let mut slice = message;
    let msg =
        capnp::serialize::read_message_from_flat_slice(&mut slice, reader_options(message.len()))
            .map_err(|e| capnp_err("metadata message framing", e))?;
    let root: image::Reader = msg.get_root().map_err(|e| capnp_err("metadata root", e))?;
    value(dynamic_value::Reader::from(root))
        .map_err(|e| capnp_err("converting metadata to JSON", e))
}

fn value(v: dynamic_value::Reader) -> capnp::Result<Value> {
    use dynamic_value::Reader as D;
    Ok(match v {
        D::Void => Value::Null,
        D::Bool(b) => Value::Bool(b),
        D::Int8(x) => x.into(),
        D::Int16(x) => x.into(),
        D::Int32(x) => x.into(),
        D::Int64(x) => x.into(),
        D::UInt8(x) => x.into(),
        D::UInt16(x) => x.into(),
        D::UInt32(x) => x.into(),
        D::UInt64(x) => x.into(),
        D::Float32(x) => {
            serde_json::Number::from_f64(f64::from(x)).map_or(Value::Null, Value::Number)
        }
        D::Float64(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
        D::Enum(e) => match e.get_enumerant()? {
            Some(en) => Value::String(en.get_proto().get_name()?.to_string()?),
            None => Value::from(e.get_value()),
        },
        D::Text(t) => Value::String(String::from_utf8_lossy(t.as_bytes()).into_owned()),
        D::Data(d) => data(d),
        D::Struct(s) => {
            let mut m = Map::new();
            let active = s.which()?;
            for f in s.get_schema().get_fields()? {
                let proto = f.get_proto();
                if proto.get_discriminant_value() != field::NO_DISCRIMINANT
                    && active.map(|a| a.get_index()) != Some(f.get_index())
                {
                    continue;
                }
                let name = proto.get_name()?.to_string()?;
                m.insert(name, value(s.get(f)?)?);
            }
            Value::Object(m)
        }
        D::List(l) => {
            let mut out = Vec::with_capacity(l.len() as usize);
            for x in l.iter() {
                out.push(value(x?)?);
            }
            Value::Array(out)
        }
        D::AnyPointer(_) | D::Capability(_) => Value::Null,
    })
}

/// Data as a string when it is printable text, else as base64.
pub fn data(d: &[u8]) -> Value {
    match std::str::from_utf8(d) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\t' && c != '\n') => {
            Value::String(s.to_string())
        }
        _ => {
            let mut m = Map::new();
            m.insert("base64".into(), Value::String(base64(d)));
            Value::Object(m)
        }
    }
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(d: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(d.len().div_ceil(3) * 4);
    for c in d.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn data_as_text_or_base64() {
        assert_eq!(data(b"a\tb\n"), Value::String("a\tb\n".into()));
        assert_eq!(data(b"\xe2\x9c\x93"), Value::String("\u{2713}".into()));
        assert_eq!(data(b"a\0"), serde_json::json!({"base64": "YQA="}));
        assert_eq!(data(b"\r"), serde_json::json!({"base64": "DQ=="}));
        assert_eq!(data(b"\xff"), serde_json::json!({"base64": "/w=="}));
    }
}
