//! Percentiles and the verdict words.

/// The `q` quantile of unsorted µs samples, in ms (nearest rank).
pub fn pct_ms(samples: &[u32], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    pct_sorted_ms(&v, q)
}

pub fn pct_sorted_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// p50 and p99 in ms.
pub fn p50_p99(samples: &[u32]) -> (f64, f64) {
    let mut v = samples.to_vec();
    v.sort_unstable();
    (pct_sorted_ms(&v, 0.50), pct_sorted_ms(&v, 0.99))
}

pub fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}
