//! Operators that run on the CPU around the NPU program: a *head* before quantization (e.g. a
//! Flatten of the model input) and a *tail* after dequantization (e.g. a final Softmax). A bundle
//! carries them as data; the host runs them with the reference implementations below.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A float tensor, row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TailError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(TailError::Shape(format!(
                "shape {shape:?} holds {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }
}

/// A CPU operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CpuOp {
    /// Softmax along one axis (negative counts from the end), as ONNX opset 13 defines it.
    Softmax {
        axis: i64,
    },
    /// Reinterprets the data with a new shape of the same size.
    Reshape {
        shape: Vec<usize>,
    },
    Identity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuNode {
    pub name: String,
    #[serde(flatten)]
    pub op: CpuOp,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A straight-line sequence of CPU nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuProgram {
    pub nodes: Vec<CpuNode>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TailError {
    #[error("CPU node '{node}' needs tensor '{tensor}', which is not available")]
    Missing { node: String, tensor: String },
    #[error("bad shape: {0}")]
    Shape(String),
    #[error("CPU node '{node}': {msg}")]
    Node { node: String, msg: String },
}

impl CpuProgram {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Runs every node in order, reading and writing `values`.
    pub fn run(&self, values: &mut HashMap<String, Tensor>) -> Result<(), TailError> {
        for node in &self.nodes {
            let input = node.inputs.first().ok_or_else(|| TailError::Node {
                node: node.name.clone(),
                msg: "no input".into(),
            })?;
            let x = values.get(input).ok_or_else(|| TailError::Missing {
                node: node.name.clone(),
                tensor: input.clone(),
            })?;
            let y = apply(&node.op, x).map_err(|msg| TailError::Node {
                node: node.name.clone(),
                msg,
            })?;
            let out = node.outputs.first().ok_or_else(|| TailError::Node {
                node: node.name.clone(),
                msg: "no output".into(),
            })?;
            values.insert(out.clone(), y);
        }
        Ok(())
    }
}

/// The reference implementation of one operator.
pub fn apply(op: &CpuOp, x: &Tensor) -> Result<Tensor, String> {
    match op {
        CpuOp::Identity => Ok(x.clone()),
        CpuOp::Reshape { shape } => {
            if shape.iter().product::<usize>() != x.data.len() {
                return Err(format!("cannot reshape {:?} to {shape:?}", x.shape));
            }
            Ok(Tensor {
                shape: shape.clone(),
                data: x.data.clone(),
            })
        }
        CpuOp::Softmax { axis } => {
            let rank = x.shape.len() as i64;
            let a = if *axis < 0 { axis + rank } else { *axis };
            if !(0..rank).contains(&a) {
                return Err(format!("softmax axis {axis} out of range for rank {rank}"));
            }
            let a = a as usize;
            let n = x.shape[a];
            let inner: usize = x.shape[a + 1..].iter().product();
            let outer: usize = x.shape[..a].iter().product();
            let mut y = x.clone();
            let mut lane = vec![0f32; n];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| (o * n + k) * inner + i;
                    for (k, v) in lane.iter_mut().enumerate() {
                        *v = x.data[at(k)];
                    }
                    crate::numeric::softmax_in_place(&mut lane);
                    for (k, v) in lane.iter().enumerate() {
                        y.data[at(k)] = *v;
                    }
                }
            }
            Ok(y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_along_middle_axis() {
        let x = Tensor::new(vec![1, 2, 2], vec![0.0, 1.0, 0.0, 3.0]).unwrap();
        let y = apply(&CpuOp::Softmax { axis: 1 }, &x).unwrap();
        assert!((y.data[0] + y.data[2] - 1.0).abs() < 1e-6);
        assert!((y.data[1] + y.data[3] - 1.0).abs() < 1e-6);
        assert!(y.data[3] > y.data[1]);
    }

    #[test]
    fn program_reports_missing_inputs() {
        let p = CpuProgram {
            nodes: vec![CpuNode {
                name: "sm".into(),
                op: CpuOp::Softmax { axis: -1 },
                inputs: vec!["logits".into()],
                outputs: vec!["probs".into()],
            }],
        };
        let err = p.run(&mut HashMap::new()).unwrap_err();
        assert!(matches!(err, TailError::Missing { .. }));
    }
}
