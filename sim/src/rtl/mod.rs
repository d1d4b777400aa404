//! The cycle-accurate simulator: the NPU's own RTL (`hdl/rtl`), compiled by Verilator in
//! `build.rs` and clocked from Rust.
//!
//! Rust owns the clock, the register port and the DRAM behind the memory port. The DRAM model
//! answers read bursts in order after `TimingParams::mem_latency` cycles, one beat per cycle,
//! with any number of bursts in flight, and performs writes with byte strobes when they are
//! accepted. [`RtlSim::set_stress`] adds seeded random backpressure on both ports and gaps in the
//! read responses, to exercise every handshake of the RTL.
//!
//! Each instance owns its Verilator context, so instances are independent and tests run in
//! parallel. Models are built for the array sizes of `HwConfig::SMALL` and `HwConfig::DEFAULT`
//! (see [`RtlSim::built_configs`]), with FST waveform tracing compiled in: [`RtlSim::trace`]
//! starts a trace, and until then the model runs as fast as one built without it.

use crate::{Npu, SimError};
use sinter_isa::{regs, timing::TimingParams, HwConfig};
use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CString};
use std::path::Path;

/// The pins of the model for one cycle; the layout matches `SinterIo` in `csrc/sinter_shim.inc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Io {
    rst_n: u32,
    reg_wr_en: u32,
    reg_wr_addr: u32,
    reg_wr_data: u32,
    reg_rd_addr: u32,
    mem_rd_req_ready: u32,
    mem_rd_resp_valid: u32,
    mem_wr_ready: u32,
    mem_rd_resp_data: [u32; 8],
    reg_rd_data: u32,
    mem_rd_req_valid: u32,
    mem_rd_req_addr: u32,
    mem_rd_req_len: u32,
    mem_wr_valid: u32,
    mem_wr_addr: u32,
    mem_wr_strb: u32,
    mem_wr_data: [u32; 8],
    busy: u32,
    busy_after: u32,
}

/// The C entry points of one compiled model.
pub(crate) struct ModelFns {
    rows: u32,
    cols: u32,
    /// Verilated with `--trace-fst`.
    traced: bool,
    new: unsafe extern "C" fn() -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    cycle: unsafe extern "C" fn(*mut c_void, *mut Io),
    settle: unsafe extern "C" fn(*mut c_void, *mut Io),
    trace: unsafe extern "C" fn(*mut c_void, *const c_char) -> i32,
    trace_close: unsafe extern "C" fn(*mut c_void),
}

include!(concat!(env!("OUT_DIR"), "/rtl_models.rs"));

/// A read burst accepted by the DRAM model.
#[derive(Clone, Copy, Debug)]
struct Burst {
    addr: u64,
    beats: u32,
    sent: u32,
    first_beat_at: u64,
}

/// xorshift64*: a tiny deterministic generator for the stress mode.
#[derive(Clone, Copy, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// True with probability `num / 8`.
    fn chance(&mut self, num: u64) -> bool {
        self.next() >> 61 < num
    }
}

/// The NPU RTL with its DRAM. See the module documentation.
pub struct RtlSim {
    fns: &'static ModelFns,
    model: *mut c_void,
    cfg: HwConfig,
    io: Io,
    dram: Vec<u8>,
    bursts: VecDeque<Burst>,
    latency: u64,
    cycle: u64,
    busy: bool,
    stress: Option<Rng>,
    fault: Option<SimError>,
}

// SAFETY: the model is only touched through `&mut self`, and a Verilated model with its own
// context has no affinity to the thread that created it.
unsafe impl Send for RtlSim {}

impl RtlSim {
    /// Instantiates the model for `cfg` with `dram_bytes` of zeroed DRAM, and resets it.
    pub fn new(cfg: HwConfig, dram_bytes: u64) -> Result<Self, SimError> {
        let no_model = || {
            let built: Vec<String> = Self::built_configs()
                .iter()
                .map(|c| c.to_string())
                .collect();
            SimError::NoRtlModel(cfg.to_string(), built.join("; "))
        };
        let fns = MODELS
            .iter()
            .find(|m| m.rows == cfg.rows && m.cols == cfg.cols)
            .ok_or_else(no_model)?;
        let dram_len = usize::try_from(dram_bytes).map_err(|_| {
            SimError::Other(format!("{dram_bytes} bytes of DRAM do not fit memory"))
        })?;
        // SAFETY: returns a fresh model owned by this struct and freed in Drop.
        let model = unsafe { (fns.new)() };
        if model.is_null() {
            return Err(SimError::Other("Verilator model allocation failed".into()));
        }
        let mut sim = RtlSim {
            fns,
            model,
            cfg,
            io: Io::default(),
            dram: vec![0; dram_len],
            bursts: VecDeque::new(),
            latency: TimingParams::default().mem_latency as u64,
            cycle: 0,
            busy: false,
            stress: None,
            fault: None,
        };
        sim.reset();
        // The model's buffer depths and bus width are RTL parameters: make sure they are the
        // ones asked for.
        let want = [
            (regs::CONFIG_ARRAY, regs::config_array_word(&cfg)),
            (regs::CONFIG_ACT_DEPTH, cfg.act_depth),
            (regs::CONFIG_WGT_DEPTH, cfg.wgt_depth),
            (regs::CONFIG_ACC_DEPTH, cfg.acc_depth),
            (regs::CONFIG_OUT_DEPTH, cfg.out_depth),
        ];
        for (reg, value) in want {
            if sim.read_reg(reg) != value {
                return Err(no_model());
            }
        }
        Ok(sim)
    }

