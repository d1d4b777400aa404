//! `sinter bench`: how fast a bundle runs on a device.
//!
//! Two passes over the same inputs (generated from the bundle's signature unless `--input` is
//! given):
//! - whole model: one warm-up inference, then `--iterations` timed ones, each running the
//!   program's NPU stages as compiled. Gives the cycles of one inference, the MAC utilization
//!   (MAC-active cycles over cycles, the device's own counters), the simulation speed
//!   (simulated cycles per second of device wall-clock time) and inferences per second (whole
//!   inferences, host work included);
//! - per layer (unless `--no-layers`): one more inference with every layer as its own device
//!   run (the runtime's per-layer mode, as `sinter run --layers`), giving each layer's cycles
//!   next to the compiler's prediction.
//!
//! On the functional model the cycle counters come from the timing model, so they are reported
//! as predicted and `measured_cycles` is null.

use crate::ctx::Ctx;
use crate::interrupt;
use crate::workspace::{LogLevel, RunHandle, RunInputs, RunKind};
use anyhow::Context;
use serde::Serialize;
use sinter_host::{open_runtime_traced, CycleSource, DeviceKind, RunStats};
use sinter_isa::bundle::{Bundle, LayerInfo};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The bundle (.sntr).
    pub model: PathBuf,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
    /// Only these layers in the per-layer table (comma-separated names as `sinter info`
    /// lists them). The whole-model numbers always cover every layer.
    #[arg(long, value_delimiter = ',', value_name = "L1,L2", conflicts_with_all = ["all", "no_layers"])]
    pub layers: Option<Vec<String>>,
    /// Every layer in the per-layer table (the default).
    #[arg(long, conflicts_with = "no_layers")]
    pub all: bool,
    /// Skip the per-layer pass: whole-model numbers only (saves one inference).
    #[arg(long)]
    pub no_layers: bool,
    /// Rows per inference (default: the batch the bundle was compiled for). More rows than
    /// that run as several device runs per inference.
    #[arg(long, value_name = "N", conflicts_with = "input")]
    pub batch: Option<usize>,
    /// Timed inferences after one warm-up (default: 10 on func, 1 on rtl).
    #[arg(long, value_name = "N")]
    pub iterations: Option<u32>,
    /// Inputs (.npy, batch axis first; `NAME=FILE` for several) instead of generated ones.
    #[arg(short, long)]
    pub input: Vec<String>,
    /// Write an FST waveform of everything the device runs (warm-up, timed inferences, the
    /// per-layer pass) to FILE; `--device rtl` only.
    #[arg(long, value_name = "FILE.fst")]
    pub trace: Option<PathBuf>,
}

/// Upper bound on `--iterations`, so that a typo cannot keep the machine busy for days.
const MAX_ITERATIONS: u32 = 1_000_000;

/// One row of the per-layer table.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub output_shape: Vec<usize>,
    /// MACs of one inference (all its device runs).
    pub macs: u64,
    pub predicted_cycles: u64,
    /// The device's cycle counter: measured on rtl, the timing model's on func.
    pub cycles: u64,
    /// `cycles` when the device measures them, else null.
    pub measured_cycles: Option<u64>,
    pub mac_active: u64,
    /// MAC-active cycles over cycles (null for a layer that took no cycles).
    pub mac_utilization: Option<f64>,
    /// MACs over cycles × the array's MACs per cycle: how full the array is on average.
    pub array_utilization: Option<f64>,
}

/// Everything `sinter bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub bundle: String,
    pub device: String,
    pub device_name: String,
    /// The array size, `ROWSxCOLS`.
    pub hw: String,
    /// Rows per inference.
    pub batch: usize,
    pub compiled_batch: usize,
    pub runs_per_inference: usize,
    pub cycle_source: &'static str,
    pub warmup: u32,
    pub iterations: u32,
    /// Cycles of one whole inference (device counter).
    pub total_cycles: u64,
    /// The compiler's prediction for one whole inference.
    pub predicted_cycles: u64,
    /// `total_cycles` when the device measures them, else null.
    pub measured_cycles: Option<u64>,
    pub mac_active: u64,
    pub mac_utilization: f64,
    /// NPU MACs of one inference.
    pub npu_macs: u64,
    /// Simulated cycles per second of device wall-clock time, over the timed inferences.
    pub sim_cycles_per_second: f64,
    /// Whole inferences per second of wall-clock time (host quantization and CPU stages
    /// included), over the timed inferences.
    pub inferences_per_second: f64,
    pub rows_per_second: f64,
    pub wall_seconds: f64,
    pub device_seconds: f64,
    pub layers: Vec<LayerRow>,
    /// Whether `layers` was filtered with `--layers`.
    pub layers_filtered: bool,
    pub trace: Option<String>,
    /// The workspace run that recorded this benchmark, if a workspace exists.
    pub run_id: Option<String>,
}

