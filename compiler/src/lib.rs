pub mod error;
pub mod interp;
pub mod ir;
pub mod onnx;
pub mod shape;
