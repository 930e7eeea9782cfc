//! The Raft log in plain append-only files of our own.
//!
//! Entries go to segment files (`<first index>.log`, see [`record`]) with
//! one `write` per append; durability comes from one `fdatasync` of the
//! active segment covering every append made before it (the log store
//! calls [`LogFile::sync_data`] after each append). A segment is fsynced
//! whole before the next one is started, so syncing the active one covers
//! everything earlier.
//!
//! The log is not in sled beside the state: sled's flush walks its own IO
//! thread pool for every group of appends, which costs a leader most of its
//! CPU under load (the node-API rows of `ipkeep-bench`; docs/journal.md),
//! and syncs with sync_file_range, which does not survive a power loss.
//!
//! Only where each entry lies is kept in memory (24 bytes an entry); reads
//! go to the files (the page cache, for the recent entries replication
//! reads). Purging deletes whole segments behind the purge point;
//! truncating cuts the segment that holds the first removed entry.

mod hard_state;
mod record;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ipkeep_api::codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use hard_state::{is_vote_file, Damaged, HardState};

use crate::types::{Entry, LogId};

/// Version of the encoding of entries and hard state.
const LOG_VERSION: u8 = 1;
/// Largest log entry the decoder accepts.
const MAX_ENTRY: u64 = 16 << 20;
/// A segment is closed and a new one begun once it holds this much. With a
/// snapshot every 10,000 entries (a few MiB of them), the log directory
/// stays within a few segments.
const SEGMENT_BYTES: u64 = 8 << 20;
const SEGMENT_SUFFIX: &str = ".log";
/// The extension of a segment being created (see [`create_segment`]).
const STAGING_SUFFIX: &str = "new";

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, codec::CodecError> {
    let mut bytes = vec![LOG_VERSION];
    bytes.extend(codec::encode(value)?);
    Ok(bytes)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&LOG_VERSION, body)) => codec::decode(body, MAX_ENTRY).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!(
            "log record has encoding version {v}, this binary reads {LOG_VERSION}"
        )),
        None => Err("empty log record".into()),
    }
}

/// Why the log directory cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

impl From<Damaged> for LogError {
    fn from(d: Damaged) -> Self {
        LogError::Damaged {
            path: d.path,
            reason: d.reason,
        }
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written (the next record goes here).
    len: u64,
}

/// Where one entry's payload lies.
#[derive(Clone, Copy)]
struct Location {
    /// The `first` of its segment.
    segment: u64,
    offset: u64,
    len: u32,
}

struct Segments {
    /// In index order; the last is the one appended to.
    segments: VecDeque<Segment>,
    /// The entries held, from `first_index` on, without gaps.
    locations: VecDeque<Location>,
    first_index: u64,
    last_log_id: Option<LogId>,
    purged: Option<LogId>,
    /// Reused for encoding appends.
    buf: Vec<u8>,
}

impl Segments {
    fn next_index(&self) -> u64 {
        self.first_index + self.locations.len() as u64
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("the log always has a segment")
    }
}

/// The log's files. Shared by the store and its readers.
pub struct LogFile {
    dir: PathBuf,
    segment_bytes: u64,
    hard: HardState,
    inner: Mutex<Segments>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SEGMENT_SUFFIX}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Sizes a segment's file to `bytes` (never below `data_len`) with zeros
/// after its records. An fdatasync of a write inside the file's length has
/// no file size to write besides the data, so it is quicker than one that
/// grows the file (docs/journal.md). The zeros are a hole (no disk taken
/// until written); a scan ends at them (see [`record::scan`]).
fn presize(file: &File, data_len: u64, bytes: u64) -> io::Result<()> {
    file.set_len(data_len.max(bytes))
}

/// A new segment, whole: written beside under a temporary name and renamed
/// into place, so that a crash leaves either no segment or one with its
/// header (created in place, a stop half-way would leave a segment without
/// a header, which the next start refuses as damage).
fn create_segment(dir: &Path, first: u64, bytes: u64) -> io::Result<Segment> {
    let path = segment_path(dir, first);
    let staging = path.with_extension(STAGING_SUFFIX);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&staging)?;
    file.write_all_at(&record::header(first), 0)?;
    presize(&file, record::HEADER_LEN, bytes)?;
    file.sync_all()?;
    fs::rename(&staging, &path)?;
    sync_dir(dir)?;
    Ok(Segment {
        first,
        path,
        file: Arc::new(file),
        len: record::HEADER_LEN,
    })
}

