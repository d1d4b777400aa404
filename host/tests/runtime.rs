//! The driver and runtime on the functional model (and on the RTL when it is built).

use sinter_host::sample::{dense, hanging, DenseSample};
use sinter_host::{
    CycleSource, DeviceKind, Driver, FuncTransport, HostError, Runtime, Tensor, Transport,
};
use sinter_isa::bundle::Bundle;
use sinter_isa::{Buffer, Dma, HwConfig, Instruction};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn inputs(x: Tensor) -> HashMap<String, Tensor> {
    HashMap::from([("x".to_string(), x)])
}

/// Deterministic test data in roughly [-4, 4].
fn batch_of(rows: usize, k: usize, seed: u32) -> Tensor {
    let data = (0..rows * k)
        .map(|i| {
            let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 16;
            (h % 1600) as f32 / 200.0 - 4.0
        })
        .collect();
    Tensor::new(vec![rows, k], data).unwrap()
}

fn func_runtime(s: &DenseSample) -> Runtime<FuncTransport> {
    let b = &s.bundle;
    let t = FuncTransport::func(b.config, b.manifest.memory.dram_bytes as u64).unwrap();
    Runtime::new(Driver::new(t).unwrap(), b.clone()).unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape);
    for (i, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
        assert!((a - b).abs() <= 1e-6, "element {i}: got {a}, want {b}");
    }
}

#[test]
fn dense_layer_is_exact_on_the_functional_model() {
    let s = dense(HwConfig::SMALL, 4, 6, 5, false);
    let mut rt = func_runtime(&s);
    let x = batch_of(4, 6, 1);
    let out = rt.infer(&inputs(x.clone())).unwrap();
    assert_close(out.output("y").unwrap(), &s.reference(&x));
    assert_eq!(out.runs.len(), 1);
    let st = out.runs[0];
    assert_eq!(st.cycle_source, CycleSource::Predicted);
    assert_eq!(st.cycles, s.bundle.manifest.predicted_cycles);
    assert_eq!(st.mac_active, 4);
    assert!(st.utilization > 0.0 && st.utilization <= 1.0);
    // Some outputs are positive and some clipped by the ReLU: the test exercises both.
    let y = &out.output("y").unwrap().data;
    assert!(y.iter().any(|v| *v > 0.0) && y.contains(&0.0));
}

#[test]
fn batches_are_split_and_padded() {
    let s = dense(HwConfig::SMALL, 4, 6, 5, true);
    let mut rt = func_runtime(&s);
    for rows in [1usize, 3, 4, 5, 9] {
        let x = batch_of(rows, 6, rows as u32);
        let out = rt.infer(&inputs(x.clone())).unwrap();
        assert_eq!(out.runs.len(), rows.div_ceil(4), "rows={rows}");
        let probs = out.output("probs").unwrap();
        assert_close(probs, &s.reference(&x));
        for row in probs.data.chunks(5) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let s = dense(HwConfig::SMALL, 2, 6, 5, false);
    let mut rt = func_runtime(&s);
    let bad_shape = Tensor::new(vec![2, 7], vec![0.0; 14]).unwrap();
    let e = rt.infer(&inputs(bad_shape)).unwrap_err();
    assert!(matches!(e, HostError::InputShape { .. }), "{e}");
    assert!(e.is_invalid_input());
    let e = rt.infer(&HashMap::new()).unwrap_err();
    assert!(matches!(e, HostError::MissingInput { .. }), "{e}");
    let mut extra = inputs(batch_of(2, 6, 0));
    extra.insert("z".into(), batch_of(2, 6, 0));
    let e = rt.infer(&extra).unwrap_err();
    assert!(matches!(e, HostError::UnknownInput { .. }), "{e}");
    let empty = Tensor::new(vec![0, 6], vec![]).unwrap();
    assert!(rt.infer(&inputs(empty)).is_err());
    let lying = Tensor {
        shape: vec![2, 6],
        data: vec![0.0; 5],
    };
    let e = rt.infer(&inputs(lying)).unwrap_err();
    assert!(matches!(e, HostError::InputLength { .. }), "{e}");
    let nan = Tensor::new(vec![1, 6], vec![f32::NAN; 6]).unwrap();
    let e = rt.infer(&inputs(nan)).unwrap_err();
    assert!(matches!(e, HostError::NonFinite { .. }), "{e}");
    // The runtime still works.
    let x = batch_of(2, 6, 7);
    assert_close(
        rt.infer(&inputs(x.clone())).unwrap().output("y").unwrap(),
        &s.reference(&x),
    );
}

#[test]
fn config_mismatch_is_refused() {
    let s = dense(HwConfig::DEFAULT, 1, 6, 5, false);
    let t = FuncTransport::func(HwConfig::SMALL, 1 << 16).unwrap();
    let mut d = Driver::new(t).unwrap();
    assert_eq!(d.config(), HwConfig::SMALL);
    let e = d.load(&s.bundle).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HostError::ConfigMismatch { .. }));
    assert!(msg.contains("16x16") && msg.contains("8x8"), "{msg}");
}

