//! What one run measured, in a form that is printed as a table, saved as
//! JSON, and read back by the evaluation's report.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{target::TargetKind, workload::Workload};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// One second of a run, for timelines.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since the measured part of the run began.
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub target: TargetKind,
    pub workload: Workload,
    pub concurrency: usize,
    /// Keys a batch request carries; 1 for single-key workloads.
    pub batch_size: usize,
    /// Requests that succeeded.
    pub requests: u64,
    /// Keys those requests touched.
    pub keys: u64,
    pub errors: u64,
    pub elapsed_seconds: f64,
    /// Latency of successful requests.
    pub latency: Percentiles,
    /// CPU the server processes used during the measured part.
    pub server_cpu_seconds: Option<f64>,
    pub timeline: Vec<Second>,
    /// The first error's text, when there were errors.
    pub first_error: Option<String>,
}

impl Measurement {
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.requests, self.elapsed_seconds)
    }

    pub fn keys_per_second(&self) -> f64 {
        per_second(self.keys, self.elapsed_seconds)
    }

    /// Server CPU seconds per 1,000 keys.
    pub fn cpu_seconds_per_thousand(&self) -> Option<f64> {
        let cpu = self.server_cpu_seconds?;
        (self.keys > 0).then(|| cpu * 1000.0 / self.keys as f64)
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}
