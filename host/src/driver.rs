//! The driver: one NPU behind any [`Transport`].

use crate::error::{HostError, TransportError};
use crate::transport::{CycleSource, Transport};
use sinter_isa::bundle::Bundle;
use sinter_isa::insn::encode_program;
use sinter_isa::{regs, HwConfig, INSN_BYTES};
use std::time::{Duration, Instant};

/// Default wall-clock limit of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Cycles a simulated device advances between two status reads.
const POLL_CYCLES: u64 = 50_000;

/// Counters of one completed run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RunStats {
    /// Cycles from start to done.
    pub cycles: u64,
    /// Cycles in which the MAC array was busy.
    pub mac_active: u64,
    /// Instructions completed.
    pub insns: u32,
    /// `mac_active / cycles` (0 when no cycles were counted).
    pub utilization: f64,
    /// Whether `cycles` was measured or predicted by the timing model.
    pub cycle_source: CycleSource,
    /// Wall-clock time from start to done.
    #[serde(serialize_with = "ser_micros", rename = "wall_us")]
    pub wall: Duration,
}

impl RunStats {
    /// No run at all.
    pub fn empty(cycle_source: CycleSource) -> RunStats {
        RunStats {
            cycles: 0,
            mac_active: 0,
            insns: 0,
            utilization: 0.0,
            cycle_source,
            wall: Duration::ZERO,
        }
    }

    /// The statistics of two consecutive runs (NPU stages of one inference) together.
    pub fn merge(&self, next: &RunStats) -> RunStats {
        let cycles = self.cycles + next.cycles;
        let mac_active = self.mac_active + next.mac_active;
        RunStats {
            cycles,
            mac_active,
            insns: self.insns + next.insns,
            utilization: if cycles == 0 {
                0.0
            } else {
                mac_active as f64 / cycles as f64
            },
            cycle_source: self.cycle_source,
            wall: self.wall + next.wall,
        }
    }
}

fn ser_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

#[derive(Clone, Copy, Debug)]
struct Loaded {
    prog_base: u32,
    prog_len: u32,
}

/// Drives one NPU: checks bundles against the device, uploads them, starts runs and waits for
/// them with a wall-clock timeout.
pub struct Driver<T: Transport> {
    t: T,
    config: HwConfig,
    version: u32,
    timeout: Duration,
    loaded: Option<Loaded>,
}

impl<T: Transport> Driver<T> {
    /// Opens the device: reads its architecture version and hardware config.
    pub fn new(mut t: T) -> Result<Self, HostError> {
        let device = t.name().to_string();
        let terr = |source| HostError::Transport {
            device: device.clone(),
            source,
        };
        let version = t.read_reg(regs::VERSION).map_err(terr)?;
        let config = t.read_config().map_err(terr)?;
        config.validate().map_err(|e| HostError::BadDeviceConfig {
            device: device.clone(),
            msg: format!("{config}: {e}"),
        })?;
        tracing::debug!(device = %device, %config, version, "opened device");
        Ok(Driver {
            t,
            config,
            version,
            timeout: DEFAULT_TIMEOUT,
            loaded: None,
        })
    }

    /// Sets the wall-clock limit of one run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The hardware config the device reported.
    pub fn config(&self) -> HwConfig {
        self.config
    }

    /// The architecture version the device reported.
    pub fn arch_version(&self) -> u32 {
        self.version
    }

    pub fn device_name(&self) -> &str {
        self.t.name()
    }

    pub fn cycle_source(&self) -> CycleSource {
        self.t.cycle_source()
    }

    /// The transport underneath.
    pub fn transport(&mut self) -> &mut T {
        &mut self.t
    }

    fn terr(&self, source: TransportError) -> HostError {
        HostError::Transport {
            device: self.t.name().to_string(),
            source,
        }
    }

    /// Checks that `bundle` was made for this device, without touching the device.
    pub fn check(&self, bundle: &Bundle) -> Result<(), HostError> {
        if bundle.config != self.config {
            return Err(HostError::ConfigMismatch {
                device: self.t.name().to_string(),
                bundle: bundle.config,
                found: self.config,
            });
        }
        if bundle.arch_version != self.version {
            return Err(HostError::ArchMismatch {
                device: self.t.name().to_string(),
                bundle: bundle.arch_version,
                found: self.version,
            });
        }
        let need = bundle.manifest.memory.dram_bytes as u64;
        if need > self.t.mem_bytes() {
            return Err(HostError::DeviceMemory {
                device: self.t.name().to_string(),
                need,
                have: self.t.mem_bytes(),
            });
        }
        Ok(())
    }

    /// Checks `bundle` against the device and uploads its program and weights.
    pub fn load(&mut self, bundle: &Bundle) -> Result<(), HostError> {
        self.check(bundle)?;
        self.loaded = None;
        let m = &bundle.manifest.memory;
        let program = encode_program(&bundle.program);
        self.t
            .write_mem(m.program_base as u64, &program)
            .map_err(|e| self.terr(e))?;
        self.t
            .write_mem(m.weights_base as u64, bundle.weights())
            .map_err(|e| self.terr(e))?;
        self.t.describe_ops(m.program_base as u64, &bundle.ops);
        self.loaded = Some(Loaded {
            prog_base: m.program_base,
            prog_len: bundle.program.len() as u32,
        });
        tracing::debug!(
            device = %self.t.name(),
            model = %bundle.manifest.model_name,
            insns = bundle.program.len(),
            weight_bytes = bundle.weights().len(),
            "bundle uploaded"
        );
        Ok(())
    }