#[test]
fn too_little_device_memory_is_refused() {
    let s = dense(HwConfig::SMALL, 1, 6, 5, false);
    let t = FuncTransport::func(HwConfig::SMALL, 512).unwrap();
    let e = Driver::new(t).unwrap().load(&s.bundle).unwrap_err();
    assert!(matches!(e, HostError::DeviceMemory { .. }), "{e}");
}

#[test]
fn hung_device_times_out_and_recovers() {
    let s = dense(HwConfig::SMALL, 1, 6, 5, false);
    let t = FuncTransport::func(HwConfig::SMALL, 1 << 16).unwrap();
    let driver = Driver::new(t)
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    let mut rt = Runtime::new(driver, hanging(&s.bundle)).unwrap();
    let x = batch_of(1, 6, 3);
    let started = Instant::now();
    let e = rt.infer(&inputs(x.clone())).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, HostError::DeviceHung { .. }), "{e}");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5));
    assert!(e.to_string().contains("reset"), "{e}");

    // The same device runs a good program afterwards.
    let mut driver = Driver::new(FuncTransport::func(HwConfig::SMALL, 1 << 16).unwrap())
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    driver.load(&hanging(&s.bundle)).unwrap();
    assert!(matches!(driver.run(), Err(HostError::DeviceHung { .. })));
    let mut rt = Runtime::new(driver, s.bundle.clone()).unwrap();
    let out = rt.infer(&inputs(x.clone())).unwrap();
    assert_close(out.output("y").unwrap(), &s.reference(&x));
}

#[test]
fn refused_instruction_reports_code_and_pc() {
    let s = dense(HwConfig::SMALL, 1, 6, 5, false);
    let b = &s.bundle;
    let mut program = b.program.clone();
    // A misaligned activation load at index 1.
    if let Instruction::Load(Dma {
        buffer: Buffer::Act,
        dram_base,
        ..
    }) = &mut program[1]
    {
        *dram_base += 1;
    } else {
        panic!("instruction 1 is the activation load");
    }
    let bad = Bundle::new(
        b.config,
        b.manifest.clone(),
        b.io.clone(),
        program,
        b.weights().to_vec(),
        b.cpu_bytes().to_vec(),
    );
    let mut d = Driver::new(FuncTransport::func(HwConfig::SMALL, 1 << 16).unwrap()).unwrap();
    d.load(&bad).unwrap();
    match d.run().unwrap_err() {
        HostError::DeviceError { code, pc, name, .. } => {
            assert_eq!(code, sinter_isa::regs::ERR_MISALIGNED);
            assert_eq!(pc, 1);
            assert_eq!(name, sinter_isa::regs::error_name(code));
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn run_without_bundle_is_an_error() {
    let mut d = Driver::new(FuncTransport::func(HwConfig::SMALL, 4096).unwrap()).unwrap();
    assert!(matches!(d.run(), Err(HostError::NotLoaded(_))));
}

#[test]
fn boxed_devices_work_through_open_runtime() {
    let s = dense(HwConfig::SMALL, 2, 6, 5, false);
    let mut rt =
        sinter_host::open_runtime(DeviceKind::Func, s.bundle.clone(), Duration::from_secs(5))
            .unwrap();
    assert_eq!(rt.driver().transport().name(), "func 8x8");
    let x = batch_of(3, 6, 11);
    assert_close(
        rt.infer(&inputs(x.clone())).unwrap().output("y").unwrap(),
        &s.reference(&x),
    );
}

/// The same layer on the RTL (the build always verilates the 8×8 and 16×16 models).
#[test]
fn dense_layer_on_rtl_matches() {
    let s = dense(HwConfig::SMALL, 2, 6, 5, false);
    let mut rt =
        match sinter_host::open_runtime(DeviceKind::Rtl, s.bundle.clone(), Duration::from_secs(30))
        {
            Ok(rt) => rt,
            Err(e) => panic!("the 8x8 RTL model must be available: {e}"),
        };
    let x = batch_of(2, 6, 5);
    let out = rt.infer(&inputs(x.clone())).unwrap();
    assert_close(out.output("y").unwrap(), &s.reference(&x));
    assert_eq!(out.runs[0].cycle_source, CycleSource::Measured);
    assert!(out.runs[0].cycles > 0);
}

#[test]
fn hung_rtl_device_times_out_and_recovers() {
    let s = dense(HwConfig::SMALL, 1, 6, 5, false);
    let t = match sinter_host::RtlTransport::rtl(HwConfig::SMALL, 1 << 16) {
        Ok(t) => t,
        Err(e) => panic!("the 8x8 RTL model must be available: {e}"),
    };
    let mut driver = Driver::new(t)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    driver.load(&hanging(&s.bundle)).unwrap();
    let started = Instant::now();
    let e = driver.run().unwrap_err();
    assert!(matches!(e, HostError::DeviceHung { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut rt = Runtime::new(driver, s.bundle.clone()).unwrap();
    let x = batch_of(1, 6, 9);
    let out = rt.infer(&inputs(x.clone())).unwrap();
    assert_close(out.output("y").unwrap(), &s.reference(&x));
    assert_eq!(out.runs[0].cycle_source, CycleSource::Measured);
}