pub fn main(a: BenchArgs, ctx: &Ctx) -> anyhow::Result<()> {
    crate::run::check_trace(a.trace.as_deref(), a.device.device)?;
    let bundle = crate::open_bundle(&a.model)?;
    let selected = select_layers(&bundle.manifest.layers, a.layers.as_deref())?;
    if a.batch == Some(0) {
        anyhow::bail!("--batch must be at least 1");
    }
    let iterations = a.iterations.unwrap_or(match a.device.device {
        DeviceKind::Func => 10,
        DeviceKind::Rtl => 1,
    });
    anyhow::ensure!(
        (1..=MAX_ITERATIONS).contains(&iterations),
        "--iterations must be between 1 and {MAX_ITERATIONS}"
    );

    let ws = ctx.open_if_present();
    let run = match &ws {
        Some(ws) => Some(start(ws, &a, iterations)?),
        None => None,
    };
    let _tracked = run.as_ref().map(interrupt::track);
    let result = execute(bundle, &a, iterations, selected.as_deref());
    let report = match (result, run) {
        (Ok(mut r), Some(run)) => {
            record(&run, &r)?;
            r.run_id = Some(run.id().to_string());
            run.finish()?;
            r
        }
        (Ok(r), None) => r,
        (Err(e), Some(run)) => {
            run.fail(&format!("{e:#}"))?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    if ctx.json {
        ctx.print_json(&report)
    } else {
        print(&report);
        Ok(())
    }
}

/// Indices of the layers named in `--layers` (in the bundle's order), or `None` for all.
fn select_layers(
    layers: &[LayerInfo],
    wanted: Option<&[String]>,
) -> anyhow::Result<Option<Vec<usize>>> {
    let Some(wanted) = wanted else {
        return Ok(None);
    };
    let mut picked = Vec::new();
    for name in wanted.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match layers.iter().position(|l| l.name == name) {
            Some(i) => picked.push(i),
            None => anyhow::bail!(
                "unknown layer '{name}'; the bundle's layers are: {}",
                layers
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    anyhow::ensure!(!picked.is_empty(), "--layers names no layer");
    picked.sort_unstable();
    picked.dedup();
    Ok(Some(picked))
}

fn start(
    ws: &crate::workspace::Workspace,
    a: &BenchArgs,
    iterations: u32,
) -> anyhow::Result<RunHandle> {
    let mut params = vec![
        ("model", a.model.display().to_string()),
        ("device", a.device.device.to_string()),
        ("iterations", iterations.to_string()),
    ];
    if let Some(b) = a.batch {
        params.push(("batch", b.to_string()));
    }
    if let Some(l) = &a.layers {
        params.push(("layers", l.join(",")));
    }
    if !a.input.is_empty() {
        params.push(("input", a.input.join(",")));
    }
    if let Some(t) = &a.trace {
        params.push(("trace", t.display().to_string()));
    }
    let inputs = RunInputs {
        options: serde_json::json!({
            "bundle": a.model.display().to_string(),
            "device": a.device.device.to_string(),
            "iterations": iterations,
            "batch": a.batch,
            "layers": a.layers,
            "no_layers": a.no_layers,
            "inputs": a.input,
        }),
        ..RunInputs::default()
    };
    let run = ws.start_run(RunKind::Bench, params, inputs)?;
    run.artifact_file("bundle", &a.model)?;
    Ok(run)
}

/// Metrics of a bench run: the whole-model numbers at step 0, then each reported layer's
/// cycles and utilization with its index in the bundle's layer table as the step.
fn record(run: &RunHandle, r: &Report) -> anyhow::Result<()> {
    run.metric("total_cycles", r.total_cycles as f64, 0)?;
    run.metric("predicted_cycles", r.predicted_cycles as f64, 0)?;
    run.metric("mac_utilization", r.mac_utilization, 0)?;
    run.metric("sim_cycles_per_second", r.sim_cycles_per_second, 0)?;
    run.metric("inferences_per_second", r.inferences_per_second, 0)?;
    for (i, l) in r.layers.iter().enumerate() {
        run.metric("layer_cycles", l.cycles as f64, i as i64)?;
        if let Some(u) = l.mac_utilization {
            run.metric("layer_mac_utilization", u, i as i64)?;
        }
    }
    run.log(
        LogLevel::Info,
        &format!(
            "{} on {}: {} cycles per inference ({}), MAC utilization {:.2}%, {:.0} simulated \
             cycles/s, {:.2} inferences/s over {} iteration(s)",
            r.model,
            r.device_name,
            r.total_cycles,
            r.cycle_source,
            100.0 * r.mac_utilization,
            r.sim_cycles_per_second,
            r.inferences_per_second,
            r.iterations
        ),
    )?;
    Ok(())
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn per_second(count: f64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        count / s
    } else {
        0.0
    }
}

fn execute(
    bundle: Bundle,
    a: &BenchArgs,
    iterations: u32,
    selected: Option<&[usize]>,
) -> anyhow::Result<Report> {
    let device = a.device.device;
    let compiled_batch = bundle.manifest.batch.max(1) as usize;
    let inputs = if a.input.is_empty() {
        sinter_host::sample::sample_inputs(
            &bundle.io.model_inputs,
            a.batch.unwrap_or(compiled_batch),
        )
    } else {
        crate::run::read_inputs(&a.input, &bundle.io.model_inputs)?
    };
    let model = bundle.manifest.model_name.clone();
    let mut rt = open_runtime_traced(device, bundle, a.device.timeout(), a.trace.as_deref())
        .with_context(|| format!("cannot load {} on the {device} device", a.model.display()))?;
    let source = rt.driver_ref().cycle_source();
    let measured = source == CycleSource::Measured;
    let device_name = rt.driver_ref().device_name().to_string();

    rt.set_per_layer(false);
    let warm = rt.infer(&inputs).context("warm-up inference failed")?;
    let rows = warm.outputs.first().map(|(_, t)| t.shape[0]).unwrap_or(0);
    let runs_per_inference = warm.runs.len();

    let (mut wall, mut device_time, mut cycles_all) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut last: Option<RunStats> = None;
    for i in 0..iterations {
        let t = Instant::now();
        let inf = rt
            .infer(&inputs)
            .with_context(|| format!("timed inference {} failed", i + 1))?;
        wall += t.elapsed();
        let whole = inf
            .runs
            .iter()
            .fold(RunStats::empty(source), |acc, r| acc.merge(r));
        device_time += whole.wall;
        cycles_all += whole.cycles;
        last = Some(whole);
    }
    // `iterations` ≥ 1, so there is a last inference; every inference of a bundle on a device
    // takes the same cycles, so its counters stand for all.
    let whole = last.unwrap_or_else(|| RunStats::empty(source));

    let mut layers = Vec::new();
    if !a.no_layers {
        rt.set_per_layer(true);
        let inf = rt.infer(&inputs).context("per-layer inference failed")?;
        let runs = inf.runs.len() as u64;
        let macs_per_cycle = rt.bundle().config.macs_per_cycle();
        for (i, (l, st)) in rt
            .bundle()
            .manifest
            .layers
            .iter()
            .zip(&inf.layers)
            .enumerate()
        {
            if selected.is_some_and(|s| !s.contains(&i)) {
                continue;
            }
            let macs = l.macs * runs;
            layers.push(LayerRow {
                name: l.name.clone(),
                op: l.op.clone(),
                output_shape: l.output_shape.clone(),
                macs,
                predicted_cycles: l.predicted_cycles * runs,
                cycles: st.cycles,
                measured_cycles: measured.then_some(st.cycles),
                mac_active: st.mac_active,
                mac_utilization: ratio(st.mac_active, st.cycles),
                array_utilization: ratio(macs, st.cycles.saturating_mul(macs_per_cycle)),
            });
        }
    }
    let manifest = &rt.bundle().manifest;
    let runs = runs_per_inference as u64;
    let report = Report {
        model,
        bundle: a.model.display().to_string(),
        device: device.to_string(),
        device_name,
        hw: format!("{}x{}", rt.bundle().config.rows, rt.bundle().config.cols),
        batch: rows,
        compiled_batch,
        runs_per_inference,
        cycle_source: source.as_str(),
        warmup: 1,
        iterations,
        total_cycles: whole.cycles,
        predicted_cycles: manifest.predicted_cycles * runs,
        measured_cycles: measured.then_some(whole.cycles),
        mac_active: whole.mac_active,
        mac_utilization: ratio(whole.mac_active, whole.cycles).unwrap_or(0.0),
        npu_macs: manifest.npu_macs * runs,
        sim_cycles_per_second: per_second(cycles_all as f64, device_time),
        inferences_per_second: per_second(iterations as f64, wall),
        rows_per_second: per_second(iterations as f64 * rows as f64, wall),
        wall_seconds: wall.as_secs_f64(),
        device_seconds: device_time.as_secs_f64(),
        layers,
        layers_filtered: selected.is_some(),
        trace: a.trace.as_ref().map(|p| p.display().to_string()),
        run_id: None,
    };
    // The waveform is only complete once the device is gone.
    drop(rt);
    Ok(report)
}

fn pct(v: Option<f64>) -> String {
    v.map(|u| format!("{:.1}%", 100.0 * u))
        .unwrap_or_else(|| "-".into())
}

fn print(r: &Report) {
    println!(
        "{} on {} ({}): {} row(s) per inference in {} run(s) of batch {}; {} timed \
         inference(s) after {} warm-up; cycles {}",
        r.model,
        r.device_name,
        r.bundle,
        r.batch,
        r.runs_per_inference,
        r.compiled_batch,
        r.iterations,
        r.warmup,
        r.cycle_source
    );
    if !r.layers.is_empty() {
        let measured_head = if r.measured_cycles.is_some() {
            "measured cycles"
        } else {
            "measured cycles (n/a)"
        };
        let mut t = crate::table::new(&[
            "layer",
            "op",
            "MACs",
            "pred. cycles",
            measured_head,
            "device / pred.",
            "MAC util.",
            "array util.",
        ]);
        let measured = |c: u64| {
            if r.measured_cycles.is_some() {
                c.to_string()
            } else {
                "-".into()
            }
        };
        for l in &r.layers {
            t.add_row(vec![
                comfy_table::Cell::new(&l.name),
                comfy_table::Cell::new(&l.op),
                crate::table::num(l.macs),
                crate::table::num(l.predicted_cycles),
                crate::table::num(measured(l.cycles)),
                crate::table::num(
                    ratio(l.cycles, l.predicted_cycles)
                        .map(|x| format!("{x:.2}×"))
                        .unwrap_or_else(|| "-".into()),
                ),
                crate::table::num(pct(l.mac_utilization)),
                crate::table::num(pct(l.array_utilization)),
            ]);
        }
        let (macs, pred, cycles, active) = r.layers.iter().fold((0, 0, 0, 0), |s, l| {
            (
                s.0 + l.macs,
                s.1 + l.predicted_cycles,
                s.2 + l.cycles,
                s.3 + l.mac_active,
            )
        });
        let label = if r.layers_filtered {
            format!("total ({} selected layers, run alone)", r.layers.len())
        } else {
            "total (layers run alone)".to_string()
        };
        t.add_row(vec![
            comfy_table::Cell::new(label),
            comfy_table::Cell::new(""),
            crate::table::num(macs),
            crate::table::num(pred),
            crate::table::num(measured(cycles)),
            crate::table::num(
                ratio(cycles, pred)
                    .map(|x| format!("{x:.2}×"))
                    .unwrap_or_else(|| "-".into()),
            ),
            crate::table::num(pct(ratio(active, cycles))),
            crate::table::num(""),
        ]);
        println!("{t}");
    }
    println!(
        "whole model: {} cycles per inference ({}), predicted {}, MAC utilization {:.1}%, {} NPU MACs",
        r.total_cycles,
        r.cycle_source,
        r.predicted_cycles,
        100.0 * r.mac_utilization,
        r.npu_macs
    );
    println!(
        "speed: {} simulated cycles/s, {:.2} inferences/s ({:.1} rows/s; {:.3} ms per inference)",
        human(r.sim_cycles_per_second),
        r.inferences_per_second,
        r.rows_per_second,
        if r.inferences_per_second > 0.0 {
            1e3 / r.inferences_per_second
        } else {
            0.0
        }
    );
    if let Some(t) = &r.trace {
        println!("wrote waveform to {t}");
    }
}

/// `1.23M`-style rounding for rates.
fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> LayerInfo {
        LayerInfo {
            name: name.into(),
            op: "Gemm".into(),
            input_shape: vec![1, 4],
            output_shape: vec![1, 4],
            macs: 16,
            insn_start: 0,
            insn_end: 1,
            predicted_cycles: 10,
        }
    }

    #[test]
    fn layer_selection_keeps_bundle_order_and_names_the_valid_layers() {
        let ls = [layer("fc1"), layer("fc2"), layer("fc3")];
        let picked = select_layers(&ls, Some(&["fc3".into(), "fc1".into(), "fc3".into()]));
        assert_eq!(picked.unwrap(), Some(vec![0, 2]));
        assert_eq!(select_layers(&ls, None).unwrap(), None);
        let err = select_layers(&ls, Some(&["fc9".into()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'fc9'") && err.contains("fc1, fc2, fc3"),
            "{err}"
        );
    }

    #[test]
    fn ratios_of_nothing_are_absent() {
        assert_eq!(ratio(3, 0), None);
        assert_eq!(ratio(1, 4), Some(0.25));
        assert_eq!(per_second(10.0, Duration::ZERO), 0.0);
        assert_eq!(per_second(10.0, Duration::from_millis(500)), 20.0);
    }
}
