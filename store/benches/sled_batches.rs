//! What writing a state into sled costs in memory, by batch size: the
//! snapshot install writes every record of the state in batches, and sled
//! 0.34's resident memory depends on the batch size far more than its cache
//! setting suggests. Each size runs in a process of its own. Prints figures;
//! asserts nothing (`cargo bench -p ipkeep-store --bench sled_batches`).

use std::time::Instant;

mod common;
use common::status_kib;

const RECORDS: usize = 300_000;
const SIZE_ENV: &str = "IPKEEP_SLED_BATCH";

fn write_in_batches(per_batch: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(32 << 20) // ipkeepd's default --cache-mib
        .open()
        .expect("open sled");
    let tree = db.open_tree("state").expect("open tree");
    let before = status_kib("VmRSS");
    let started = Instant::now();
    let mut batch = sled::Batch::default();
    for i in 0..RECORDS {
        // Shaped as allocation records: a key by attachment, a value of
        // about the size of an encoded allocation.
        batch.insert(
            format!("a/bench/fill-{i}/eth0").into_bytes(),
            vec![7u8; 120],
        );
        if (i + 1) % per_batch == 0 {
            tree.apply_batch(std::mem::take(&mut batch)).expect("apply");
        }
    }
    tree.apply_batch(batch).expect("apply");
    db.flush().expect("flush");
    println!(
        "{RECORDS} records in batches of {per_batch:>6}: {:>6.2} s, resident +{:>4} MiB, peak {:>4} MiB",
        started.elapsed().as_secs_f64(),
        status_kib("VmRSS").saturating_sub(before) / 1024,
        status_kib("VmHWM") / 1024
    );
}

fn main() {
    if let Ok(size) = std::env::var(SIZE_ENV) {
        write_in_batches(size.parse().expect("batch size"));
        return;
    }
    let me = std::env::current_exe().expect("own path");
    for size in [1, 100, 500, 1_000, 10_000] {
        let status = std::process::Command::new(&me)
            .env(SIZE_ENV, size.to_string())
            .status()
            .expect("run a size");
        assert!(status.success(), "batches of {size}: {status}");
    }
}
