//! CPU stages: the operators of a model that run on the host (a final Softmax, an LRN between
//! NPU segments, a reshape of the input, anything the NPU does not do). They travel inside the
//! bundle as serialized IR nodes and run on the fp32 reference interpreter, so every operator the
//! interpreter knows can run on the CPU.

use std::collections::{BTreeMap, HashMap};

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::error::{CompileError, Result};
use crate::interp;
use crate::ir::Node;

/// A straight-line sequence of IR nodes with the constants they read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuProgram {
    pub nodes: Vec<Node>,
    pub constants: BTreeMap<String, ArrayD<f32>>,
}

impl CpuProgram {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The binary form stored in a bundle.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("IR nodes always serialize")
    }

    /// Reads a program written by [`CpuProgram::encode`].
    pub fn decode(bytes: &[u8]) -> Result<CpuProgram> {
        postcard::from_bytes(bytes)
            .map_err(|e| CompileError::InvalidModel(format!("corrupt CPU program in bundle: {e}")))
    }

    /// Runs every node in order, reading and writing `values`.
    pub fn run(&self, values: &mut HashMap<String, ArrayD<f32>>) -> Result<()> {
        for node in &self.nodes {
            let mut args = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                let v = values
                    .get(name)
                    .or_else(|| self.constants.get(name))
                    .ok_or_else(|| {
                        CompileError::Interp(format!(
                            "CPU node '{}' reads '{name}', which is not available",
                            node.name
                        ))
                    })?;
                args.push(v.view());
            }
            let outs = interp::eval_op(&node.op, &args).map_err(|e| {
                CompileError::Interp(format!(
                    "CPU node '{}' ({}): {e}",
                    node.name,
                    node.op.name()
                ))
            })?;
            for (name, v) in node.outputs.iter().zip(outs) {
                values.insert(name.clone(), v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Op;

    #[test]
    fn round_trips_and_runs() {
        let p = CpuProgram {
            nodes: vec![
                Node {
                    name: "clip".into(),
                    op: Op::Clip {
                        min: f32::NEG_INFINITY,
                        max: 1.0,
                    },
                    inputs: vec!["x".into()],
                    outputs: vec!["c".into()],
                },
                Node {
                    name: "sm".into(),
                    op: Op::Softmax {
                        axis: 1,
                        coerce_2d: false,
                    },
                    inputs: vec!["c".into()],
                    outputs: vec!["y".into()],
                },
            ],
            constants: BTreeMap::new(),
        };
        let back = CpuProgram::decode(&p.encode()).unwrap();
        assert_eq!(back, p);
        let mut values = HashMap::from([(
            "x".to_string(),
            ArrayD::from_shape_vec(vec![1, 2], vec![5.0, 1.0]).unwrap(),
        )]);
        back.run(&mut values).unwrap();
        let y = &values["y"];
        assert!(
            (y[[0, 0]] - 0.5).abs() < 1e-6,
            "clip to 1 makes both equal: {y}"
        );
        assert!(CpuProgram::decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
