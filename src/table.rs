//! Tables for listings.

use crate::workspace::Timestamp;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Cell, CellAlignment, Table};

/// An empty table with a header row.
pub fn new(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    t
}

/// A right-aligned cell, for numbers.
pub fn num(s: impl ToString) -> Cell {
    Cell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

/// A timestamp to the second, `2026-03-01 12:00:00`.
pub fn time(t: Timestamp) -> String {
    let s = t.to_string();
    s.get(..19).unwrap_or(&s).replacen('T', " ", 1)
}

/// An optional value, `-` when absent.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A duration in milliseconds, readable.
pub fn duration_ms(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) if ms < 120_000 => format!("{:.1} s", ms as f64 / 1e3),
        Some(ms) => format!("{:.1} min", ms as f64 / 60e3),
    }
}

/// `k=v, k=v`.
pub fn pairs<'a>(it: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    it.into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first characters of a hash.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
