//! The safetensors format on the host: named `f32` buffers to bytes and back.
//!
//! Nothing here touches a device: callers download before [`encode`] and upload after
//! [`to_f32`], so every backend shares this code.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::Metadata;
use crate::error::{Error, Result};
use crate::shape::Shape;

/// The largest header safetensors accepts; ours is checked before it, with the same limit.
const MAX_HEADER_LEN: usize = 100_000_000;

/// The elements of one tensor to encode, row-major.
pub(crate) enum Values {
    /// Stored as little-endian `F32`.
    F32(Vec<f32>),
    /// Stored as little-endian `I64` (a buffer's count).
    I64(Vec<i64>),
}

impl Values {
    fn dtype(&self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::I64(_) => Dtype::I64,
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Values::F32(data) => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(data) => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// The element types [`to_f32`] reads.
const FLOATS: &str = "F32, F64, F16 and BF16";

/// The element types [`to_i64`] reads.
const INTEGERS: &str = "I64, I32 and U8";

/// Encodes `tensors` (name, shape, row-major values) as a safetensors file, with `metadata`
/// in its `__metadata__` entry.
pub(crate) fn encode(
    op: &'static str,
    tensors: &[(String, Shape, Values)],
    metadata: &Metadata,
) -> Result<Vec<u8>> {
    let mut seen = BTreeSet::new();
    for (name, _, _) in tensors {
        // safetensors indexes tensors by name and panics when serializing a repeated one.
        if !seen.insert(name.as_str()) {
            return Err(Error::DuplicateName {
                op,
                name: name.clone(),
            });
        }
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.to_le_bytes())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, values), bytes) in tensors.iter().zip(&bytes) {
        let dtype = values.dtype();
        // `TensorView::new` multiplies the shape unchecked; make sure it cannot overflow.
        let fits = shape
            .checked_numel()
            .and_then(|n| n.checked_mul(dtype.bitsize()))
            .is_some();
        if !fits {
            return Err(Error::TooLarge {
                op,
                shape: shape.clone(),
            });
        }
        let view =
            TensorView::new(dtype, shape.dims().to_vec(), bytes).map_err(|_| Error::Length {
                op,
                shape: shape.clone(),
                len: bytes.len() * 8 / dtype.bitsize(),
            })?;
        views.push((name.as_str(), view));
    }
    let metadata: HashMap<String, String> = metadata.clone().into_iter().collect();
    ::safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Serialize {
        op,
        message: e.to_string(),
    })
}

/// A tensor inside a parsed file: its element type, shape and raw little-endian bytes.
pub(crate) struct RawTensor<'a> {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Shape,
    pub(crate) data: &'a [u8],
}

/// A parsed safetensors file: its tensors sorted by name, and its metadata.
pub(crate) struct Parsed<'a> {
    pub(crate) tensors: Vec<RawTensor<'a>>,
    pub(crate) metadata: Metadata,
}

/// Parses and validates `bytes` (from `path`, if they came from a file) without converting
/// any tensor.
pub(crate) fn parse<'a>(
    op: &'static str,
    bytes: &'a [u8],
    path: Option<&Path>,
) -> Result<Parsed<'a>> {
    let invalid = |message: String| Error::InvalidFile {
        op,
        path: path.map(Path::to_path_buf),
        message,
    };
    check_offsets(bytes).map_err(invalid)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    // `SafeTensors` does not hand out the metadata it parsed; reading the header again does.
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut raw: Vec<RawTensor<'a>> = tensors
        .iter()
        .map(|(name, view)| RawTensor {
            name: name.to_owned(),
            dtype: view.dtype(),
            shape: Shape::from(view.shape()),
            data: view.data(),
        })
        .collect();
    raw.sort_by(|a, b| a.name.cmp(&b.name));
    let metadata = metadata
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Parsed {
        tensors: raw,
        metadata,
    })
}

/// Rejects a header whose `data_offsets` point past the end of the file.
///
/// safetensors 0.8 adds the last offset to the header length unchecked, which overflows (a
/// panic in builds with overflow checks) when a header claims offsets near `usize::MAX`; with
/// every offset inside the file, that sum cannot overflow. Anything this check cannot read is
/// left for safetensors to reject.
fn check_offsets(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Ok(());
    };
    let Ok(header_len) = usize::try_from(u64::from_le_bytes(*len)) else {
        return Ok(());
    };
    if header_len > MAX_HEADER_LEN {
        return Ok(());
    }
    let Some((header, data)) = rest.split_at_checked(header_len) else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice(header) else {
        return Ok(());
    };
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let end = info
            .get("data_offsets")
            .and_then(|offsets| offsets.get(1))
            .and_then(serde_json::Value::as_u64);
        if let Some(end) = end
            && end > data.len() as u64
        {
            return Err(format!(
                "the header says tensor `{name}` ends at byte {end} of the data, but the file holds {} data bytes",
                data.len()
            ));
        }
    }
    Ok(())
}

/// The elements of an integer `tensor` (`I64`, `I32` or `U8`: labels, token ids) as indices.
pub(crate) fn to_indices(op: &'static str, tensor: &RawTensor<'_>) -> Result<Vec<usize>> {
    to_i64(op, tensor)?
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            usize::try_from(value).map_err(|_| {
                Error::Usage(format!(
                    "{op}: `{}` holds {value} at index {index}; indices must not be negative",
                    tensor.name
                ))
            })
        })
        .collect()
}

