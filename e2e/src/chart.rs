//! The benchmarks' latency chart: horizontal p50/p95/p99 bars per row on a log scale from
//! 10 ms to 10 s, with the targets as dashed lines, as an SVG the bench writes itself.

use std::time::Duration;

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where the bars start (room for the row names) and how wide 10 ms to 10 s is.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// x of 10 ms.
    pub left: f64,
    /// Width of the three decades.
    pub width: f64,
}

/// The chart titled `title` of `rows` (name, [p50, p95, p99]) with a line per
/// (milliseconds, label) target.
pub fn percentile_bars(
    title: &str,
    layout: Layout,
    rows: &[(&str, [Duration; 3])],
    targets: &[(f64, &str)],
) -> String {
    let Layout { left, width } = layout;
    let row_h = 54.0;
    let height = 60.0 + row_h * rows.len() as f64;
    let x = |d: f64| left + width * (d.clamp(10.0, 10_000.0).log10() - 1.0) / 3.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"18\" font-size=\"14\">{title}</text>\n"
    );
    for tick in [10.0, 100.0, 1000.0, 10_000.0] {
        svg.push_str(&format!(
            "<line x1=\"{0}\" y1=\"28\" x2=\"{0}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\">{3} ms</text>\n",
            x(tick),
            height - 22.0,
            height - 8.0,
            tick
        ));
    }
    for (target, label) in targets {
        svg.push_str(&format!(
            "<line x1=\"{0}\" y1=\"28\" x2=\"{0}\" y2=\"{1}\" stroke=\"#c00\" stroke-dasharray=\"4 3\"/><text x=\"{0}\" y=\"38\" fill=\"#c00\" text-anchor=\"middle\">target {label}</text>\n",
            x(*target),
            height - 22.0
        ));
    }
    for (i, (name, [p50, p95, p99])) in rows.iter().enumerate() {
        let y = 44.0 + row_h * i as f64;
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{name}</text>\n",
            y + 22.0
        ));
        for (j, (d, color, label)) in [
            (p50, "#2b6cb0", "p50"),
            (p95, "#63b3ed", "p95"),
            (p99, "#bee3f8", "p99"),
        ]
        .iter()
        .enumerate()
        {
            let by = y + 4.0 + 14.0 * j as f64;
            let w = x(ms(**d)) - left;
            svg.push_str(&format!(
                "<rect x=\"{left}\" y=\"{by}\" width=\"{w:.1}\" height=\"12\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{label} {:.0} ms</text>\n",
                left + w + 4.0,
                by + 10.0,
                ms(**d)
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_bar_per_percentile_and_a_line_per_target() {
        let second = Duration::from_secs(1);
        let svg = percentile_bars(
            "t",
            Layout {
                left: 120.0,
                width: 600.0,
            },
            &[("a", [second; 3]), ("b", [second; 3])],
            &[(3000.0, "3 s")],
        );
        assert_eq!(svg.matches("<rect x=").count(), 6);
        assert!(svg.contains("target 3 s") && svg.ends_with("</svg>\n"));
    }
}
