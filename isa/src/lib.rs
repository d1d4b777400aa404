//! The single source of truth of the Sinter NPU.
//!
//! Everything that must agree bit for bit between the compiler, the functional model, the RTL and
//! the driver is defined here exactly once: the hardware configuration ([`config`]), the
//! instruction set and its encoding ([`insn`]), the register map ([`regs`]), the arithmetic of
//! quantized values ([`numeric`]), the timing model the compiler and simulators use to predict
//! cycles ([`timing`]), the check that a program's tokens order its accesses ([`order`]), the
//! compiled-model bundle ([`bundle`]), the operation each layer's instructions compute
//! ([`window`]) and the float tensors the host exchanges ([`tensor`]). The SystemVerilog package of the RTL is generated from it ([`svgen`]).

pub mod bundle;
pub mod config;
pub mod insn;
pub mod numeric;
pub mod order;
pub mod regs;
pub mod svgen;
pub mod tensor;
pub mod timing;
pub mod window;

pub use config::{ConfigError, HwConfig};
pub use insn::{
    Deps, Dma, DramRegion, Gemm, GemmMode, InsnFault, Instruction, Module, Opcode, Sync, VecInsn,
    VecOp, Walk, INSN_BYTES,
};

use serde::{Deserialize, Serialize};

/// The on-chip buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Buffer {
    /// int8 rows of `rows` lanes: GEMM inputs.
    #[default]
    Act = 0,
    /// int8 `rows × cols` tiles: GEMM weights; byte `r·cols + c` of a tile is the weight from
    /// input lane `r` to output lane `c`.
    Wgt = 1,
    /// int32 rows of `cols` lanes: GEMM results and vector-unit parameters.
    Acc = 2,
    /// int8 rows of `cols` lanes: vector-unit results, stored to DRAM.
    Out = 3,
}

impl Buffer {
    pub const ALL: [Buffer; 4] = [Buffer::Act, Buffer::Wgt, Buffer::Acc, Buffer::Out];
    pub fn from_bits(v: u64) -> Option<Buffer> {
        Buffer::ALL.into_iter().find(|b| *b as u64 == v)
    }
    pub fn name(self) -> &'static str {
        match self {
            Buffer::Act => "act",
            Buffer::Wgt => "wgt",
            Buffer::Acc => "acc",
            Buffer::Out => "out",
        }
    }
}

/// Version of the NPU architecture (instruction set + register map), readable from the VERSION
/// register and recorded in bundles.
pub const ARCH_VERSION: u32 = 0x0001_0000;
