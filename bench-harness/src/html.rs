//! `--html FILE`: one self-contained page (inline SVG and CSS, no script, no external resource)
//! with throughput over time, the latency percentile curve, the parameters and the summary.
//! It opens in a browser with no network, and can be attached to an issue as it is.
//!
//! The percentile curve uses HdrHistogram's axis: x is the number of nines,
//! `-log10(1 - q)`, labelled 0, 90, 99, 99.9, ... so the tail gets as much room as the median.

use std::fmt::Write as _;

use crate::report::{self, Run};

/// Size of a chart's plot area and its margins, in SVG pixels.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
/// Line colours, one per series in order.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
/// Points per decade of the percentile curve.
const CURVE_STEPS: u32 = 20;

/// One line of a chart.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// A "nice" step for about `target` ticks over `span`: 1, 2 or 5 times a power of ten.
fn nice_step(span: f64, target: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The percentile a number of nines stands for: 0 → "0", 1 → "90", 3 → "99.9".
fn nines_label(x: f64) -> String {
    let n = x.round() as i32;
    if n <= 0 {
        return "0".into();
    }
    match n {
        1 => "90".into(),
        2 => "99".into(),
        _ => format!("99.{}", "9".repeat(n as usize - 2)),
    }
}

/// An SVG line chart. `x_labels` gives the text of an x tick (default: the number).
fn chart(
    title: &str,
    x_name: &str,
    y_name: &str,
    lines: &[Line],
    x_ticks: Option<Vec<f64>>,
    x_label: &dyn Fn(f64) -> String,
) -> String {
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let mut svg = String::new();
    let (w, h) = (LEFT + WIDTH + RIGHT, TOP + HEIGHT + BOTTOM);
    let _ = write!(
        svg,
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <text x=\"{LEFT}\" y=\"18\" class=\"title\">{}</text>",
        escape(title)
    );
    if all().next().is_none() {
        let _ = write!(
            svg,
            "<text x=\"{LEFT}\" y=\"{}\">no data</text></svg>",
            TOP + HEIGHT / 2.0
        );
        return svg;
    }
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min).min(0.0);
    let x_max = all().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let x_max = if x_max > x_min { x_max } else { x_min + 1.0 };
    let y_step = nice_step(all().map(|p| p.1).fold(0.0, f64::max), 5.0);
    let y_max = (all().map(|p| p.1).fold(0.0, f64::max) / y_step)
        .ceil()
        .max(1.0)
        * y_step;
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * WIDTH;
    let py = |y: f64| TOP + HEIGHT - y / y_max * HEIGHT;
    // Axes, grid and ticks.
    let _ = write!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" class=\"plot\"/>"
    );
    let mut y = 0.0;
    while y <= y_max * (1.0 + 1e-9) {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"ytick\">{}</text>",
            LEFT + WIDTH,
            LEFT - 6.0,
            py(y) + 4.0,
            format_number(y),
            py = py(y),
        );
        y += y_step;
    }
    let ticks = x_ticks.unwrap_or_else(|| {
        let step = nice_step(x_max - x_min, 8.0);
        let mut t = Vec::new();
        let mut x = (x_min / step).ceil() * step;
        while x <= x_max + 1e-9 {
            t.push(x);
            x += step;
        }
        t
    });
    for x in ticks.into_iter().filter(|x| *x >= x_min && *x <= x_max) {
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{}\" class=\"grid\"/>\
             <text x=\"{px:.1}\" y=\"{}\" class=\"xtick\">{}</text>",
            TOP + HEIGHT,
            TOP + HEIGHT + 16.0,
            escape(&x_label(x)),
            px = px(x),
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" class=\"xname\">{}</text>\
         <text x=\"14\" y=\"{}\" class=\"yname\" transform=\"rotate(-90 14 {})\">{}</text>",
        LEFT + WIDTH / 2.0,
        h - 6.0,
        escape(x_name),
        TOP + HEIGHT / 2.0,
        TOP + HEIGHT / 2.0,
        escape(y_name)
    );
    // Lines and legend.
    for (i, line) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\" class=\"legend\">{}</text>",
            points.join(" "),
            LEFT + WIDTH - 8.0,
            TOP + 16.0 + 16.0 * i as f64,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `1234567` → `1,234,567`; fractions keep two digits below 100.
