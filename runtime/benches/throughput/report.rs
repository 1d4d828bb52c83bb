//! Summaries of the rounds.

use super::*;

/// Median, min and max messages/s.
pub(crate) fn summary(runs: &[Run]) -> (f64, f64, f64) {
    let v: Vec<f64> = runs.iter().map(|r| r.msgs_per_sec).collect();
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    (median(v), min, max)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}
