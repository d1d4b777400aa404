//! `sinter compile`.

use anyhow::Context;
use ndarray::ArrayD;
use sinter_isa::bundle::Bundle;
use sinter_isa::HwConfig;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Calibration inputs (.npy, float32 or float64, batch axis first).
    #[arg(long)]
    pub calib: PathBuf,
    /// Where to write the bundle.
    #[arg(short, long)]
    pub output: PathBuf,
    /// NPU array size, ROWSxCOLS.
    #[arg(long, default_value = "16x16", value_parser = crate::parse_hw)]
    pub hw: HwConfig,
    /// Rows the compiled program processes per run.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Model name recorded in the bundle (default: the file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The compiler entry point.
pub fn compile_model(
    onnx: &[u8],
    calibration: &ArrayD<f32>,
    hw: HwConfig,
    batch: usize,
    name: String,
) -> anyhow::Result<Bundle> {
    let opts = sinter_compiler::compile::CompileOptions { hw, batch, name };
    Ok(sinter_compiler::compile::compile(onnx, calibration, &opts)?)
}

pub fn main(a: CompileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let onnx =
        std::fs::read(&a.model).with_context(|| format!("cannot read {}", a.model.display()))?;
    let calib = crate::npy::read_f32(&a.calib)?;
    let name = a.name.clone().unwrap_or_else(|| {
        a.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let started = std::time::Instant::now();
    let bundle = compile_model(&onnx, &calib, a.hw, a.batch, name)
        .with_context(|| format!("cannot compile {}", a.model.display()))?;
    bundle
        .save(&a.output)
        .with_context(|| format!("cannot save {}", a.output.display()))?;
    tracing::info!(
        output = %a.output.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "bundle written"
    );
    if a.json {
        let mut v = crate::report::summary_json(&bundle);
        v["bundle"] = a.output.display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", crate::report::layer_report(&bundle));
        println!("wrote {}", a.output.display());
    }
    Ok(())
}
