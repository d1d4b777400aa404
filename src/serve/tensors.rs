//! Tensors on the wire: JSON (flat or nested), the binary tensor extension, compressed bodies.

use super::error::ApiError;
use axum::body::Bytes;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serialize;
use serde_json::Value;
use sinter_host::Tensor;
use std::io::Read;

/// Bytes per element of a datatype we accept as model input, or `None` when we do not take it.
pub fn element_bytes(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        _ => return None,
    })
}

/// An IEEE binary16 value as f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1F) as i32;
    let frac = (h & 0x3FF) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        0x1F if frac == 0.0 => sign * f32::INFINITY,
        0x1F => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// Little-endian raw tensor bytes as floats. `raw.len()` must be a multiple of the element size.
pub fn decode_binary(datatype: &str, raw: &[u8]) -> Vec<f32> {
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            raw.chunks_exact($n)
                .map(|c| {
                    let mut b = [0u8; $n];
                    b.copy_from_slice(c);
                    $f(b)
                })
                .collect()
        };
    }
    match datatype {
        "BOOL" => raw.iter().map(|b| (*b != 0) as u8 as f32).collect(),
        "UINT8" => raw.iter().map(|b| *b as f32).collect(),
        "INT8" => raw.iter().map(|b| *b as i8 as f32).collect(),
        "INT16" => conv!(2, |b| i16::from_le_bytes(b) as f32),
        "UINT16" => conv!(2, |b| u16::from_le_bytes(b) as f32),
        "FP16" => conv!(2, |b| f16_to_f32(u16::from_le_bytes(b))),
        "BF16" => conv!(2, |b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16)),
        "INT32" => conv!(4, |b| i32::from_le_bytes(b) as f32),
        "UINT32" => conv!(4, |b| u32::from_le_bytes(b) as f32),
        "INT64" => conv!(8, |b| i64::from_le_bytes(b) as f32),
        "UINT64" => conv!(8, |b| u64::from_le_bytes(b) as f32),
        "FP64" => conv!(8, |b| f64::from_le_bytes(b) as f32),
        _ => conv!(4, f32::from_le_bytes),
    }
}

/// Flattens nested JSON arrays of numbers (or booleans) in row-major order.
pub fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("number out of range")? as f32);
            Ok(())
        }
        Value::Bool(b) => {
            out.push(*b as u8 as f32);
            Ok(())
        }
        other => Err(format!("expected numbers, found {}", brief(other))),
    }
}

/// A short rendering of a JSON value for error messages.
fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let cut = (0..=40).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

/// Flattens a regular nested array and returns its shape.
pub fn flatten_shaped(v: &Value) -> Result<(Vec<usize>, Vec<f32>), String> {
    fn walk(
        v: &Value,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        if depth > 32 {
            return Err("array nested too deeply".into());
        }
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                } else if shape.len() < depth || shape[depth] != items.len() {
                    return Err("ragged nested array: rows differ in length".into());
                }
                items
                    .iter()
                    .try_for_each(|i| walk(i, depth + 1, shape, out))
            }
            Value::Number(_) | Value::Bool(_) => {
                if shape.len() != depth {
                    return Err("ragged nested array: mixed depths".into());
                }
                flatten(v, out)
            }
            other => Err(format!("expected numbers, found {}", brief(other))),
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut out)?;
    Ok((shape, out))
}

/// A row-major tensor serialized as nested JSON arrays (floats in their shortest form).
pub struct Nested<'a> {
    pub data: &'a [f32],
    pub shape: &'a [usize],
}

impl Serialize for Nested<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.shape {
            [] => self.data.first().copied().unwrap_or(f32::NAN).serialize(s),
            [_] => self.data.serialize(s),
            [n, rest @ ..] => {
                let inner: usize = rest.iter().product();
                let mut seq = s.serialize_seq(Some(*n))?;
                for i in 0..*n {
                    let lo = (i * inner).min(self.data.len());
                    let hi = ((i + 1) * inner).min(self.data.len());
                    seq.serialize_element(&Nested {
                        data: &self.data[lo..hi],
                        shape: rest,
                    })?;
                }
                seq.end()
            }
        }
    }
}

