//! What `/metrics` counts beyond the chain: the API's latency per route, as Prometheus
//! histograms. Routes are the router's own patterns (`/v1/accounts/{address}`), so the set of
//! series is bounded by the API, whatever paths clients send.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the buckets, seconds.
pub const BUCKETS_S: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Requests at or under each bound (not cumulative: summed when written).
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

/// The API's request durations, per route.
#[derive(Debug, Default)]
pub struct Latency {
    routes: Mutex<BTreeMap<String, Histogram>>,
}

impl Latency {
    pub fn record(&self, route: &str, took: Duration) {
        let s = took.as_secs_f64();
        let mut routes = self.routes.lock().expect("latency lock");
        let h = routes.entry(route.to_string()).or_default();
        if let Some(i) = BUCKETS_S.iter().position(|b| s <= *b) {
            h.counts[i] += 1;
        }
        h.count += 1;
        h.sum_s += s;
    }

    /// Appends the histograms in Prometheus's text format.
    pub fn render(&self, out: &mut String) {
        let routes = self.routes.lock().expect("latency lock").clone();
        if routes.is_empty() {
            return;
        }
        let name = "gridmesh_api_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an API request, by route."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (route, h) in routes {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS_S.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum_s);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_every_request_in_inf() {
        let l = Latency::default();
        l.record("/v1/status", Duration::from_micros(500));
        l.record("/v1/status", Duration::from_millis(30));
        l.record("/v1/status", Duration::from_secs(9));
        let mut out = String::new();
        l.render(&mut out);
        let line = |le: &str| {
            out.lines()
                .find(|l| l.contains(&format!("le=\"{le}\"")))
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(line("0.001"), "1");
        assert_eq!(line("0.05"), "2");
        assert_eq!(line("5"), "2");
        assert_eq!(line("+Inf"), "3");
        assert!(out.contains("gridmesh_api_request_duration_seconds_count{route=\"/v1/status\"} 3"));
    }
}
