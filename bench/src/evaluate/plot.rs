//! The evaluation's PNG plots, drawn with plotters. Text is rendered with a
//! TrueType font read from the machine (DejaVu Sans), through ab_glyph, so
//! that no system graphics library is needed.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use plotters::{prelude::*, style::FontStyle};

use super::report::Report;
use crate::{workload::Workload, BenchError};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

impl Series {
    fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            dashed: false,
        }
    }
}

pub struct Chart<'a> {
    pub file: &'a str,
    pub title: String,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Vertical lines at these x values, with a label each.
    pub markers: Vec<(f64, String)>,
    /// Where the legend goes: where the lines are not.
    pub legend: SeriesLabelPosition,
}

/// A plot that was drawn: its file name under the plots dir, and its title.
pub struct Drawn {
    pub file: String,
    pub title: String,
}

fn register_font() -> Result<(), BenchError> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes = FONTS
            .iter()
            .find_map(|path| std::fs::read(path).ok())
            .ok_or_else(|| {
                format!("no DejaVu Sans font at any of {FONTS:?} (Debian: fonts-dejavu-core)")
            })?;
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font_bytes(bytes)
    })
    .clone()
    .map_err(BenchError::Plot)
}

fn register_font_bytes(bytes: &'static [u8]) -> Result<(), String> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the DejaVu Sans file is not a font plotters can read".to_string())
}

fn scale(value: f64, log: bool) -> f64 {
    if log {
        value.max(1e-9).log10()
    } else {
        value
    }
}

fn tick(value: f64, log: bool) -> String {
    let value = if log { 10f64.powf(value) } else { value };
    if value.abs() >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value.abs() >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 0.1 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut low, mut high) = (f64::MAX, f64::MIN);
    for value in values {
        low = low.min(value);
        high = high.max(value);
    }
    if low > high {
        return (0.0, 1.0);
    }
    if !log {
        low = low.min(0.0);
    }
    if (high - low).abs() < 1e-9 {
        high = low + 1.0;
    }
    let pad = (high - low) * 0.05;
    (if log { low - pad } else { low }, high + pad)
}

pub fn draw(chart: &Chart, dir: &Path) -> Result<Drawn, BenchError> {
    register_font()?;
    let path: PathBuf = dir.join(chart.file);
    let failed = |e: &dyn std::fmt::Display| BenchError::Plot(format!("{}: {e}", path.display()));
    let (x_low, x_high) = bounds(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| scale(p.0, chart.log_x)))
            .chain(chart.markers.iter().map(|m| scale(m.0, chart.log_x))),
        chart.log_x,
    );
    let (y_low, y_high) = bounds(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| scale(p.1, chart.log_y))),
        chart.log_y,
    );
    {
        let root = BitMapBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let mut context = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_low..x_high, y_low..y_high)
            .map_err(|e| failed(&e))?;
        let (log_x, log_y) = (chart.log_x, chart.log_y);
        context
            .configure_mesh()
            .x_desc(chart.x_label)
            .y_desc(chart.y_label)
            .x_label_formatter(&|v| tick(*v, log_x))
            .y_label_formatter(&|v| tick(*v, log_y))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| failed(&e))?;
        for (marker, label) in &chart.markers {
            let x = scale(*marker, log_x);
            context
                .draw_series(LineSeries::new(
                    vec![(x, y_low), (x, y_high)],
                    BLACK.mix(0.4).stroke_width(1),
                ))
                .map_err(|e| failed(&e))?;
            context
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (x, y_high - (y_high - y_low) * 0.04),
                    ("sans-serif", 13),
                )))
                .map_err(|e| failed(&e))?;
        }
        for (index, series) in chart.series.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .map(|&(x, y)| (scale(x, log_x), scale(y, log_y)))
                .collect();
            let style = colour.stroke_width(if series.dashed { 1 } else { 2 });
            context
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(|e| failed(&e))?
                .label(series.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            context
                .draw_series(
                    points
                        .iter()
                        .map(|&point| Circle::new(point, 3, colour.filled())),
                )
                .map_err(|e| failed(&e))?;
        }
        context
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .position(chart.legend.clone())
            .draw()
            .map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(Drawn {
        file: chart.file.to_string(),
        title: chart.title.clone(),
    })
}

/// Every plot the report has data for.
pub fn draw_all(report: &Report, dir: &Path) -> Result<Vec<Drawn>, BenchError> {
    let mut charts = Vec::new();
    charts.extend(seed_charts(report));
    charts.extend(peer_charts(report));
    charts.extend(scalability_charts(report));
    charts.extend(fault_charts(report));
    charts.extend(staleness_chart(report));
    charts
        .iter()
        .filter(|chart| chart.series.iter().any(|s| !s.points.is_empty()))
        .map(|chart| draw(chart, dir))
        .collect()
}

