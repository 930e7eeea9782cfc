//! `ipkeepctl snapshot save FILE`: a backup of the whole cluster state.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use ipkeep_api::expect_response;
use ipkeep_api::message::{Request, Response};

use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save every subnet, pool, binding, reservation, allocation and the
    /// address history to FILE (restore with `ipkeepd --restore FILE` on a
    /// new cluster). Linearizable: it holds every write committed before it.
    Save { file: PathBuf },
}

pub fn run(session: &mut Session, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => {
            let response = session.call(&Request::Linearize(Box::new(Request::SnapshotSave)))?;
            let bytes = expect_response!(response, Response::Backup(b) => b, "Backup")?;
            write_new(&file, &bytes)?;
            session.print(
                &serde_json::json!({"file": file, "bytes": bytes.len()}),
                || format!("saved {} bytes to {}\n", bytes.len(), file.display()),
            )
        }
    }
}

/// Writes the backup next to its final name, fsyncs it and renames it into
/// place, so that a crash never leaves a half-written backup under FILE.
fn write_new(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = file.with_extension("partial");
    let mut out = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))
}