    /// Writes device memory (input tensors).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), HostError> {
        self.t.write_mem(addr, data).map_err(|e| self.terr(e))
    }

    /// Reads device memory (output tensors).
    pub fn read(&mut self, addr: u64, out: &mut [u8]) -> Result<(), HostError> {
        self.t.read_mem(addr, out).map_err(|e| self.terr(e))
    }

    fn reg(&mut self, offset: u32) -> Result<u32, HostError> {
        self.t.read_reg(offset).map_err(|e| self.terr(e))
    }

    fn reg64(&mut self, lo: u32, hi: u32) -> Result<u64, HostError> {
        let l = self.reg(lo)? as u64;
        let h = self.reg(hi)? as u64;
        Ok(l | h << 32)
    }

    /// Resets the device (aborting any run); the loaded program stays in device memory.
    pub fn reset(&mut self) -> Result<(), HostError> {
        self.t.reset().map_err(|e| self.terr(e))
    }

    /// Runs the loaded program once and waits for it.
    ///
    /// A run that does not finish within the timeout is [`HostError::DeviceHung`]; the device
    /// is reset before returning it. A run the device refuses is [`HostError::DeviceError`]
    /// with the error code and the index of the offending instruction.
    pub fn run(&mut self) -> Result<RunStats, HostError> {
        let Some(l) = self.loaded else {
            return Err(HostError::NotLoaded(self.t.name().to_string()));
        };
        self.run_range(0, l.prog_len)
    }

    /// Runs instructions `start..end` of the loaded program (one NPU stage) and waits for them;
    /// errors as [`Driver::run`], with `ERROR_PC` given as an index into the whole program.
    pub fn run_range(&mut self, start: u32, end: u32) -> Result<RunStats, HostError> {
        let Some(loaded) = self.loaded else {
            return Err(HostError::NotLoaded(self.t.name().to_string()));
        };
        if start > end || end > loaded.prog_len {
            return Err(HostError::Bundle(format!(
                "instructions {start}..{end} are outside the {}-instruction program",
                loaded.prog_len
            )));
        }
        let l = Loaded {
            prog_base: loaded.prog_base + start * INSN_BYTES as u32,
            prog_len: end - start,
        };
        let w = |d: &mut Self, off, v| d.t.write_reg(off, v).map_err(|e| d.terr(e));
        w(self, regs::PROG_BASE, l.prog_base)?;
        w(self, regs::PROG_LEN, l.prog_len)?;
        let started = Instant::now();
        w(self, regs::CONTROL, regs::CONTROL_START)?;
        let mut idle_polls = 0u32;
        let status = loop {
            let advanced = self.t.poll(POLL_CYCLES).map_err(|e| self.terr(e))?;
            let status = self.reg(regs::STATUS)?;
            if status & (regs::STATUS_DONE | regs::STATUS_ERROR) != 0
                && status & regs::STATUS_BUSY == 0
            {
                break status;
            }
            if started.elapsed() >= self.timeout {
                let cycles = self.reg64(regs::CYCLES_LO, regs::CYCLES_HI).unwrap_or(0);
                let insns = self.reg(regs::INSNS_DONE).unwrap_or(0);
                let diagnostic = self.t.diagnostic();
                tracing::warn!(device = %self.t.name(), cycles, insns, "device hung; resetting");
                self.reset()?;
                return Err(HostError::DeviceHung {
                    device: self.t.name().to_string(),
                    timeout: self.timeout,
                    cycles,
                    insns,
                    program_len: l.prog_len,
                    diagnostic,
                });
            }
            if advanced == 0 {
                // Nothing simulated (real hardware, or a stalled model): back off gently.
                idle_polls = idle_polls.saturating_add(1);
                let us = if idle_polls < 100 { 20 } else { 1000 };
                std::thread::sleep(Duration::from_micros(us));
            }
        };
        let wall = started.elapsed();
        if status & regs::STATUS_ERROR != 0 {
            let code = self.reg(regs::ERROR_CODE)?;
            let pc = self.reg(regs::ERROR_PC)? + start;
            return Err(HostError::DeviceError {
                device: self.t.name().to_string(),
                code,
                name: regs::error_name(code),
                pc,
                diagnostic: self.t.diagnostic(),
            });
        }
        let cycles = self.reg64(regs::CYCLES_LO, regs::CYCLES_HI)?;
        let mac_active = self.reg64(regs::MAC_ACTIVE_LO, regs::MAC_ACTIVE_HI)?;
        let insns = self.reg(regs::INSNS_DONE)?;
        Ok(RunStats {
            cycles,
            mac_active,
            insns,
            utilization: if cycles == 0 {
                0.0
            } else {
                mac_active as f64 / cycles as f64
            },
            cycle_source: self.t.cycle_source(),
            wall,
        })
    }
}
