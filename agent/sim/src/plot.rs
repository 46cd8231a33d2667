//! SVG plot of the fraction of links committed over simulated time, one line per run.

use crate::report::Report;
use std::fmt::Write;

/// Colours of the lines, in report order.
const COLOURS: [&str; 4] = ["#1b7837", "#b2182b", "#2166ac", "#762a83"];

/// An SVG drawing each report's committed-link fraction against simulated seconds.
pub fn svg(reports: &[&Report]) -> String {
    let (w, h, left, bottom, top, right) = (800.0, 420.0, 60.0, 50.0, 30.0, 170.0);
    let tmax = reports
        .iter()
        .flat_map(|r| r.progress.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let x = |ms: f64| left + (ms / tmax) * (w - left - right);
    let y = |f: f64| top + (1.0 - f) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-size="14">Links committed to the new epoch over simulated time</text>"#
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y0}" y2="{y0}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{:.0}%</text>"##,
            w - right,
            left - 6.0,
            y(f) + 4.0,
            f * 100.0,
            y0 = y(f)
        );
        let t = tmax * f;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.1} s</text>"#,
            x(t),
            h - bottom + 18.0,
            t / 1000.0
        );
    }
    for (i, r) in reports.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        let mut last = 0.0;
        for (k, &(t, f)) in r.progress.iter().enumerate() {
            let cmd = if k == 0 { 'M' } else { 'L' };
            // Step line: hold the previous value until this point.
            let _ = write!(
                d,
                "{cmd}{:.1},{:.1} L{:.1},{:.1} ",
                x(t),
                y(last),
                x(t),
                y(f)
            );
            last = f;
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>"#
        );
        let ly = top + 20.0 + 20.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{} ({} violations)</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0,
            r.protocol,
            r.safety_violations
        );
    }
    s.push_str("</svg>\n");
    s
}
