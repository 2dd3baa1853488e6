//! `--plot FILE.svg`: latency percentiles and throughput over the run (SVG,
//! plotters without any bitmap or font dependency).

use super::record::Point;
use plotters::prelude::*;
use std::path::Path;

/// A line: its name, its value at a point, its colour.
type Series = (&'static str, fn(&Point) -> f64, RGBColor);

/// Two panels: latency p50/p90/p99/max (ms) and throughput (requests/s,
/// successes/s, and the baseline's mean when measured), against seconds
/// since the run started.
pub fn draw(
    path: &Path,
    title: &str,
    points: &[Point],
    baseline_rps: Option<f64>,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let t_max = points.last().map_or(1.0, |p| p.t_s).max(0.25);
    let lat_max = points.iter().map(|p| p.max_ms).fold(1.0_f64, f64::max) * 1.05;
    let rps_max = points
        .iter()
        .map(|p| p.rps)
        .chain(baseline_rps)
        .fold(1.0_f64, f64::max)
        * 1.1;

    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(380);

    let mut lat = ChartBuilder::on(&top)
        .caption(format!("{title}: latency"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..lat_max)
        .map_err(|e| err(&e))?;
    lat.configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(|e| err(&e))?;
    let series: [Series; 4] = [
        ("p50", |p| p.p50_ms, BLUE),
        ("p90", |p| p.p90_ms, GREEN),
        ("p99", |p| p.p99_ms, RED),
        ("max", |p| p.max_ms, BLACK),
    ];
    for (name, f, color) in series {
        lat.draw_series(LineSeries::new(points.iter().map(|p| (p.t_s, f(p))), color))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    lat.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

    let mut tp = ChartBuilder::on(&bottom)
        .caption(format!("{title}: throughput"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..rps_max)
        .map_err(|e| err(&e))?;
    tp.configure_mesh()
        .x_desc("seconds")
        .y_desc("requests/s")
        .draw()
        .map_err(|e| err(&e))?;
    tp.draw_series(LineSeries::new(points.iter().map(|p| (p.t_s, p.rps)), BLUE))
        .map_err(|e| err(&e))?
        .label("answered/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    tp.draw_series(LineSeries::new(
        points.iter().map(|p| (p.t_s, p.ok_rps)),
        GREEN,
    ))
    .map_err(|e| err(&e))?
    .label("2xx/s")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    if let Some(b) = baseline_rps {
        tp.draw_series(LineSeries::new([(0.0, b), (t_max, b)], RED))
            .map_err(|e| err(&e))?
            .label("baseline (mean)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    tp.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
