//! From what users type to a bundle: a file path, or a registered model reference that is
//! compiled, or whose earlier bundle is reused when the same inputs were compiled before.

use crate::interrupt;
use crate::progress::Spinner;
use crate::workspace::store::sha256_hex;
use crate::workspace::{
    options_hash, BundleKey, BundleRecord, LogLevel, ModelRef, ModelVersion, RunHandle, RunInputs,
    RunKind, Workspace,
};
use anyhow::Context;
use serde_json::json;
use sinter_isa::bundle::Bundle;
use sinter_isa::HwConfig;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The compiler version a bundle key records: the compiler crate's version (it shares the
/// version of this package; bundles carry the same string in their manifest), with the bundle
/// format and architecture versions, so a bundle is never reused by a build that cannot load
/// it.
pub fn compiler_version() -> String {
    format!(
        "{} (bundle format {}, arch {:#x})",
        env!("CARGO_PKG_VERSION"),
        sinter_isa::bundle::FORMAT_VERSION,
        sinter_isa::ARCH_VERSION
    )
}

/// What a MODEL argument names.
#[derive(Debug, Clone)]
pub enum Target {
    File(PathBuf),
    Model(ModelRef),
}

impl Target {
    /// An existing path wins; anything else must be a model reference.
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        let p = Path::new(s);
        if p.exists() {
            return Ok(Target::File(p.to_path_buf()));
        }
        let looks_like_path = s.contains(std::path::MAIN_SEPARATOR)
            || s.contains('/')
            || [".onnx", ".sntr", ".npy"].iter().any(|e| s.ends_with(e));
        match s.parse::<ModelRef>() {
            Ok(r) if !looks_like_path => Ok(Target::Model(r)),
            Ok(_) => anyhow::bail!("no such file: {s}"),
            Err(e) => Err(anyhow::anyhow!(e).context(format!(
                "'{s}' is neither an existing file nor a model reference"
            ))),
        }
    }
}

/// Options that decide a bundle's bytes (with the model version and the calibration data).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub hw: HwConfig,
    pub batch: usize,
    /// Model name recorded in the bundle; the registered name by default.
    pub name: Option<String>,
}

