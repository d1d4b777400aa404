//! Sinter compiler: ONNX import, graph IR, fp32 reference interpreter, graph passes,
//! quantization, lowering to NPU programs and the bundle.

pub mod backend;
pub mod compile;
pub mod cpu;
pub mod error;
pub mod interp;
pub mod ir;
pub mod onnx;
pub mod partition;
pub mod passes;
pub mod quant;
pub mod shape;

pub use error::{CompileError, Result};