/// The elements of an integer `tensor` (`I64`, `I32` or `U8`).
pub(crate) fn to_i64(op: &'static str, tensor: &RawTensor<'_>) -> Result<Vec<i64>> {
    let data = tensor.data;
    let values: Vec<i64> = match tensor.dtype {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::U8 => data.iter().map(|&b| i64::from(b)).collect(),
        _ => return Err(unsupported_dtype(op, tensor, INTEGERS)),
    };
    check_len(op, tensor, values.len())?;
    Ok(values)
}

/// The elements of `tensor` as `f32`: `F32` as stored, `F16` and `BF16` widened exactly,
/// `F64` rounded to nearest.
pub(crate) fn to_f32(op: &'static str, tensor: &RawTensor<'_>) -> Result<Vec<f32>> {
    let data = tensor.data;
    let values: Vec<f32> = match tensor.dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        _ => return Err(unsupported_dtype(op, tensor, FLOATS)),
    };
    check_len(op, tensor, values.len())?;
    Ok(values)
}

/// The error for a tensor whose element type `op` does not read; it reads `readable`.
fn unsupported_dtype(op: &'static str, tensor: &RawTensor<'_>, readable: &'static str) -> Error {
    Error::TensorDtype {
        op,
        name: tensor.name.clone(),
        shape: tensor.shape.clone(),
        dtype: tensor.dtype.to_string(),
        readable,
    }
}

/// Requires `len` decoded elements to fill `tensor`'s shape. safetensors checked that the
/// bytes cover the shape, so a mismatch means it did not.
fn check_len(op: &'static str, tensor: &RawTensor<'_>, len: usize) -> Result<()> {
    if Some(len) == tensor.shape.checked_numel() {
        Ok(())
    } else {
        Err(Error::Length {
            op,
            shape: tensor.shape.clone(),
            len,
        })
    }
}

/// Widens an IEEE 754 half-precision number to `f32`, exactly (subnormals, infinities and NaN
/// included).
fn f16_to_f32(half: u16) -> f32 {
    let sign = u32::from(half >> 15) << 31;
    let exponent = u32::from((half >> 10) & 0x1f);
    let mantissa = u32::from(half & 0x3ff);
    let magnitude = match exponent {
        // Zero and subnormals: mantissa * 2^-24, exact in f32.
        0 => (mantissa as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        0x1f => 0x7f80_0000 | (mantissa << 13),
        // Rebias the exponent from 15 to 127.
        _ => ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widens_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    fn raw(dtype: Dtype, data: &[u8], n: usize) -> RawTensor<'_> {
        RawTensor {
            name: "t".into(),
            dtype,
            shape: Shape::from([n]),
            data,
        }
    }

    #[test]
    fn converts_float_dtypes_and_rejects_the_rest() {
        let f64s: Vec<u8> = [0.1f64, -3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            to_f32("load", &raw(Dtype::F64, &f64s, 2)).unwrap(),
            [0.1f32, -3.0]
        );
        let bf16s: Vec<u8> = [0x3f80u16, 0xc040]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            to_f32("load", &raw(Dtype::BF16, &bf16s, 2)).unwrap(),
            [1.0, -3.0]
        );
        let halfs: Vec<u8> = [0x3c00u16, 0x4200]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            to_f32("load", &raw(Dtype::F16, &halfs, 2)).unwrap(),
            [1.0, 3.0]
        );
        let error = to_f32("load", &raw(Dtype::I64, &[0; 8], 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "load: tensor `t` [1] is stored as I64; only F32, F64, F16 and BF16 can be loaded"
        );
        let error = to_i64("load", &raw(Dtype::F32, &[0; 4], 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "load: tensor `t` [1] is stored as F32; only I64, I32 and U8 can be loaded"
        );
    }

    #[test]
    fn integers_round_trip_and_two_tensors_cannot_share_a_name() {
        let count = (
            String::from("n"),
            Shape::from([0usize; 0]),
            Values::I64(vec![-5]),
        );
        let bytes = encode("save", &[count], &Metadata::new()).unwrap();
        let parsed = parse("load", &bytes, None).unwrap();
        assert_eq!(to_i64("load", &parsed.tensors[0]).unwrap(), [-5]);
        assert_eq!(parsed.tensors[0].shape.rank(), 0);
        assert!(to_indices("load", &parsed.tensors[0]).is_err());

        let w = || (String::from("w"), Shape::from([1]), Values::F32(vec![1.0]));
        let error = encode("save", &[w(), w()], &Metadata::new()).unwrap_err();
        assert_eq!(error.to_string(), "save: two tensors are named `w`");
    }

    /// A header whose offsets chain up to `usize::MAX` (16 `U8` tensors of 2^60 bytes); without
    /// [`check_offsets`] safetensors overflows adding the header length to the last offset.
    #[test]
    fn offsets_near_usize_max_are_an_error_not_an_overflow() {
        let chunk = 1u64 << 60;
        let entries: Vec<String> = (0..16u64)
            .map(|i| {
                let start = i * chunk;
                let end = if i == 15 { u64::MAX } else { start + chunk };
                let size = end - start;
                format!(
                    "\"t{i:02}\":{{\"dtype\":\"U8\",\"shape\":[{size}],\"data_offsets\":[{start},{end}]}}"
                )
            })
            .collect();
        let header = format!("{{{}}}", entries.join(","));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        let error = parse("load", &bytes, None).err().unwrap();
        assert!(
            error
                .to_string()
                .starts_with("load: the buffer is not a valid safetensors file: the header says tensor `t00` ends at byte"),
            "{error}"
        );
    }
}
