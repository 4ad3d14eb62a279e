//! A history chart: the min-max band and the average line of downsampled buckets, as SVG.
//! Drawn by hand: a few dozen lines, no charting library in the wasm.

use leptos::prelude::*;

use hearth_model::devices::Readings;

use crate::time::clock;

const W: f64 = 600.0;
const H: f64 = 220.0;
const PAD: f64 = 28.0;

#[component]
pub fn Chart(
    /// Downsampled readings to draw.
    history: Readings,
    /// Unit shown on the axis.
    unit: Option<String>,
) -> impl IntoView {
    let points: Vec<(i64, f64, f64, f64)> =
        history.buckets.iter().flatten().filter_map(|b| Some((b.start, b.min?, b.avg?, b.max?))).collect();
    if points.is_empty() {
        return view! { <p class="muted">"No numeric readings in this range."</p> }.into_any();
    }
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi - lo < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let span = (history.to - history.from).max(1) as f64;
    let x = |t: i64| PAD + (t - history.from) as f64 / span * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v - lo) / (hi - lo) * (H - 2.0 * PAD);
    let line: String = points.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.2))).collect::<Vec<_>>().join(" ");
    let band: String = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.3)))
        .chain(points.iter().rev().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))))
        .collect::<Vec<_>>()
        .join(" ");
    // Sparse data (a new device, a long range) would draw no visible line: mark each bucket.
    let dots: Vec<(f64, f64)> =
        if points.len() <= 60 { points.iter().map(|p| (x(p.0), y(p.2))).collect() } else { Vec::new() };
    let unit = unit.unwrap_or_default();
    view! {
        <svg class="chart" viewBox=format!("0 0 {W} {H}") preserveAspectRatio="none" role="img"
            aria-label=format!("history from {} to {}", clock(history.from), clock(history.to))>
            <polygon class="band" points=band />
            <polyline class="line" points=line />
            {dots.into_iter().map(|(cx, cy)| view! { <circle class="dot" cx=format!("{cx:.1}") cy=format!("{cy:.1}") r="3" /> }).collect_view()}
            <text x="2" y=format!("{:.0}", PAD - 8.0)>{format!("{} {unit}", trim(hi))}</text>
            <text x="2" y=format!("{:.0}", H - PAD - 4.0)>{format!("{} {unit}", trim(lo))}</text>
            <text x=format!("{:.0}", PAD) y=format!("{:.0}", H - PAD + 14.0)>{clock(history.from)}</text>
            <text x=format!("{:.0}", W - PAD - 30.0) y=format!("{:.0}", H - PAD + 14.0)>{clock(history.to)}</text>
        </svg>
    }
    .into_any()
}

fn trim(v: f64) -> String {
    format!("{}", (v * 100.0).round() / 100.0)
}