fn seed_charts(report: &Report) -> Vec<Chart<'static>> {
    let seed = super::seed_table::SEED;
    let mut charts = Vec::new();
    for (file, phase) in [("seed_put.png", "PUT"), ("seed_get.png", "GET")] {
        let pick = |row: &super::report::SeedRow| match phase {
            "PUT" => (row.put.seconds, row.limit_put_seconds),
            _ => (row.get.seconds, row.limit_get_seconds),
        };
        let mut series = Vec::new();
        let sizes: Vec<u64> = report
            .seed_table
            .first()
            .map(|c| c.rows.iter().map(|r| r.n).collect())
            .unwrap_or_default();
        let mut seed_line = Series::new(
            "seed (in-process, Badger)",
            seed.iter()
                .filter(|s| sizes.contains(&s.0))
                .map(|s| {
                    let ms = if phase == "PUT" { s.1 } else { s.2 };
                    (s.0 as f64, (ms as f64 / 1000.0).max(0.0005))
                })
                .collect(),
        );
        seed_line.dashed = true;
        series.push(seed_line);
        if let Some(first) = report.seed_table.first() {
            let mut limit = Series::new(
                "limit: ringkv's engine in-process",
                first
                    .rows
                    .iter()
                    .map(|r| (r.n as f64, pick(r).1.max(0.0005)))
                    .collect(),
            );
            limit.dashed = true;
            series.push(limit);
        }
        for configuration in &report.seed_table {
            series.push(Series::new(
                configuration.name.clone(),
                configuration
                    .rows
                    .iter()
                    .map(|r| (r.n as f64, pick(r).0.max(0.0005)))
                    .collect(),
            ));
        }
        charts.push(Chart {
            file,
            title: format!("The seed's table through the network: {phase} of n keys"),
            x_label: "n keys",
            y_label: "seconds",
            log_x: true,
            log_y: true,
            series,
            markers: Vec::new(),
            legend: SeriesLabelPosition::UpperLeft,
        });
    }
    charts
}

fn peer_charts(report: &Report) -> Vec<Chart<'static>> {
    let mut charts = Vec::new();
    for (file, workload) in [
        ("peers_put.png", Workload::Put),
        ("peers_get.png", Workload::Get),
        ("peers_ycsb_a.png", Workload::A),
    ] {
        let mut series = Vec::new();
        for system in systems(report) {
            let runs: Vec<_> = report
                .peers
                .runs
                .iter()
                .filter(|r| r.system == system && r.measurement.workload == workload)
                .collect();
            // A system measured at one concurrency only (etcd's serializable
            // gets, at the performance goals' c=64) draws no line.
            if runs.len() < 2 {
                continue;
            }
            series.push(Series::new(
                format!("{system} ops/s"),
                runs.iter()
                    .map(|r| {
                        (
                            r.measurement.concurrency as f64,
                            r.measurement.requests_per_second(),
                        )
                    })
                    .collect(),
            ));
        }
        charts.push(Chart {
            file,
            title: format!(
                "Three nodes each: {} throughput by concurrency",
                workload.name()
            ),
            x_label: "concurrent clients",
            y_label: "requests/s",
            log_x: true,
            log_y: false,
            series,
            markers: Vec::new(),
            legend: SeriesLabelPosition::UpperLeft,
        });
    }
    let mut series = Vec::new();
    for system in systems(report) {
        let points: Vec<(f64, f64)> = report
            .peers
            .runs
            .iter()
            .filter(|r| r.system == system && r.measurement.workload == Workload::Put)
            .map(|r| {
                (
                    r.measurement.concurrency as f64,
                    r.measurement.latency.p99_us as f64 / 1000.0,
                )
            })
            .collect();
        if points.len() >= 2 {
            series.push(Series::new(format!("{system} put p99"), points));
        }
    }
    charts.push(Chart {
        file: "peers_put_p99.png",
        title: "Three nodes each: put p99 by concurrency".into(),
        x_label: "concurrent clients",
        y_label: "p99 ms",
        log_x: true,
        log_y: true,
        series,
        markers: Vec::new(),
        legend: SeriesLabelPosition::UpperLeft,
    });
    charts
}

fn systems(report: &Report) -> Vec<String> {
    let mut systems: Vec<String> = Vec::new();
    for run in &report.peers.runs {
        if !systems.contains(&run.system) {
            systems.push(run.system.clone());
        }
    }
    systems
}

