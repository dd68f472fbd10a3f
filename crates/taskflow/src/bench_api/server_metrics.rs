//! Where the server spent a phase's time, from its own `/metrics`: the difference of two
//! scrapes of a few latency histograms, taken before and after the phase.
//!
//! The client's latency says how long a request took; these say which part of the server it
//! waited in (the HTTP handler as a whole, the SQLite readers' and writer's queues, the
//! writer's transactions and commits, the checkpoints). Quantiles are read from the
//! histograms' buckets with linear interpolation inside a bucket, as Prometheus'
//! `histogram_quantile` does, so they are only as fine as the buckets (0.5, 1, 2.5, 5, 10,
//! 25, 50 ms …).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A histogram of the server's, and the labels its series must carry (all of them).
struct Watched {
    /// The name in the result file.
    name: &'static str,
    /// The histogram's name in `/metrics`.
    metric: &'static str,
    /// `key="value"` pairs a series must carry to count.
    labels: &'static [&'static str],
}

/// The histograms a phase's breakdown reports (those the server never recorded are left out).
const WATCHED: &[Watched] = &[
    Watched {
        name: "http_create_task",
        metric: "http_request_duration_seconds",
        labels: &[r#"method="POST""#, r#"route="/api/v1/tasks""#],
    },
    Watched {
        name: "sqlite_write_queue",
        metric: "sqlite_write_queue_seconds",
        labels: &[],
    },
    Watched {
        name: "sqlite_read_queue",
        metric: "sqlite_read_queue_seconds",
        labels: &[],
    },
    Watched {
        name: "sqlite_group_commit",
        metric: "sqlite_group_commit_seconds",
        labels: &[],
    },
    Watched {
        name: "sqlite_commit",
        metric: "sqlite_commit_seconds",
        labels: &[],
    },
    Watched {
        name: "sqlite_checkpoint",
        metric: "sqlite_checkpoint_seconds",
        labels: &[],
    },
    Watched {
        name: "sqlite_writer_rewind_done",
        metric: "sqlite_writer_checkpoint_seconds",
        labels: &[r#"outcome="done""#],
    },
    Watched {
        name: "sqlite_writer_rewind_busy",
        metric: "sqlite_writer_checkpoint_seconds",
        labels: &[r#"outcome="busy""#],
    },
];

/// Cumulative bucket counts (upper bound in seconds, count; by bound, `+Inf` last), sum and
/// count of one histogram, summed over the series that match its labels.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    /// The cumulative count of the bucket ending at `bound` (0 if there is none).
    fn bucket(&self, bound: f64) -> f64 {
        self.buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, count)| *count)
    }
}

/// One scrape of the watched histograms.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<&'static str, Histogram>);

impl Snapshot {
    /// Reads the watched histograms out of a `/metrics` text.
    pub fn parse(text: &str) -> Self {
        let mut histograms = BTreeMap::new();
        for watched in WATCHED {
            let mut histogram = Histogram::default();
            let mut seen = false;
            for line in text.lines() {
                let Some(rest) = line.strip_prefix(watched.metric) else {
                    continue;
                };
                let (series, value) = match line.rsplit_once(' ') {
                    Some((series, value)) => (series, value.parse::<f64>()),
                    None => continue,
                };
                let Ok(value) = value else { continue };
                if !watched.labels.iter().all(|label| series.contains(label)) {
                    continue;
                }
                if rest.starts_with("_bucket{") {
                    if let Some(bound) = bucket_bound(series) {
                        match histogram.buckets.iter_mut().find(|(b, _)| *b == bound) {
                            Some((_, count)) => *count += value,
                            None => histogram.buckets.push((bound, value)),
                        }
                        seen = true;
                    }
                } else if rest.starts_with("_sum") {
                    histogram.sum += value;
                } else if rest.starts_with("_count") {
                    histogram.count += value;
                }
            }
            if seen {
                histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                histograms.insert(watched.name, histogram);
            }
        }
        Self(histograms)
    }

    /// What was recorded between `before` and `self`, per histogram: samples, mean and
    /// quantiles in milliseconds (histograms without samples in between are left out).
    pub fn since(&self, before: &Snapshot) -> Value {
        let mut phase = serde_json::Map::new();
        for (name, after) in &self.0 {
            let earlier = before.0.get(name).cloned().unwrap_or_default();
            let delta = Histogram {
                buckets: after
                    .buckets
                    .iter()
                    .map(|&(bound, count)| (bound, count - earlier.bucket(bound)))
                    .collect(),
                sum: after.sum - earlier.sum,
                count: after.count - earlier.count,
            };
            if delta.count <= 0.0 {
                continue;
            }
            phase.insert(
                (*name).to_owned(),
                json!({
                    "samples": delta.count,
                    "mean_ms": delta.sum / delta.count * 1e3,
                    "p50_ms": delta.quantile(0.50).map(|s| s * 1e3),
                    "p99_ms": delta.quantile(0.99).map(|s| s * 1e3),
                    "p999_ms": delta.quantile(0.999).map(|s| s * 1e3),
                }),
            );
        }
        Value::Object(phase)
    }
}

