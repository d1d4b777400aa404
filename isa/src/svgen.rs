//! Generates the SystemVerilog package `hdl/rtl/sinter_isa_pkg.sv` from this crate, so the RTL
//! decodes exactly the fields, opcodes, registers and rules defined here.
//!
//! The checked-in file is compared against [`generate`] by a test; regenerate it with
//! `SINTER_BLESS=1 cargo test -p sinter-isa sv_package`.

use crate::insn::{Field, COMMON, FORMATS, INSN_BITS};
use crate::{regs, Buffer, HwConfig, Module, Opcode, VecOp};
use std::fmt::Write;

/// Path of the package relative to the workspace root.
pub const PACKAGE_PATH: &str = "hdl/rtl/sinter_isa_pkg.sv";

/// The package source.
pub fn generate() -> String {
    let mut s = String::new();
    let w = &mut s;
    w.push_str(
        "// Sinter NPU instruction-set package.\n\
         // GENERATED from the sinter-isa crate (isa/src/svgen.rs): do not edit by hand.\n\
         // Regenerate with: SINTER_BLESS=1 cargo test -p sinter-isa sv_package\n\n\
         /* verilator lint_off UNUSEDPARAM */\n\
         package sinter_isa_pkg;\n\n",
    );
    let d = HwConfig::DEFAULT;
    line(w, "// Architecture version (VERSION register).");
    param(
        w,
        "logic [31:0]",
        "ARCH_VERSION",
        format!("32'h{:08x}", crate::ARCH_VERSION),
    );
    param(w, "int unsigned", "INSN_BITS", INSN_BITS.to_string());
    param(
        w,
        "int unsigned",
        "INSN_BYTES",
        crate::INSN_BYTES.to_string(),
    );
    line(w, "\n// Default hardware configuration.");
    for (name, v) in [
        ("DEFAULT_ROWS", d.rows),
        ("DEFAULT_COLS", d.cols),
        ("DEFAULT_ACT_DEPTH", d.act_depth),
        ("DEFAULT_WGT_DEPTH", d.wgt_depth),
        ("DEFAULT_ACC_DEPTH", d.acc_depth),
        ("DEFAULT_OUT_DEPTH", d.out_depth),
        ("DEFAULT_BUS_BYTES", d.bus_bytes),
    ] {
        param(w, "int unsigned", name, v.to_string());
    }

    line(
        w,
        "\n// Queue and buffer sizes of the microarchitecture (shared with the timing model).",
    );
    for (name, v) in [
        ("QUEUE_DEPTH", crate::timing::QUEUE_DEPTH),
        ("FETCH_DEPTH", crate::timing::FETCH_DEPTH),
        ("FETCH_BURST", crate::timing::FETCH_BURST),
        ("DMA_MAX_BEATS", crate::timing::DMA_MAX_BEATS),
    ] {
        param(w, "int unsigned", name, v.to_string());
    }

    line(w, "\n// Opcodes.");
    for op in Opcode::ALL {
        param(
            w,
            "logic [3:0]",
            &format!("OP_{}", op.name().to_uppercase()),
            format!("4'd{}", op as u32),
        );
    }
    line(w, "\n// Buffers (field `buffer` of load/store).");
    for b in Buffer::ALL {
        param(
            w,
            "logic [1:0]",
            &format!("BUF_{}", b.name().to_uppercase()),
            format!("2'd{}", b as u32),
        );
    }
    line(w, "\n// Modules (field `target` of sync).");
    for m in Module::ALL {
        param(
            w,
            "logic [1:0]",
            &format!("MOD_{}", m.name().to_uppercase()),
            format!("2'd{}", m as u32),
        );
    }
    line(
        w,
        "\n// GEMM modes (field `mode`): how the product combines with the accumulator.",
    );
    for m in crate::GemmMode::ALL {
        param(
            w,
            "logic [1:0]",
            &format!("GEMM_{}", format!("{m:?}").to_uppercase()),
            format!("2'd{}", m as u32),
        );
    }
    line(w, "\n// Vector-unit operations.");
    param(
        w,
        "logic [3:0]",
        "VEC_REQUANT",
        format!("4'd{}", VecOp::Requant as u32),
    );
    line(w, "\n// Dependency flag bits within `deps`.");
    for (name, bit) in [
        ("DEP_POP_PREV", 0),
        ("DEP_POP_NEXT", 1),
        ("DEP_PUSH_PREV", 2),
        ("DEP_PUSH_NEXT", 3),
    ] {
        param(w, "int unsigned", name, bit.to_string());
    }

    line(
        w,
        "\n// Requantization: round half away from zero of (acc + bias) * mult >>> shift,",
    );
    line(
        w,
        "// shift lanes read unsigned and clamped to MAX_SHIFT, then + zero point, clamp.",
    );
    param(
        w,
        "int unsigned",
        "MAX_SHIFT",
        crate::numeric::MAX_SHIFT.to_string(),
    );

    line(w, "\n// Register map (byte offsets).");
    for (name, off) in regs::ALL {
        param(
            w,
            "logic [7:0]",
            &format!("REG_{name}"),
            format!("8'h{off:02x}"),
        );
    }
    line(w, "\n// CONTROL and STATUS bits.");
    for (name, v) in [
        ("CONTROL_START_BIT", regs::CONTROL_START.trailing_zeros()),
        ("CONTROL_RESET_BIT", regs::CONTROL_RESET.trailing_zeros()),
        ("STATUS_BUSY_BIT", regs::STATUS_BUSY.trailing_zeros()),
        ("STATUS_DONE_BIT", regs::STATUS_DONE.trailing_zeros()),
        ("STATUS_ERROR_BIT", regs::STATUS_ERROR.trailing_zeros()),
    ] {
        param(w, "int unsigned", name, v.to_string());
    }
    line(w, "\n// Error codes (ERROR_CODE register).");
    for (name, v) in [
        ("ERR_NONE", regs::ERR_NONE),
        ("ERR_ILLEGAL_INSN", regs::ERR_ILLEGAL_INSN),
        ("ERR_SRAM_BOUNDS", regs::ERR_SRAM_BOUNDS),
        ("ERR_MISALIGNED", regs::ERR_MISALIGNED),
        ("ERR_PROG_ALIGN", regs::ERR_PROG_ALIGN),
    ] {
        param(w, "logic [7:0]", name, format!("8'd{v}"));
    }

    line(
        w,
        "\n// Instruction formats: field positions, then one packed struct per format.",
    );
    for (fmt_name, fields) in FORMATS {
        for fld in COMMON.iter().chain(fields.iter()) {
            let base = format!("F_{}_{}", fmt_name.to_uppercase(), fld.name.to_uppercase());
            param(w, "int unsigned", &format!("{base}_LO"), fld.lo.to_string());
            param(
                w,
                "int unsigned",
                &format!("{base}_W"),
                fld.width.to_string(),
            );
        }
    }
    for (fmt_name, fields) in FORMATS {
        packed_struct(w, fmt_name, fields);
    }
    w.push_str("\nendpackage\n/* verilator lint_on UNUSEDPARAM */\n");
    s
}

