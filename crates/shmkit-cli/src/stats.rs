//! Latency percentiles from raw samples.

use serde::{Deserialize, Serialize};

/// Percentiles of a set of durations, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct Summary {
    pub samples: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Summarises `ns` (sorted in place). Percentiles use the nearest-rank method.
    pub fn of(ns: &mut [f64]) -> Summary {
        if ns.is_empty() {
            return Summary::default();
        }
        ns.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            ns[(((p / 100.0) * ns.len() as f64 - 1e-9).ceil() as usize).clamp(1, ns.len()) - 1]
        };
        Summary {
            samples: ns.len() as u64,
            min: ns[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            p999: rank(99.9),
            max: ns[ns.len() - 1],
            mean: ns.iter().sum::<f64>() / ns.len() as f64,
        }
    }

    /// Combines two runs of the same measurement: percentiles are averaged weighted by
    /// sample count (both runs are large and from the same distribution).
    pub fn merge(&self, other: &Summary) -> Summary {
        let (wa, wb) = (self.samples as f64, other.samples as f64);
        let w = |x: f64, y: f64| if wa + wb == 0.0 { 0.0 } else { (x * wa + y * wb) / (wa + wb) };
        Summary {
            samples: self.samples + other.samples,
            min: self.min.min(other.min),
            p50: w(self.p50, other.p50),
            p90: w(self.p90, other.p90),
            p99: w(self.p99, other.p99),
            p999: w(self.p999, other.p999),
            max: self.max.max(other.max),
            mean: w(self.mean, other.mean),
        }
    }

    /// `p50 0.21 µs  p90 0.25 µs  p99 0.40 µs  p99.9 2.1 µs  max 31 µs`
    pub fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ns(self.p50),
            ns(self.p90),
            ns(self.p99),
            ns(self.p999),
            ns(self.max)
        )
    }
}

/// A duration in nanoseconds, printed with a unit that keeps 2-3 significant digits.
pub fn ns(v: f64) -> String {
    if v < 1_000.0 {
        format!("{v:.0} ns")
    } else if v < 10_000.0 {
        format!("{:.2} µs", v / 1e3)
    } else if v < 1_000_000.0 {
        format!("{:.1} µs", v / 1e3)
    } else {
        format!("{:.2} ms", v / 1e6)
    }
}

/// A rate with an SI prefix: `12.3 M`.
pub fn rate(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0} ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let s = Summary::of(&mut v);
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.p999, s.max),
            (1.0, 500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(ns(212.4), "212 ns");
        assert_eq!(ns(2_500.0), "2.50 µs");
        assert_eq!(rate(2.5e6), "2.50 M");
    }
}
