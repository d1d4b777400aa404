//! A plain float tensor, the unit the host exchanges with users and CPU stages.

use serde::{Deserialize, Serialize};

/// A float tensor, row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!(
                "shape {shape:?} holds {n} values, got {}",
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }
}
