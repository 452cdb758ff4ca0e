//! Small, dependency-free SVG charts for `docs/performance.md`.

use std::fmt::Write as _;

const FONT: &str = "font-family=\"ui-monospace,SFMono-Regular,Menlo,monospace\" font-size=\"12\"";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A log10 axis from `lo` to `hi` over `width` pixels starting at `x0`.
struct LogAxis {
    lo: f64,
    hi: f64,
    x0: f64,
    width: f64,
}

impl LogAxis {
    fn new(mut lo: f64, mut hi: f64, x0: f64, width: f64) -> Self {
        lo = lo.max(1e-3);
        hi = hi.max(lo * 1.0001);
        // Pad to whole-ish decades so ticks land inside.
        let lo = 10f64.powf((lo.log10() - 0.05).floor_to(0.5));
        let hi = 10f64.powf((hi.log10() + 0.05).ceil_to(0.5));
        Self { lo, hi, x0, width }
    }

    fn x(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        self.x0 + (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()) * self.width
    }

    /// Ticks at 1, 2, 5 × powers of ten inside the axis.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(self.lo.log10().floor());
        while decade <= self.hi {
            for m in [1.0, 2.0, 5.0] {
                let t = decade * m;
                if t >= self.lo * 0.999 && t <= self.hi * 1.001 {
                    ticks.push(t);
                }
            }
            decade *= 10.0;
        }
        ticks
    }
}

trait RoundTo {
    fn floor_to(self, step: f64) -> f64;
    fn ceil_to(self, step: f64) -> f64;
}

impl RoundTo for f64 {
    fn floor_to(self, step: f64) -> f64 {
        (self / step).floor() * step
    }
    fn ceil_to(self, step: f64) -> f64 {
        (self / step).ceil() * step
    }
}

/// One row of a box plot: a label and its samples (any unit; `fmt` formats values).
pub(crate) struct BoxRow {
    pub(crate) label: String,
    pub(crate) samples: Vec<f64>,
    pub(crate) highlight: bool,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    sorted[i] + (next - sorted[i]) * frac
}