/// The segment files of `dir` by their first index, in order.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = item.map_err(io_at(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.extension().is_some_and(|e| e == STAGING_SUFFIX) {
            // A creation that was stopped before its rename: it never held
            // an entry.
            fs::remove_file(&path).map_err(io_at(&path))?;
            continue;
        }
        if let Some(first) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

impl LogFile {
    /// Opens the log in `dir` (creating it when new), checks every record
    /// and cuts a torn last record off (an append that was never
    /// acknowledged; the commit witness tells whether anything acknowledged
    /// was lost).
    pub fn open(dir: &Path) -> Result<LogFile, LogError> {
        LogFile::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> Result<LogFile, LogError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let hard = HardState::open(dir).map_err(io_at(dir))?;
        let purged = hard.read_purged()?;
        // Entries up to the purge point are skipped where a segment still
        // holds them.
        let mut first_index = purged.map_or(0, |p| p.index + 1);
        let listed = list_segments(dir)?;
        let count = listed.len();
        let mut segments = VecDeque::new();
        let mut locations = VecDeque::new();
        let mut last_log_id = purged;
        // The index the next segment must begin at.
        let mut segment_next: Option<u64> = None;
        let mut removed_behind = false;
        for (n, (first, path)) in listed.into_iter().enumerate() {
            let damaged = |reason: String| LogError::Damaged {
                path: path.clone(),
                reason,
            };
            let bytes = fs::read(&path).map_err(io_at(&path))?;
            let declared = record::read_header(&bytes).map_err(damaged)?;
            if declared != first {
                return Err(damaged(format!(
                    "its header says it begins at entry {declared}"
                )));
            }
            let scan = record::scan(&bytes);
            let end = first + scan.records.len() as u64;
            if purged.is_some() && first < first_index && end <= first_index && n + 1 < count {
                // Everything it holds is purged: a purge past the end of the
                // log (a snapshot installed ahead of it) began the next
                // segment and was stopped before it removed this one.
                fs::remove_file(&path).map_err(io_at(&path))?;
                removed_behind = true;
                continue;
            }
            match segment_next {
                Some(expected) if first != expected => {
                    return Err(damaged(format!(
                        "it begins at entry {first}, where entry {expected} was next"
                    )))
                }
                // A log never purged begins where its first append did.
                None if purged.is_none() => first_index = first,
                None if first > first_index => {
                    return Err(damaged(format!(
                        "the log is missing entries {first_index} to {}",
                        first - 1
                    )))
                }
                _ => {}
            }
            if let Some(reason) = &scan.bad_tail {
                if n + 1 < count {
                    return Err(damaged(reason.clone()));
                }
                tracing::warn!(path = %path.display(), %reason, "cutting a torn write off the end of the Raft log");
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_at(&path))?;
            if scan.bad_tail.is_some() {
                // Zeros where the torn write was, then the presized length.
                file.set_len(scan.valid_len).map_err(io_at(&path))?;
                presize(&file, scan.valid_len, segment_bytes).map_err(io_at(&path))?;
                file.sync_all().map_err(io_at(&path))?;
            }
            for (i, found) in scan.records.iter().enumerate() {
                let index = first + i as u64;
                if index < first_index {
                    continue;
                }
                let payload =
                    &bytes[found.offset as usize..(found.offset + found.len as u64) as usize];
                let entry: Entry =
                    decode(payload).map_err(|e| damaged(format!("entry {index}: {e}")))?;
                if entry.log_id.index != index {
                    return Err(damaged(format!(
                        "the record for entry {index} holds entry {}",
                        entry.log_id.index
                    )));
                }
                locations.push_back(Location {
                    segment: first,
                    offset: found.offset,
                    len: found.len,
                });
                last_log_id = Some(entry.log_id);
            }
            segment_next = Some(first + scan.records.len() as u64);
            segments.push_back(Segment {
                first,
                path,
                file: Arc::new(file),
                len: scan.valid_len,
            });
        }
        if removed_behind {
            sync_dir(dir).map_err(io_at(dir))?;
        }
        let next = first_index + locations.len() as u64;
        if segment_next != Some(next) {
            // New, or everything the segments held was purged (a snapshot
            // installed ahead of the log): appends begin a segment.
            segments.push_back(create_segment(dir, next, segment_bytes).map_err(io_at(dir))?);
        }
        Ok(LogFile {
            dir: dir.to_owned(),
            segment_bytes,
            hard,
            inner: Mutex::new(Segments {
                segments,
                locations,
                first_index,
                last_log_id,
                purged,
                buf: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Segments> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    pub fn last_purged(&self) -> Option<LogId> {
        self.lock().purged
    }

    /// The last entry held, or the purge point when none is.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().last_log_id
    }

    /// Writes the entries (they are readable when this returns; durable
    /// once [`LogFile::sync_data`] runs after it). Returns the last index.
    /// On an error nothing of this append remains.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> io::Result<Option<u64>> {
        let mut entries = entries.into_iter().peekable();
        let mut guard = self.lock();
        let log = &mut *guard;
        let begins_at = entries.peek().map(|e| e.log_id.index);
        if let Some(at) = begins_at
            .filter(|&at| at > log.next_index() && log.locations.is_empty() && log.purged.is_none())
        {
            // The first entries of a log that was never purged may begin
            // anywhere (openraft's own tests begin at 1): the log begins
            // there, in a segment of its own.
            let segment = create_segment(&self.dir, at, self.segment_bytes)?;
            let empty: Vec<Segment> = log.segments.drain(..).collect();
            log.segments.push_back(segment);
            log.first_index = at;
            for gone in empty {
                fs::remove_file(&gone.path)?;
            }
            sync_dir(&self.dir)?;
        }
        if log.active().len >= self.segment_bytes {
            let next = log.next_index();
            log.active().file.sync_data()?;
            let segment = create_segment(&self.dir, next, self.segment_bytes)?;
            log.segments.push_back(segment);
        }
        let active = log.active();
        let (segment, start, file) = (active.first, active.len, active.file.clone());
        let mut buf = std::mem::take(&mut log.buf);
        buf.clear();
        let mut added = Vec::new();
        let mut last = None;
        let purged_upto = log.purged.map(|p| p.index);
        for entry in entries {
            if purged_upto.is_some_and(|p| entry.log_id.index <= p) {
                // A snapshot holds it already.
                continue;
            }
            let expected = log.next_index() + added.len() as u64;
            if entry.log_id.index != expected {
                log.buf = buf;
                return Err(io::Error::other(format!(
                    "append of entry {} where entry {expected} is next",
                    entry.log_id.index
                )));
            }
            let payload = encode(&entry).map_err(io::Error::other)?;
            record::frame(&mut buf, &payload)?;
            added.push(Location {
                segment,
                offset: start + buf.len() as u64 - payload.len() as u64,
                len: payload.len() as u32,
            });
            last = Some(entry.log_id);
        }
        if let Err(e) = file.write_all_at(&buf, start) {
            // Cut off what part of it was written, so the next append (or a
            // restart) finds the log as it was.
            let _ = file.set_len(start);
            log.buf = buf;
            return Err(e);
        }
        log.segments.back_mut().expect("active segment").len = start + buf.len() as u64;
        log.locations.extend(added);
        if last.is_some() {
            log.last_log_id = last;
        }
        log.buf = buf;
        Ok(last.map(|l| l.index))
    }

    /// Makes every append made before it durable.
    pub fn sync_data(&self) -> io::Result<()> {
        // Earlier segments were synced when they were closed.
        let file = self.lock().active().file.clone();
        file.sync_data()
    }

    /// The entries held in `start..end`, in order.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogError> {
        // Gather where they lie, then read without the lock.
        let (first_index, runs) = {
            let log = self.lock();
            let from = start.max(log.first_index);
            let end = end.min(log.next_index());
            let mut runs: Vec<(Arc<File>, PathBuf, Vec<Location>)> = Vec::new();
            for i in from..end {
                let at = log.locations[(i - log.first_index) as usize];
                match runs.last_mut() {
                    Some((_, _, run)) if run[0].segment == at.segment => run.push(at),
                    _ => {
                        let seg = log
                            .segments
                            .iter()
                            .find(|s| s.first == at.segment)
                            .expect("every location's segment is held");
                        runs.push((seg.file.clone(), seg.path.clone(), vec![at]));
                    }
                }
            }
            (log.first_index, runs)
        };
        let mut entries = Vec::new();
        for (file, path, run) in runs {
            let damaged = |reason: String| LogError::Damaged {
                path: path.clone(),
                reason,
            };
            let from = run[0].offset;
            let last = run[run.len() - 1];
            let mut bytes = vec![0u8; (last.offset + last.len as u64 - from) as usize];
            file.read_exact_at(&mut bytes, from).map_err(io_at(&path))?;
            for at in run {
                let expected = start.max(first_index) + entries.len() as u64;
                let rel = (at.offset - from) as usize;
                let entry: Entry = decode(&bytes[rel..rel + at.len as usize])
                    .map_err(|e| damaged(format!("entry {expected} read back: {e}")))?;
                if entry.log_id.index != expected {
                    return Err(damaged(format!(
                        "entry {expected} read back as entry {}",
                        entry.log_id.index
                    )));
                }
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// Removes the entries from `since` on (a new leader's log replaces
    /// them). Returns once that is on disk. Not called while an append is
    /// in flight (the store's callers are serialized).
    pub fn truncate(&self, since: u64) -> io::Result<()> {
        let (first_index, purged) = {
            let log = self.lock();
            if since >= log.next_index() {
                return Ok(());
            }
            (log.first_index, log.purged)
        };
        let new_last = if since > first_index {
            self.read(since - 1, since)
                .map_err(io::Error::other)?
                .pop()
                .map(|e| e.log_id)
        } else {
            purged
        };
        let mut log = self.lock();
        let keep = since.saturating_sub(first_index) as usize;
        let Some(cut) = log.locations.get(keep).copied() else {
            return Ok(());
        };
        log.locations.truncate(keep);
        log.last_log_id = new_last;
        while log.active().first > cut.segment {
            let gone = log.segments.pop_back().expect("segment");
            fs::remove_file(&gone.path)?;
        }
        let at = cut.offset - record::FRAME_LEN;
        let segment_bytes = self.segment_bytes;
        let active = log.segments.back_mut().expect("segment");
        // Zeros from the cut on: a later scan must end there.
        active.file.set_len(at)?;
        presize(&active.file, at, segment_bytes)?;
        active.len = at;
        active.file.sync_all()?;
        sync_dir(&self.dir)
    }

    /// Forgets the entries up to and including `upto` (a snapshot holds
    /// them), deleting the segments that hold nothing else.
    pub fn purge(&self, upto: LogId) -> io::Result<()> {
        if self.last_purged() >= Some(upto) {
            return Ok(());
        }
        // On disk first: a segment must never be gone while the purge point
        // that covers it is not.
        self.hard.save_purged(&upto)?;
        let mut log = self.lock();
        log.purged = Some(upto);
        if upto.index + 1 > log.next_index() {
            // Purged past the end (a snapshot installed ahead of the log):
            // appends resume after the purge point, in a new segment.
            log.locations.clear();
            log.last_log_id = Some(upto);
            let segment = create_segment(&self.dir, upto.index + 1, self.segment_bytes)?;
            log.segments.push_back(segment);
        } else {
            let gone = (upto.index + 1).saturating_sub(log.first_index) as usize;
            log.locations.drain(..gone);
        }
        log.first_index = upto.index + 1;
        // A segment can go once the next one begins at or before the first
        // entry kept.
        let mut removed = false;
        while log.segments.len() > 1 && log.segments[1].first <= upto.index + 1 {
            let gone = log.segments.pop_front().expect("segment");
            fs::remove_file(&gone.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The bytes the segments' records take.
    pub fn disk_usage(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.len).sum()
    }
}

#[cfg(test)]
mod tests;