fn line(w: &mut String, s: &str) {
    let text = s.trim_start_matches('\n');
    if text.len() != s.len() {
        w.push('\n');
    }
    let _ = writeln!(w, "  {text}");
}

fn param(w: &mut String, ty: &str, name: &str, value: String) {
    let _ = writeln!(w, "  localparam {ty} {name} = {value};");
}

fn packed_struct(w: &mut String, fmt_name: &str, fields: &[Field]) {
    let mut all: Vec<Field> = COMMON.iter().chain(fields.iter()).copied().collect();
    all.sort_by_key(|f| f.lo);
    // Members from the most significant bit down, with reserved gaps named rsvd_<lo>.
    let mut members = Vec::new();
    let mut next = 0;
    for f in &all {
        if f.lo > next {
            members.push((format!("rsvd_{next}"), f.lo - next));
        }
        members.push((f.name.to_string(), f.width));
        next = f.lo + f.width;
    }
    if next < INSN_BITS {
        members.push((format!("rsvd_{next}"), INSN_BITS - next));
    }
    let _ = writeln!(w, "\n  typedef struct packed {{");
    for (name, width) in members.iter().rev() {
        let _ = writeln!(w, "    logic [{}:0] {name};", width - 1);
    }
    let _ = writeln!(w, "  }} {fmt_name}_insn_t;");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn sv_package_is_up_to_date() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(PACKAGE_PATH);
        let want = generate();
        if std::env::var_os("SINTER_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from the ISA definition; regenerate with \
             SINTER_BLESS=1 cargo test -p sinter-isa sv_package",
            path.display()
        );
    }

    #[test]
    fn structs_cover_exactly_256_bits() {
        let s = generate();
        for (fmt_name, _) in FORMATS {
            let start = s.find(&format!("}} {fmt_name}_insn_t;")).unwrap();
            let body_start = s[..start].rfind("typedef struct packed").unwrap();
            let bits: u32 = s[body_start..start]
                .lines()
                .filter_map(|l| l.trim().strip_prefix("logic ["))
                .map(|l| l.split(':').next().unwrap().parse::<u32>().unwrap() + 1)
                .sum();
            assert_eq!(bits, INSN_BITS, "{fmt_name}");
        }
    }
}
