//! The end-of-run report: built from the counters and histograms of a run, printed as a table
//! and written as JSON. Pure: no clock, no I/O.
//!
//! The JSON also carries every histogram in HdrHistogram's compressed V2 encoding (base64), so
//! reports of several perf processes can later be merged into exact combined percentiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::protocol::Dialect;
use crate::stats::{new_histogram, Counts, Tallies};

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
    /// Runtime threads per load process.
    pub threads: usize,
    /// Sessions per user.
    pub devices: usize,
    /// Load-generating processes.
    pub processes: usize,
    pub protocol: Dialect,
}

impl RunConfig {
    pub fn of(cfg: &crate::cli::LoadConfig) -> Self {
        RunConfig {
            urls: cfg.urls.iter().map(|u| u.url.clone()).collect(),
            clients: cfg.clients,
            rate: cfg.rate,
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: cfg.duration.as_secs_f64(),
            body_bytes: cfg.body_bytes,
            threads: cfg.threads,
            devices: cfg.devices,
            processes: cfg.processes,
            protocol: cfg.dialect,
        }
    }
}

/// What the run recorded, gathered once it stopped; several processes' are merged with
/// [`Measured::merge`]. It crosses process boundaries as JSON, histograms in V2 + deflate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// `last_send_ns` counts from the schedule's start.
    pub counts: Counts,
    pub tallies: Tallies,
    /// Sends the schedule held for the connections that came up.
    pub scheduled: u64,
    /// The measured window as scheduled, ns after the start: `[warm-up, end)`.
    pub window_ns: (u64, u64),
    #[serde(with = "hist_b64")]
    pub ack: Histogram<u64>,
    #[serde(with = "hist_b64")]
    pub delivery: Histogram<u64>,
    #[serde(with = "hist_b64")]
    pub connect: Histogram<u64>,
    #[serde(with = "hist_b64")]
    pub send_lag: Histogram<u64>,
    /// From the first dial to the last connection up (or failed), ns.
    pub connect_phase_ns: u64,
    /// CPU time (user + system) of the load process(es) from the schedule's start to the
    /// end of the grace period, ns: how much of the machine the generator itself took.
    #[serde(default)]
    pub generator_cpu_ns: u64,
    /// One interval a second from the start.
    pub ticks: Vec<Tick>,
    /// When the schedule started, ns on the shared clock.
    #[serde(default)]
    pub start_ns: u64,
    /// Global index of the first connection (`--first-client`).
    #[serde(default)]
    pub offset: usize,
    /// The exact ledger's books (`--ledger`, one process only), by connection index.
    #[serde(skip)]
    pub books: Option<Vec<Option<crate::ledger::ClientBook>>>,
}

/// One second of a run: counts so far and the latencies recorded in that second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// The interval ends `k + 1` seconds after the start (the last one may be shorter or later).
    pub k: u64,
    /// Counts at the end of the interval, and at its beginning.
    pub counts: Counts,
    pub prev: Counts,
    #[serde(with = "hist_b64")]
    pub ack: Histogram<u64>,
    #[serde(with = "hist_b64")]
    pub delivery: Histogram<u64>,
}

impl Measured {
    /// Adds up the parts of one run (same schedule window, synchronised start).
    pub fn merge(parts: Vec<Measured>) -> Option<Measured> {
        let mut it = parts.into_iter();
        let mut out = it.next()?;
        for p in it {
            let last = out.counts.last_send_ns.max(p.counts.last_send_ns);
            out.counts.add(&p.counts);
            out.counts.last_send_ns = last;
            out.tallies.add(&p.tallies);
            out.scheduled += p.scheduled;
            let _ = out.ack.add(&p.ack);
            let _ = out.delivery.add(&p.delivery);
            let _ = out.connect.add(&p.connect);
            let _ = out.send_lag.add(&p.send_lag);
            out.connect_phase_ns = out.connect_phase_ns.max(p.connect_phase_ns);
            out.generator_cpu_ns += p.generator_cpu_ns;
            for t in p.ticks {
                match out.ticks.iter_mut().find(|o| o.k == t.k) {
                    Some(o) => {
                        let last = o.counts.last_send_ns.max(t.counts.last_send_ns);
                        o.counts.add(&t.counts);
                        o.counts.last_send_ns = last;
                        o.prev.add(&t.prev);
                        let _ = o.ack.add(&t.ack);
                        let _ = o.delivery.add(&t.delivery);
                    }
                    None => out.ticks.push(t),
                }
            }
        }
        out.ticks.sort_by_key(|t| t.k);
        Some(out)
    }
}

