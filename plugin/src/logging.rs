//! The plugin logs to a file, never to stdout (stdout is the CNI result) and
//! not to stderr by default (runtimes may capture it into their own logs).
//! If the file cannot be opened, the plugin runs without a log rather than
//! fail a pod for it.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

pub fn init(file: &Path, level: &str) {
    if let Some(dir) = file.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let Ok(out) = OpenOptions::new().create(true).append(true).open(file) else {
        return;
    };
    let level = level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(out))
        .with_ansi(false)
        .with_max_level(level)
        .try_init();
}
