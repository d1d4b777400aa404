//! Transports: how the driver reaches a device's registers and memory.
//!
//! The driver is written once against [`Transport`]; a transport is the thin layer beneath it —
//! a simulator in this process ([`SimTransport`] over the functional model or the Verilator RTL)
//! or, later, a PCIe card (registers through a memory-mapped BAR, memory through DMA channels).

use crate::error::TransportError;
use sinter_isa::{regs, HwConfig};
use sinter_sim::Npu;

/// Where the cycle counter of a device comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleSource {
    /// The device counts real (or cycle-accurately simulated) clock cycles.
    Measured,
    /// The device reports the timing model's prediction (the functional model).
    Predicted,
}

impl CycleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleSource::Measured => "measured",
            CycleSource::Predicted => "predicted",
        }
    }
}

/// Register and memory access to one NPU.
pub trait Transport: Send {
    /// A short human-readable name of the device (for logs and errors).
    fn name(&self) -> &str;
    /// Reads a 32-bit register at byte offset `offset` (see `sinter_isa::regs`).
    fn read_reg(&mut self, offset: u32) -> Result<u32, TransportError>;
    /// Writes a 32-bit register.
    fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), TransportError>;
    /// Copies `data` into device memory at byte address `addr`.
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), TransportError>;
    /// Copies device memory at `addr` into `out`.
    fn read_mem(&mut self, addr: u64, out: &mut [u8]) -> Result<(), TransportError>;
    /// Bytes of device memory.
    fn mem_bytes(&self) -> u64;
    /// Lets the device make progress for at most `max_cycles` cycles; returns the cycles it
    /// advanced. A simulated device only runs inside this call; real hardware runs on its own
    /// and returns 0 here (the driver then sleeps briefly between status reads).
    fn poll(&mut self, max_cycles: u64) -> Result<u64, TransportError>;
    /// Brings the device back to idle, aborting any run. Device memory is kept.
    fn reset(&mut self) -> Result<(), TransportError> {
        self.write_reg(regs::CONTROL, regs::CONTROL_RESET)
    }
    /// Whether the device's cycle counters are measured or predicted.
    fn cycle_source(&self) -> CycleSource;
    /// Passes on what instruction ranges of the program at `program_base` compute (see
    /// [`sinter_sim::Npu::describe_ops`]); devices that only execute instructions ignore it.
    fn describe_ops(&mut self, program_base: u64, ops: &[sinter_isa::window::WindowOp]) {
        let _ = (program_base, ops);
    }
    /// Extra detail on why the last run failed or hung, when the device can tell.
    fn diagnostic(&mut self) -> Option<String> {
        None
    }

    /// The hardware configuration the device reports in its CONFIG registers.
    fn read_config(&mut self) -> Result<HwConfig, TransportError> {
        let array = self.read_reg(regs::CONFIG_ARRAY)?;
        Ok(HwConfig {
            rows: array & 0xFF,
            cols: (array >> 8) & 0xFF,
            bus_bytes: (array >> 16) & 0xFF,
            act_depth: self.read_reg(regs::CONFIG_ACT_DEPTH)?,
            wgt_depth: self.read_reg(regs::CONFIG_WGT_DEPTH)?,
            acc_depth: self.read_reg(regs::CONFIG_ACC_DEPTH)?,
            out_depth: self.read_reg(regs::CONFIG_OUT_DEPTH)?,
        })
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn read_reg(&mut self, offset: u32) -> Result<u32, TransportError> {
        (**self).read_reg(offset)
    }
    fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), TransportError> {
        (**self).write_reg(offset, value)
    }
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), TransportError> {
        (**self).write_mem(addr, data)
    }
    fn read_mem(&mut self, addr: u64, out: &mut [u8]) -> Result<(), TransportError> {
        (**self).read_mem(addr, out)
    }
    fn mem_bytes(&self) -> u64 {
        (**self).mem_bytes()
    }
    fn poll(&mut self, max_cycles: u64) -> Result<u64, TransportError> {
        (**self).poll(max_cycles)
    }
    fn reset(&mut self) -> Result<(), TransportError> {
        (**self).reset()
    }
    fn cycle_source(&self) -> CycleSource {
        (**self).cycle_source()
    }
    fn diagnostic(&mut self) -> Option<String> {
        (**self).diagnostic()
    }
    fn describe_ops(&mut self, program_base: u64, ops: &[sinter_isa::window::WindowOp]) {
        (**self).describe_ops(program_base, ops)
    }
    fn read_config(&mut self) -> Result<HwConfig, TransportError> {
        (**self).read_config()
    }
}

/// A simulated NPU in this process: the functional model or the RTL.
pub struct SimTransport<N: Npu> {
    name: String,
    npu: N,
    cycles: CycleSource,
    diag: fn(&N) -> Option<String>,
}

impl<N: Npu> SimTransport<N> {
    /// Wraps a simulator; `cycles` says whether its counters are measured or predicted.
    pub fn new(name: impl Into<String>, npu: N, cycles: CycleSource) -> Self {
        SimTransport {
            name: name.into(),
            npu,
            cycles,
            diag: |_| None,
        }
    }

