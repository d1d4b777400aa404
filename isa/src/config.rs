//! The hardware configuration shared by the RTL, both simulators, the compiler and bundles.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Sizes of one NPU instance. Every consumer derives its numbers from this one struct: the RTL
/// gets them as parameters, the compiler tiles to them, a bundle records the config it was made
/// for and the driver refuses to load it onto a device with another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HwConfig {
    /// MAC array rows: the reduction (input-channel) lanes; one activation-buffer row holds this
    /// many int8 values.
    pub rows: u32,
    /// MAC array columns: the output-channel lanes; one accumulator or output row holds this many.
    pub cols: u32,
    /// Activation buffer depth in rows of `rows` int8 values.
    pub act_depth: u32,
    /// Weight buffer depth in tiles of `rows × cols` int8 values.
    pub wgt_depth: u32,
    /// Accumulator buffer depth in rows of `cols` int32 values.
    pub acc_depth: u32,
    /// Output buffer depth in rows of `cols` int8 values.
    pub out_depth: u32,
    /// Width of the memory port in bytes (one beat).
    pub bus_bytes: u32,
}

/// Allowed array dimensions: powers of two so DMA elements never straddle beats unevenly.
const DIMS: [u32; 5] = [4, 8, 16, 32, 64];
/// Allowed bus widths in bytes: an instruction (32 bytes) is a whole number of beats.
const BUS_WIDTHS: [u32; 3] = [8, 16, 32];

impl HwConfig {
    /// A configuration with the default buffer sizes for a `rows × cols` array.
    ///
    /// The buffers scale with the array so that a double-buffered tile of 64 output rows fits:
    /// activation and output buffers 2048 rows, weights 256 tiles, accumulators 1024 rows.
    pub const fn with_array(rows: u32, cols: u32) -> Self {
        HwConfig {
            rows,
            cols,
            act_depth: 2048,
            wgt_depth: 256,
            acc_depth: 1024,
            out_depth: 1024,
            bus_bytes: 32,
        }
    }

    /// The default 16×16 NPU.
    pub const DEFAULT: HwConfig = HwConfig::with_array(16, 16);
    /// The small 8×8 NPU used by fast tests.
    pub const SMALL: HwConfig = HwConfig::with_array(8, 8);

    /// Checks every rule a configuration must obey.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !DIMS.contains(&self.rows) || !DIMS.contains(&self.cols) {
            return Err(ConfigError::ArrayDims(self.rows, self.cols));
        }
        if !BUS_WIDTHS.contains(&self.bus_bytes) {
            return Err(ConfigError::BusWidth(self.bus_bytes));
        }
        for (name, depth) in [
            ("act_depth", self.act_depth),
            ("wgt_depth", self.wgt_depth),
            ("acc_depth", self.acc_depth),
            ("out_depth", self.out_depth),
        ] {
            if !depth.is_power_of_two() || !(4..=1 << 16).contains(&depth) {
                return Err(ConfigError::Depth(name, depth));
            }
        }
        if self.acc_depth < 8 {
            return Err(ConfigError::Depth("acc_depth", self.acc_depth));
        }
        Ok(())
    }

    /// Bytes of one row (DMA element) of `buffer`.
    pub const fn element_bytes(&self, buffer: crate::Buffer) -> u32 {
        match buffer {
            crate::Buffer::Act => self.rows,
            crate::Buffer::Wgt => self.rows * self.cols,
            crate::Buffer::Acc => self.cols * 4,
            crate::Buffer::Out => self.cols,
        }
    }

    /// Number of rows (DMA elements) `buffer` holds.
    pub const fn depth(&self, buffer: crate::Buffer) -> u32 {
        match buffer {
            crate::Buffer::Act => self.act_depth,
            crate::Buffer::Wgt => self.wgt_depth,
            crate::Buffer::Acc => self.acc_depth,
            crate::Buffer::Out => self.out_depth,
        }
    }

    /// The DRAM alignment every DMA address and stride of `buffer` must keep: an element never
    /// straddles beats unevenly.
    pub const fn dram_alignment(&self, buffer: crate::Buffer) -> u32 {
        let e = self.element_bytes(buffer);
        if e < self.bus_bytes {
            e
        } else {
            self.bus_bytes
        }
    }

    /// Multiply-accumulates the array performs per active cycle.
    pub const fn macs_per_cycle(&self) -> u64 {
        self.rows as u64 * self.cols as u64
    }
}

impl Default for HwConfig {
    fn default() -> Self {
        HwConfig::DEFAULT
    }
}

impl fmt::Display for HwConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{} (act {} rows, wgt {} tiles, acc {} rows, out {} rows, bus {} B)",
            self.rows,
            self.cols,
            self.act_depth,
            self.wgt_depth,
            self.acc_depth,
            self.out_depth,
            self.bus_bytes
        )
    }
}

/// Parses `ROWSxCOLS` (e.g. `16x16`) into the config with default buffer sizes.
impl FromStr for HwConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Parse(s.to_string());
        let (r, c) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let rows = r.parse().map_err(|_| bad())?;
        let cols = c.parse().map_err(|_| bad())?;
        let cfg = HwConfig::with_array(rows, cols);
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("array must be R×C with R and C in {DIMS:?}, got {0}×{1}")]
    ArrayDims(u32, u32),
    #[error("bus width must be one of {BUS_WIDTHS:?} bytes, got {0}")]
    BusWidth(u32),
    #[error("{0} must be a power of two in 4..=65536, got {1}")]
    Depth(&'static str, u32),
    #[error("cannot parse hardware config '{0}': expected ROWSxCOLS such as 16x16")]
    Parse(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        HwConfig::DEFAULT.validate().unwrap();
        HwConfig::SMALL.validate().unwrap();
    }

    #[test]
    fn parses_array_size() {
        assert_eq!("8x8".parse::<HwConfig>().unwrap(), HwConfig::SMALL);
        assert_eq!("16X16".parse::<HwConfig>().unwrap(), HwConfig::DEFAULT);
        assert!(matches!(
            "12x8".parse::<HwConfig>(),
            Err(ConfigError::ArrayDims(12, 8))
        ));
        assert!(matches!(
            "16".parse::<HwConfig>(),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn alignment_never_exceeds_bus() {
        let c = HwConfig::DEFAULT;
        assert_eq!(c.dram_alignment(crate::Buffer::Act), 16);
        assert_eq!(c.dram_alignment(crate::Buffer::Wgt), 32);
        assert_eq!(c.dram_alignment(crate::Buffer::Acc), 32);
    }
}
