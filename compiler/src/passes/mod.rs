//! Graph passes on the IR. Every pass preserves the graph's semantics (checked by interpreting
//! before and after) and keeps nodes in topological order.

mod affine;
mod conv;
mod dce;
mod dense;
mod identity;

pub use affine::{affine_to_depthwise, batchnorm_to_affine, binary_to_affine, fold_affine};
pub use conv::conv_to_conv2d;
pub use dce::eliminate_dead_code;
pub use dense::{fuse_activation, fuse_bias, gemm_to_dense, matmul_to_dense};
pub use identity::eliminate_identities;

use crate::error::Result;
use crate::ir::Graph;

/// Runs the standard pipeline: dead-code and identity elimination, fully-connected layer formation
/// (Gemm / MatMul + Add → Dense), convolution layer formation (Conv → Conv2d), per-channel
/// affine maps (constant BatchNorm, Mul/Add/Sub/Div by per-channel constants) merged and folded
/// into the preceding Conv2d/Dense (the rest become depthwise 1×1 convolutions), activation fusion (Relu/Clip into Dense/Conv2d) and
/// dead-code elimination.
pub fn optimize(graph: &mut Graph) -> Result<()> {
    // Dead readers would otherwise block single-consumer fusions.
    eliminate_dead_code(graph);
    eliminate_identities(graph);
    gemm_to_dense(graph)?;
    matmul_to_dense(graph);
    fuse_bias(graph);
    conv_to_conv2d(graph);
    batchnorm_to_affine(graph);
    binary_to_affine(graph);
    fold_affine(graph);
    affine_to_depthwise(graph);
    fuse_activation(graph);
    eliminate_identities(graph);
    eliminate_dead_code(graph);
    graph.validate()?;
    tracing::debug!(
        nodes = graph.nodes.len(),
        "optimised graph '{}'",
        graph.name
    );
    Ok(())
}

/// Index of the only node reading `name`, when `name` has exactly one use and is not a graph
/// output.
pub(crate) fn sole_consumer(graph: &Graph, name: &str) -> Option<usize> {
    if graph.use_count(name) != 1 {
        return None;
    }
    graph.consumers(name).first().copied()
}

/// Lets node `producer` write the output of node `consumer` directly and removes `consumer`.
/// The caller guarantees both outputs have the same shape and `consumer` is the sole reader.
pub(crate) fn absorb_consumer(graph: &mut Graph, producer: usize, consumer: usize) {
    let new_out = graph.nodes[consumer].outputs[0].clone();
    let old_out = std::mem::replace(&mut graph.nodes[producer].outputs[0], new_out);
    graph.nodes.remove(consumer);
    graph.shapes.remove(&old_out);
}
