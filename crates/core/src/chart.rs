//! Charts as SVG (plotters' SVG backend needs no font files, and browsers show SVG directly).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One named series of bar heights, one value per category.
pub struct BarSeries<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Grouped bar chart: one group per category, one bar per series in each group.
pub fn grouped_bars_svg(
    title: &str,
    categories: &[String],
    series: &[BarSeries<'_>],
    y_label: &str,
) -> Result<String> {
    let mut svg = String::new();
    {
        let width = (120 + categories.len() * 18 * series.len().max(1)).clamp(480, 1600) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 360)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing chart `{title}`: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let y_max = series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(1.0f64, f64::max)
            * 1.35; // headroom so the legend sits above the bars
        let n = categories.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..y_max)
            .map_err(|e| err(&e))?;
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(60) * 2 + 1)
            .x_label_formatter(&|x| {
                // Labels sit at the centre of each group.
                let f = x.fract();
                if (f - 0.5).abs() < 1e-6 {
                    cats.get(x.floor() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        let k = series.len().max(1) as f64;
        let bar = 0.8 / k;
        for (si, s) in series.iter().enumerate() {
            let color = PALETTE[si % PALETTE.len()];
            chart
                .draw_series(s.values.iter().enumerate().map(|(ci, &v)| {
                    let x0 = ci as f64 + 0.1 + si as f64 * bar;
                    Rectangle::new([(x0, 0.0), (x0 + bar, v)], color.filled())
                }))
                .map_err(|e| err(&e))?
                .label(s.name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Line chart of several (x, y) series, e.g. losses over steps.
pub fn lines_svg(
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 400)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing chart `{title}`: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let pts = || {
            series
                .iter()
                .flat_map(|(_, p)| p.iter().copied())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
        let (y0, y1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(y), b.max(y)));
        let (x0, x1) = if x0 < x1 { (x0, x1) } else { (0.0, 1.0) };
        let (y0, y1) = if y0 < y1 {
            // Room above for the legend, and a little below so a series at the minimum is
            // not drawn on the axis.
            (y0 - (y1 - y0) * 0.05, y1 + (y1 - y0) * 0.25)
        } else {
            (y0.min(0.0) - 1.0, y1.max(0.0) + 1.0)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, p)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    p.iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_names_categories_and_series() {
        let svg = grouped_bars_svg(
            "Images per class",
            &["cat".into(), "dog".into()],
            &[
                BarSeries {
                    name: "train",
                    values: vec![10.0, 300.0],
                },
                BarSeries {
                    name: "test",
                    values: vec![5.0, 5.0],
                },
            ],
            "images",
        )
        .unwrap();
        assert!(svg.starts_with("<svg"));
        for s in [
            "Images per class",
            ">\ncat\n<",
            ">\ndog\n<",
            "train",
            "test",
        ] {
            assert!(svg.contains(s), "missing {s:?}");
        }
    }
}
