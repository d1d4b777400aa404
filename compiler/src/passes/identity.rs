//! Removal of operators that do not change their input: Identity, inference Dropout, and
//! Flatten/Reshape whose output shape equals the input shape.

use crate::ir::{Graph, Op};

/// Removes identity-like nodes. Flatten/Reshape reading a graph input stay (the runtime applies
/// them before quantizing). Returns the number of nodes removed.
pub fn eliminate_identities(graph: &mut Graph) -> usize {
    let mut removed = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if is_identity(graph, i) && bypass(graph, i) {
            removed += 1;
        } else {
            i += 1;
        }
    }
    removed
}

fn is_identity(graph: &Graph, i: usize) -> bool {
    let node = &graph.nodes[i];
    match node.op {
        Op::Identity | Op::Dropout => true,
        Op::Flatten { .. } | Op::Reshape { .. } => {
            let (input, output) = (&node.inputs[0], &node.outputs[0]);
            !graph.is_graph_input(input)
                && graph.shape_of(input).is_some()
                && graph.shape_of(input) == graph.shape_of(output)
        }
        _ => false,
    }
}

/// Removes node `i` (one input, one output, same value) by rewiring. Returns false when the node
/// has to stay because it links two names that must both exist (e.g. a graph input or constant
/// forwarded to a graph output).
fn bypass(graph: &mut Graph, i: usize) -> bool {
    let input = graph.nodes[i].inputs[0].clone();
    let output = graph.nodes[i].outputs[0].clone();
    if !graph.is_graph_output(&output) {
        graph.nodes.remove(i);
        graph.replace_uses(&output, &input);
        graph.shapes.remove(&output);
        return true;
    }
    match graph.producer_node(&input) {
        Some(p) if !graph.is_graph_output(&input) => {
            graph.nodes.remove(i);
            for o in &mut graph.nodes[p].outputs {
                if *o == input {
                    o.clone_from(&output);
                }
            }
            graph.replace_uses(&input, &output);
            graph.shapes.remove(&input);
            true
        }
        _ => false,
    }
}
