//! The two simulators of the Sinter NPU, which must agree bit for bit:
//!
//! - [`func`]: the functional model, the golden reference and the fast default device;
//! - [`rtl`]: the cycle-accurate RTL of `hdl/rtl`, compiled by Verilator and clocked from Rust.
//!
//! Both expose the same [`Npu`] interface: the register map of `sinter_isa::regs` and a DRAM
//! that the host reads and writes directly.

pub mod func;
pub mod randprog;
pub mod rtl;

use sinter_isa::HwConfig;

/// A simulated NPU with its DRAM.
pub trait Npu: Send {
    /// The hardware configuration of this instance.
    fn config(&self) -> HwConfig;
    /// Bytes of DRAM behind the device.
    fn dram_bytes(&self) -> u64;
    /// Writes a 32-bit register (byte offset from `sinter_isa::regs`).
    fn write_reg(&mut self, offset: u32, value: u32);
    /// Reads a 32-bit register.
    fn read_reg(&mut self, offset: u32) -> u32;
    /// Writes DRAM directly (the host's DMA into device memory).
    fn write_dram(&mut self, addr: u64, data: &[u8]) -> Result<(), SimError>;
    /// Reads DRAM directly.
    fn read_dram(&mut self, addr: u64, out: &mut [u8]) -> Result<(), SimError>;
    /// Tells the device what instruction ranges of the program at `program_base` (already in
    /// DRAM) compute, as operations on DRAM tensors (see [`sinter_isa::window`]). A device that
    /// can run such a range as one operation, with the same result, may do so; the default
    /// ignores it.
    fn describe_ops(&mut self, program_base: u64, ops: &[sinter_isa::window::WindowOp]) {
        let _ = (program_base, ops);
    }
    /// Lets the device make progress for at most `max_cycles` clock cycles and returns how many
    /// it simulated (0 when idle). The functional model completes a whole run in one call.
    fn advance(&mut self, max_cycles: u64) -> u64;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("DRAM access {addr:#x}+{len} is outside the {size:#x} bytes of device memory")]
    DramRange { addr: u64, len: u64, size: u64 },
    #[error("no RTL model was built for hardware config {0}; built: {1}")]
    NoRtlModel(String, String),
    #[error("{0}")]
    Other(String),
}
