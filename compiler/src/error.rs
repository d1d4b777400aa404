//! Errors of the compiler front end.

use std::path::PathBuf;

/// Result type used throughout the compiler.
pub type Result<T, E = CompileError> = std::result::Result<T, E>;

/// Everything that can go wrong while importing, checking, optimising or interpreting a model.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The model file could not be read.
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a valid ONNX protobuf message.
    #[error("malformed ONNX protobuf: {0}")]
    Decode(#[from] prost::DecodeError),

    /// The model is structurally invalid (missing graph, dangling names, ...).
    #[error("invalid model: {0}")]
    InvalidModel(String),

    /// The default-domain opset is outside the supported range.
    #[error("unsupported ONNX opset {version} (supported: {min}..={max})")]
    UnsupportedOpset { version: i64, min: i64, max: i64 },

    /// The operator is not implemented.
    #[error("unsupported operator '{op_type}' at node '{node}'")]
    UnsupportedOp { node: String, op_type: String },

    /// A node is malformed or uses a feature we do not support.
    #[error("node '{node}' ({op_type}): {message}")]
    Node {
        node: String,
        op_type: String,
        message: String,
    },

    /// A tensor (initializer, constant, graph input) is malformed or unsupported.
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },

    /// Shapes of a node's inputs do not fit the operator.
    #[error("shape mismatch at node '{node}' ({op_type}): {message}")]
    Shape {
        node: String,
        op_type: String,
        message: String,
    },

    /// A graph transformation could not be applied.
    #[error("pass '{pass}' at node '{node}': {message}")]
    Pass {
        pass: &'static str,
        node: String,
        message: String,
    },

    /// The reference interpreter could not run the graph.
    #[error("interpreter: {0}")]
    Interp(String),

    /// Calibration or quantization failed.
    #[error("quantization: {0}")]
    Quant(String),

    /// A node cannot be placed on the NPU or the CPU.
    #[error("partitioning: node '{node}' ({op_type}): {message}")]
    Partition {
        node: String,
        op_type: String,
        message: String,
    },

    /// Lowering to NPU instructions failed (a layer does not fit the hardware).
    #[error("lowering '{layer}': {message}")]
    Lower { layer: String, message: String },
}

impl CompileError {
    /// An error about a node.
    pub fn node(
        node: impl Into<String>,
        op_type: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        CompileError::Node {
            node: node.into(),
            op_type: op_type.into(),
            message: msg.into(),
        }
    }

    /// An error about a tensor.
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        CompileError::Tensor {
            name: name.into(),
            message: msg.into(),
        }
    }

    /// A shape error at a node.
    pub fn shape(
        node: impl Into<String>,
        op_type: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        CompileError::Shape {
            node: node.into(),
            op_type: op_type.into(),
            message: msg.into(),
        }
    }
}
