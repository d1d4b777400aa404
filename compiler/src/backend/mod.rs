//! From quantized layers to an NPU program: DRAM placement, tiling, instruction emission with
//! dependency tokens, and the cost model.

pub mod conv;
pub mod layers;
pub mod memory;
pub mod sync;
