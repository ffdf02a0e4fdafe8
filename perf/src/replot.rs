//! `perf plot --from JSON --out DIR`: draws the plots again from a saved report, so a run
//! recorded with `--json` can be pictured later (or on another machine) without re-running it.
//! Takes any of perf's JSON reports: `perf load` (spectrum from the stored histograms,
//! timeline), `perf run` (the same, plus the sweep) and `perf compare` (both systems' sweeps).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::plot;
use crate::report::{decode_histogram, TimelinePoint};

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// A JSON report written by `perf load|run|compare --json`.
    #[arg(long)]
    pub from: PathBuf,
    /// Directory for the SVG files.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.from)
        .with_context(|| format!("reading {}", args.from.display()))?;
    let v: Value = serde_json::from_str(&text).context("not JSON")?;
    std::fs::create_dir_all(&args.out)?;
    let written = draw(&v, &args.out)?;
    if written.is_empty() {
        anyhow::bail!("{}: not a perf report", args.from.display());
    }
    for f in written {
        eprintln!("perf: wrote {}", f.display());
    }
    Ok(())
}

/// Draws what `v` holds into `out`; the files written.
pub fn draw(v: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // perf compare
    if v.get("connect").is_some() || v.get("socketio").is_some() {
        let series: Vec<(&str, Vec<(f64, f64)>)> =
            [("connect", "connect"), ("socket.io", "socketio")]
                .into_iter()
                .filter_map(|(name, key)| Some((name, sweep_points(v.get(key)?.get("sweep")?))))
                .collect();
        let bound = v
            .get("p99_bound_ms")
            .and_then(Value::as_f64)
            .unwrap_or(50.0);
        let f = out.join("compare_sweep.svg");
        plot::sweep(
            &f,
            "Connect vs Socket.IO: delivery P99 by offered rate",
            &series,
            bound,
        )?;
        written.push(f);
        return Ok(written);
    }
    // perf run wraps a load report
    let (load, sweep) = match v.get("load") {
        Some(load) => (load, v.get("sweep")),
        None => (v, None),
    };
    if let Some(sweep) = sweep.filter(|s| s.as_array().is_some_and(|a| !a.is_empty())) {
        let pts = sweep_points(sweep);
        let f = out.join("sweep.svg");
        plot::sweep(&f, "rate sweep: delivery P99", &[("connect", pts)], 50.0)?;
        written.push(f);
    }
    if let Some(hdr) = load.get("hdr") {
        let decode = |k: &str| {
            hdr.get(k)
                .and_then(Value::as_str)
                .and_then(|t| decode_histogram(t).ok())
        };
        if let (Some(ack), Some(delivery)) = (decode("ack"), decode("delivery")) {
            let f = out.join("latency_spectrum.svg");
            plot::spectrum(
                &f,
                "latency by percentile",
                &[("ack", &ack), ("delivery", &delivery)],
            )?;
            written.push(f);
        }
    }
    if let Some(tl) = load.get("timeline") {
        let points: Vec<TimelinePoint> = serde_json::from_value(tl.clone()).unwrap_or_default();
        if !points.is_empty() {
            let f = out.join("timeline.svg");
            plot::timeline(&f, "throughput and P99 per second", &points)?;
            written.push(f);
        }
    }
    Ok(written)
}

/// `(rate, delivery_p99_ms)` of each sweep run.
fn sweep_points(sweep: &Value) -> Vec<(f64, f64)> {
    sweep
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        p.get("rate")?.as_f64()?,
                        p.get("delivery_p99_ms")?.as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_compare_and_load_reports() {
        let dir = std::env::temp_dir().join(format!("perf-replot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cmp = serde_json::json!({
            "p99_bound_ms": 50.0,
            "connect": {"sweep": [{"rate": 1000.0, "delivery_p99_ms": 2.0}]},
            "socketio": {"sweep": [{"rate": 1000.0, "delivery_p99_ms": 40.0},
                                    {"rate": 2000.0, "delivery_p99_ms": 90.0}]}
        });
        let w = draw(&cmp, &dir).unwrap();
        assert_eq!(w, vec![dir.join("compare_sweep.svg")]);

        let mut h = crate::stats::new_histogram();
        h.record(1_000).unwrap();
        let enc = crate::report::encode_histogram(&h).unwrap();
        let run = serde_json::json!({
            "load": {
                "hdr": {"ack": enc, "delivery": enc},
                "timeline": [{"t_s": 1.0, "sent": 5, "received": 5, "ack_p99_us": 10,
                              "delivery_p50_us": 5, "delivery_p99_us": 9, "delivery_p999_us": 9}]
            },
            "sweep": [{"rate": 100.0, "delivery_p99_ms": 1.0}]
        });
        let w = draw(&run, &dir).unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(draw(&serde_json::json!({"x": 1}), &dir).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
