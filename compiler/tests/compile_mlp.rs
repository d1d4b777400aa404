//! The compiler on the digits MLP: structure of the bundle and validity of the program.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_isa::bundle::Stage;
use sinter_isa::timing::neighbours;
use sinter_isa::HwConfig;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/digits")
        .join(name)
}

fn compile_digits(hw: HwConfig, batch: usize) -> sinter_isa::bundle::Bundle {
    let onnx = std::fs::read(fixture("mlp.onnx")).unwrap();
    let calib: ArrayD<f32> = read_npy(fixture("calib.npy")).unwrap();
    compile(
        &onnx,
        &calib,
        &CompileOptions {
            hw,
            batch,
            name: "digits".into(),
        },
    )
    .unwrap()
}

/// Every pop is preceded by its push in program order, and every instruction is legal.
fn assert_valid_program(b: &sinter_isa::bundle::Bundle) {
    let mut tokens = [[0i64; 3]; 3];
    for (i, insn) in b.program.iter().enumerate() {
        insn.validate(&b.config)
            .unwrap_or_else(|e| panic!("instruction {i} ({insn}): {e}"));
        let m = insn.module();
        let d = insn.deps();
        let (prev, next) = neighbours(m);
        for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
            if flag {
                let from = from.expect("flag names a neighbour");
                tokens[from as usize][m as usize] -= 1;
                assert!(
                    tokens[from as usize][m as usize] >= 0,
                    "instruction {i} pops nothing"
                );
            }
        }
        for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
            if flag {
                tokens[m as usize][to.expect("neighbour") as usize] += 1;
            }
        }
    }
}

#[test]
fn digits_mlp_compiles_for_both_arrays() {
    for hw in [HwConfig::SMALL, HwConfig::DEFAULT] {
        for batch in [1, 7, 64] {
            let b = compile_digits(hw, batch);
            assert_eq!(b.manifest.layers.len(), 2, "two dense layers");
            assert_eq!(b.manifest.npu_macs, (batch * (64 * 64 + 64 * 10)) as u64);
            // One NPU stage (both dense layers), then the softmax on the CPU.
            let kinds: Vec<_> =
                b.io.stages
                    .iter()
                    .map(|s| match s {
                        Stage::Npu {
                            inputs, outputs, ..
                        } => format!("npu {}->{}", inputs.len(), outputs.len()),
                        Stage::Cpu { .. } => "cpu".to_string(),
                    })
                    .collect();
            assert_eq!(kinds, ["npu 1->1", "cpu"]);
            assert_eq!(b.manifest.cpu_macs, 0);
            assert!(b.manifest.predicted_cycles > 0);
            assert_valid_program(&b);
            // The bundle survives serialization.
            let back = sinter_isa::bundle::Bundle::from_bytes(&b.to_bytes()).unwrap();
            assert_eq!(back.program, b.program);
        }
    }
}
