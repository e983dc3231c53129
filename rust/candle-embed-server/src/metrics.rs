//! Prometheus metrics, written by hand in the text exposition format: counters of requests by
//! route and status, histograms of latency, queue time and batch sizes, and tokens embedded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A Prometheus histogram with fixed upper bounds; observations are lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// One count per bound, plus the `+Inf` bucket; not cumulative (summed when rendered).
    counts: Vec<AtomicU64>,
    /// Sum of observations, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const TOKENS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
];

/// Everything the server counts, shared by the HTTP layer and the schedulers.
#[derive(Debug)]
pub struct Metrics {
    /// (route, status) → requests answered.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub request_duration: Histogram,
    pub queue_duration: Histogram,
    pub forward_duration: Histogram,
    /// Sequences (inputs) in one forward pass.
    pub batch_sequences: Histogram,
    /// Distinct client requests merged into one forward pass.
    pub batch_requests: Histogram,
    pub batch_tokens: Histogram,
    pub batches: AtomicU64,
    pub tokens_embedded: AtomicU64,
    pub inputs_embedded: AtomicU64,
    /// Requests dropped from the queue because their client went away.
    pub cancelled: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    /// Requests admitted and not yet answered (a gauge).
    pub in_flight: AtomicU64,
    /// Answers of any route and status, for noticing activity.
    pub answered: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            request_duration: Histogram::new(SECONDS),
            queue_duration: Histogram::new(SECONDS),
            forward_duration: Histogram::new(SECONDS),
            batch_sequences: Histogram::new(COUNTS),
            batch_requests: Histogram::new(COUNTS),
            batch_tokens: Histogram::new(TOKENS),
            batches: AtomicU64::new(0),
            tokens_embedded: AtomicU64::new(0),
            inputs_embedded: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected_overloaded: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            answered: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        self.request_duration.observe_duration(elapsed);
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP candle_embed_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE candle_embed_requests_total counter\n");
        for ((route, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "candle_embed_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let histograms = [
            (
                "candle_embed_request_duration_seconds",
                "Time from request to response.",
                &self.request_duration,
            ),
            (
                "candle_embed_queue_duration_seconds",
                "Time a request waited before its first batch ran.",
                &self.queue_duration,
            ),
            (
                "candle_embed_forward_duration_seconds",
                "Time of one batched forward pass.",
                &self.forward_duration,
            ),
            (
                "candle_embed_batch_size",
                "Inputs (sequences) in one forward pass.",
                &self.batch_sequences,
            ),
            (
                "candle_embed_batch_requests",
                "Client requests merged into one forward pass.",
                &self.batch_requests,
            ),
            (
                "candle_embed_batch_tokens",
                "Tokens in one forward pass.",
                &self.batch_tokens,
            ),
        ];
        for (name, help, histogram) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            histogram.render(&mut out, name, "");
        }
        let counters = [
            (
                "candle_embed_batches_total",
                "Forward passes run.",
                &self.batches,
            ),
            (
                "candle_embed_tokens_embedded_total",
                "Tokens embedded (after truncation).",
                &self.tokens_embedded,
            ),
            (
                "candle_embed_inputs_embedded_total",
                "Inputs embedded.",
                &self.inputs_embedded,
            ),
            (
                "candle_embed_cancelled_total",
                "Requests skipped because the client went away.",
                &self.cancelled,
            ),
            (
                "candle_embed_rejected_overloaded_total",
                "Requests answered 429 because the queue was full.",
                &self.rejected_overloaded,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP candle_embed_requests_in_flight Requests admitted and not yet answered.\n\
             # TYPE candle_embed_requests_in_flight gauge\ncandle_embed_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(out.contains("x_sum 12.7\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.record_request("/v1/embeddings", 200, Duration::from_millis(3));
        m.record_request("/v1/embeddings", 200, Duration::from_millis(3));
        m.record_request("/v1/embeddings", 400, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("candle_embed_requests_total{route=\"/v1/embeddings\",status=\"200\"} 2")
        );
        assert!(text.contains("# TYPE candle_embed_batch_requests histogram"));
    }
}
