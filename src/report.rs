//! Human-readable reports of a bundle.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Cell, CellAlignment, Table};
use sinter_isa::bundle::Bundle;

fn shape(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

/// MAC-array utilization of `macs` in `cycles` on a `rows × cols` array.
fn array_util(b: &Bundle, macs: u64, cycles: u64) -> String {
    pct(macs, cycles.saturating_mul(b.config.macs_per_cycle()))
}

/// The per-layer table with totals and the CPU/NPU MAC split.
pub fn layer_report(b: &Bundle) -> String {
    let m = &b.manifest;
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(vec![
        "#",
        "layer",
        "op",
        "shape in → out",
        "MACs",
        "pred. cycles",
        "array util",
    ]);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    let mut macs = 0u64;
    let mut cycles = 0u64;
    for (i, l) in m.layers.iter().enumerate() {
        macs += l.macs;
        cycles += l.predicted_cycles;
        t.add_row(vec![
            right(i.to_string()),
            Cell::new(&l.name),
            Cell::new(&l.op),
            Cell::new(format!(
                "{} → {}",
                shape(&l.input_shape),
                shape(&l.output_shape)
            )),
            right(l.macs.to_string()),
            right(l.predicted_cycles.to_string()),
            right(array_util(b, l.macs, l.predicted_cycles)),
        ]);
    }
    let total_cycles = if m.predicted_cycles > 0 {
        m.predicted_cycles
    } else {
        cycles
    };
    t.add_row(vec![
        Cell::new(""),
        Cell::new("total"),
        Cell::new(format!("{} layers", m.layers.len())),
        Cell::new(""),
        right(macs.to_string()),
        right(total_cycles.to_string()),
        right(array_util(b, macs, total_cycles)),
    ]);
    let all = m.npu_macs + m.cpu_macs;
    let mut s = format!(
        "model {} (compiler {}), NPU {}, batch {}, {} instructions, {} weight bytes\n",
        m.model_name,
        m.compiler_version,
        b.config,
        m.batch,
        b.program.len(),
        b.weights().len()
    );
    s.push_str(&t.to_string());
    s.push('\n');
    s.push_str(&format!(
        "MACs per run: NPU {} ({}), CPU {} ({})\n",
        m.npu_macs,
        pct(m.npu_macs, all),
        m.cpu_macs,
        pct(m.cpu_macs, all)
    ));
    s.push_str("Stages:\n");
    for stage in &b.io.stages {
        s.push_str(&format!("  {}\n", stage_line(b, stage)));
    }
    s
}

/// One line describing a stage: where it runs and what it computes.
pub fn stage_line(b: &Bundle, stage: &sinter_isa::bundle::Stage) -> String {
    use sinter_isa::bundle::Stage;
    match stage {
        Stage::Npu {
            name,
            insn_start,
            insn_end,
            inputs,
            outputs,
        } => {
            let names = |ts: &[sinter_isa::bundle::IoTensor]| {
                ts.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "{name}: NPU, instructions {insn_start}..{insn_end}, {} -> {}",
                names(inputs),
                names(outputs)
            )
        }
        Stage::Cpu {
            name, offset, len, ..
        } => {
            let ops = b
                .cpu_program(*offset, *len)
                .ok()
                .and_then(|bytes| sinter_compiler::cpu::CpuProgram::decode(bytes).ok())
                .map(|p| {
                    p.nodes
                        .iter()
                        .map(|n| format!("{} ({})", n.name, n.op.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "unreadable program".into());
            format!("{name}: CPU, {ops}")
        }
    }
}

/// The same report as JSON.
pub fn summary_json(b: &Bundle) -> serde_json::Value {
    let m = &b.manifest;
    serde_json::json!({
        "model_name": m.model_name,
        "compiler_version": m.compiler_version,
        "hw": { "rows": b.config.rows, "cols": b.config.cols, "config": b.config },
        "batch": m.batch,
        "instructions": b.program.len(),
        "weight_bytes": b.weights().len(),
        "layers": m.layers,
        "total": {
            "macs": m.layers.iter().map(|l| l.macs).sum::<u64>(),
            "predicted_cycles": m.predicted_cycles,
        },
        "npu_macs": m.npu_macs,
        "cpu_macs": m.cpu_macs,
        "inputs": b.io.model_inputs,
        "outputs": b.io.model_outputs,
        "stages": b.io.stages.iter().map(|st| serde_json::json!({
            "name": st.name(),
            "side": match st { sinter_isa::bundle::Stage::Npu { .. } => "npu", _ => "cpu" },
            "summary": stage_line(b, st),
        })).collect::<Vec<_>>(),
    })
}
