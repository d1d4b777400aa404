//! .npy files as float arrays.

use anyhow::Context;
use ndarray::ArrayD;
use ndarray_npy::{read_npy, write_npy, ReadNpyError};
use std::path::Path;

/// Reads an f32 or f64 array (f64 is converted).
pub fn read_f32(path: &Path) -> anyhow::Result<ArrayD<f32>> {
    match read_npy::<_, ArrayD<f32>>(path) {
        Ok(a) => Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => {
            let a: ArrayD<f64> = read_npy(path).with_context(|| {
                format!("{}: expected a float32 or float64 array", path.display())
            })?;
            Ok(a.mapv(|v| v as f32))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes an f32 array.
pub fn write_f32(path: &Path, a: &ArrayD<f32>) -> anyhow::Result<()> {
    write_npy(path, a).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads class labels: an integer array (int64 or int32) or a float array of whole numbers.
pub fn read_labels(path: &Path) -> anyhow::Result<Vec<i64>> {
    if let Ok(a) = read_npy::<_, ArrayD<i64>>(path) {
        return Ok(a.iter().copied().collect());
    }
    if let Ok(a) = read_npy::<_, ArrayD<i32>>(path) {
        return Ok(a.iter().map(|v| *v as i64).collect());
    }
    let a = read_f32(path)
        .with_context(|| format!("{}: expected integer class labels", path.display()))?;
    a.iter()
        .map(|v| {
            anyhow::ensure!(
                v.fract() == 0.0,
                "{}: label {v} is not a whole number",
                path.display()
            );
            Ok(*v as i64)
        })
        .collect()
}
