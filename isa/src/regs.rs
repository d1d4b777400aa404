//! The register map: 32-bit registers at byte offsets behind the control port.
//!
//! Start a program by writing `PROG_BASE`, `PROG_LEN`, then `CONTROL_START` to `CONTROL`. The
//! NPU sets `STATUS_BUSY` until every instruction has completed; then `STATUS_DONE`, or
//! `STATUS_ERROR` with `ERROR_CODE` and `ERROR_PC` describing the first refused instruction.
//! The cycle and MAC-active counters count the current (or last) run and are cleared by start.

/// Architecture version ([`crate::ARCH_VERSION`]). Read-only.
pub const VERSION: u32 = 0x00;
/// Write-only: bit 0 starts the program (ignored while busy); bit 1 resets the NPU, aborting any
/// run and returning every register, `PROG_BASE` and `PROG_LEN` included, to its power-on value.
pub const CONTROL: u32 = 0x04;
/// Read-only status bits.
pub const STATUS: u32 = 0x08;
/// Read-only: why the last run stopped with an error (`ERR_*`).
pub const ERROR_CODE: u32 = 0x0C;
/// Read/write: DRAM byte address of the first instruction (32-byte aligned).
pub const PROG_BASE: u32 = 0x10;
/// Read/write: number of instructions.
pub const PROG_LEN: u32 = 0x14;
/// Read-only: cycles since start, low and high words.
pub const CYCLES_LO: u32 = 0x18;
pub const CYCLES_HI: u32 = 0x1C;
/// Read-only: cycles in which the MAC array consumed an activation row.
pub const MAC_ACTIVE_LO: u32 = 0x20;
pub const MAC_ACTIVE_HI: u32 = 0x24;
/// Read-only: instructions completed.
pub const INSNS_DONE: u32 = 0x28;
/// Read-only: index of the instruction that raised the error.
pub const ERROR_PC: u32 = 0x2C;
/// Read-only hardware config readback: rows | cols << 8 | bus_bytes << 16.
pub const CONFIG_ARRAY: u32 = 0x30;
/// Read-only buffer depths.
pub const CONFIG_ACT_DEPTH: u32 = 0x34;
pub const CONFIG_WGT_DEPTH: u32 = 0x38;
pub const CONFIG_ACC_DEPTH: u32 = 0x3C;
pub const CONFIG_OUT_DEPTH: u32 = 0x40;

pub const CONTROL_START: u32 = 1 << 0;
pub const CONTROL_RESET: u32 = 1 << 1;

pub const STATUS_BUSY: u32 = 1 << 0;
pub const STATUS_DONE: u32 = 1 << 1;
pub const STATUS_ERROR: u32 = 1 << 2;

pub const ERR_NONE: u32 = 0;
/// Unknown opcode, bad enum value, non-zero reserved bits, empty loop or transfer, a dependency
/// flag naming a missing neighbour, a store with padding.
pub const ERR_ILLEGAL_INSN: u32 = 1;
/// An on-chip row outside its buffer.
pub const ERR_SRAM_BOUNDS: u32 = 2;
/// A DRAM address or stride not aligned as [`crate::HwConfig::dram_alignment`] requires.
pub const ERR_MISALIGNED: u32 = 3;
/// `PROG_BASE` not 32-byte aligned.
pub const ERR_PROG_ALIGN: u32 = 4;

/// Every register with its name, for the generated RTL package and for dumps.
pub const ALL: [(&str, u32); 17] = [
    ("VERSION", VERSION),
    ("CONTROL", CONTROL),
    ("STATUS", STATUS),
    ("ERROR_CODE", ERROR_CODE),
    ("PROG_BASE", PROG_BASE),
    ("PROG_LEN", PROG_LEN),
    ("CYCLES_LO", CYCLES_LO),
    ("CYCLES_HI", CYCLES_HI),
    ("MAC_ACTIVE_LO", MAC_ACTIVE_LO),
    ("MAC_ACTIVE_HI", MAC_ACTIVE_HI),
    ("INSNS_DONE", INSNS_DONE),
    ("ERROR_PC", ERROR_PC),
    ("CONFIG_ARRAY", CONFIG_ARRAY),
    ("CONFIG_ACT_DEPTH", CONFIG_ACT_DEPTH),
    ("CONFIG_WGT_DEPTH", CONFIG_WGT_DEPTH),
    ("CONFIG_ACC_DEPTH", CONFIG_ACC_DEPTH),
    ("CONFIG_OUT_DEPTH", CONFIG_OUT_DEPTH),
];

/// Human-readable name of an error code.
pub fn error_name(code: u32) -> &'static str {
    match code {
        ERR_NONE => "none",
        ERR_ILLEGAL_INSN => "illegal instruction",
        ERR_SRAM_BOUNDS => "on-chip buffer row out of range",
        ERR_MISALIGNED => "misaligned DRAM access",
        ERR_PROG_ALIGN => "program base not aligned",
        _ => "unknown error",
    }
}

/// The config readback word of `CONFIG_ARRAY`.
pub fn config_array_word(cfg: &crate::HwConfig) -> u32 {
    cfg.rows | cfg.cols << 8 | cfg.bus_bytes << 16
}
