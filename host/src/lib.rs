//! The Sinter host stack: transports to an NPU, the driver on top of them and the runtime that
//! turns a compiled bundle into a function from named float tensors to named float tensors.
//!
//! ```text
//! Runtime  — split batches; per stage: CPU program, or quantize → NPU slice → dequantize
//!   Driver — config check, upload, start, wait (timeout → reset), status, counters
//!     Transport — registers + device memory: functional model | RTL | (PCIe)
//! ```

pub mod driver;
pub mod error;
pub mod pool;
pub mod runtime;
pub mod sample;
pub mod transport;

pub use driver::{Driver, RunStats, DEFAULT_TIMEOUT};
pub use error::{HostError, TransportError};
pub use pool::{DevicePool, PooledRuntime};
pub use runtime::{open_runtime, open_runtime_traced, Inference, Runtime};
pub use sinter_isa::tensor::Tensor;
pub use transport::{
    CycleSource, DeviceKind, FuncTransport, RtlTransport, SimTransport, Transport,
};
