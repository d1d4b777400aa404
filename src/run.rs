//! `sinter run`.

use crate::ctx::Ctx;
use crate::interrupt;
use crate::resolve::{Opened, Source};
use crate::workspace::{LogLevel, RunHandle, RunInputs, RunKind, Workspace};
use anyhow::Context;
use ndarray::ArrayD;
use sinter_host::{open_runtime_traced, Inference, Tensor};
use sinter_isa::bundle::Bundle;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The bundle (.sntr), or a registered model: NAME, NAME:VERSION or NAME@ALIAS (compiled,
    /// or its earlier bundle reused; an existing path wins).
    pub model: String,
    /// Input batch (.npy, float32 or float64, batch axis first). For a model with several inputs
    /// repeat as `--input NAME=FILE`.
    #[arg(short, long, required = true)]
    pub input: Vec<String>,
    /// Where to write the first model output (.npy). Further outputs go next to it as
    /// `STEM.OUTPUT_NAME.npy`.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
    /// Class labels (.npy, one integer per row): prints the top-1 accuracy of the first output.
    #[arg(long, value_name = "LABELS.npy")]
    pub labels: Option<PathBuf>,
    /// Run every layer as its own device run and print each layer's measured (rtl) or
    /// predicted (func) cycles next to the compiler's prediction.
    #[arg(long)]
    pub layers: bool,
    /// Write an FST waveform of the whole run to FILE (`--device rtl` only; open it with
    /// GTKWave). Every clock cycle is two time steps, clock low then high.
    #[arg(long, value_name = "FILE.fst")]
    pub trace: Option<PathBuf>,
    #[command(flatten)]
    pub build: crate::resolve::RefArgs,
}

/// Fails unless a waveform can be written on `device`: only the RTL has signals.
pub fn check_trace(trace: Option<&Path>, device: sinter_host::DeviceKind) -> anyhow::Result<()> {
    if trace.is_some() && device != sinter_host::DeviceKind::Rtl {
        anyhow::bail!(
            "--trace needs --device rtl: the {device} device has no signals to record in a waveform"
        );
    }
    Ok(())
}

/// Reads `--input` arguments (`FILE`, or `NAME=FILE` for models with several inputs) against
/// the model's input signatures.
pub fn read_inputs(
    specs: &[String],
    sigs: &[sinter_isa::bundle::TensorSig],
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut inputs = HashMap::new();
    for spec in specs {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (n.to_string(), PathBuf::from(p)),
            None => {
                anyhow::ensure!(
                    sigs.len() == 1,
                    "the model has {} inputs ({}); name each as --input NAME=FILE",
                    sigs.len(),
                    sigs.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                (sigs[0].name.clone(), PathBuf::from(spec))
            }
        };
        let arr = crate::npy::read_f32(&path)?;
        anyhow::ensure!(
            inputs.insert(name.clone(), to_tensor(arr)).is_none(),
            "input '{name}' given twice"
        );
    }
    Ok(inputs)
}

/// Top-1 accuracy (percent) of `scores` (rows of classes, batch first) against `labels`.
pub fn top1_accuracy(scores: &Tensor, labels: &[i64]) -> anyhow::Result<f64> {
    let rows = scores.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(
        rows == labels.len(),
        "{} labels for {rows} output rows",
        labels.len()
    );
    anyhow::ensure!(rows > 0, "no rows to score");
    let classes = scores.data.len() / rows;
    let hits = scores
        .data
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 as i64 == y
        })
        .count();
    Ok(100.0 * hits as f64 / rows as f64)
}

/// Where output `index` named `name` goes when the first output goes to `first`.
pub fn output_path(first: &Path, index: usize, name: &str) -> PathBuf {
    if index == 0 {
        return first.to_path_buf();
    }
    let stem = first
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    first.with_file_name(format!("{stem}.{safe}.npy"))
}

fn to_tensor(a: ArrayD<f32>) -> Tensor {
    let shape = a.shape().to_vec();
    let data = a.as_standard_layout().iter().copied().collect();
    Tensor { shape, data }
}

