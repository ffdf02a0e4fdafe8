//! The end-of-run report: built from the counters and histograms of a run, printed as a table
//! and written as JSON. Pure: no clock, no I/O.
//!
//! The JSON also carries every histogram in HdrHistogram's compressed V2 encoding (base64), so
//! reports of several perf processes can later be merged into exact combined percentiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::{Counts, Tallies};

/// What the run was asked to do, echoed in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    pub urls: Vec<String>,
    pub clients: usize,
    /// Target sends per second over all clients.
    pub rate: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub body_bytes: usize,
    pub threads: usize,
}

/// What the run recorded, gathered once it stopped.
pub struct Measured {
    pub counts: Counts,
    pub tallies: Tallies,
    /// Sends the schedule held for the connections that came up.
    pub scheduled: u64,
    /// The measured window as scheduled, ns on the shared clock: `[start + warm-up, end)`.
    pub window_ns: (u64, u64),
    pub ack: Histogram<u64>,
    pub delivery: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub send_lag: Histogram<u64>,
}

/// Percentiles of one histogram, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Quantiles {
                count: 0,
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Quantiles {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connections {
    pub attempted: usize,
    pub connected: u64,
    pub failed: u64,
    /// Closed or broken before the run stopped them.
    pub dropped: u64,
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Messages {
    /// Sends the schedule held for the connected clients, warm-up included.
    pub scheduled: u64,
    pub sent: u64,
    pub unsent: u64,
    pub sent_measured: u64,
    /// Measured sends per second over the measured window (stretched if sends ran late).
    pub send_rate: f64,
    pub acked: u64,
    pub delivered: u64,
    pub offline: u64,
    pub failed: u64,
    pub failed_reasons: BTreeMap<String, u64>,
    pub missing_acks: u64,
    pub unexpected_acks: u64,
    pub received: u64,
    pub receive_rate: f64,
    pub duplicates: u64,
    pub order_violations: u64,
    /// Skipped sequences never filled in, per sender.
    pub gaps: u64,
    /// Acked `delivered` but never received (counts duplicates out).
    pub lost: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Errors {
    pub error_frames: u64,
    pub codes: BTreeMap<String, u64>,
    pub bad_frames: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Intended send -> ack.
    pub ack: Quantiles,
    /// Intended send -> the recipient has the message.
    pub delivery: Quantiles,
    /// TCP connect + WebSocket upgrade + welcome.
    pub connect: Quantiles,
    /// Intended send -> written: the generator's own lateness.
    pub send_lag: Quantiles,
}

/// The whole report; its JSON form is what `--json` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub config: RunConfig,
    /// Length of the measured window, seconds, as the rates use it.
    pub window_s: f64,
    pub connections: Connections,
    pub messages: Messages,
    /// All in microseconds.
    pub latency_us: Latency,
    pub errors: Errors,
    /// Histograms, V2 + deflate, base64: name -> encoding.
    pub hdr: BTreeMap<String, String>,
}

impl Report {
    pub fn build(config: RunConfig, m: &Measured) -> Self {
        let c = &m.counts;
        // Sends that went out after the scheduled end stretch the window: the achieved rate
        // then shows the generator (or the server's back-pressure) fell behind.
        let (from, to) = m.window_ns;
        let end = to.max(c.last_send_ns);
        let window_s = end.saturating_sub(from) as f64 / 1e9;
        let per_s = |n: u64| {
            if window_s > 0.0 {
                (n as f64 / window_s * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let unique = c.received - c.duplicates;
        let hdr = [
            ("ack", &m.ack),
            ("delivery", &m.delivery),
            ("connect", &m.connect),
            ("send_lag", &m.send_lag),
        ]
        .into_iter()
        .filter_map(|(name, h)| Some((name.to_owned(), encode_histogram(h)?)))
        .collect();
        Report {
            connections: Connections {
                attempted: config.clients,
                connected: c.connected,
                failed: c.connect_failed,
                dropped: c.disconnects,
                failures: m.tallies.connect_errors.clone(),
            },
            config,
            window_s: (window_s * 1000.0).round() / 1000.0,
            messages: Messages {
                scheduled: m.scheduled,
                sent: c.sent,
                unsent: c.unsent,
                sent_measured: c.sent_measured,
                send_rate: per_s(c.sent_measured),
                acked: c.delivered + c.offline + c.failed,
                delivered: c.delivered,
                offline: c.offline,
                failed: c.failed,
                failed_reasons: m.tallies.failed_reasons.clone(),
                missing_acks: c.missing_acks,
                unexpected_acks: c.unexpected_acks,
                received: c.received,
                receive_rate: per_s(c.received_measured),
                duplicates: c.duplicates,
                order_violations: c.order_violations,
                gaps: c.gaps,
                lost: c.delivered.saturating_sub(unique),
            },
            latency_us: Latency {
                ack: Quantiles::of(&m.ack),
                delivery: Quantiles::of(&m.delivery),
                connect: Quantiles::of(&m.connect),
                send_lag: Quantiles::of(&m.send_lag),
            },
            errors: Errors {
                error_frames: c.error_frames,
                codes: m.tallies.error_codes.clone(),
                bad_frames: c.bad_frames,
            },
            hdr,
        }
    }

    /// Whether anything went wrong that a healthy system never shows: lost, duplicated,
    /// reordered or unanswered messages, failed acks, error frames, dropped connections.
    pub fn clean(&self) -> bool {
        let m = &self.messages;
        let c = &self.connections;
        c.failed == 0
            && c.dropped == 0
            && m.unsent == 0
            && m.failed == 0
            && m.missing_acks == 0
            && m.unexpected_acks == 0
            && m.duplicates == 0
            && m.order_violations == 0
            && m.lost == 0
            && self.errors.error_frames == 0
            && self.errors.bad_frames == 0
    }

    /// The human-readable form.
    pub fn table(&self) -> String {
        let cfg = &self.config;
        let c = &self.connections;
        let m = &self.messages;
        let l = &self.latency_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "perf load: {} clients over {} gateway url(s), target {} msg/s for {} s (warm-up {} s), {}-byte bodies, {} threads",
            cfg.clients,
            cfg.urls.len(),
            cfg.rate,
            cfg.duration_s,
            cfg.warmup_s,
            cfg.body_bytes,
            cfg.threads
        );
        let _ = writeln!(
            s,
            "connections  {}/{} up, {} failed, {} dropped; connect p50 {} p99 {} max {}",
            c.connected,
            c.attempted,
            c.failed,
            c.dropped,
            ms(l.connect.p50),
            ms(l.connect.p99),
            ms(l.connect.max)
        );
        tally_line(&mut s, "  failures", &c.failures);
        let _ = writeln!(
            s,
            "rate         sent {:.1}/s, received {:.1}/s over {:.3} s (target {})",
            m.send_rate, m.receive_rate, self.window_s, cfg.rate
        );
        let _ = writeln!(
            s,
            "messages     scheduled {}  sent {}  unsent {}  acked {}  received {}",
            m.scheduled, m.sent, m.unsent, m.acked, m.received
        );
        let _ = writeln!(
            s,
            "acks         delivered {}  offline {}  failed {}  missing {}  unexpected {}",
            m.delivered, m.offline, m.failed, m.missing_acks, m.unexpected_acks
        );
        tally_line(&mut s, "  failed", &m.failed_reasons);
        let _ = writeln!(
            s,
            "integrity    lost {}  duplicates {}  order violations {}  gaps {}",
            m.lost, m.duplicates, m.order_violations, m.gaps
        );
        let _ = writeln!(
            s,
            "errors       error frames {}  unparsed frames {}",
            self.errors.error_frames, self.errors.bad_frames
        );
        tally_line(&mut s, "  codes", &self.errors.codes);
        let _ = writeln!(
            s,
            "\nlatency (ms)        p50       p90       p99     p99.9       max     count"
        );
        for (name, q) in [
            ("ack", &l.ack),
            ("delivery", &l.delivery),
            ("send lag", &l.send_lag),
            ("connect", &l.connect),
        ] {
            let _ = writeln!(
                s,
                "  {name:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                ms(q.p50),
                ms(q.p90),
                ms(q.p99),
                ms(q.p999),
                ms(q.max),
                q.count
            );
        }
        let _ = writeln!(
            s,
            "\n{}",
            if self.clean() {
                "result: clean"
            } else {
                "result: PROBLEMS (see above)"
            }
        );
        s
    }
}

/// µs as milliseconds with three decimals.
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn tally_line(s: &mut String, label: &str, map: &BTreeMap<String, u64>) {
    if map.is_empty() {
        return;
    }
    let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(s, "{label}: {}", items.join(", "));
}

/// A histogram in V2 + deflate, base64; `None` if encoding fails (it only can on a bug).
pub fn encode_histogram(h: &Histogram<u64>) -> Option<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;
    use hdrhistogram::serialization::Deserializer;

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    fn config() -> RunConfig {
        RunConfig {
            urls: vec!["ws://127.0.0.1:1/ws".into()],
            clients: 4,
            rate: 100.0,
            warmup_s: 0.0,
            duration_s: 10.0,
            body_bytes: 100,
            threads: 2,
        }
    }

    fn measured(counts: Counts) -> Measured {
        Measured {
            counts,
            tallies: Tallies::default(),
            scheduled: 1_000,
            window_ns: (1_000_000_000, 11_000_000_000),
            ack: hist(1..=1000),
            delivery: hist([500; 10]),
            connect: new_histogram(),
            send_lag: hist([1]),
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let q = Quantiles::of(&hist(1..=1000));
        assert_eq!(q.count, 1000);
        assert_eq!(
            (q.min, q.p50, q.p90, q.p99, q.p999, q.max),
            (1, 500, 900, 990, 999, 1000)
        );
        assert_eq!(q.mean, 500.5);
        let empty = Quantiles::of(&new_histogram());
        assert_eq!((empty.count, empty.p99, empty.max), (0, 0, 0));
    }

    #[test]
    fn rates_counts_and_loss() {
        let counts = Counts {
            connected: 4,
            sent: 1_000,
            sent_measured: 1_000,
            delivered: 990,
            offline: 5,
            failed: 5,
            received: 992,
            received_measured: 992,
            duplicates: 4,
            last_send_ns: 10_990_000_000,
            ..Counts::default()
        };
        let r = Report::build(config(), &measured(counts));
        assert_eq!(r.window_s, 10.0);
        assert_eq!(r.messages.send_rate, 100.0);
        assert_eq!(r.messages.receive_rate, 99.2);
        assert_eq!(r.messages.acked, 1_000);
        assert_eq!(r.messages.lost, 2); // 990 delivered, 988 distinct received
        assert_eq!(r.connections.attempted, 4);
        assert_eq!(r.latency_us.ack.p99, 990);
        assert_eq!(r.latency_us.delivery.p50, 500);
        assert!(!r.clean());
    }

    #[test]
    fn late_sends_stretch_the_window() {
        let counts = Counts {
            sent_measured: 1_000,
            last_send_ns: 21_000_000_000,
            ..Counts::default()
        };
        let r = Report::build(config(), &measured(counts));
        assert_eq!(r.window_s, 20.0);
        assert_eq!(r.messages.send_rate, 50.0);
    }

    #[test]
    fn json_has_every_section_and_decodable_histograms() {
        let counts = Counts {
            connected: 4,
            sent: 1_000,
            delivered: 1_000,
            received: 1_000,
            ..Counts::default()
        };
        let r = Report::build(config(), &measured(counts));
        assert!(r.clean());
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "config",
            "window_s",
            "connections",
            "messages",
            "latency_us",
            "errors",
            "hdr",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["latency_us"]["ack"]["p50"], 500);
        assert_eq!(v["messages"]["delivered"], 1_000);
        assert_eq!(v["config"]["rate"], 100.0);

        let encoded = v["hdr"]["ack"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(h.len(), 1000);
        assert_eq!(h.value_at_quantile(0.99), 990);
    }

    #[test]
    fn table_mentions_the_figures() {
        let mut m = measured(Counts {
            connected: 4,
            sent: 1_000,
            sent_measured: 1_000,
            failed: 2,
            ..Counts::default()
        });
        m.tallies
            .failed_reasons
            .insert("router link lost".into(), 2);
        let t = Report::build(config(), &m).table();
        assert!(t.contains("4/4 up"), "{t}");
        assert!(t.contains("router link lost: 2"), "{t}");
        assert!(
            t.contains("  ack            0.500     0.900     0.990     0.999     1.000      1000"),
            "{t}"
        );
        assert!(t.contains("result: PROBLEMS"), "{t}");
    }
}
