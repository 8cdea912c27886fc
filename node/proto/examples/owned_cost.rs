//! What an owned-item update costs the CPU: signing a record, and verifying it as every member
//! does when it takes it (`Record::decode`, which checks the Ed25519 signature), for small and
//! the largest values; and a log entry appended and a chain verified.
//!
//!     cargo run --release -p butter-proto --example owned_cost
//!
//! Prints one line per measurement: the median of 7 runs, each timing `n` operations.

#![allow(
    clippy::disallowed_methods,
    reason = "a measurement outside the core's state machines: it reads the clock"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use butter_proto::owned::{MAX_VALUE, OwnerKey, Record};
use butter_proto::signed_log;

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time(label: &str, n: u32, mut f: impl FnMut()) {
    let runs = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed() / n
        })
        .collect();
    println!("{label:<44} {:>9.1} µs", median(runs).as_secs_f64() * 1e6);
}

fn main() {
    let key = OwnerKey::from_seed([7; 32]);
    for size in [100, 4096, MAX_VALUE] {
        let value = vec![0xab; size];
        let mut seq = 0;
        time(&format!("sign a record, {size} B value"), 200, || {
            seq += 1;
            let r = Record::sign(&key, "bench", seq, Some(value.clone())).expect("signs");
            std::hint::black_box(r.encode());
        });
        let bytes = Record::sign(&key, "bench", 1, Some(value.clone()))
            .expect("signs")
            .encode();
        time(
            &format!("verify a record, {size} B value ({} B)", bytes.len()),
            200,
            || {
                std::hint::black_box(Record::decode(&bytes).expect("verifies"));
            },
        );
    }
    let mut store = BTreeMap::new();
    let mut head = None;
    time("append a log entry (100 B) and its head", 200, || {
        let (e, r) = signed_log::append(&key, "bench", head, vec![1; 100]).expect("appends");
        head = Some(signed_log::head_of(&r).expect("a head"));
        store.insert(e.id(), e.encode());
    });
    let head = head.expect("appended");
    let len = head.index + 1;
    time(&format!("verify a whole log of {len} entries"), 1, || {
        let entries =
            signed_log::verify(&key.id(), "bench", head, len, |id| store.get(id).cloned())
                .expect("verifies");
        std::hint::black_box(entries.len());
    });
    println!("(the last line is the whole chain; divide by {len} for one entry)");
}
