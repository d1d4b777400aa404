//! Errors of the host stack.

use sinter_isa::HwConfig;
use std::time::Duration;

/// A failure of the link to a device (simulated or real).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "device memory access {addr:#x}+{len} is outside the {size:#x} bytes of device memory"
    )]
    MemRange { addr: u64, len: u64, size: u64 },
    #[error("simulator: {0}")]
    Sim(#[from] sinter_sim::SimError),
    #[error("device I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Everything the driver and runtime can report.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("transport to device '{device}' failed: {source}")]
    Transport {
        device: String,
        #[source]
        source: TransportError,
    },
    #[error(
        "bundle was compiled for hardware config {bundle}, but device '{device}' is {found}; \
         recompile with --hw {}x{} or use a matching device",
        bundle.rows,
        bundle.cols
    )]
    ConfigMismatch {
        device: String,
        bundle: HwConfig,
        found: HwConfig,
    },
    #[error(
        "bundle targets NPU architecture {bundle:#x}, device '{device}' implements {found:#x}"
    )]
    ArchMismatch {
        device: String,
        bundle: u32,
        found: u32,
    },
    #[error("device '{device}' reports an invalid hardware config: {msg}")]
    BadDeviceConfig { device: String, msg: String },
    #[error("bundle needs {need:#x} bytes of device memory, device '{device}' has {have:#x}")]
    DeviceMemory {
        device: String,
        need: u64,
        have: u64,
    },
    #[error(
        "device '{device}' hung: no completion within {timeout:?} ({cycles} cycles, \
         {insns} of {program_len} instructions done){}; the device was reset",
        detail(.diagnostic)
    )]
    DeviceHung {
        device: String,
        timeout: Duration,
        cycles: u64,
        insns: u32,
        program_len: u32,
        diagnostic: Option<String>,
    },
    #[error(
        "device '{device}' stopped with error {code} ({name}) at instruction {pc}{}",
        detail(.diagnostic)
    )]
    DeviceError {
        device: String,
        code: u32,
        name: &'static str,
        pc: u32,
        diagnostic: Option<String>,
    },
    #[error("no bundle is loaded on device '{0}'")]
    NotLoaded(String),
    #[error("missing input '{name}' (the model expects {expected:?})")]
    MissingInput { name: String, expected: Vec<String> },
    #[error("unknown input '{name}' (the model expects {expected:?})")]
    UnknownInput { name: String, expected: Vec<String> },
    #[error("input '{name}' has shape {got:?}, expected [N, {}] (N = batch size ≥ 1)", fmt_dims(.expected))]
    InputShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("input '{name}' has {got} values but its shape {shape:?} holds {want}")]
    InputLength {
        name: String,
        shape: Vec<usize>,
        want: usize,
        got: usize,
    },
    #[error("inputs disagree on the batch size: '{a}' has {na} rows, '{b}' has {nb}")]
    BatchMismatch {
        a: String,
        na: usize,
        b: String,
        nb: usize,
    },
    #[error("input '{name}' contains a non-finite value (NaN or infinity)")]
    NonFinite { name: String },
    #[error("CPU stage '{stage}' failed: {source}")]
    Cpu {
        stage: String,
        #[source]
        source: sinter_compiler::CompileError,
    },
    #[error("bundle is inconsistent: {0}")]
    Bundle(String),
}

fn detail(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

fn fmt_dims(d: &[usize]) -> String {
    d.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl HostError {
    /// Whether the error is the caller's fault (bad input) rather than the device's or bundle's.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            HostError::MissingInput { .. }
                | HostError::UnknownInput { .. }
                | HostError::InputShape { .. }
                | HostError::InputLength { .. }
                | HostError::BatchMismatch { .. }
                | HostError::NonFinite { .. }
        )
    }
}
