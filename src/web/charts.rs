//! Server-side SVG charts for the console: pure functions returning markup
//! to embed in a page (no JavaScript charting, no CDN). Every label is
//! escaped here, so callers may pass user-controlled names.
//!
//! The SVGs have a fixed `viewBox` and `width="100%"`: they scale with their
//! card and keep their proportions (text is not stretched).

use std::fmt::Write;

/// Series colours, in order (upload blue, download green, ...): distinct
/// for the common colour-vision deficiencies and on white.
pub const PALETTE: [&str; 6] = [
    "#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#dc2626",
];

// About the width of a half-page card, so 12 units of text read as
// about 12 px there (and larger on a full-width card).
const W: f64 = 560.0;
const H: f64 = 210.0;
/// Plot area inside the viewBox (room for y labels left, legend on top,
/// x labels below).
const LEFT: f64 = 66.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 26.0;

/// What the values of a chart measure (how its ticks read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Throughput: ticks like "512 KiB/s", "2 MiB/s".
    BytesPerSec,
    /// Sizes: "40 GiB".
    Bytes,
    /// Plain counts (sessions): "0, 2, 4"; ticks never fractional.
    Count,
}

/// One line of a chart: `values[i]` belongs to `times[i]` of the chart;
/// non-finite values are gaps.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub name: &'a str,
    pub values: &'a [f64],
}

/// Words the chart shows, in the reader's language.
#[derive(Debug, Clone)]
pub struct ChartText<'a> {
    /// The right end of the time axis ("now", "現在").
    pub now: &'a str,
    /// Shown instead of lines when there are fewer than two points.
    pub no_data: &'a str,
    /// Suffix of relative minute labels ("min" in "-45 min", "分").
    pub minutes: &'a str,
    /// Suffix of relative hour labels ("h" in "-6 h", "時間").
    pub hours: &'a str,
}

impl Default for ChartText<'_> {
    fn default() -> Self {
        ChartText {
            now: "now",
            no_data: "No data yet",
            minutes: "min",
            hours: "h",
        }
    }
}

/// A time-series chart over `[end - span, end]` (unix seconds).
#[derive(Debug, Clone)]
pub struct TimeChart<'a> {
    /// Spoken by screen readers (`aria-label`).
    pub title: &'a str,
    pub unit: Unit,
    pub times: &'a [u64],
    pub lines: Vec<Line<'a>>,
    pub end_unix: u64,
    pub span_secs: u64,
    /// Fill the area under each line (lightly).
    pub area: bool,
    pub text: ChartText<'a>,
}

/// Escapes text for SVG/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Binary units, as the rest of the gateway prints sizes.
const BYTE_UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// "0 B", "512 B", "1.5 KiB", "12 MiB", "3.25 GiB": at most three
/// significant figures.
pub fn fmt_bytes(v: f64) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    let (scaled, unit) = scale_bytes(v);
    format!("{} {}", fmt_num(scaled), BYTE_UNITS[unit])
}

/// The value divided into its binary unit, and that unit's index.
fn scale_bytes(v: f64) -> (f64, usize) {
    let mut u = 0;
    let mut s = v;
    while s >= 1024.0 && u + 1 < BYTE_UNITS.len() {
        s /= 1024.0;
        u += 1;
    }
    (s, u)
}

/// A number with up to three significant figures, no trailing zeros.
fn fmt_num(v: f64) -> String {
    let decimals = if v == 0.0 || v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The smallest "nice" number (1, 2, 2.5 or 5 times a power of ten) at
/// least `x`; 1 for anything not positive.
pub fn nice_step(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    let f = x / p;
    // A hair of slack: 3.0000000001 / 1 is still a 5, but 2.0 is a 2.
    let n = if f <= 1.0 + 1e-9 {
        1.0
    } else if f <= 2.0 + 1e-9 {
        2.0
    } else if f <= 2.5 + 1e-9 {
        2.5
    } else if f <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    n * p
}

/// Y axis ticks from 0 to at least `max`, about `want` intervals, at nice
/// numbers of the unit the axis reads in (bytes are stepped in KiB, MiB...
/// so "1.5 MiB" ticks rather than "1572864 B"). Returns (ticks, top).
pub fn ticks(max: f64, unit: Unit, want: usize) -> (Vec<f64>, f64) {
    let want = want.max(1) as f64;
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        0.0
    };
    let (scale, integer) = match unit {
        Unit::Count => (1.0, true),
        Unit::Bytes | Unit::BytesPerSec => (1024f64.powi(scale_bytes(max).1 as i32), false),
    };
    let mut step = nice_step(max / scale / want);
    if integer {
        step = step.max(1.0).round();
    }
    if max == 0.0 {
        // An empty or all-zero chart still has an axis: 0..want steps of 1.
        step = 1.0;
    }
    let step = step * scale;
    let n = ((max / step).ceil() as usize).max(1);
    let ticks: Vec<f64> = (0..=n).map(|i| i as f64 * step).collect();
    let top = ticks[n];
    (ticks, top)
}

