//! The whole compiler: ONNX bytes and calibration samples in, a bundle out.
//!
//! import → optimise → calibrate → partition into NPU and CPU stages → quantize → place in DRAM →
//! lower to instructions → predict cycles → bundle (see [`crate::partition`]).

use ndarray::ArrayD;
use sinter_isa::bundle::Bundle;
use sinter_isa::HwConfig;

use crate::error::{CompileError, Result};
use crate::onnx::import::{parse_model_with, ImportOptions};
use crate::passes;
use crate::quant::Calibration;

/// What to compile for.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub hw: HwConfig,
    /// Rows (samples) the NPU program processes per run.
    pub batch: usize,
    /// Model name recorded in the bundle.
    pub name: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            hw: HwConfig::DEFAULT,
            batch: 1,
            name: "model".into(),
        }
    }
}

/// Compiles an ONNX model.
pub fn compile(onnx: &[u8], calibration: &ArrayD<f32>, opts: &CompileOptions) -> Result<Bundle> {
    opts.hw
        .validate()
        .map_err(|e| CompileError::Quant(format!("hardware config: {e}")))?;
    if opts.batch == 0 {
        return Err(CompileError::Quant("batch must be at least 1".into()));
    }
    let samples = calibration.shape().first().copied().unwrap_or(0);
    let mut calib_graph = parse_model_with(
        onnx,
        &ImportOptions {
            batch: samples.max(1),
        },
    )?;
    passes::optimize(&mut calib_graph)?;
    let calib = Calibration::collect(&calib_graph, calibration)?;

    let mut graph = parse_model_with(onnx, &ImportOptions { batch: opts.batch })?;
    passes::optimize(&mut graph)?;
    crate::partition::lower(&graph, &calib, opts)
}
