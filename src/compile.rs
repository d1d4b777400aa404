//! `sinter compile`.

use crate::ctx::Ctx;
use crate::interrupt;
use crate::progress::Spinner;
use crate::resolve::{BuildOptions, Target};
use crate::workspace::store::sha256_hex;
use crate::workspace::{LogLevel, RunInputs, RunKind, Workspace};
use anyhow::Context;
use ndarray::ArrayD;
use serde_json::json;
use sinter_isa::bundle::Bundle;
use sinter_isa::HwConfig;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The ONNX file, or a registered model: NAME, NAME:VERSION or NAME@ALIAS (an existing path
    /// wins).
    pub model: String,
    /// Calibration inputs (.npy, float32 or float64, batch axis first). Optional for a model
    /// reference that was compiled before: its recorded calibration data is used.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Where to write the bundle. Required for a file; for a model reference the bundle is kept
    /// in the workspace and this writes a copy.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// NPU array size, ROWSxCOLS.
    #[arg(long, default_value = "16x16", value_parser = crate::parse_hw)]
    pub hw: HwConfig,
    /// Rows the compiled program processes per run.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Model name recorded in the bundle (default: the registered name, or the file stem).
    #[arg(long)]
    pub name: Option<String>,
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

pub fn main(a: CompileArgs, ctx: &Ctx) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    match Target::parse(&a.model)? {
        Target::File(path) => from_file(&a, &path, ctx),
        Target::Model(r) => {
            let ws = ctx.open()?;
            let spinner = Spinner::new(ctx.json);
            let opts = BuildOptions {
                hw: a.hw,
                batch: a.batch,
                name: a.name.clone(),
            };
            let res =
                crate::resolve::compile_ref(&ws, &r, &opts, a.calib.as_deref(), true, &spinner)?;
            spinner.done();
            if let Some(out) = &a.output {
                std::fs::copy(&res.bundle_path, out)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            let what = format!("{}:{}", res.version.name, res.version.version);
            if ctx.json {
                let mut v = crate::report::summary_json(&res.bundle);
                v["model"] = what.into();
                v["bundle"] = a.output.as_ref().map(|p| p.display().to_string()).into();
                v["bundle_hash"] = res.bundle_hash.clone().into();
                v["bundle_path"] = res.bundle_path.display().to_string().into();
                v["reused"] = res.reused.into();
                v["compiled_by"] = res.compiled_by.clone().into();
                v["run_id"] = res.run_id.clone().into();
                v["compile_ms"] = res.compile_ms.into();
                return ctx.print_json(&v);
            }
            print!("{}", crate::report::layer_report(&res.bundle));
            if res.reused {
                println!(
                    "reused bundle {} of {what} (compiled by run {}); recorded as run {}",
                    crate::table::short(&res.bundle_hash),
                    res.compiled_by.as_deref().unwrap_or("-"),
                    res.run_id.as_deref().unwrap_or("-"),
                );
            } else {
                println!(
                    "compiled {what} in {} ms: bundle {} (run {})",
                    res.compile_ms,
                    crate::table::short(&res.bundle_hash),
                    res.run_id.as_deref().unwrap_or("-"),
                );
            }
            if let Some(out) = &a.output {
                println!("wrote {}", out.display());
            }
            Ok(())
        }
    }
}

/// Compiles a file. Works without a workspace; when one exists the compile is recorded as a
/// run (with the bundle as its artifact), but the bundle is not linked to any registered model.
fn from_file(a: &CompileArgs, model: &Path, ctx: &Ctx) -> anyhow::Result<()> {
    let calib_path = a
        .calib
        .as_ref()
        .context("compiling a file needs --calib CALIB.npy")?;
    let output = a
        .output
        .as_ref()
        .context("compiling a file needs -o OUTPUT.sntr (or register it and compile by name)")?;
    let onnx = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
    let calib_bytes = std::fs::read(calib_path)
        .with_context(|| format!("cannot read {}", calib_path.display()))?;
    let calib = crate::npy::read_f32(calib_path)?;
    let name = a.name.clone().unwrap_or_else(|| {
        model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let ws: Option<Workspace> = ctx.open_if_present();
    let run = match &ws {
        Some(ws) => {
            let inputs = RunInputs {
                calibration_hash: Some(sha256_hex(&calib_bytes)),
                options: json!({
                    "source": model.display().to_string(),
                    "source_sha256": sha256_hex(&onnx),
                    "hw": a.hw.to_string(),
                    "batch": a.batch,
                    "name": name,
                    "calibration": calib_path.display().to_string(),
                }),
                ..RunInputs::default()
            };
            Some(ws.start_run(
                RunKind::Compile,
                [
                    ("model", model.display().to_string()),
                    ("hw", format!("{}x{}", a.hw.rows, a.hw.cols)),
                    ("batch", a.batch.to_string()),
                    ("calibration", calib_path.display().to_string()),
                ],
                inputs,
            )?)
        }
        None => None,
    };
    let _tracked = run.as_ref().map(interrupt::track);
    let spinner = Spinner::new(ctx.json);
    spinner.stage(format!(
        "compiling {} (calibrate, quantize, lower)",
        model.display()
    ));
    let started = Instant::now();
    let result = compile_model(&onnx, &calib, a.hw, a.batch, name)
        .with_context(|| format!("cannot compile {}", model.display()))
        .and_then(|bundle| {
            spinner.stage(format!("writing {}", output.display()));
            bundle
                .save(output)
                .with_context(|| format!("cannot save {}", output.display()))?;
            Ok(bundle)
        });
    spinner.done();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let bundle = match (result, run) {
        (Ok(b), Some(run)) => {
            let hash = run.artifact_file("bundle", output)?;
            let m = &b.manifest;
            run.metric("predicted_cycles", m.predicted_cycles as f64, 0)?;
            run.metric("npu_macs", m.npu_macs as f64, 0)?;
            run.metric("cpu_macs", m.cpu_macs as f64, 0)?;
            run.metric("compile_time_ms", elapsed_ms as f64, 0)?;
            let report = serde_json::to_vec_pretty(&crate::report::summary_json(&b))
                .context("cannot encode the layer report")?;
            run.artifact("report.json", &report)?;
            run.log(
                LogLevel::Info,
                &format!(
                    "compiled in {elapsed_ms} ms: {} (bundle {hash})",
                    output.display()
                ),
            )?;
            run.finish()?;
            b
        }
        (Ok(b), None) => b,
        (Err(e), Some(run)) => {
            run.fail(&format!("{e:#}"))?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    tracing::info!(output = %output.display(), elapsed_ms, "bundle written");
    if ctx.json {
        let mut v = crate::report::summary_json(&bundle);
        v["bundle"] = output.display().to_string().into();
        return ctx.print_json(&v);
    }
    print!("{}", crate::report::layer_report(&bundle));
    println!("wrote {}", output.display());
    Ok(())
}
