//! Pictures of a run as SVG files (plotters' SVG backend: no fonts or image libraries needed,
//! the viewer renders the text), and HdrHistogram interval logs.
//!
//! * `latency_spectrum.svg`: latency by percentile (x: 50% ... 99.99%, log scale of 1/(1-q)),
//!   ack and delivery;
//! * `timeline.svg`: sends and receipts per second, and each second's P99;
//! * `sweep.svg`: delivery P99 against the offered rate, per system, with the bound.

use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::{Report, TimelinePoint};

/// One line of the timeline: a value picked out of each point.
type Metric = fn(&TimelinePoint) -> f64;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The x position of quantile `q` on the spectrum: log10(1 / (1 - q)).
#[cfg(test)]
pub fn spectrum_x(q: f64) -> f64 {
    -(1.0 - q).max(1e-12).log10()
}

/// Percentile label for spectrum position `x` ("99.9%").
pub fn spectrum_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x.round() as i64 - 2).max(0) as usize;
    format!("{q:.digits$}%")
}

/// Points (x, ms) of `h`'s percentile spectrum up to `max_x`.
pub fn spectrum_points(h: &Histogram<u64>, max_x: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let steps = 200;
    (0..=steps)
        .map(|i| {
            let x = max_x * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

/// Writes the latency spectrum of several histograms (name, histogram).
pub fn spectrum(
    path: &Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> anyhow::Result<()> {
    let count = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(2);
    // No further than the data resolves: 1,000 samples say nothing past 99.9%.
    let max_x = (count as f64).log10().clamp(1.0, 5.0);
    let pts: Vec<Vec<(f64, f64)>> = series.iter().map(|s| spectrum_points(s.1, max_x)).collect();
    let max_y = pts.iter().flatten().map(|p| p.1).fold(0.01f64, f64::max) * 1.05;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(max_x.ceil() as usize + 1)
        .x_label_formatter(&|x| spectrum_label(*x))
        .draw()
        .map_err(err)?;
    for (i, ((name, _), p)) in series.iter().zip(pts).enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(p, c.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Throughput (top) and P99 (bottom) per second.
pub fn timeline(path: &Path, title: &str, points: &[TimelinePoint]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (top, bottom) = root.split_vertically(330);
    let max_t = points.iter().map(|p| p.t_s).fold(1.0, f64::max);
    let max_rate = points
        .iter()
        .map(|p| p.sent.max(p.received) as f64)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_t, 0f64..max_rate)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("messages / s")
        .draw()
        .map_err(err)?;
    let lines: [(&str, Metric); 2] = [
        ("sent", |p| p.sent as f64),
        ("received", |p| p.received as f64),
    ];
    for (i, (name, f)) in lines.into_iter().enumerate() {
        let c = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, f(p))),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let max_ms = points
        .iter()
        .map(|p| p.ack_p99_us.max(p.delivery_p99_us) as f64 / 1000.0)
        .fold(0.01, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_t, 0f64..max_ms)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("P99 in that second (ms)")
        .draw()
        .map_err(err)?;
    let lines: [(&str, Metric); 2] = [
        ("ack p99", |p| p.ack_p99_us as f64 / 1000.0),
        ("delivery p99", |p| p.delivery_p99_us as f64 / 1000.0),
    ];
    for (i, (name, f)) in lines.into_iter().enumerate() {
        let c = COLORS[i + 2];
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, f(p))),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Delivery P99 against offered rate, one line per system, and the bound as a dashed line.
pub fn sweep(
    path: &Path,
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    bound_ms: f64,
) -> anyhow::Result<()> {
    let max_rate = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 1.05;
    let max_ms = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(bound_ms, f64::max)
        * 1.5;
    let min_ms = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(bound_ms, f64::min)
        .max(0.01)
        / 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_rate, (min_ms..max_ms).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("offered rate (messages / s)")
        .y_desc("delivery P99 (ms, log)")
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(best_per_rate(pts), c.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, bound_ms), (max_rate, bound_ms)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("P99 bound {bound_ms} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A sweep's line: the lowest P99 at each rate (a rate retried after a latency failure has
/// several runs; every run is still drawn as a dot), in rate order.
pub fn best_per_rate(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut sorted = pts.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    for p in sorted {
        if out.last().is_none_or(|l| l.0 != p.0) {
            out.push(p);
        }
    }
    out
}

/// Writes `ack.hlog` and `delivery.hlog` (HdrHistogram interval logs, one interval a second,
/// values in µs; read them with HdrHistogram's `HistogramLogProcessor` or `hdr-plot`).
pub fn hdr_logs(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let Some(raw) = &report.raw else {
        return Ok(());
    };
    let started = std::time::SystemTime::now();
    for (name, pick) in [
        (
            "ack",
            (|t| &t.ack) as fn(&crate::report::Tick) -> &Histogram<u64>,
        ),
        ("delivery", |t| &t.delivery),
    ] {
        let path = dir.join(format!("{name}.hlog"));
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut ser = V2DeflateSerializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "perf {name} latency, microseconds, one interval a second"
            ))
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut file, &mut ser)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for t in &raw.ticks {
            w.write_histogram(
                pick(t),
                std::time::Duration::from_secs(t.k),
                std::time::Duration::from_secs(1),
                Tag::new(name),
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

/// Writes the run's spectrum and timeline into `dir`.
pub fn run_plots(dir: &Path, report: &Report, title: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(raw) = &report.raw {
        spectrum(
            &dir.join("latency_spectrum.svg"),
            &format!("{title}: latency by percentile"),
            &[("ack", &raw.ack), ("delivery", &raw.delivery)],
        )?;
    }
    timeline(
        &dir.join("timeline.svg"),
        &format!("{title}: throughput and P99 per second"),
        &report.timeline,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn spectrum_axis_labels() {
        assert!((spectrum_x(0.99) - 2.0).abs() < 1e-9);
        assert!((spectrum_x(0.5) - std::f64::consts::LOG10_2).abs() < 1e-9);
        assert_eq!(spectrum_label(1.0), "90%");
        assert_eq!(spectrum_label(2.0), "99%");
        assert_eq!(spectrum_label(3.0), "99.9%");
        assert_eq!(spectrum_label(4.0), "99.99%");
        assert_eq!(spectrum_label(0.0), "0%");
    }

    #[test]
    fn spectrum_points_follow_the_quantiles() {
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v * 1000).unwrap(); // 1..1000 ms
        }
        let pts = spectrum_points(&h, 4.0);
        assert_eq!(pts.len(), 201);
        let at = |x: f64| pts.iter().find(|p| (p.0 - x).abs() < 1e-9).unwrap().1;
        assert!((at(2.0) - 990.0).abs() < 1.0);
        assert!(pts.windows(2).all(|w| w[1].1 >= w[0].1));
        assert!(spectrum_points(&new_histogram(), 3.0).is_empty());
    }

    #[test]
    fn sweep_line_keeps_the_best_run_per_rate() {
        let pts = [(2.0, 80.0), (1.0, 5.0), (2.0, 9.0), (4.0, 300.0)];
        assert_eq!(
            best_per_rate(&pts),
            vec![(1.0, 5.0), (2.0, 9.0), (4.0, 300.0)]
        );
    }

    #[test]
    fn svg_files_are_written() {
        let dir = std::env::temp_dir().join(format!("perf-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = new_histogram();
        for v in 1..=100 {
            h.record(v * 10).unwrap();
        }
        spectrum(&dir.join("s.svg"), "t", &[("a", &h)]).unwrap();
        let pts = vec![TimelinePoint {
            t_s: 1.0,
            sent: 10,
            received: 9,
            ack_p99_us: 100,
            delivery_p50_us: 50,
            delivery_p99_us: 90,
            delivery_p999_us: 95,
        }];
        timeline(&dir.join("t.svg"), "t", &pts).unwrap();
        sweep(
            &dir.join("w.svg"),
            "t",
            &[("x", vec![(1.0, 2.0), (2.0, 80.0)])],
            50.0,
        )
        .unwrap();
        for f in ["s.svg", "t.svg", "w.svg"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(text.starts_with("<svg"), "{f}");
            assert!(text.contains("<polyline") || text.contains("<path"), "{f}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
