//! Round-trip properties of the instruction encoding and robustness of the bundle reader.

use proptest::prelude::*;
use sinter_isa::bundle::{Bundle, BundleError, IoSpec, IoTensor, Manifest, MemoryMap, Stage};
use sinter_isa::numeric::QParams;
use sinter_isa::window::{TensorView, WindowInput, WindowOp, WindowSource};
use sinter_isa::*;

fn deps() -> impl Strategy<Value = Deps> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d)| Deps {
        pop_prev: a,
        pop_next: b,
        push_prev: c,
        push_next: d,
    })
}

fn walk() -> impl Strategy<Value = Walk> {
    (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(base, so, si)| Walk {
        base,
        stride_outer: so,
        stride_inner: si,
    })
}

fn buffer() -> impl Strategy<Value = Buffer> {
    prop_oneof![
        Just(Buffer::Act),
        Just(Buffer::Wgt),
        Just(Buffer::Acc),
        Just(Buffer::Out)
    ]
}

prop_compose! {
    fn dma()(deps in deps(), buffer in buffer(), dram_base in any::<u32>(), sram_base in any::<u16>(),
             y_size in any::<u16>(), x_size in any::<u16>(), y_stride in any::<u32>(),
             x_stride in any::<u32>(), pads in any::<[u8; 4]>(), pad_value in any::<i8>()) -> Dma {
        Dma { deps, buffer, dram_base, sram_base, y_size, x_size, y_stride, x_stride,
              pad_top: pads[0], pad_bottom: pads[1], pad_left: pads[2], pad_right: pads[3], pad_value }
    }
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        dma().prop_map(Instruction::Load),
        dma().prop_map(Instruction::Store),
        (
            deps(),
            0usize..3,
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            walk(),
            walk()
        )
            .prop_map(|(deps, mode, wgt, n_outer, n_inner, acc, act)| {
                Instruction::Gemm(Gemm {
                    deps,
                    mode: GemmMode::ALL[mode],
                    wgt,
                    n_outer,
                    n_inner,
                    acc,
                    act,
                })
            }),
        (
            deps(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            walk(),
            walk(),
            any::<[i8; 3]>()
        )
            .prop_map(
                |(deps, param, n_outer, n_inner, src, dst, z)| Instruction::Vec(VecInsn {
                    deps,
                    op: VecOp::Requant,
                    param,
                    n_outer,
                    n_inner,
                    src,
                    dst,
                    zero_point: z[0],
                    clamp_lo: z[1],
                    clamp_hi: z[2]
                })
            ),
        (
            deps(),
            prop_oneof![
                Just(Module::Load),
                Just(Module::Compute),
                Just(Module::Store)
            ]
        )
            .prop_map(|(deps, module)| Instruction::Sync(Sync { deps, module })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode(insn in instruction()) {
        let bytes = insn.encode();
        prop_assert_eq!(Instruction::decode(&bytes).unwrap(), insn);
    }

    #[test]
    fn encode_inverts_decode_on_any_word(bytes in any::<[u8; 32]>()) {
        // Any word either is rejected or re-encodes to itself: no two words mean the same thing.
        if let Ok(insn) = Instruction::decode(&bytes) {
            prop_assert_eq!(insn.encode(), bytes);
        }
    }

    #[test]
    fn disassembly_names_the_opcode(insn in instruction()) {
        let text = insn.to_string();
        prop_assert!(text.starts_with(insn.opcode().name()), "{}", text);
    }
}

#[test]
fn reserved_bits_and_bad_opcodes_are_rejected() {
    let insn = Instruction::Sync(Sync {
        deps: Deps::NONE,
        module: Module::Store,
    });
    let mut bytes = insn.encode();
    bytes[31] = 0x80;
    assert_eq!(
        Instruction::decode(&bytes),
        Err(insn::DecodeError::Reserved)
    );
    let mut bytes = [0u8; 32];
    bytes[0] = 0x0F;
    assert_eq!(
        Instruction::decode(&bytes),
        Err(insn::DecodeError::Opcode(15))
    );
}

fn sample_bundle() -> Bundle {
    let cfg = HwConfig::SMALL;
    let program = vec![
        Instruction::Load(Dma {
            buffer: Buffer::Act,
            dram_base: 0x2000,
            y_size: 1,
            x_size: 2,
            x_stride: 8,
            ..Dma::default()
        }),
        Instruction::Sync(Sync::default()),
    ];
    let manifest = Manifest {
        model_name: "m".into(),
        compiler_version: "test".into(),
        batch: 1,
        memory: MemoryMap {
            program_base: 0,
            weights_base: 0x1000,
            arena_base: 0x2000,
            arena_bytes: 0x100,
            dram_bytes: 0x4000,
        },
        ..Manifest::default()
    };
    let io = IoSpec {
        stages: vec![Stage::Npu {
            name: "s0".into(),
            insn_start: 0,
            insn_end: 2,
            outputs: vec![],
            inputs: vec![IoTensor {
                name: "x".into(),
                shape: vec![1, 16],
                strides: vec![16, 1],
                dram_base: 0x2000,
                bytes: 16,
                quant: QParams {
                    scale: 0.5,
                    zero_point: 3,
                },
                channel_lanes: None,
            }],
        }],
        ..IoSpec::default()
    };
    let mut b = Bundle::new(cfg, manifest, io, program, vec![7u8; 300], vec![1, 2, 3]);
    b.ops = vec![sample_op()];
    b
}

/// A 3×3 convolution of a 4×4 image of one lane block into two output blocks.
fn sample_op() -> WindowOp {
    let view = |addr, pixel_bytes| TensorView {
        addr,
        images: 1,
        height: 4,
        width: 4,
        pixel_bytes,
        lanes: pixel_bytes,
    };
    let block = |b: u32| {
        (0..9)
            .map(|k| WindowSource {
                input: 0,
                block: 0,
                tile: b * 9 + k,
                ky: k / 3,
                kx: k % 3,
            })
            .collect()
    };
    WindowOp {
        name: "conv".into(),
        insn_start: 0,
        insn_end: 2,
        inputs: vec![WindowInput {
            tensor: view(0x2000, 8),
            pad_value: -3,
        }],
        output: view(0x2080, 16),
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [1; 4],
        sources: vec![block(0), block(1)],
        combine: GemmMode::Add,
        tiles_addr: 0x1000,
        params_addr: 0x1480,
        zero_point: 0,
        clamp_lo: -128,
        clamp_hi: 127,
        region: None,
    }
}

#[test]
fn bundles_refuse_operations_outside_their_program_or_memory() {
    let b = sample_bundle();
    let mut past_program = b.clone();
    past_program.ops[0].insn_end = 3;
    let mut past_memory = b.clone();
    past_memory.ops[0].output.addr = 0x3FF0;
    let mut overlapping = b;
    overlapping.ops[0].output.addr = 0x2010;
    for (what, bad) in [
        ("past the program", past_program),
        ("past the DRAM", past_memory),
        ("output over its input", overlapping),
    ] {
        let r = Bundle::from_bytes(&bad.to_bytes());
        assert!(matches!(r, Err(BundleError::Malformed(_))), "{what}: {r:?}");
    }
}

#[test]
fn bundle_round_trips_through_file_and_mmap() {
    let b = sample_bundle();
    let bytes = b.to_bytes();
    let back = Bundle::from_bytes(&bytes).unwrap();
    assert_eq!(back.program, b.program);
    assert_eq!(back.manifest, b.manifest);
    assert_eq!(back.io, b.io);
    assert_eq!(back.weights(), b.weights());
    assert_eq!(back.cpu_bytes(), &[1, 2, 3]);
    assert_eq!(back.ops, b.ops);
    let dir = std::env::temp_dir().join(format!("sinter-isa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.sntr");
    b.save(&path).unwrap();
    let mapped = Bundle::open(&path).unwrap();
    assert_eq!(mapped.weights(), b.weights());
    assert_eq!(mapped.config, HwConfig::SMALL);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample_bundle().to_bytes();
    for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        assert!(Bundle::from_bytes(&bytes[..len]).is_err(), "len {len}");
    }
    assert!(matches!(
        Bundle::from_bytes(&bytes[..40]),
        Err(BundleError::Truncated(_))
    ));
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = sample_bundle().to_bytes();
    // Flip one byte in the header, the table and in every section's data.
    for at in (0..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[at] ^= 0x5A;
        let r = Bundle::from_bytes(&b);
        // Bytes in alignment gaps are not covered by a checksum and may change harmlessly.
        if let Ok(back) = r {
            assert_eq!(back.program, sample_bundle().program, "flip at {at}");
            assert_eq!(back.weights(), sample_bundle().weights(), "flip at {at}");
        }
    }
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(Bundle::from_bytes(&b), Err(BundleError::Magic)));
    let mut b = bytes.clone();
    b[8] = 9;
    assert!(matches!(
        Bundle::from_bytes(&b),
        Err(BundleError::Version(9))
    ));
    let mut b = bytes;
    let last = b.len() - 1;
    b[last] ^= 1;
    assert!(matches!(
        Bundle::from_bytes(&b),
        Err(BundleError::SectionChecksum(_))
    ));
}

#[test]
fn validation_catches_bounds_and_alignment() {
    let cfg = HwConfig::SMALL;
    let ok = Instruction::Load(Dma {
        buffer: Buffer::Act,
        dram_base: 8,
        y_size: 2,
        x_size: 3,
        x_stride: 8,
        y_stride: 64,
        ..Dma::default()
    });
    ok.validate(&cfg).unwrap();
    let mut mis = ok;
    if let Instruction::Load(d) = &mut mis {
        d.dram_base = 4;
    }
    assert_eq!(mis.validate(&cfg), Err(InsnFault::Misaligned));
    let oob = Instruction::Gemm(Gemm {
        n_outer: 1,
        n_inner: 2,
        acc: Walk::contiguous(cfg.acc_depth as u16 - 1),
        ..Gemm::default()
    });
    assert_eq!(oob.validate(&cfg), Err(InsnFault::SramBounds));
    let store_acc = Instruction::Store(Dma {
        buffer: Buffer::Acc,
        y_size: 1,
        x_size: 1,
        ..Dma::default()
    });
    assert!(matches!(
        store_acc.validate(&cfg),
        Err(InsnFault::Illegal(_))
    ));
}