impl Histogram {
    /// The `q` quantile in seconds, interpolated linearly within its bucket; `None` when it
    /// falls in the open-ended last bucket.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self
            .buckets
            .iter()
            .map(|(_, count)| *count)
            .fold(0.0, f64::max);
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower_bound, mut lower_count) = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return None;
                }
                let in_bucket = cumulative - lower_count;
                let share = if in_bucket > 0.0 {
                    (rank - lower_count) / in_bucket
                } else {
                    1.0
                };
                return Some(lower_bound + (bound - lower_bound) * share);
            }
            (lower_bound, lower_count) = (bound, cumulative);
        }
        None
    }
}

/// A phase's breakdown on one line: `name p50/p99 ms (samples)` per histogram.
pub fn line(phase: &Value) -> String {
    let Some(phase) = phase.as_object() else {
        return String::new();
    };
    let ms = |value: &Value| value.as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"));
    phase
        .iter()
        .map(|(name, h)| {
            format!(
                "{name} {}/{} ms ({})",
                ms(&h["p50_ms"]),
                ms(&h["p99_ms"]),
                h["samples"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `le` of a bucket series (`+Inf` included).
fn bucket_bound(series: &str) -> Option<f64> {
    let start = series.find("le=\"")? + 4;
    let end = start + series[start..].find('"')?;
    match &series[start..end] {
        "+Inf" => Some(f64::INFINITY),
        bound => bound.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(le_counts: &[(&str, u64)], sum: f64) -> String {
        let mut text = String::from("# TYPE sqlite_commit_seconds histogram\n");
        for (le, count) in le_counts {
            text.push_str(&format!(
                "sqlite_commit_seconds_bucket{{le=\"{le}\"}} {count}\n"
            ));
        }
        let count = le_counts.last().map_or(0, |(_, c)| *c);
        text.push_str(&format!("sqlite_commit_seconds_sum {sum}\n"));
        text.push_str(&format!("sqlite_commit_seconds_count {count}\n"));
        text
    }

    #[test]
    fn a_phase_reports_only_what_was_recorded_between_the_scrapes() {
        let before = Snapshot::parse(&scrape(
            &[("0.001", 10), ("0.005", 10), ("0.01", 10), ("+Inf", 10)],
            0.005,
        ));
        // 100 more: 90 under 1 ms, 10 between 5 and 10 ms.
        let after = Snapshot::parse(&scrape(
            &[("0.001", 100), ("0.005", 100), ("0.01", 110), ("+Inf", 110)],
            0.105,
        ));
        let phase = after.since(&before);
        let commit = &phase["sqlite_commit"];
        assert_eq!(commit["samples"], 100.0);
        assert!((commit["mean_ms"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        // The 50th of 100 samples lies halfway through the first bucket's 90.
        let p50 = commit["p50_ms"].as_f64().unwrap();
        assert!((p50 - 50.0 / 90.0).abs() < 1e-9, "{p50}");
        // The 99th lies 9 of 10 into the 5–10 ms bucket.
        let p99 = commit["p99_ms"].as_f64().unwrap();
        assert!((p99 - 9.5).abs() < 1e-9, "{p99}");
        assert!(phase.get("http_create_task").is_none());
    }

    #[test]
    fn series_are_kept_only_with_every_watched_label() {
        let text = "\
http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/tasks\",status=\"201\",le=\"0.005\"} 4
http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/tasks\",status=\"201\",le=\"+Inf\"} 4
http_request_duration_seconds_sum{method=\"POST\",route=\"/api/v1/tasks\",status=\"201\"} 0.008
http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/tasks\",status=\"201\"} 4
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/tasks\",status=\"200\",le=\"0.005\"} 0
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/tasks\",status=\"200\",le=\"+Inf\"} 7
http_request_duration_seconds_sum{method=\"GET\",route=\"/api/v1/tasks\",status=\"200\"} 70
http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/tasks\",status=\"200\"} 7
";
        let phase = Snapshot::parse(text).since(&Snapshot::default());
        let create = &phase["http_create_task"];
        assert_eq!(create["samples"], 4.0);
        assert!((create["mean_ms"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_quantile_in_the_open_ended_bucket_is_unknown() {
        let before = Snapshot::default();
        let after = Snapshot::parse(&scrape(&[("0.001", 1), ("+Inf", 100)], 50.0));
        let phase = after.since(&before);
        assert!(phase["sqlite_commit"]["p99_ms"].is_null());
        assert!(phase["sqlite_commit"]["p50_ms"].is_null());
    }
}
