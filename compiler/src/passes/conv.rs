//! Formation of convolution layers ([`Op::Conv2d`]) from ONNX-style [`Op::Conv`] nodes with
//! constant weights.

use ndarray::{Array1, Ix4};

use crate::ir::{Activation, Graph, Op};

/// Rewrites `Conv(x, const W[, const B])` as a `Conv2d` holding the weights. Convolutions with a
/// runtime weight or bias are left alone. Returns the number of rewritten nodes.
pub fn conv_to_conv2d(graph: &mut Graph) -> usize {
    let mut count = 0;
    for i in 0..graph.nodes.len() {
        let node = &graph.nodes[i];
        let Op::Conv {
            stride,
            pads,
            dilation,
            groups,
        } = node.op
        else {
            continue;
        };
        if graph.is_constant(&node.inputs[0]) {
            continue;
        }
        let Some(w) = graph.constant(&node.inputs[1]) else {
            continue;
        };
        let Ok(weight) = w.view().into_dimensionality::<Ix4>() else {
            continue;
        };
        let bias = match node.inputs.get(2) {
            None => None,
            Some(b) => match graph.constant(b) {
                Some(b) => Some(Array1::from_iter(b.iter().copied())),
                None => continue,
            },
        };
        let weight = weight.as_standard_layout().into_owned();
        let node = &mut graph.nodes[i];
        node.op = Op::Conv2d {
            weight,
            bias,
            stride,
            pads,
            dilation,
            groups,
            activation: Activation::None,
        };
        node.inputs.truncate(1);
        count += 1;
    }
    count
}