/// Serde for histograms: V2 + deflate, base64.
pub mod hist_b64 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let text = encode_histogram(h).ok_or_else(|| serde::ser::Error::custom("histogram"))?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        decode_histogram(&text).map_err(serde::de::Error::custom)
    }
}

/// The inverse of [`encode_histogram`].
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("{e:?}"))?;
    // Same bounds as perf's own, so later `add`s cannot fail on range.
    let mut out = new_histogram();
    out.add(&h).map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

/// One second of the run, for the timeline plot and the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// End of the second, seconds after the start.
    pub t_s: f64,
    pub sent: u64,
    pub received: u64,
    pub ack_p99_us: u64,
    pub delivery_p50_us: u64,
    pub delivery_p99_us: u64,
    pub delivery_p999_us: u64,
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
    /// First dial to last connection up, seconds.
    pub connect_phase_s: f64,
    /// Connections up / the connect phase (with `--connect-rate 0`, the server's connect rate).
    pub connects_per_second: f64,
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
    /// Acked `delivered` but never received (counts duplicates out; with several devices,
    /// each device that should have received a message counts).
    pub lost: u64,
    /// Connections that should have received messages and got none.
    pub silent_receivers: u64,
    /// Sends the system lost without saying so: acked `delivered` but never received (per
    /// device), or never answered at all (lost + missing acks). Zero on a healthy run; a
    /// `failed` ack is an answer, not a silent drop.
    pub silent_drops: u64,
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

/// The load generator's own cost over the schedule and grace period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generator {
    pub cpu_s: f64,
    /// CPU time / messages sent + received, microseconds.
    pub cpu_us_per_msg: f64,
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
    pub generator: Generator,
    pub errors: Errors,
    /// Histograms, V2 + deflate, base64: name -> encoding.
    pub hdr: BTreeMap<String, String>,
    /// One point a second.
    pub timeline: Vec<TimelinePoint>,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and ended: on a shared machine,
    /// read every figure next to it.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// The exact ledger's verdict (`--ledger`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<crate::ledger::LedgerReport>,
    /// What the report was built from (interval logs and plots use it).
    #[serde(skip)]
    pub raw: Option<Box<Measured>>,
}

