//! Training curves as a PNG, for the examples' `--plot`: one panel per curve, side by side,
//! drawn with plotters and a bundled `DejaVu` font (no system fonts needed).

use std::path::Path;

use declnet::Error;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// A named series of values, one per epoch (or step).
pub struct Curve<'a> {
    /// The panel's title and the y axis' label: `training loss`.
    pub name: &'a str,
    /// The values, plotted against 1, 2, ...
    pub values: &'a [f32],
}

/// Writes `curves` to the PNG at `path`, each in its own panel, against `x_label`.
///
/// # Errors
/// [`Error::Io`] when the image cannot be drawn or written.
pub fn plot_curves(path: &Path, x_label: &str, curves: &[Curve<'_>]) -> declnet::Result<()> {
    draw(path, x_label, curves).map_err(|message| Error::Io {
        op: "plot",
        action: "write",
        path: path.to_path_buf(),
        kind: std::io::ErrorKind::Other,
        message,
    })
}

fn draw(path: &Path, x_label: &str, curves: &[Curve<'_>]) -> Result<(), String> {
    // Registering twice keeps the first registration; either way the font is there.
    let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    let width = 480 * u32::try_from(curves.len().max(1)).map_err(|e| e.to_string())?;
    let root = BitMapBackend::new(path, (width, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((1, curves.len().max(1)));
    for (panel, curve) in panels.iter().zip(curves) {
        let (low, high) = curve
            .values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let (low, high) = if low <= high { (low, high) } else { (0.0, 1.0) };
        let margin = ((high - low) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(panel)
            .caption(curve.name, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1..curve.values.len().max(2), low - margin..high + margin)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(curve.name)
            .draw()
            .map_err(|e| e.to_string())?;
        let points = curve.values.iter().enumerate().map(|(i, &v)| (i + 1, v));
        chart
            .draw_series(LineSeries::new(points, &BLUE))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
