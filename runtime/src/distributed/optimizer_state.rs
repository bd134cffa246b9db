//! An [`OptimizerState`] as bytes, to broadcast it: a JSON header (the optimizer's name, its
//! scalars, each buffer's name and shape) after its length, then every buffer's values as
//! little-endian `f32`.

use serde_json::{Value, json};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::optim::OptimizerState;
use crate::tensor::Tensor;

/// `state` as bytes.
///
/// # Errors
/// When a buffer cannot be copied to the host.
pub(crate) fn encode<B: Backend>(state: &OptimizerState<B>) -> Result<Vec<u8>> {
    let tensors: Vec<Value> = state
        .tensors
        .iter()
        .map(|(name, tensor)| json!([name, tensor.dims()]))
        .collect();
    let header = json!({
        "optimizer": state.optimizer,
        "scalars": state.scalars,
        "tensors": tensors,
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for (_, tensor) in &state.tensors {
        for value in tensor.try_to_vec()? {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    Ok(bytes)
}

/// The state [`encode`] made `bytes` from, with its buffers on `device`.
///
/// # Errors
/// [`Error::Distributed`] when the bytes are not such a state; a device error.
pub(crate) fn decode<B: Backend>(bytes: &[u8], device: &B) -> Result<OptimizerState<B>> {
    let malformed = |what: &str| Error::Distributed {
        op: "broadcast_optimizer",
        message: format!("rank 0's optimizer state is malformed: {what}"),
    };
    let (length, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| malformed("no header length"))?;
    let length = usize::try_from(u64::from_le_bytes(*length))
        .ok()
        .filter(|&length| length <= rest.len())
        .ok_or_else(|| malformed("a header longer than the state"))?;
    let (header, mut values) = rest.split_at(length);
    let header: Value =
        serde_json::from_slice(header).map_err(|error| malformed(&error.to_string()))?;
    let optimizer = header["optimizer"]
        .as_str()
        .ok_or_else(|| malformed("no optimizer name"))?
        .to_owned();
    let scalars = header["scalars"]
        .as_array()
        .ok_or_else(|| malformed("no scalars"))?
        .iter()
        .map(|pair| match (pair[0].as_str(), pair[1].as_f64()) {
            (Some(name), Some(value)) => Ok((name.to_owned(), value)),
            _ => Err(malformed("a scalar is not a name and a number")),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut tensors = Vec::new();
    for entry in header["tensors"]
        .as_array()
        .ok_or_else(|| malformed("no tensors"))?
    {
        let name = entry[0]
            .as_str()
            .ok_or_else(|| malformed("a nameless tensor"))?;
        let dims = entry[1]
            .as_array()
            .ok_or_else(|| malformed("a tensor without dims"))?
            .iter()
            .map(|dim| dim.as_u64().and_then(|dim| usize::try_from(dim).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| malformed("a dim that is not a count"))?;
        let len = dims.iter().product::<usize>() * 4;
        if values.len() < len {
            return Err(malformed("fewer values than the shapes need"));
        }
        let (own, rest) = values.split_at(len);
        values = rest;
        let data = own
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        tensors.push((name.to_owned(), Tensor::try_from_vec(data, dims, device)?));
    }
    if !values.is_empty() {
        return Err(malformed("more values than the shapes need"));
    }
    Ok(OptimizerState {
        optimizer,
        scalars,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn states_round_trip_exactly_and_malformed_bytes_are_errors() {
        let state = OptimizerState {
            optimizer: "Adam".to_owned(),
            scalars: vec![("lr".to_owned(), 0.1), ("0.weight.step".to_owned(), 3.0)],
            tensors: vec![(
                "0.weight.exp_avg".to_owned(),
                Tensor::from_vec(vec![1.5, -2.0, 1e-30], [3], &Cpu),
            )],
        };
        let bytes = encode(&state).unwrap();
        let back = decode(&bytes, &Cpu).unwrap();
        assert_eq!(back.optimizer, "Adam");
        assert_eq!(back.scalars, state.scalars);
        assert_eq!(back.tensors[0].0, "0.weight.exp_avg");
        assert_eq!(back.tensors[0].1.to_vec(), [1.5, -2.0, 1e-30]);
        for cut in [0, 7, 20, bytes.len() - 1] {
            assert!(decode::<Cpu>(&bytes[..cut], &Cpu).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Cpu>(&longer, &Cpu).is_err());
    }
}
