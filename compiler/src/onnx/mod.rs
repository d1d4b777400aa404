//! ONNX front end: protobuf messages and the importer into [`crate::ir::Graph`].

pub mod import;
pub mod proto;

pub use import::{
    load_model, load_model_with, parse_model, parse_model_with, tensor_to_f32, ImportOptions,
    MAX_OPSET, MIN_OPSET,
};