    /// The hardware configurations a model was built for.
    pub fn built_configs() -> Vec<HwConfig> {
        MODELS
            .iter()
            .map(|m| HwConfig::with_array(m.rows, m.cols))
            .collect()
    }

    /// Clock cycles simulated since creation.
    pub fn cycles(&self) -> u64 {
        self.cycle
    }

    /// Enables (`Some(seed)`) or disables random backpressure on the memory ports and random
    /// gaps between read response beats.
    pub fn set_stress(&mut self, seed: Option<u64>) {
        self.stress = seed.map(|s| Rng(s | 1));
    }

    /// Sets the read latency of the DRAM model in cycles (default `TimingParams::mem_latency`).
    pub fn set_mem_latency(&mut self, cycles: u32) {
        self.latency = cycles.max(1) as u64;
    }

    /// Whether the NPU is running or still has memory reads outstanding.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// The first DRAM access outside device memory made by the NPU since the last call, if any.
    /// Such reads return zeros and such writes are dropped; [`Npu::advance`] stops at them.
    pub fn take_fault(&mut self) -> Option<SimError> {
        self.fault.take()
    }

    /// Like [`Npu::advance`], but returns the DRAM fault if one stopped the run.
    pub fn run(&mut self, max_cycles: u64) -> Result<u64, SimError> {
        let n = self.advance(max_cycles);
        match self.fault.take() {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Points PROG_BASE/PROG_LEN at a program and starts it.
    pub fn start(&mut self, prog_base: u32, prog_len: u32) {
        self.write_reg(regs::PROG_BASE, prog_base);
        self.write_reg(regs::PROG_LEN, prog_len);
        self.write_reg(regs::CONTROL, regs::CONTROL_START);
    }

    /// Dumps every following cycle to an FST waveform at `path` (two time steps per clock
    /// cycle, clock low then high; the whole design hierarchy under `npu`). The file is
    /// complete once [`RtlSim::finish_trace`] is called or the simulator is dropped. A trace
    /// already running is finished first.
    pub fn trace(&mut self, path: &Path) -> Result<(), SimError> {
        if !self.fns.traced {
            return Err(SimError::Other(format!(
                "the {}x{} RTL model was built without waveform tracing",
                self.cfg.rows, self.cfg.cols
            )));
        }
        let c = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| SimError::Other("trace path contains NUL".into()))?;
        // SAFETY: valid model and NUL-terminated path.
        match unsafe { (self.fns.trace)(self.model, c.as_ptr()) } {
            0 => Ok(()),
            _ => Err(SimError::Other(format!(
                "cannot write the waveform to {}",
                path.display()
            ))),
        }
    }

    /// Finishes the waveform started by [`RtlSim::trace`], if any; the simulation goes on
    /// untraced.
    pub fn finish_trace(&mut self) {
        // SAFETY: valid model.
        unsafe { (self.fns.trace_close)(self.model) };
    }

    /// Holds reset for a few cycles, dropping any read still in flight in the DRAM model.
    fn reset(&mut self) {
        self.io.rst_n = 0;
        for _ in 0..4 {
            self.step();
        }
        self.bursts.clear();
        self.io.rst_n = 1;
        self.settle();
        self.busy = self.io.busy_after != 0;
    }

    fn settle(&mut self) {
        // SAFETY: valid model; `io` has the layout the shim expects.
        unsafe { (self.fns.settle)(self.model, &mut self.io) };
    }

    /// One clock cycle of the NPU and the DRAM model.
    fn step(&mut self) {
        let bus = self.cfg.bus_bytes as usize;
        let (rd_ready, wr_ready, gap) = match &mut self.stress {
            Some(r) => (r.chance(6), r.chance(6), r.chance(2)),
            None => (true, true, false),
        };
        self.io.mem_rd_req_ready = rd_ready as u32;
        self.io.mem_wr_ready = wr_ready as u32;

        // The response beat of this cycle, if the oldest burst has one due.
        self.io.mem_rd_resp_valid = 0;
        if let Some(b) = self.bursts.front_mut() {
            if b.first_beat_at <= self.cycle && !gap {
                let addr = b.addr + b.sent as u64 * bus as u64;
                b.sent += 1;
                if b.sent == b.beats {
                    self.bursts.pop_front();
                }
                let mut beat = [0u8; 32];
                match self.range(addr, bus as u64) {
                    Ok(r) => beat[..bus].copy_from_slice(&self.dram[r]),
                    Err(e) => {
                        self.fault.get_or_insert(e);
                    }
                }
                for (w, chunk) in self.io.mem_rd_resp_data.iter_mut().zip(beat.chunks(4)) {
                    *w = u32::from_le_bytes(chunk.try_into().unwrap());
                }
                self.io.mem_rd_resp_valid = 1;
            }
        }

        // SAFETY: valid model; `io` has the layout the shim expects.
        unsafe { (self.fns.cycle)(self.model, &mut self.io) };

        // Handshakes the clock edge just took.
        if self.io.mem_rd_req_valid != 0 && rd_ready {
            let beats = self.io.mem_rd_req_len;
            if beats == 0 {
                self.fault
                    .get_or_insert(SimError::Other("read burst of zero beats".into()));
            } else {
                // Requests accepted back to back queue behind each other: a burst's first beat
                // comes `latency` cycles after its request, but never before the previous one
                // has finished.
                self.bursts.push_back(Burst {
                    addr: self.io.mem_rd_req_addr as u64,
                    beats,
                    sent: 0,
                    first_beat_at: self.cycle + self.latency,
                });
            }
        }
        if self.io.mem_wr_valid != 0 && wr_ready {
            let addr = self.io.mem_wr_addr as u64;
            match self.range(addr, bus as u64) {
                Ok(r) => {
                    let data = self.io.mem_wr_data;
                    let strb = self.io.mem_wr_strb;
                    for (k, byte) in self.dram[r].iter_mut().enumerate() {
                        if strb >> k & 1 != 0 {
                            *byte = (data[k / 4] >> (8 * (k % 4))) as u8;
                        }
                    }
                }
                Err(e) => {
                    self.fault.get_or_insert(e);
                }
            }
        }
        self.io.reg_wr_en = 0;
        self.cycle += 1;
        self.busy = self.io.busy_after != 0;
    }

    fn range(&self, addr: u64, len: u64) -> Result<std::ops::Range<usize>, SimError> {
        let size = self.dram.len() as u64;
        match addr.checked_add(len) {
            Some(end) if end <= size => Ok(addr as usize..end as usize),
            _ => Err(SimError::DramRange { addr, len, size }),
        }
    }
}

impl Drop for RtlSim {
    fn drop(&mut self) {
        // SAFETY: the model was created by `new` of the same table entry and is freed once.
        unsafe { (self.fns.free)(self.model) };
    }
}

impl Npu for RtlSim {
    fn config(&self) -> HwConfig {
        self.cfg
    }

