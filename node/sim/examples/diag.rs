#![allow(missing_docs, clippy::unwrap_used)]
use butter_sim::rigs::ChurnRig;
use butter_sim::world::World;
use std::time::Duration;
fn env(k: &str) -> Option<f64> {
    std::env::var(k).ok().map(|v| v.parse().unwrap())
}
fn main() {
    let rate: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let rig = ChurnRig {
        seeds: vec![seed],
        rates: vec![rate],
        ..ChurnRig::default()
    };
    let mut sc = rig.scenario(rate, seed);
    if let Some(g) = env("GRACE") {
        sc.core.pcg.grace = Duration::from_secs_f64(g);
    }
    if let Some(g) = env("MISSED") {
        sc.core.pcg.missed_beats = g as u32;
    }
    if let Some(g) = env("VCI") {
        sc.core.pcg.view_change_interval = Duration::from_secs_f64(g);
    }
    if let Some(g) = env("SUSP") {
        sc.core.membership.swim.suspicion_timeout = Duration::from_secs_f64(g);
    }
    if let Some(g) = env("HB") {
        sc.core.pcg.heartbeat_interval = Duration::from_secs_f64(g);
    }
    let r = World::new(sc).run();
    let sweep: Vec<_> = r.queries.iter().filter(|q| q.sweep).collect();
    let lost = sweep.iter().filter(|q| !q.existed).count();
    let failed = sweep.iter().filter(|q| q.existed && !q.found).count();
    println!(
        "lost {lost} failed {failed} of {} | deaths {} | detect p50 {:.1} p99 {:.1}",
        sweep.len(),
        r.deaths,
        r.detection_quantile(0.5).unwrap_or(0.0),
        r.detection_quantile(0.99).unwrap_or(0.0)
    );
    if std::env::var("V").is_ok() {
        println!("pcg {:?}", r.pcg_events);
        println!("memb {:?}", r.membership_events);
        println!("msgs {:?}", r.messages);
        for s in r.series.iter().step_by(2) {
            println!(
                "t={:5.1} ok={} low={} lost={}",
                s.t, s.held_ok, s.held_low, s.lost
            );
        }
    }
}
