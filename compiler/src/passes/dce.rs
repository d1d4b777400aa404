//! Dead-code elimination.

use std::collections::HashSet;

use crate::ir::Graph;

/// Removes nodes whose outputs are never used, then constants no node reads.
/// Returns the number of nodes removed.
pub fn eliminate_dead_code(graph: &mut Graph) -> usize {
    let mut live: HashSet<String> = graph.outputs.iter().map(|t| t.name.clone()).collect();
    let mut keep = vec![false; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|o| live.contains(o)) {
            keep[i] = true;
            live.extend(node.inputs.iter().cloned());
        }
    }
    let before = graph.nodes.len();
    let mut flags = keep.into_iter();
    let mut dead_outputs = Vec::new();
    graph.nodes.retain(|n| {
        let k = flags.next().unwrap_or(true);
        if !k {
            dead_outputs.extend(n.outputs.iter().cloned());
        }
        k
    });
    for o in dead_outputs {
        graph.shapes.remove(&o);
    }
    graph.constants.retain(|name, _| live.contains(name));
    before - graph.nodes.len()
}