impl Report {
    pub fn build(config: RunConfig, m: &Measured) -> Self {
        let ledger = m.books.as_ref().map(|b| {
            let w = crate::ledger::Window::default();
            crate::ledger::check(b, m.offset, config.devices, w)
        });
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
        let lost = (c.delivered * config.devices.max(1) as u64).saturating_sub(unique);
        let connect_phase_s = m.connect_phase_ns as f64 / 1e9;
        let timeline = m
            .ticks
            .iter()
            .map(|t| TimelinePoint {
                t_s: (t.k + 1) as f64,
                sent: t.counts.sent - t.prev.sent,
                received: t.counts.received - t.prev.received,
                ack_p99_us: Quantiles::of(&t.ack).p99,
                delivery_p50_us: Quantiles::of(&t.delivery).p50,
                delivery_p99_us: Quantiles::of(&t.delivery).p99,
                delivery_p999_us: Quantiles::of(&t.delivery).p999,
            })
            .collect();
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
                connect_phase_s: (connect_phase_s * 1000.0).round() / 1000.0,
                connects_per_second: if connect_phase_s > 0.0 {
                    (c.connected as f64 / connect_phase_s).round()
                } else {
                    0.0
                },
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
                lost,
                silent_receivers: c.silent_receivers,
                silent_drops: lost + c.missing_acks,
            },
            generator: Generator {
                cpu_s: (m.generator_cpu_ns as f64 / 1e6).round() / 1e3,
                cpu_us_per_msg: {
                    let msgs = (c.sent + c.received).max(1) as f64;
                    (m.generator_cpu_ns as f64 / 1e3 / msgs * 10.0).round() / 10.0
                },
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
            timeline,
            loadavg_start: String::new(),
            loadavg_end: String::new(),
            ledger,
            raw: Some(Box::new(Measured {
                books: None,
                ..m.clone()
            })),
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
            && m.silent_receivers == 0
            && self.errors.error_frames == 0
            && self.errors.bad_frames == 0
            && self.ledger.as_ref().is_none_or(|l| l.ok())
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
            "perf load ({:?}): {} clients ({} per user) in {} process(es) over {} url(s), target {} msg/s for {} s (warm-up {} s), {}-byte bodies, {} threads each",
            cfg.protocol,
            cfg.clients,
            cfg.devices,
            cfg.processes,
            cfg.urls.len(),
            cfg.rate,
            cfg.duration_s,
            cfg.warmup_s,
            cfg.body_bytes,
            cfg.threads
        );
        let _ = writeln!(
            s,
            "connections  {}/{} up, {} failed, {} dropped in {:.2} s ({:.0}/s); connect p50 {} p99 {} max {}",
            c.connected,
            c.attempted,
            c.failed,
            c.dropped,
            c.connect_phase_s,
            c.connects_per_second,
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
            "integrity    lost {}  duplicates {}  order violations {}  gaps {}  silent receivers {}  silent drops {}",
            m.lost, m.duplicates, m.order_violations, m.gaps, m.silent_receivers, m.silent_drops
        );
        let _ = writeln!(
            s,
            "errors       error frames {}  unparsed frames {}",
            self.errors.error_frames, self.errors.bad_frames
        );
        let _ = writeln!(
            s,
            "generator    {:.2} s CPU from the start to the end of the grace period ({:.1} us per message sent or received)",
            self.generator.cpu_s, self.generator.cpu_us_per_msg
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
        if let Some(l) = &self.ledger {
            s += "\n";
            s += &l.table();
        }
        let _ = writeln!(
            s,
            "\nload average {} at the start, {} at the end",
            self.loadavg_start, self.loadavg_end
        );
        let _ = writeln!(
            s,
            "{}",
            if self.clean() {
                "result: clean"
            } else {
                "result: PROBLEMS (see above)"
            }
        );
        s
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
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
            devices: 1,
            processes: 1,
            protocol: Dialect::Connect,
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
            connect_phase_ns: 500_000_000,
            generator_cpu_ns: 0,
            ticks: vec![],
            start_ns: 0,
            offset: 0,
            books: None,
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
            "timeline",
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
    fn parts_merge_into_exact_percentiles() {
        let mut a = measured(Counts {
            connected: 2,
            sent: 10,
            delivered: 10,
            received: 10,
            last_send_ns: 5,
            ..Counts::default()
        });
        a.ack = hist(1..=500);
        a.ticks = vec![Tick {
            k: 0,
            counts: a.counts,
            prev: Counts::default(),
            ack: hist([1, 2]),
            delivery: new_histogram(),
        }];
        let mut b = a.clone();
        b.ack = hist(501..=1000);
        b.counts.last_send_ns = 9;
        b.connect_phase_ns = 900_000_000;
        b.ticks[0].k = 1;
        // Through JSON, as between processes.
        let b: Measured = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        let m = Measured::merge(vec![a, b]).unwrap();
        assert_eq!(m.counts.sent, 20);
        assert_eq!(m.counts.last_send_ns, 9, "a time: the latest, not a sum");
        assert_eq!(m.scheduled, 2_000);
        assert_eq!(m.ack.len(), 1000);
        assert_eq!(m.ack.value_at_quantile(0.99), 990);
        assert_eq!(m.connect_phase_ns, 900_000_000);
        assert_eq!(m.ticks.iter().map(|t| t.k).collect::<Vec<_>>(), vec![0, 1]);
        assert!(Measured::merge(vec![]).is_none());
        let r = Report::build(config(), &m);
        // 4 connections up over the longest connect phase, 0.9 s: 4.44/s, rounded.
        assert_eq!(r.connections.connects_per_second, 4.0);
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
