//! Prints sample random programs of the differential tests: one valid program per config and
//! size with its disassembly and estimated cycles, length and cycle statistics over 1000 seeds,
//! and one invalid program with the fault it must raise.
//!
//! `cargo run -p sinter-sim --example randprog_samples`

use sinter_isa::HwConfig;
use sinter_sim::randprog::{generate, generate_invalid, GenOptions};

fn main() {
    for (cfg, opts) in [HwConfig::SMALL, HwConfig::DEFAULT]
        .map(|c| (c, GenOptions::for_config(&c)))
        .into_iter()
        .chain([HwConfig::SMALL, HwConfig::DEFAULT].map(|c| (c, GenOptions::large(&c))))
    {
        for seed in 0..1 {
            let p = generate(&cfg, seed, &opts);
            let est = sinter_isa::timing::estimate(&cfg, &Default::default(), &p.instructions());
            println!(
                "{cfg} seed {seed}: {} cycles\n{}",
                est.total_cycles,
                p.disassembly()
            );
        }
        let mut lens = Vec::new();
        let mut cycles = Vec::new();
        for seed in 0..1000 {
            let p = generate(&cfg, seed, &opts);
            lens.push(p.prog_len());
            cycles.push(
                sinter_isa::timing::estimate(&cfg, &Default::default(), &p.instructions())
                    .total_cycles,
            );
        }
        let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
        let l: Vec<u64> = lens.iter().map(|&x| x as u64).collect();
        println!(
            "{cfg}: avg len {:.1} max {}, avg cycles {:.0} max {}",
            avg(&l),
            l.iter().max().unwrap(),
            avg(&cycles),
            cycles.iter().max().unwrap()
        );
    }
    let p = generate_invalid(
        &HwConfig::SMALL,
        3,
        &GenOptions::for_config(&HwConfig::SMALL),
    );
    println!("{:?}\n{}", p.expected, p.disassembly());
}