/// Options of `run` and `serve` for a model reference: which bundle to use or build.
#[derive(clap::Args, Debug, Clone)]
pub struct RefArgs {
    /// With a model reference: calibration inputs (.npy) if it must be compiled. Without it the
    /// calibration data recorded by its last compile is used.
    #[arg(long, value_name = "CALIB.npy")]
    pub calib: Option<PathBuf>,
    /// With a model reference: NPU array size of the bundle, ROWSxCOLS.
    #[arg(long, default_value = "16x16", value_parser = crate::parse_hw)]
    pub hw: HwConfig,
    /// With a model reference: rows per NPU run of the bundle.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// A bundle as `run` and `serve` take it, with where it came from.
pub struct Opened {
    pub bundle: Bundle,
    /// The workspace: always for a model reference; for a file, when there is one (to record
    /// the run in).
    pub ws: Option<Workspace>,
    pub source: Source,
}

/// Where an [`Opened`] bundle came from.
pub enum Source {
    File(PathBuf),
    /// A registered model, compiled or reused for the requested hardware and batch.
    Model {
        reference: String,
        version: Box<ModelVersion>,
        bundle_hash: String,
    },
}

impl Source {
    /// What a run records of where its bundle came from: the file, or the model version with
    /// its reference and bundle hash.
    pub fn run_inputs(&self) -> RunInputs {
        match self {
            Source::File(path) => RunInputs {
                options: json!({ "bundle": path.display().to_string() }),
                ..RunInputs::default()
            },
            Source::Model {
                reference,
                version,
                bundle_hash,
            } => {
                let mut inputs = RunInputs::for_version(version);
                inputs.options = json!({ "reference": reference, "bundle_hash": bundle_hash });
                inputs
            }
        }
    }
}

/// Opens `model` (a bundle file or a model reference) the way `run` and `serve` take it.
pub fn open_target(ctx: &crate::ctx::Ctx, model: &str, build: &RefArgs) -> anyhow::Result<Opened> {
    Ok(match Target::parse(model)? {
        Target::File(path) => Opened {
            bundle: crate::open_bundle(&path)?,
            ws: ctx.open_if_present(),
            source: Source::File(path),
        },
        Target::Model(r) => {
            let ws = ctx.open()?;
            let spinner = Spinner::new(ctx.json);
            let opts = BuildOptions {
                hw: build.hw,
                batch: build.batch,
                name: None,
            };
            let res = compile_ref(&ws, &r, &opts, build.calib.as_deref(), false, &spinner)?;
            spinner.done();
            Opened {
                bundle: res.bundle,
                ws: Some(ws),
                source: Source::Model {
                    reference: r.to_string(),
                    version: Box::new(res.version),
                    bundle_hash: res.bundle_hash,
                },
            }
        }
    })
}

/// A bundle obtained from a model reference.
pub struct Resolved {
    pub version: ModelVersion,
    pub bundle: Bundle,
    pub bundle_hash: String,
    /// Where the bundle lives in the artifact store.
    pub bundle_path: PathBuf,
    /// Whether an earlier bundle was reused instead of compiling.
    pub reused: bool,
    /// The run that compiled it.
    pub compiled_by: Option<String>,
    /// The compile run recorded now (also when reused, if asked for).
    pub run_id: Option<String>,
    pub compile_ms: u64,
}

/// Calibration data as a file and its hash.
struct Calib {
    path: PathBuf,
    hash: String,
    /// As the user gave it, or `recorded` for the workspace's copy.
    shown: String,
}

/// The calibration data the newest bundle of a version was compiled with, if the workspace
/// still has it.
fn recorded_calibration(ws: &Workspace, v: &ModelVersion) -> anyhow::Result<Option<Calib>> {
    for b in ws.list_bundles(&v.reference())? {
        let Some(run) = &b.run_id else { continue };
        let d = ws.show_run(run)?;
        if let Some(h) = d.inputs.calibration_hash {
            if ws.store().contains(&h)? {
                return Ok(Some(Calib {
                    path: ws.artifact_path(&h)?,
                    hash: h,
                    shown: "recorded".into(),
                }));
            }
        }
    }
    Ok(None)
}

fn key_for(v: &ModelVersion, o: &BuildOptions, name: &str, calib_hash: &str) -> BundleKey {
    BundleKey {
        model: v.reference(),
        hw_config: o.hw.to_string(),
        compiler_version: compiler_version(),
        options_hash: options_hash(&options_json(o, name, calib_hash)),
    }
}

fn options_json(o: &BuildOptions, name: &str, calib_hash: &str) -> serde_json::Value {
    json!({ "batch": o.batch, "name": name, "calibration": calib_hash })
}

/// Lists a version's bundles in an error message.
fn bundles_hint(ws: &Workspace, v: &ModelVersion) -> String {
    let list: Vec<BundleRecord> = ws.list_bundles(&v.reference()).unwrap_or_default();
    if list.is_empty() {
        return format!("{}:{} has no bundles yet", v.name, v.version);
    }
    let lines: Vec<String> = list
        .iter()
        .map(|b| {
            format!(
                "  {} {} (compiler {}, run {})",
                crate::table::short(&b.bundle_hash),
                b.hw_config,
                b.compiler_version,
                b.run_id.as_deref().unwrap_or("-")
            )
        })
        .collect();
    format!(
        "existing bundles of {}:{}:\n{}",
        v.name,
        v.version,
        lines.join("\n")
    )
}

/// Compiles a registered version, or reuses the bundle compiled earlier from the same inputs.
///
/// With `always_record` a compile run is recorded even when the bundle is reused (`sinter
/// compile`); otherwise only an actual compile is (`run` and `serve`).
pub fn compile_ref(
    ws: &Workspace,
    r: &ModelRef,
    opts: &BuildOptions,
    calib: Option<&Path>,
    always_record: bool,
    spinner: &Spinner,
) -> anyhow::Result<Resolved> {
    anyhow::ensure!(opts.batch >= 1, "--batch must be at least 1");
    spinner.stage(format!("resolving {r}"));
    let v = ws.resolve(r)?;
    let calib = match calib {
        Some(p) => {
            let bytes =
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Calib {
                path: p.to_path_buf(),
                hash: sha256_hex(&bytes),
                shown: p.display().to_string(),
            }
        }
        None => recorded_calibration(ws, &v)?.with_context(|| {
            format!(
                "no calibration data is recorded for {}:{}: pass --calib FILE.npy to compile it\n{}",
                v.name,
                v.version,
                bundles_hint(ws, &v)
            )
        })?,
    };
    let name = opts.name.clone().unwrap_or_else(|| v.name.clone());
    let key = key_for(&v, opts, &name, &calib.hash);
    let started = Instant::now();
    // A recorded bundle this build cannot load (written by a development build with another
    // layout) is compiled again; the new bundle is kept as the run's artifact only, since the
    // key stays linked to the first bundle.
    let (found, stale) = match ws.find_bundle(&key)? {
        Some(rec) => match ws
            .artifact_path(&rec.bundle_hash)
            .map_err(anyhow::Error::from)
            .and_then(|p| crate::open_bundle(&p))
        {
            Ok(_) => (Some(rec), None),
            Err(e) => {
                tracing::warn!(
                    "cannot reuse bundle {}: {e:#}; compiling again",
                    rec.bundle_hash
                );
                (None, Some(rec.bundle_hash))
            }
        },
        None => (None, None),
    };
    if let (Some(rec), false) = (&found, always_record) {
        return reuse(ws, v, rec, None, started);
    }

    let mut inputs = RunInputs::for_version(&v);
    inputs.calibration_hash = Some(calib.hash.clone());
    inputs.options = json!({
        "hw": opts.hw.to_string(),
        "batch": opts.batch,
        "name": name,
        "calibration": calib.shown,
        "compiler_version": compiler_version(),
        "options_hash": key.options_hash,
    });
    let run = ws.start_run(
        RunKind::Compile,
        [
            ("model", r.to_string()),
            ("hw", format!("{}x{}", opts.hw.rows, opts.hw.cols)),
            ("batch", opts.batch.to_string()),
            ("calibration", calib.shown.clone()),
        ],
        inputs,
    )?;
    let _tracked = interrupt::track(&run);
    let plan = Plan {
        found,
        stale,
        started,
    };
    match build(ws, &run, &v, opts, &name, &calib, &key, plan, spinner) {
        Ok(mut res) => {
            res.run_id = Some(run.id().to_string());
            run.finish()?;
            Ok(res)
        }
        Err(e) => {
            run.fail(&format!("{e:#}"))?;
            Err(e)
        }
    }
}

fn reuse(
    ws: &Workspace,
    version: ModelVersion,
    rec: &BundleRecord,
    run: Option<&RunHandle>,
    started: Instant,
) -> anyhow::Result<Resolved> {
    let path = ws.artifact_path(&rec.bundle_hash)?;
    let bundle = crate::open_bundle(&path)?;
    if let Some(run) = run {
        run.artifact_hash("bundle", &rec.bundle_hash)?;
        run.log(
            LogLevel::Info,
            &format!(
                "reused bundle {} compiled by run {}",
                rec.bundle_hash,
                rec.run_id.as_deref().unwrap_or("-")
            ),
        )?;
    }
    Ok(Resolved {
        version,
        bundle,
        bundle_hash: rec.bundle_hash.clone(),
        bundle_path: path,
        reused: true,
        compiled_by: rec.run_id.clone(),
        run_id: None,
        compile_ms: started.elapsed().as_millis() as u64,
    })
}

/// What the bundle lookup found.
struct Plan {
    found: Option<BundleRecord>,
    /// Hash of a recorded bundle for the key that cannot be loaded.
    stale: Option<String>,
    started: Instant,
}

#[allow(clippy::too_many_arguments)]
fn build(
    ws: &Workspace,
    run: &RunHandle,
    v: &ModelVersion,
    opts: &BuildOptions,
    name: &str,
    calib: &Calib,
    key: &BundleKey,
    plan: Plan,
    spinner: &Spinner,
) -> anyhow::Result<Resolved> {
    let started = plan.started;
    run.artifact_file("calibration", &calib.path)?;
    let res = match plan.found {
        Some(rec) => reuse(ws, v.clone(), &rec, Some(run), started)?,
        None => {
            run.log(
                LogLevel::Info,
                &format!(
                    "compiling {}:{} for {} batch {}",
                    v.name, v.version, opts.hw, opts.batch
                ),
            )?;
            spinner.stage(format!("reading {}:{}", v.name, v.version));
            let onnx = ws.store().read(&v.source_hash)?;
            let data = crate::npy::read_f32(&calib.path)?;
            spinner.stage(format!(
                "compiling {}:{} (calibrate, quantize, lower)",
                v.name, v.version
            ));
            let bundle =
                crate::compile::compile_model(&onnx, &data, opts.hw, opts.batch, name.into())
                    .with_context(|| format!("cannot compile {}:{}", v.name, v.version))?;
            let compile_ms = started.elapsed().as_millis() as u64;
            spinner.stage("storing the bundle");
            let bytes = bundle.to_bytes();
            let (hash, compiled_by, bundle) = match &plan.stale {
                Some(old) => {
                    let hash = run.artifact("bundle", &bytes)?;
                    run.log(
                        LogLevel::Warn,
                        &format!("recorded bundle {old} cannot be loaded; compiled again"),
                    )?;
                    (hash, Some(run.id().to_string()), bundle)
                }
                None => {
                    let rec = ws.record_bundle(key, &bytes, Some(run.id()))?;
                    run.artifact_hash("bundle", &rec.bundle_hash)?;
                    // Another process may have recorded the same key first; its bundle is the
                    // one.
                    let bundle = if rec.run_id.as_deref() == Some(run.id()) {
                        bundle
                    } else {
                        crate::open_bundle(&ws.artifact_path(&rec.bundle_hash)?)?
                    };
                    (rec.bundle_hash, rec.run_id, bundle)
                }
            };
            run.log(
                LogLevel::Info,
                &format!("compiled in {compile_ms} ms: bundle {hash}"),
            )?;
            Resolved {
                version: v.clone(),
                bundle,
                bundle_path: ws.artifact_path(&hash)?,
                bundle_hash: hash,
                reused: false,
                compiled_by,
                run_id: None,
                compile_ms,
            }
        }
    };
    let m = &res.bundle.manifest;
    run.metric("predicted_cycles", m.predicted_cycles as f64, 0)?;
    run.metric("npu_macs", m.npu_macs as f64, 0)?;
    run.metric("cpu_macs", m.cpu_macs as f64, 0)?;
    run.metric("compile_time_ms", res.compile_ms as f64, 0)?;
    run.metric("reused", if res.reused { 1.0 } else { 0.0 }, 0)?;
    let report = serde_json::to_vec_pretty(&crate::report::summary_json(&res.bundle))
        .context("cannot encode the layer report")?;
    run.artifact("report.json", &report)?;
    Ok(res)
}