/// Horizontal box plots on a log axis: whiskers p5–p95, box p25–p75, a tick at the median.
pub(crate) fn box_plot(title: &str, rows: &[BoxRow], fmt: &dyn Fn(f64) -> String) -> String {
    let (label_w, plot_w, value_w, row_h, top) = (230.0, 420.0, 90.0, 26.0, 40.0);
    let width = label_w + plot_w + value_w;
    let height = top + rows.len() as f64 * row_h + 34.0;
    let all = rows.iter().flat_map(|r| r.samples.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let axis = LogAxis::new(lo, hi, label_w, plot_w);

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {FONT}>\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\
         <text x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let axis_y = top + rows.len() as f64 * row_h;
    for t in axis.ticks() {
        let x = axis.x(t);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{axis_y}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{}</text>",
            axis_y + 16.0,
            escape(&fmt(t))
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let mut s = row.samples.clone();
        s.sort_by(f64::total_cmp);
        let y = top + i as f64 * row_h + row_h / 2.0;
        let (p5, p25, p50, p75, p95) = (
            percentile(&s, 0.05),
            percentile(&s, 0.25),
            percentile(&s, 0.5),
            percentile(&s, 0.75),
            percentile(&s, 0.95),
        );
        let color = if row.highlight { "#2563eb" } else { "#9ca3af" };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" fill=\"{color}\" fill-opacity=\"0.35\" stroke=\"{color}\"/>\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2.5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            label_w - 8.0,
            y + 4.0,
            escape(&row.label),
            axis.x(p5),
            axis.x(p95),
            axis.x(p25),
            y - 6.0,
            (axis.x(p75) - axis.x(p25)).max(1.5),
            axis.x(p50),
            y - 8.0,
            axis.x(p50),
            y + 8.0,
            label_w + plot_w + 8.0,
            y + 4.0,
            escape(&fmt(p50))
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One bar of a ratio chart.
pub(crate) struct RatioBar {
    pub(crate) label: String,
    pub(crate) ratio: f64,
}

/// Ratios to a baseline on a log2 axis centred on 1×: bars left of the line are faster.
pub(crate) fn ratio_chart(title: &str, bars: &[RatioBar]) -> String {
    let (label_w, plot_w, value_w, row_h, top) = (300.0, 360.0, 70.0, 22.0, 40.0);
    let width = label_w + plot_w + value_w;
    let height = top + bars.len() as f64 * row_h + 34.0;
    let span = bars
        .iter()
        .map(|b| b.ratio.max(1e-6).log2().abs())
        .fold(1.0f64, f64::max)
        .ceil();
    let x = |r: f64| {
        label_w + plot_w / 2.0 + r.max(1e-6).log2().clamp(-span, span) / span * plot_w / 2.0
    };

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {FONT}>\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\
         <text x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let axis_y = top + bars.len() as f64 * row_h;
    let mut e = -span;
    while e <= span {
        let r = 2f64.powf(e);
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{axis_y}\" stroke=\"{1}\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\" fill=\"#666\">{3}×</text>",
            x(r),
            if e == 0.0 { "#111" } else { "#e5e5e5" },
            axis_y + 16.0,
            if r >= 1.0 {
                format!("{r:.0}")
            } else {
                format!("1/{:.0}", 1.0 / r)
            }
        );
        e += 1.0;
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let (x0, x1) = (x(1.0), x(bar.ratio));
        let color = if bar.ratio <= 1.0 {
            "#16a34a"
        } else {
            "#ea580c"
        };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}×</text>",
            label_w - 8.0,
            y + 15.0,
            escape(&bar.label),
            x0.min(x1),
            y + 4.0,
            (x1 - x0).abs().max(1.0),
            label_w + plot_w + 8.0,
            y + 15.0,
            bar.ratio
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A group of bars (one per series) for each category, on a log axis.
pub(crate) struct BarGroup {
    pub(crate) category: String,
    /// `(series name, value)`.
    pub(crate) values: Vec<(String, f64)>,
}

/// Grouped horizontal bars on a log axis (req/s spans decades: a 150 ms tool vs a cache hit).
pub(crate) fn grouped_bars(
    title: &str,
    groups: &[BarGroup],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let series: Vec<String> = groups
        .first()
        .map(|g| g.values.iter().map(|(s, _)| s.clone()).collect())
        .unwrap_or_default();
    let colors = ["#9ca3af", "#2563eb", "#16a34a", "#ea580c"];
    let (label_w, plot_w, value_w, bar_h, top) = (150.0, 460.0, 100.0, 14.0, 56.0);
    let group_h = bar_h * series.len() as f64 + 12.0;
    let width = label_w + plot_w + value_w;
    let height = top + groups.len() as f64 * group_h + 30.0;
    let values = groups.iter().flat_map(|g| g.values.iter().map(|(_, v)| *v));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let axis = LogAxis::new(lo / 2.0, hi, label_w, plot_w);

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {FONT}>\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\
         <text x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    for (i, name) in series.iter().enumerate() {
        let x = label_w + i as f64 * 120.0;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"30\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"40\">{}</text>",
            colors[i % colors.len()],
            x + 16.0,
            escape(name)
        );
    }
    let axis_y = top + groups.len() as f64 * group_h;
    for t in axis.ticks() {
        let x = axis.x(t);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{axis_y}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{}</text>",
            axis_y + 16.0,
            escape(&fmt(t))
        );
    }
    for (gi, group) in groups.iter().enumerate() {
        let y0 = top + gi as f64 * group_h;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y0 + group_h / 2.0,
            escape(&group.category)
        );
        for (si, (_, v)) in group.values.iter().enumerate() {
            let y = y0 + si as f64 * bar_h + 4.0;
            let _ = write!(
                svg,
                "<rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
                (axis.x(*v) - label_w).max(1.0),
                bar_h - 2.0,
                colors[si % colors.len()],
                axis.x(*v) + 4.0,
                y + bar_h - 4.0,
                escape(&fmt(*v))
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_and_scale_logarithmically() {
        let svg = box_plot(
            "g",
            &[
                BoxRow {
                    label: "raw".into(),
                    samples: vec![10.0, 11.0, 12.0],
                    highlight: false,
                },
                BoxRow {
                    label: "ours <x>".into(),
                    samples: vec![100.0, 110.0, 120.0],
                    highlight: true,
                },
            ],
            &|v| format!("{v:.0}"),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("ours &lt;x&gt;"), "labels are escaped");
        let axis = LogAxis::new(10.0, 1000.0, 0.0, 100.0);
        let (a, b, c) = (axis.x(10.0), axis.x(100.0), axis.x(1000.0));
        assert!(((b - a) - (c - b)).abs() < 1e-9, "a decade is a decade");

        let ratios = ratio_chart(
            "r",
            &[RatioBar {
                label: "x".into(),
                ratio: 0.5,
            }],
        );
        assert!(ratios.contains("0.50×"));
        let bars = grouped_bars(
            "b",
            &[BarGroup {
                category: "hit".into(),
                values: vec![("bare".into(), 100.0), ("layered".into(), 10_000.0)],
            }],
            &|v| format!("{v:.0}"),
        );
        assert!(bars.contains("layered"));
    }

    #[test]
    fn percentiles_interpolate() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&xs, 0.5), 3.0);
        assert_eq!(percentile(&xs, 0.25), 2.0);
        assert_eq!(percentile(&xs, 1.0), 5.0);
    }
}