    fn dram_bytes(&self) -> u64 {
        self.dram.len() as u64
    }

    /// Takes one clock cycle (the register port is synchronous).
    fn write_reg(&mut self, offset: u32, value: u32) {
        self.io.reg_wr_en = 1;
        self.io.reg_wr_addr = offset & 0xff;
        self.io.reg_wr_data = value;
        self.step();
    }

    /// Combinational: takes no clock cycle.
    fn read_reg(&mut self, offset: u32) -> u32 {
        self.io.reg_rd_addr = offset & 0xff;
        self.settle();
        self.io.reg_rd_data
    }

    fn write_dram(&mut self, addr: u64, data: &[u8]) -> Result<(), SimError> {
        let r = self.range(addr, data.len() as u64)?;
        self.dram[r].copy_from_slice(data);
        Ok(())
    }

    fn read_dram(&mut self, addr: u64, out: &mut [u8]) -> Result<(), SimError> {
        let r = self.range(addr, out.len() as u64)?;
        out.copy_from_slice(&self.dram[r]);
        Ok(())
    }

    /// Clocks until the NPU is idle (program finished, or stopped by an error, and no memory
    /// read outstanding), a DRAM fault occurs, or `max_cycles` have passed.
    fn advance(&mut self, max_cycles: u64) -> u64 {
        let mut n = 0;
        while n < max_cycles && self.busy && self.fault.is_none() {
            self.step();
            n += 1;
        }
        n
    }
}