    /// Sets how to ask the simulator why a run failed.
    pub fn with_diagnostic(mut self, diag: fn(&N) -> Option<String>) -> Self {
        self.diag = diag;
        self
    }

    /// The simulator itself.
    pub fn npu(&mut self) -> &mut N {
        &mut self.npu
    }
}

/// The functional model as a device.
pub type FuncTransport = SimTransport<sinter_sim::func::FuncSim>;
/// The Verilator RTL as a device.
pub type RtlTransport = SimTransport<sinter_sim::rtl::RtlSim>;

impl FuncTransport {
    /// A functional-model device of config `cfg` with `dram_bytes` of memory.
    pub fn func(cfg: HwConfig, dram_bytes: u64) -> Result<FuncTransport, TransportError> {
        let npu = sinter_sim::func::FuncSim::new(cfg, dram_bytes);
        Ok(SimTransport::new(
            format!("func {}x{}", cfg.rows, cfg.cols),
            npu,
            CycleSource::Predicted,
        )
        .with_diagnostic(|s| s.diagnostic()))
    }
}

impl RtlTransport {
    /// An RTL device of config `cfg`; fails when no RTL model was built for that config.
    pub fn rtl(cfg: HwConfig, dram_bytes: u64) -> Result<RtlTransport, TransportError> {
        let npu = sinter_sim::rtl::RtlSim::new(cfg, dram_bytes)?;
        Ok(SimTransport::new(
            format!("rtl {}x{}", cfg.rows, cfg.cols),
            npu,
            CycleSource::Measured,
        ))
    }

    /// An RTL device of config `cfg` that writes an FST waveform to `path` from its reset on.
    pub fn rtl_traced(
        cfg: HwConfig,
        dram_bytes: u64,
        path: &std::path::Path,
    ) -> Result<RtlTransport, TransportError> {
        let mut npu = sinter_sim::rtl::RtlSim::new(cfg, dram_bytes)?;
        npu.trace(path)?;
        Ok(SimTransport::new(
            format!("rtl {}x{}", cfg.rows, cfg.cols),
            npu,
            CycleSource::Measured,
        ))
    }
}

impl<N: Npu> Transport for SimTransport<N> {
    fn name(&self) -> &str {
        &self.name
    }
    fn read_reg(&mut self, offset: u32) -> Result<u32, TransportError> {
        Ok(self.npu.read_reg(offset))
    }
    fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), TransportError> {
        self.npu.write_reg(offset, value);
        Ok(())
    }
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), TransportError> {
        Ok(self.npu.write_dram(addr, data)?)
    }
    fn read_mem(&mut self, addr: u64, out: &mut [u8]) -> Result<(), TransportError> {
        Ok(self.npu.read_dram(addr, out)?)
    }
    fn mem_bytes(&self) -> u64 {
        self.npu.dram_bytes()
    }
    fn poll(&mut self, max_cycles: u64) -> Result<u64, TransportError> {
        Ok(self.npu.advance(max_cycles))
    }
    fn cycle_source(&self) -> CycleSource {
        self.cycles
    }
    fn diagnostic(&mut self) -> Option<String> {
        (self.diag)(&self.npu)
    }
    fn describe_ops(&mut self, program_base: u64, ops: &[sinter_isa::window::WindowOp]) {
        self.npu.describe_ops(program_base, ops);
    }
}

/// The kinds of device this build can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The functional model (fast; cycles are predicted).
    Func,
    /// The Verilator RTL (cycle-accurate; slower).
    Rtl,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Func => "func",
            DeviceKind::Rtl => "rtl",
        }
    }

    /// Opens a device of this kind with config `cfg` and `dram_bytes` of memory.
    pub fn open(
        self,
        cfg: HwConfig,
        dram_bytes: u64,
    ) -> Result<Box<dyn Transport>, TransportError> {
        self.open_traced(cfg, dram_bytes, None)
    }

    /// Like [`DeviceKind::open`], and with `trace` writes an FST waveform of everything the
    /// device does from its reset on (RTL only: the functional model has no signals). The file
    /// is complete when the device is dropped.
    pub fn open_traced(
        self,
        cfg: HwConfig,
        dram_bytes: u64,
        trace: Option<&std::path::Path>,
    ) -> Result<Box<dyn Transport>, TransportError> {
        Ok(match (self, trace) {
            (DeviceKind::Func, None) => Box::new(FuncTransport::func(cfg, dram_bytes)?),
            (DeviceKind::Func, Some(_)) => {
                return Err(TransportError::Other(
                    "the functional model has no signals to trace: waveforms need the rtl device"
                        .into(),
                ))
            }
            (DeviceKind::Rtl, None) => Box::new(RtlTransport::rtl(cfg, dram_bytes)?),
            (DeviceKind::Rtl, Some(path)) => {
                Box::new(RtlTransport::rtl_traced(cfg, dram_bytes, path)?)
            }
        })
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "func" | "functional" => Ok(DeviceKind::Func),
            "rtl" | "verilator" => Ok(DeviceKind::Rtl),
            _ => Err(format!("unknown device '{s}': expected func or rtl")),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