/// What one `sinter run` produced.
struct Outcome {
    model: String,
    device: String,
    cycle_source: &'static str,
    batch: usize,
    rows: usize,
    inf: Inference,
    written: Vec<(String, PathBuf)>,
    accuracy: Option<f64>,
    total_cycles: u64,
    total_mac: u64,
    util: f64,
    /// Per layer with `--layers`: the compiler's entry and the measured statistics.
    layers: Vec<(sinter_isa::bundle::LayerInfo, sinter_host::RunStats)>,
    macs_per_cycle: u64,
    /// The waveform written with `--trace`.
    trace: Option<PathBuf>,
}

pub fn main(a: RunArgs, ctx: &Ctx) -> anyhow::Result<()> {
    check_trace(a.trace.as_deref(), a.device.device)?;
    let Opened { bundle, ws, source } = crate::resolve::open_target(ctx, &a.model, &a.build)?;
    let mut inputs = source.run_inputs();
    let (bundle_artifact, label) = match source {
        Source::File(path) => (BundleArtifact::File(path), a.model.clone()),
        Source::Model {
            version,
            bundle_hash,
            ..
        } => {
            if let Some(o) = inputs.options.as_object_mut() {
                o.insert("hw".into(), bundle.config.to_string().into());
                o.insert("batch".into(), bundle.manifest.batch.into());
            }
            let label = format!("{}:{}", version.name, version.version);
            (BundleArtifact::Stored(bundle_hash), label)
        }
    };
    if let Some(o) = inputs.options.as_object_mut() {
        o.insert("device".into(), a.device.device.to_string().into());
        o.insert("inputs".into(), a.input.clone().into());
    }
    let run = match &ws {
        Some(ws) => Some(start(ws, &a, inputs, &bundle_artifact)?),
        None => None,
    };
    let _tracked = run.as_ref().map(interrupt::track);
    let outcome = match (execute(bundle, &a, &label), run) {
        (Ok(o), Some(run)) => {
            record(&run, &o)?;
            run.finish()?;
            o
        }
        (Ok(o), None) => o,
        (Err(e), Some(run)) => {
            run.fail(&format!("{e:#}"))?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    print(&outcome, ctx)
}

/// The bundle a run used, as an artifact.
enum BundleArtifact {
    File(PathBuf),
    Stored(String),
}

fn start(
    ws: &Workspace,
    a: &RunArgs,
    inputs: RunInputs,
    bundle: &BundleArtifact,
) -> anyhow::Result<RunHandle> {
    let mut params = vec![
        ("model", a.model.clone()),
        ("device", a.device.device.to_string()),
        ("input", a.input.join(",")),
    ];
    if let Some(l) = &a.labels {
        params.push(("labels", l.display().to_string()));
    }
    if let Some(t) = &a.trace {
        params.push(("trace", t.display().to_string()));
    }
    let run = ws.start_run(RunKind::Run, params, inputs)?;
    match bundle {
        BundleArtifact::File(p) => {
            run.artifact_file("bundle", p)?;
        }
        BundleArtifact::Stored(h) => run.artifact_hash("bundle", h)?,
    }
    Ok(run)
}

/// Metrics of a run: cycles and utilization of every NPU run as steps, then the totals.
fn record(run: &RunHandle, o: &Outcome) -> anyhow::Result<()> {
    for (i, r) in o.inf.runs.iter().enumerate() {
        run.metric("cycles", r.cycles as f64, i as i64)?;
        run.metric("utilization", r.utilization, i as i64)?;
    }
    run.metric("total_cycles", o.total_cycles as f64, 0)?;
    run.metric("mac_utilization", o.util, 0)?;
    run.metric("rows", o.rows as f64, 0)?;
    if let Some(acc) = o.accuracy {
        run.metric("accuracy", acc, 0)?;
    }
    run.log(
        LogLevel::Info,
        &format!(
            "{} rows in {} run(s) on {}: {} cycles ({}){}",
            o.rows,
            o.inf.runs.len(),
            o.device,
            o.total_cycles,
            o.cycle_source,
            o.accuracy
                .map(|a| format!(", top-1 accuracy {a:.2}%"))
                .unwrap_or_default()
        ),
    )?;
    for (name, p) in &o.written {
        run.artifact_file(&format!("output:{name}"), p)?;
    }
    Ok(())
}

fn execute(bundle: Bundle, a: &RunArgs, label: &str) -> anyhow::Result<Outcome> {
    let inputs = read_inputs(&a.input, &bundle.io.model_inputs)?;
    let device = a.device.device;
    let mut rt = open_runtime_traced(device, bundle, a.device.timeout(), a.trace.as_deref())
        .with_context(|| format!("cannot load {label} on the {device} device"))?;
    let source = rt.driver_ref().cycle_source();
    rt.set_per_layer(a.layers);
    let inf = rt.infer(&inputs).context("inference failed")?;
    let layers = rt
        .bundle()
        .manifest
        .layers
        .iter()
        .cloned()
        .zip(inf.layers.iter().copied())
        .collect();
    let macs_per_cycle = rt.bundle().config.macs_per_cycle();

    let mut written = Vec::new();
    if let Some(first) = &a.output {
        for (i, (name, t)) in inf.outputs.iter().enumerate() {
            let path = output_path(first, i, name);
            let arr = ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
                .context("output tensor has an inconsistent shape")?;
            crate::npy::write_f32(&path, &arr)?;
            written.push((name.clone(), path));
        }
    }

    let accuracy = match &a.labels {
        Some(path) => {
            let labels = crate::npy::read_labels(path)?;
            let (_, first) = inf.outputs.first().context("the model has no output")?;
            Some(top1_accuracy(first, &labels)?)
        }
        None => None,
    };
    let rows: usize = inputs.values().next().map(|t| t.shape[0]).unwrap_or(0);
    let total_cycles: u64 = inf.runs.iter().map(|r| r.cycles).sum();
    let total_mac: u64 = inf.runs.iter().map(|r| r.mac_active).sum();
    let util = if total_cycles == 0 {
        0.0
    } else {
        total_mac as f64 / total_cycles as f64
    };
    Ok(Outcome {
        model: rt.bundle().manifest.model_name.clone(),
        device: rt.driver_ref().device_name().to_string(),
        cycle_source: source.as_str(),
        batch: rt.batch(),
        rows,
        inf,
        written,
        accuracy,
        total_cycles,
        total_mac,
        util,
        layers,
        macs_per_cycle,
        trace: a.trace.clone(),
    })
}

/// Per-layer rows: name, op, output shape, MACs, predicted and run cycles, array utilization
/// (MACs over cycles × array size), for the request's total rows.
fn layer_rows(o: &Outcome) -> Vec<serde_json::Value> {
    let runs = o.inf.runs.len().max(1) as u64;
    o.layers
        .iter()
        .map(|(l, st)| {
            let macs = l.macs * runs;
            let util = if st.cycles == 0 {
                0.0
            } else {
                macs as f64 / (st.cycles as f64 * o.macs_per_cycle as f64)
            };
            serde_json::json!({
                "name": l.name,
                "op": l.op,
                "output_shape": l.output_shape,
                "macs": macs,
                "predicted_cycles": l.predicted_cycles * runs,
                "cycles": st.cycles,
                "mac_utilization": util,
            })
        })
        .collect()
}

fn print(o: &Outcome, ctx: &Ctx) -> anyhow::Result<()> {
    let (inf, batch, rows, written, accuracy) = (&o.inf, o.batch, o.rows, &o.written, o.accuracy);
    let source = o.cycle_source;
    if ctx.json {
        let runs: Vec<_> = inf
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({
                    "run": i,
                    "rows": [i * batch, ((i + 1) * batch).min(rows)],
                    "cycles": r.cycles,
                    "mac_active": r.mac_active,
                    "utilization": r.utilization,
                    "instructions": r.insns,
                    "wall_us": r.wall.as_micros() as u64,
                })
            })
            .collect();
        let outputs: Vec<_> = inf
            .outputs
            .iter()
            .map(|(name, t)| {
                let file = written
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p.display().to_string());
                let mut o = serde_json::json!({ "name": name, "shape": t.shape, "file": file });
                if file.is_none() {
                    o["data"] = serde_json::json!(t.data);
                }
                o
            })
            .collect();
        let report = serde_json::json!({
            "model": o.model,
            "device": o.device,
            "cycle_source": source,
            "batch": batch,
            "rows": rows,
            "runs": runs,
            "total": { "cycles": o.total_cycles, "mac_active": o.total_mac, "utilization": o.util },
            "outputs": outputs,
            "top1_accuracy": accuracy,
            "layers": layer_rows(o),
            "trace": o.trace.as_ref().map(|p| p.display().to_string()),
        });
        return ctx.print_json(&report);
    }

    println!(
        "model {} on {} ({} rows in {} run(s) of batch {}; cycles {})",
        o.model,
        o.device,
        rows,
        inf.runs.len(),
        batch,
        source
    );
    const SHOWN_RUNS: usize = 64;
    for (i, r) in inf.runs.iter().enumerate().take(SHOWN_RUNS) {
        println!(
            "  run {i:>4}  rows {:>5}..{:<5}  {:>12} cycles ({})  MAC utilization {:>6.2}%  {:>8.3} ms",
            i * batch,
            ((i + 1) * batch).min(rows),
            r.cycles,
            source,
            100.0 * r.utilization,
            r.wall.as_secs_f64() * 1e3
        );
    }
    if inf.runs.len() > SHOWN_RUNS {
        println!(
            "  … {} more runs (--json lists every run)",
            inf.runs.len() - SHOWN_RUNS
        );
    }
    println!(
        "  total {:>27} cycles ({})  MAC utilization {:>6.2}%",
        o.total_cycles,
        source,
        100.0 * o.util
    );
    if !o.layers.is_empty() {
        println!(
            "  {:<4} {:<24} {:<14} {:>14} {:>14} {:>14} {:>8}",
            "#",
            "layer",
            "op",
            "MACs",
            "pred. cycles",
            format!("{source} cycles"),
            "util"
        );
        for (i, r) in layer_rows(o).iter().enumerate() {
            println!(
                "  {:<4} {:<24} {:<14} {:>14} {:>14} {:>14} {:>7.1}%",
                i,
                r["name"].as_str().unwrap_or(""),
                r["op"].as_str().unwrap_or(""),
                r["macs"].as_u64().unwrap_or(0),
                r["predicted_cycles"].as_u64().unwrap_or(0),
                r["cycles"].as_u64().unwrap_or(0),
                100.0 * r["mac_utilization"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if let Some(acc) = accuracy {
        println!("top-1 accuracy {acc:.2}% over {rows} rows");
    }
    if let Some(t) = &o.trace {
        println!("wrote waveform to {}", t.display());
    }
    if written.is_empty() && accuracy.is_none() {
        for (name, t) in &inf.outputs {
            println!("output {name} {:?}:", t.shape);
            let row = t
                .shape
                .get(1..)
                .map(|s| s.iter().product())
                .unwrap_or(1)
                .max(1);
            for (i, chunk) in t.data.chunks(row).enumerate().take(16) {
                let vals: Vec<String> = chunk.iter().take(16).map(|v| format!("{v:.6}")).collect();
                let more = if chunk.len() > 16 { ", …" } else { "" };
                println!("  [{i}] [{}{more}]", vals.join(", "));
            }
            if t.data.len() / row > 16 {
                println!("  … {} rows in all", t.data.len() / row);
            }
        }
    } else {
        for (name, p) in written {
            println!("wrote output {name} to {}", p.display());
        }
    }
    Ok(())
}
