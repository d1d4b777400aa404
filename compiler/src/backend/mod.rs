//! From quantized layers to an NPU program: DRAM placement, tiling, instruction emission with
//! dependency tokens, and the cost model.

pub mod dense;
pub mod memory;
pub mod sync;