fn format_number(v: f64) -> String {
    if v.abs() < 100.0 && v.fract() != 0.0 {
        return format!("{v:.2}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A page's start: the title and the style its charts use.
fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}\
         .plot{{fill:#fff;stroke:#999}}.grid{{stroke:#e4e4e4}}\
         .title{{font-weight:bold;font-size:14px}}.xtick{{text-anchor:middle;font-size:11px}}\
         .ytick{{text-anchor:end;font-size:11px}}.xname{{text-anchor:middle;font-size:12px}}\
         .yname{{text-anchor:middle;font-size:12px}}.legend{{text-anchor:end;font-size:12px}}\
         </style></head><body><h1>{}</h1>",
        escape(title),
        escape(title)
    )
}

/// A page's end: the machine it ran on.
fn foot() -> String {
    let hardware = serde_json::to_string_pretty(&report::hardware()).unwrap_or_default();
    format!(
        "<h2>Machine</h2><pre>{}</pre></body></html>\n",
        escape(&hardware)
    )
}

/// The page of a `--sweep`: latency percentiles against the throughput achieved at each
/// rate, the table of points, and the parameters.
pub fn sweep_page(sweep: &crate::sweep::Sweep) -> String {
    let lines: Vec<Line> = crate::sweep::curves(sweep)
        .into_iter()
        .map(|(name, points)| Line { name, points })
        .collect();
    let (publish, e2e): (Vec<Line>, Vec<Line>) = lines
        .into_iter()
        .partition(|l| l.name.starts_with("publish"));
    let plain = |x: f64| format_number(x);
    let mut html = String::new();
    let label = sweep
        .points
        .first()
        .map_or(String::new(), |p| p.run.label.clone());
    let title = format!("tidelog-bench rate sweep on {label}");
    html.push_str(&head(&title));
    html.push_str("<h2>Latency against throughput</h2>");
    html.push_str(&chart(
        "publish latency (send → ack)",
        "MB/s achieved",
        "ms",
        &publish,
        None,
        &plain,
    ));
    html.push_str(&chart(
        "end-to-end latency (send → consumed)",
        "MB/s achieved",
        "ms",
        &e2e,
        None,
        &plain,
    ));
    let _ = write!(
        html,
        "<h2>Points</h2><pre>{}</pre>",
        escape(&crate::sweep::table(sweep))
    );
    if let Some(point) = sweep.points.first() {
        let params = serde_json::to_string_pretty(&point.run.plan.to_json()).unwrap_or_default();
        let _ = write!(
            html,
            "<h2>Parameters (first point)</h2><pre>{}</pre>",
            escape(&params)
        );
    }
    html.push_str(&foot());
    html
}

/// The page for one run, or two runs of --compare (lines of both in each chart).
pub fn page(runs: &[&Run]) -> String {
    let prefix = |run: &Run, what: &str| {
        if runs.len() > 1 {
            format!("{} {what}", run.label)
        } else {
            what.to_owned()
        }
    };
    let mut mb = Vec::new();
    let mut rps = Vec::new();
    let mut curves = Vec::new();
    for run in runs {
        let series = &run.telemetry.series;
        type Field = fn(&crate::report::SeriesPoint) -> f64;
        let phases: [(bool, &str, Field, Field); 2] = [
            (
                run.plan.mode.produces(),
                "produce",
                |p| p.produce_mb_per_s,
                |p| p.produce_records_per_s,
            ),
            (
                run.plan.mode.consumes(),
                "consume",
                |p| p.consume_mb_per_s,
                |p| p.consume_records_per_s,
            ),
        ];
        for (on, phase, mb_of, rps_of) in phases {
            if !on {
                continue;
            }
            mb.push(Line {
                name: prefix(run, phase),
                points: series.iter().map(|p| (p.t_s, mb_of(p))).collect(),
            });
            rps.push(Line {
                name: prefix(run, phase),
                points: series.iter().map(|p| (p.t_s, rps_of(p))).collect(),
            });
        }
        let mut curve = |name: &str, l: &crate::stats::Latency| {
            let points: Vec<(f64, f64)> = l
                .percentile_curve(CURVE_STEPS)
                .into_iter()
                .map(|(x, _, us)| (x, us as f64))
                .collect();
            if !points.is_empty() {
                curves.push(Line {
                    name: prefix(run, name),
                    points,
                });
            }
        };
        if let Some(p) = &run.outcome.produce {
            curve("publish (send → ack)", &p.latency);
        }
        if let Some(l) = &run.outcome.e2e {
            curve("end to end", l);
        }
    }
    let decades = curves
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .ceil();
    let nines: Vec<f64> = (0..=decades as u32).map(f64::from).collect();
    let plain = |x: f64| format_number(x);

    let mut html = String::new();
    let title = match runs {
        [a, b] => format!("tidelog-bench: {} vs {}", a.label, b.label),
        [a, ..] => format!("tidelog-bench {} on {}", a.plan.mode.name(), a.label),
        [] => "tidelog-bench".to_owned(),
    };
    html.push_str(&head(&title));
    html.push_str("<h2>Throughput</h2>");
    html.push_str(&chart(
        "MB/s per second",
        "seconds since start",
        "MB/s",
        &mb,
        None,
        &plain,
    ));
    html.push_str(&chart(
        "records/s per second",
        "seconds since start",
        "records/s",
        &rps,
        None,
        &plain,
    ));
    html.push_str("<h2>Latency</h2>");
    html.push_str(&chart(
        "latency by percentile",
        "percentile",
        "µs",
        &curves,
        Some(nines),
        &nines_label,
    ));
    html.push_str("<h2>Summary</h2>");
    for run in runs {
        let _ = write!(html, "<pre>{}</pre>", escape(&report::table(run)));
    }
    if let [a, b] = runs {
        let _ = write!(html, "<pre>{}</pre>", escape(&report::compare_table(a, b)));
    }
    html.push_str("<h2>Parameters</h2>");
    for run in runs {
        let params = serde_json::to_string_pretty(&run.plan.to_json()).unwrap_or_default();
        let _ = write!(
            html,
            "<h3>{}</h3><pre>{}</pre>",
            escape(&run.label),
            escape(&params)
        );
    }
    html.push_str(&foot());
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_steps_and_escaping() {
        assert_eq!(nines_label(0.0), "0");
        assert_eq!(nines_label(1.0), "90");
        assert_eq!(nines_label(2.0), "99");
        assert_eq!(nines_label(4.0), "99.99");
        assert_eq!(nice_step(95.0, 5.0), 20.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(format_number(1_234_567.0), "1,234,567");
        assert_eq!(format_number(2.5), "2.50");
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }

    #[test]
    fn empty_chart_says_so() {
        let svg = chart("t", "x", "y", &[], None, &|x| x.to_string());
        assert!(svg.contains("no data") && svg.ends_with("</svg>"));
    }
}
