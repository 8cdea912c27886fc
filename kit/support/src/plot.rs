//! The one plotting module: line charts over time as SVG (plotters' SVG backend, no fonts or
//! bitmaps needed), with vertical markers for events such as faults.
//!
//! A [`Chart`] is plain data; [`Chart::write_svg`] draws it.

use std::path::Path;

use plotters::prelude::*;
pub use plotters::style::RGBColor as Rgb;

/// Colours the tools use by name.
pub mod colors {
    use super::Rgb;
    /// Good (at r, healthy).
    pub const GREEN: Rgb = Rgb(0, 160, 0);
    /// Degraded.
    pub const ORANGE: Rgb = Rgb(230, 150, 0);
    /// Bad (lost).
    pub const RED: Rgb = Rgb(220, 0, 0);
    /// Faults.
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    /// Heals.
    pub const BLUE: Rgb = Rgb(0, 0, 230);
}

/// The `i`-th colour of a palette of many distinguishable ones (one per node).
pub fn palette(i: usize) -> Rgb {
    let c = Palette99::pick(i).to_rgba();
    Rgb(c.0, c.1, c.2)
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("plotting {path}: {why}")]
pub struct PlotError {
    path: String,
    why: String,
}

/// One line: points `(x, y)` in order; a label puts it in the legend.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text (`None`: not in the legend).
    pub label: Option<String>,
    /// Its colour.
    pub color: Rgb,
    /// Stroke width in pixels.
    pub width: u32,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// A vertical line across the chart at `x` (a fault, a heal).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Where on the x axis.
    pub x: f64,
    /// Its colour (drawn faint).
    pub color: Rgb,
    /// Text written at its top (`None`: none).
    pub label: Option<String>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the chart.
    pub title: String,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// Upper end of the y axis (`None`: 10 % above the highest point).
    pub y_max: Option<f64>,
    /// The lines.
    pub lines: Vec<Line>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
}

impl Chart {
    /// An empty chart of 960 × 520 pixels.
    pub fn new(
        title: impl Into<String>,
        x_desc: impl Into<String>,
        y_desc: impl Into<String>,
    ) -> Self {
        Chart {
            title: title.into(),
            size: (960, 520),
            x_desc: x_desc.into(),
            y_desc: y_desc.into(),
            y_max: None,
            lines: Vec::new(),
            markers: Vec::new(),
        }
    }

    fn x_max(&self) -> f64 {
        let points = self.lines.iter().flat_map(|l| &l.points).map(|p| p.0);
        points
            .chain(self.markers.iter().map(|m| m.x))
            .fold(0.1f64, f64::max)
    }

    fn y_top(&self) -> f64 {
        self.y_max.unwrap_or_else(|| {
            let top = self
                .lines
                .iter()
                .flat_map(|l| &l.points)
                .map(|p| p.1)
                .fold(0.0f64, f64::max);
            if top > 0.0 { top * 1.1 } else { 1.0 }
        })
    }

    /// Draws the chart into an SVG file at `path`.
    pub fn write_svg(&self, path: &Path) -> Result<(), PlotError> {
        let err = |e: &dyn std::fmt::Display| PlotError {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        let root = SVGBackend::new(path, self.size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (x_max, y_max) = (self.x_max(), self.y_top());
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .draw()
            .map_err(|e| err(&e))?;
        for m in &self.markers {
            chart
                .draw_series(LineSeries::new(
                    vec![(m.x, 0.0), (m.x, y_max)],
                    m.color.mix(0.35).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            if let Some(text) = &m.label {
                chart
                    .draw_series(std::iter::once(Text::new(
                        text.clone(),
                        (m.x, y_max * 0.98),
                        ("sans-serif", 11).into_font().color(&m.color),
                    )))
                    .map_err(|e| err(&e))?;
            }
        }
        let mut legend = false;
        for line in &self.lines {
            let style = line.color.stroke_width(line.width);
            let drawn = chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(|e| err(&e))?;
            if let Some(label) = &line.label {
                legend = true;
                drawn
                    .label(label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::MiddleRight)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_legend_and_markers_reach_the_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let mut c = Chart::new("t", "s", "items");
        c.lines.push(Line {
            label: Some("at >= r".into()),
            color: colors::GREEN,
            width: 2,
            points: vec![(0.0, 1.0), (5.0, 3.0)],
        });
        c.markers.push(Marker {
            x: 2.0,
            color: colors::BLACK,
            label: Some("kill lan-a-1".into()),
        });
        c.write_svg(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
        assert!(svg.contains("at &gt;= r") || svg.contains("at >= r"));
        assert!(svg.contains("kill lan-a-1"));
    }
}