/// Named tensors as a JSON object, in order.
pub struct NamedOutputs<'a>(pub &'a [(String, Tensor)]);

impl Serialize for NamedOutputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, t) in self.0 {
            m.serialize_entry(
                name,
                &Nested {
                    data: &t.data,
                    shape: &t.shape,
                },
            )?;
        }
        m.end()
    }
}

/// The request body with any `Content-Encoding` (gzip, deflate) undone, refusing to inflate to
/// more than `limit` bytes.
pub fn decode_body(
    encoding: Option<&axum::http::HeaderValue>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let Some(enc) = encoding else {
        return Ok(body);
    };
    let enc = enc.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let inflate = |r: &mut dyn Read| -> Result<Bytes, ApiError> {
        let mut out = Vec::new();
        r.take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| ApiError::bad(format!("cannot decompress the {enc} body: {e}")))?;
        if out.len() > limit {
            return Err(ApiError::too_large(format!(
                "the decompressed body exceeds the limit of {limit} bytes"
            )));
        }
        Ok(Bytes::from(out))
    };
    match enc.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => inflate(&mut flate2::read::MultiGzDecoder::new(&body[..])),
        "deflate" => {
            // RFC 9110's deflate is zlib-wrapped; some clients send a raw stream.
            let zlib = body.len() >= 2 && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0;
            if zlib {
                inflate(&mut flate2::read::ZlibDecoder::new(&body[..]))
            } else {
                inflate(&mut flate2::read::DeflateDecoder::new(&body[..]))
            }
        }
        other => Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding '{other}' (use gzip, deflate or identity)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    #[test]
    fn nested_arrays_flatten_with_shape() {
        let (s, d) = flatten_shaped(&json!([[1, 2, 3], [4, 5, 6]])).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(d, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(flatten_shaped(&json!([[1, 2], [3]])).is_err());
        assert!(flatten_shaped(&json!([[1, 2], 3])).is_err());
        assert!(flatten_shaped(&json!([["a"]])).is_err());
    }

    #[test]
    fn nested_serialization_inverts_flatten() {
        let v = json!([[[1.0, 2.0]], [[3.0, 4.0]]]);
        let (s, d) = flatten_shaped(&v).unwrap();
        let n = Nested {
            data: &d,
            shape: &s,
        };
        assert_eq!(serde_json::to_value(&n).unwrap(), v);
        assert_eq!(serde_json::to_string(&[0.1f32]).unwrap(), "[0.1]");
    }

    #[test]
    fn binary_decoding_is_little_endian() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(decode_binary("FP32", &raw), vec![1.5, -2.0]);
        assert_eq!(decode_binary("INT8", &[0xFF, 2]), vec![-1.0, 2.0]);
        let raw: Vec<u8> = (-3i64).to_le_bytes().to_vec();
        assert_eq!(decode_binary("INT64", &raw), vec![-3.0]);
        // 1.5 and -2 in binary16, 1.5 in bfloat16.
        assert_eq!(
            decode_binary("FP16", &[0x00, 0x3E, 0x00, 0xC0]),
            vec![1.5, -2.0]
        );
        assert_eq!(decode_binary("BF16", &[0xC0, 0x3F]), vec![1.5]);
    }

    #[test]
    fn compressed_bodies_are_inflated_within_the_limit() {
        let plain = b"{\"inputs\": []}".repeat(10);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let h = |s: &'static str| axum::http::HeaderValue::from_static(s);
        let out = decode_body(Some(&h("gzip")), Bytes::from(gz.clone()), 1 << 20).unwrap();
        assert_eq!(&out[..], &plain[..]);
        let out = decode_body(Some(&h("deflate")), Bytes::from(zl), 1 << 20).unwrap();
        assert_eq!(&out[..], &plain[..]);
        let e = decode_body(Some(&h("gzip")), Bytes::from(gz), 16).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        let e = decode_body(Some(&h("br")), Bytes::new(), 16).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = decode_body(Some(&h("gzip")), Bytes::from_static(b"nope"), 16).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