/// A tick or value label in the chart's unit.
pub fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::BytesPerSec => format!("{}/s", fmt_bytes(v)),
        Unit::Bytes => fmt_bytes(v),
        Unit::Count => fmt_num(v.round()),
    }
}

/// The x axis: a label every quarter of the span, relative to the end.
fn time_labels(span: u64, text: &ChartText) -> Vec<(f64, String)> {
    let span = span.max(1);
    (0..=4)
        .map(|i| {
            let frac = i as f64 / 4.0;
            let ago = span - (span as f64 * frac).round() as u64;
            let label = if ago == 0 {
                text.now.to_string()
            } else if ago < 2 * 3600 || !ago.is_multiple_of(3600) {
                format!("-{} {}", ago / 60, text.minutes)
            } else {
                format!("-{} {}", ago / 3600, text.hours)
            };
            (frac, label)
        })
        .collect()
}

/// A time-series line (or area) chart as an inline `<svg>`.
pub fn time_chart(c: &TimeChart) -> String {
    let span = c.span_secs.max(1) as f64;
    let start = c.end_unix.saturating_sub(c.span_secs) as f64;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x_of = |t: u64| LEFT + ((t as f64 - start) / span).clamp(0.0, 1.0) * pw;

    // Points inside the window, per line; the maximum for the axis.
    let mut max = 0f64;
    let mut any_line = false;
    let pts: Vec<Vec<Option<(u64, f64)>>> = c
        .lines
        .iter()
        .map(|l| {
            let v: Vec<Option<(u64, f64)>> = c
                .times
                .iter()
                .zip(l.values.iter())
                .filter(|(t, _)| (**t as f64) >= start && **t <= c.end_unix)
                .map(|(t, v)| v.is_finite().then_some((*t, v.max(0.0))))
                .collect();
            for (_, v) in v.iter().flatten() {
                max = max.max(*v);
            }
            if v.iter().flatten().count() >= 2 {
                any_line = true;
            }
            v
        })
        .collect();
    let (yt, top) = ticks(max, c.unit, 4);
    let y_of = |v: f64| TOP + ph - (v / top) * ph;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{}" font-family="inherit" font-size="11.5">"#,
        esc(c.title)
    );
    let _ = write!(s, "<title>{}</title>", esc(c.title));

    // Grid and y labels (an empty chart has no scale to show: only its
    // baseline).
    let yt = if any_line { yt } else { vec![0.0] };
    for t in &yt {
        let y = y_of(*t);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"##,
            W - RIGHT,
            if *t == 0.0 { "#9aa5b1" } else { "#e4e8ee" },
        );
        if any_line {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#5b6673">{}</text>"##,
                LEFT - 8.0,
                y + 4.0,
                esc(&fmt_value(*t, c.unit))
            );
        }
    }
    // X labels.
    for (frac, label) in time_labels(c.span_secs, &c.text) {
        let x = LEFT + frac * pw;
        let anchor = if frac == 0.0 {
            "start"
        } else if frac == 1.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#9aa5b1"/><text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" fill="#5b6673">{}</text>"##,
            TOP + ph,
            TOP + ph + 4.0,
            H - 8.0,
            esc(&label)
        );
    }

    // Legend: a swatch, the name and the latest value of each line.
    let mut lx = LEFT;
    for (i, l) in c.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let last = pts[i].iter().rev().flatten().next().map(|(_, v)| *v);
        let label = match last {
            Some(v) => format!("{} · {}", l.name, fmt_value(v, c.unit)),
            None => l.name.to_string(),
        };
        let _ = write!(
            s,
            r##"<rect x="{lx:.1}" y="9" width="10" height="10" rx="2" fill="{color}"/><text x="{:.1}" y="18" fill="#1f2933" font-size="12.5">{}</text>"##,
            lx + 15.0,
            esc(&label)
        );
        // Wide enough for CJK names too (each of those is about 1 em).
        let width: f64 = label
            .chars()
            .map(|ch| if ch.is_ascii() { 6.9 } else { 12.5 })
            .sum();
        lx += 15.0 + width + 18.0;
    }

    if !any_line {
        let _ = write!(
            s,
            r##"<text class="no-data" x="{:.1}" y="{:.1}" text-anchor="middle" fill="#7b8794" font-size="14">{}</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0 + 5.0,
            esc(c.text.no_data)
        );
    } else {
        for (i, line) in pts.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            // Each run of consecutive finite points is one path.
            for run in line.split(|p| p.is_none()) {
                let run: Vec<(f64, f64)> = run
                    .iter()
                    .flatten()
                    .map(|(t, v)| (x_of(*t), y_of(*v)))
                    .collect();
                if run.is_empty() {
                    continue;
                }
                if run.len() == 1 {
                    let (x, y) = run[0];
                    let _ = write!(
                        s,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{color}"/>"#
                    );
                    continue;
                }
                let mut d = String::new();
                for (j, (x, y)) in run.iter().enumerate() {
                    let _ = write!(d, "{}{x:.1},{y:.1}", if j == 0 { "M" } else { " L" });
                }
                if c.area {
                    let base = y_of(0.0);
                    let _ = write!(
                        s,
                        r#"<path d="{d} L{:.1},{base:.1} L{:.1},{base:.1} Z" fill="{color}" fill-opacity="0.12" stroke="none"/>"#,
                        run[run.len() - 1].0,
                        run[0].0
                    );
                }
                let _ = write!(
                    s,
                    r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round"/>"#
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// One part of a stacked bar.
#[derive(Debug, Clone)]
pub struct BarPart<'a> {
    pub name: &'a str,
    pub value: f64,
    /// The class of its segment (`used`, `dirty` in app.css) or a CSS
    /// colour (`#2563eb`).
    pub color: &'a str,
}

/// Width of `v` out of `total` in percent, for a `style` attribute.
fn pct(v: f64, total: f64) -> f64 {
    (v / total * 100.0).clamp(0.0, 100.0)
}

/// A stacked horizontal bar out of `total` (the cache budget: clean and
/// dirty bytes), with an optional marker (the dirty limit) and a legend
/// with each part's size, as HTML with app.css's `.bar.stacked` and
/// `.legend` (HTML rather than SVG: its text keeps the page's size at any
/// card width). Parts beyond `total` are clipped.
pub fn stacked_bar(
    title: &str,
    parts: &[BarPart],
    total: f64,
    marker: Option<(&str, f64)>,
) -> String {
    let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    let total = if total.is_finite() && total > 0.0 {
        total
    } else {
        // Nothing to measure against: the parts fill the bar.
        parts.iter().map(|p| clean(p.value)).sum::<f64>().max(1.0)
    };
    // A class name for app.css, or an inline colour.
    let paint = |c: &str| {
        if c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
            (format!(" class=\"{}\"", esc(c)), String::new())
        } else {
            (String::new(), format!("background:{};", esc(c)))
        }
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<div class="stacked-box"><div class="bar stacked" role="img" aria-label="{}">"#,
        esc(title)
    );
    let mut used = 0.0;
    for p in parts {
        let w = pct(clean(p.value), total).min(100.0 - used);
        used += w;
        if w > 0.0 {
            let (class, style) = paint(p.color);
            let _ = write!(
                s,
                r#"<span{class} style="{style}width:{w:.2}%" title="{}"></span>"#,
                esc(&format!("{}: {}", p.name, fmt_bytes(p.value)))
            );
        }
    }
    if let Some((name, at)) = marker {
        if at.is_finite() && at >= 0.0 {
            let _ = write!(
                s,
                r#"<i class="limit" style="left:{:.2}%" title="{}"></i>"#,
                pct(at, total),
                esc(&format!("{name}: {}", fmt_bytes(at)))
            );
        }
    }
    s.push_str(r#"</div><div class="legend">"#);
    for p in parts {
        let (class, style) = paint(p.color);
        let _ = write!(
            s,
            r#"<span><i{class} style="{style}"></i>{} <b>{}</b></span>"#,
            esc(p.name),
            esc(&fmt_bytes(p.value))
        );
    }
    if let Some((name, at)) = marker {
        let _ = write!(
            s,
            r#"<span><i class="limit"></i>{} <b>{}</b></span>"#,
            esc(name),
            esc(&fmt_bytes(at))
        );
    }
    let _ = write!(
        s,
        r#"<span class="total">{} <b>{}</b></span></div></div>"#,
        esc(title),
        esc(&fmt_bytes(total))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness check: tags balance, attributes are quoted,
    /// text holds no raw `<` or `&` outside entities.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find(['<', '&']) {
            let (text, tail) = rest.split_at(i);
            assert!(!text.contains('>'), "raw > in text {text:?} of {svg}");
            if tail.starts_with('&') {
                let end = tail.find(';').expect("entity without ;");
                let ent = &tail[1..end];
                assert!(
                    ["amp", "lt", "gt", "quot", "#39"].contains(&ent),
                    "unknown entity &{ent}; in {svg}"
                );
                rest = &tail[end + 1..];
                continue;
            }
            let end = tail.find('>').expect("unclosed tag");
            let tag = &tail[1..end];
            assert!(!tag.contains('<'), "< inside tag {tag:?}");
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().unwrap_or_else(|| panic!("stray </{name}>"));
                assert_eq!(open, name, "</{name}> closes <{open}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_string();
                stack.push(name);
            }
            rest = &tail[end + 1..];
        }
        assert!(!rest.contains('>'), "raw > in trailing text");
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn chart<'a>(times: &'a [u64], lines: Vec<Line<'a>>) -> String {
        time_chart(&TimeChart {
            title: "throughput",
            unit: Unit::BytesPerSec,
            times,
            lines,
            end_unix: 10_000,
            span_secs: 3600,
            area: true,
            text: ChartText::default(),
        })
    }

    #[test]
    fn an_empty_chart_shows_no_scale() {
        let svg = chart(&[], vec![]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("B/s<"), "{svg}");
    }

    #[test]
    fn a_two_series_chart_is_well_formed_with_legend_and_axis() {
        let times: Vec<u64> = (0..360).map(|i| 10_000 - 3590 + i * 10).collect();
        let up: Vec<f64> = (0..360)
            .map(|i| (i as f64 * 0.1).sin().abs() * 3e6)
            .collect();
        let down: Vec<f64> = (0..360).map(|i| i as f64 * 1000.0).collect();
        let svg = chart(
            &times,
            vec![
                Line {
                    name: "Upload",
                    values: &up,
                },
                Line {
                    name: "Download",
                    values: &down,
                },
            ],
        );
        assert_well_formed(&svg);
        assert!(svg.contains(">Upload · ") && svg.contains(">Download · "));
        assert!(svg.contains("MiB/s"), "{svg}");
        assert!(svg.contains(">-60 min<") && svg.contains(">now<"));
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
        assert!(svg.contains(r#"viewBox="0 0 560 210" width="100%""#));
        assert!(!svg.contains("No data yet"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn names_are_escaped() {
        let times = [9_000, 9_500];
        let v = [1.0, 2.0];
        let svg = chart(
            &times,
            vec![Line {
                name: "<script>alert('x')</script>&",
                values: &v,
            }],
        );
        assert_well_formed(&svg);
        assert!(!svg.contains("<script"));
        assert!(svg.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"));
        let bar = stacked_bar(
            "<b>cache</b>",
            &[BarPart {
                name: "<i>dirty</i>",
                value: 5.0,
                color: "\"red",
            }],
            10.0,
            Some(("<u>limit</u>", 8.0)),
        );
        assert_well_formed(&bar);
        assert!(!bar.contains("<b>cache") && !bar.contains("<i>dirty") && !bar.contains("<u>"));
        assert!(bar.contains("&lt;b&gt;cache&lt;/b&gt;") && bar.contains("&lt;i&gt;dirty"));
        assert!(bar.contains("background:&quot;red;"), "{bar}");
    }

    #[test]
    fn empty_one_point_and_zero_series_do_not_break() {
        let empty = chart(&[], vec![]);
        assert_well_formed(&empty);
        assert!(empty.contains("No data yet"));

        let t1 = [9_990];
        let v1 = [42.0];
        let one = chart(
            &t1,
            vec![Line {
                name: "u",
                values: &v1,
            }],
        );
        assert_well_formed(&one);
        assert!(one.contains("No data yet"), "one point is no line yet");

        let t = [9_000, 9_500, 9_990];
        let zeros = [0.0, 0.0, 0.0];
        let z = chart(
            &t,
            vec![Line {
                name: "u",
                values: &zeros,
            }],
        );
        assert_well_formed(&z);
        assert!(!z.contains("NaN") && !z.contains("inf"), "{z}");
        assert!(z.contains("<path"));

        let odd = [f64::NAN, f64::INFINITY, -5.0];
        let o = chart(
            &t,
            vec![Line {
                name: "u",
                values: &odd,
            }],
        );
        assert_well_formed(&o);
        assert!(!o.contains("NaN") && !o.contains("inf"), "{o}");

        // Values longer than the times, times outside the window.
        let t2 = [1, 2, 9_999];
        let many = [1.0, 2.0, 3.0, 4.0, 5.0];
        let m = chart(
            &t2,
            vec![Line {
                name: "u",
                values: &many,
            }],
        );
        assert_well_formed(&m);

        let zero_span = time_chart(&TimeChart {
            title: "t",
            unit: Unit::Count,
            times: &t,
            lines: vec![Line {
                name: "s",
                values: &zeros,
            }],
            end_unix: 0,
            span_secs: 0,
            area: false,
            text: ChartText::default(),
        });
        assert_well_formed(&zero_span);
        assert!(!zero_span.contains("NaN"));

        let b = stacked_bar("c", &[], 0.0, None);
        assert_well_formed(&b);
        assert!(!b.contains("NaN") && !b.contains("inf"));
    }

    #[test]
    fn ticks_are_nice_numbers() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(130.0), 200.0);
        assert_eq!(nice_step(0.0), 1.0);

        let (t, top) = ticks(7.0, Unit::Count, 4);
        assert_eq!(t, vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(top, 8.0);
        // Counts never step by fractions.
        let (t, _) = ticks(1.0, Unit::Count, 4);
        assert_eq!(t, vec![0.0, 1.0]);

        // 3.2 MiB/s: steps of 1 MiB, labelled in MiB.
        let mib = 1024.0 * 1024.0;
        let (t, top) = ticks(3.2 * mib, Unit::BytesPerSec, 4);
        assert_eq!(t, vec![0.0, mib, 2.0 * mib, 3.0 * mib, 4.0 * mib]);
        assert_eq!(top, 4.0 * mib);
        let labels: Vec<String> = t.iter().map(|v| fmt_value(*v, Unit::BytesPerSec)).collect();
        assert_eq!(
            labels,
            ["0 B/s", "1 MiB/s", "2 MiB/s", "3 MiB/s", "4 MiB/s"]
        );

        // 700 KiB: steps of 200 KiB.
        let (t, _) = ticks(700.0 * 1024.0, Unit::Bytes, 4);
        assert_eq!(fmt_value(t[1], Unit::Bytes), "200 KiB");
        assert!(t.last().unwrap() >= &(700.0 * 1024.0));

        // Nothing at all: still an axis, no zero-height scale.
        let (t, top) = ticks(0.0, Unit::BytesPerSec, 4);
        assert!(top > 0.0 && t.len() >= 2);
        let (_, top) = ticks(f64::NAN, Unit::Bytes, 4);
        assert!(top > 0.0);
    }

    #[test]
    fn bytes_read_like_the_cli() {
        assert_eq!(fmt_bytes(0.0), "0 B");
        assert_eq!(fmt_bytes(512.0), "512 B");
        assert_eq!(fmt_bytes(1536.0), "1.5 KiB");
        assert_eq!(fmt_bytes(12.0 * 1024.0 * 1024.0), "12 MiB");
        assert_eq!(fmt_bytes(3.25 * 1024f64.powi(3)), "3.25 GiB");
        assert_eq!(fmt_bytes(-3.0), "0 B");
    }

    #[test]
    fn time_labels_for_hour_and_day() {
        let t = ChartText::default();
        let h: Vec<String> = time_labels(3600, &t).into_iter().map(|x| x.1).collect();
        assert_eq!(h, ["-60 min", "-45 min", "-30 min", "-15 min", "now"]);
        let d: Vec<String> = time_labels(86_400, &t).into_iter().map(|x| x.1).collect();
        assert_eq!(d, ["-24 h", "-18 h", "-12 h", "-6 h", "now"]);
    }

    #[test]
    fn the_stacked_bar_is_proportional_and_clipped() {
        let bar = stacked_bar(
            "cache",
            &[
                BarPart {
                    name: "clean",
                    value: 30.0,
                    color: "#2563eb",
                },
                BarPart {
                    name: "dirty",
                    value: 90.0,
                    color: "#d97706",
                },
            ],
            100.0,
            Some(("dirty limit", 50.0)),
        );
        assert_well_formed(&bar);
        // 30 %, then the dirty part clipped at the end of the bar.
        assert!(
            bar.contains(r#"style="background:#2563eb;width:30.00%""#),
            "{bar}"
        );
        assert!(
            bar.contains(r#"style="background:#d97706;width:70.00%""#),
            "{bar}"
        );
        assert!(
            bar.contains(r#"class="limit" style="left:50.00%""#),
            "{bar}"
        );
        assert!(
            bar.contains("dirty <b>90 B</b>"),
            "the legend tells the truth"
        );
        // app.css's segment classes.
        let bar = stacked_bar(
            "cache",
            &[BarPart {
                name: "used",
                value: 1.0,
                color: "used",
            }],
            4.0,
            None,
        );
        assert!(
            bar.contains(r#"<span class="used" style="width:25.00%""#),
            "{bar}"
        );
        assert!(!bar.contains("limit"));
    }
}