fn scalability_charts(report: &Report) -> Vec<Chart<'static>> {
    let scalability = &report.scalability;
    let mut charts = Vec::new();
    let mut series = Vec::new();
    for workload in [Workload::Put, Workload::Get] {
        let runs: Vec<_> = scalability
            .throughput
            .iter()
            .filter(|r| r.measurement.workload == workload)
            .collect();
        series.push(Series::new(
            format!("{} requests/s", workload.name()),
            runs.iter()
                .map(|r| (r.nodes as f64, r.measurement.requests_per_second()))
                .collect(),
        ));
    }
    charts.push(Chart {
        file: "scalability_throughput.png",
        title: "Throughput by cluster size on one 2-core machine (c=64)".into(),
        x_label: "nodes",
        y_label: "requests/s",
        log_x: false,
        log_y: false,
        series,
        markers: Vec::new(),
        legend: SeriesLabelPosition::UpperRight,
    });
    let placement = &scalability.placement;
    let mut ideal = Series::new(
        "ideal share (1/(n+1))",
        placement
            .iter()
            .map(|r| (r.nodes as f64, r.ideal_on_join * 100.0))
            .collect(),
    );
    ideal.dashed = true;
    charts.push(Chart {
        file: "placement.png",
        title: "Partition replicas moved when one node joins".into(),
        x_label: "nodes before the join",
        y_label: "% of replicas moved",
        log_x: true,
        log_y: true,
        series: vec![
            Series::new(
                "moved",
                placement
                    .iter()
                    .map(|r| (r.nodes as f64, r.moved_on_join * 100.0))
                    .collect(),
            ),
            ideal,
        ],
        markers: Vec::new(),
        legend: SeriesLabelPosition::UpperRight,
    });
    if let Some(streaming) = &scalability.streaming {
        let timeline = &streaming.measurement.timeline;
        charts.push(Chart {
            file: "streaming_join.png",
            title: "YCSB A while a fourth node streams its share in".into(),
            x_label: "seconds",
            y_label: "requests/s, p99 ms ×100",
            log_x: false,
            log_y: false,
            series: timeline_series(timeline, false),
            markers: vec![
                (streaming.join_started_second, "join".into()),
                (streaming.join_settled_second, "settled".into()),
            ],
            legend: SeriesLabelPosition::LowerRight,
        });
    }
    charts
}

/// Requests and errors per second, and p99 in ms ×100 to share the axis.
fn timeline_series(timeline: &[crate::measurement::Second], with_errors: bool) -> Vec<Series> {
    let mut series = vec![Series::new(
        "requests/s",
        timeline
            .iter()
            .map(|s| (s.second as f64, s.requests as f64))
            .collect(),
    )];
    if with_errors {
        series.push(Series::new(
            "errors/s",
            timeline
                .iter()
                .map(|s| (s.second as f64, s.errors as f64))
                .collect(),
        ));
    }
    series.push(Series::new(
        "p99 ms ×100",
        timeline
            .iter()
            .map(|s| (s.second as f64, s.p99_us as f64 / 10.0))
            .collect(),
    ));
    series
}

fn fault_charts(report: &Report) -> Vec<Chart<'static>> {
    report
        .faults
        .iter()
        .enumerate()
        .map(|(index, run)| {
            let timeline = &run.measurement.timeline;
            Chart {
                file: if index == 0 {
                    "fault_crash.png"
                } else {
                    "fault_partition.png"
                },
                title: format!("YCSB A through a fault: {}", run.fault),
                x_label: "seconds",
                y_label: "per second; p99 ms ×100",
                log_x: false,
                log_y: false,
                series: timeline_series(timeline, true),
                markers: vec![
                    (run.injected_second, "fault".into()),
                    (run.healed_second, "healed".into()),
                ],
                legend: SeriesLabelPosition::LowerRight,
            }
        })
        .collect()
}

fn staleness_chart(report: &Report) -> Vec<Chart<'static>> {
    vec![Chart {
        file: "staleness.png",
        title: "PBS: P(read returns the acknowledged write) t ms after it".into(),
        x_label: "t ms after the acknowledgement",
        y_label: "probability",
        log_x: false,
        log_y: false,
        series: report
            .consistency
            .staleness
            .iter()
            .map(|curve| {
                Series::new(
                    format!("R={} W={}", curve.read_quorum, curve.write_quorum),
                    curve
                        .points
                        .iter()
                        .map(|p| (p.after_ms as f64, p.probability()))
                        .collect(),
                )
            })
            .collect(),
        markers: Vec::new(),
        legend: SeriesLabelPosition::LowerRight,
    }]
}
