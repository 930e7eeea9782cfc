use super::*;
use openraft::testing::log_id;
use openraft::EntryPayload;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

/// Small segments, so that a few dozen entries span several.
fn open(dir: &Path) -> LogFile {
    LogFile::open_with(dir, 100).unwrap()
}

fn indexes(log: &LogFile, start: u64, end: u64) -> Vec<(u64, u64)> {
    log.read(start, end)
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn segment_count(dir: &Path) -> usize {
    list_segments(dir).unwrap().len()
}

#[test]
fn appends_are_read_back_across_segments_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.last_log_id(), None);
    for i in 0..40 {
        assert_eq!(log.append([entry(1, i)]).unwrap(), Some(i));
    }
    log.append((40..50).map(|i| entry(2, i))).unwrap();
    log.sync_data().unwrap();
    let segments = segment_count(dir.path());
    assert!(segments > 3, "small segments rotate: {segments}");
    let all: Vec<_> = (0..50).map(|i| (if i < 40 { 1 } else { 2 }, i)).collect();
    assert_eq!(indexes(&log, 0, 100), all);
    assert_eq!(indexes(&log, 38, 42), all[38..42].to_vec());
    drop(log);

    let log = open(dir.path());
    assert_eq!(log.last_log_id(), Some(log_id(2, 1, 49)));
    assert_eq!(indexes(&log, 0, 100), all);
    // An append out of sequence is refused and changes nothing.
    assert!(log.append([entry(2, 52)]).is_err());
    log.append([entry(2, 50)]).unwrap();
    assert_eq!(indexes(&log, 49, 51), vec![(2, 49), (2, 50)]);
}

#[test]
fn a_truncation_cuts_its_segment_drops_later_ones_and_appends_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append((0..30).map(|i| entry(1, i))).unwrap();
    for i in 30..60 {
        log.append([entry(1, i)]).unwrap();
    }
    let before = segment_count(dir.path());
    log.truncate(35).unwrap();
    assert!(segment_count(dir.path()) < before);
    assert_eq!(log.last_log_id(), Some(log_id(1, 1, 34)));
    log.append([entry(3, 35), entry(3, 36)]).unwrap();
    log.truncate(100).unwrap(); // past the end: nothing
    drop(log);
    let log = open(dir.path());
    let read = indexes(&log, 30, 100);
    assert_eq!(
        read,
        vec![
            (1, 30),
            (1, 31),
            (1, 32),
            (1, 33),
            (1, 34),
            (3, 35),
            (3, 36)
        ]
    );
}

#[test]
fn a_purge_deletes_the_segments_behind_it_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..60 {
        log.append([entry(1, i)]).unwrap();
    }
    let before = segment_count(dir.path());
    log.purge(log_id(1, 1, 44)).unwrap();
    assert!(segment_count(dir.path()) < before);
    assert_eq!(indexes(&log, 0, 47), vec![(1, 45), (1, 46)]);
    log.purge(log_id(1, 1, 10)).unwrap(); // behind: nothing
    log.append([entry(1, 44)]).unwrap(); // purged: nothing
    assert_eq!(log.last_log_id(), Some(log_id(1, 1, 59)));
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_purged(), Some(log_id(1, 1, 44)));
    assert_eq!(indexes(&log, 0, 100).first(), Some(&(1, 45)));
    assert_eq!(log.last_log_id(), Some(log_id(1, 1, 59)));

    // Past the end (a snapshot installed ahead of the log).
    log.purge(log_id(4, 1, 500)).unwrap();
    assert_eq!(log.last_log_id(), Some(log_id(4, 1, 500)));
    assert!(log.read(0, 1000).unwrap().is_empty());
    log.append([entry(4, 501)]).unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(indexes(&log, 0, 1000), vec![(4, 501)]);
    assert_eq!(segment_count(dir.path()), 1);
}

#[test]
fn a_torn_last_write_is_cut_off_but_damage_before_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..40 {
        log.append([entry(1, i)]).unwrap();
    }
    drop(log);
    let segments = list_segments(dir.path()).unwrap();
    let (_, last) = segments.last().unwrap();
    let len = record::scan(&fs::read(last).unwrap()).valid_len;
    OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let log = open(dir.path());
    assert_eq!(log.last_log_id(), Some(log_id(1, 1, 38)));
    log.append([entry(2, 39)]).unwrap();
    drop(log);
    assert_eq!(open(dir.path()).last_log_id(), Some(log_id(2, 1, 39)));

    // A bit flipped in an earlier segment: not a torn write.
    let (_, first) = &segments[0];
    let mut bytes = fs::read(first).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 1;
    fs::write(first, bytes).unwrap();
    let err = LogFile::open_with(dir.path(), 100).err().unwrap();
    assert!(err.to_string().contains("checksum"), "{err}");

    // A segment missing from the middle.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..40 {
        log.append([entry(1, i)]).unwrap();
    }
    drop(log);
    let segments = list_segments(dir.path()).unwrap();
    fs::remove_file(&segments[1].1).unwrap();
    let err = LogFile::open_with(dir.path(), 100).err().unwrap();
    assert!(err.to_string().contains("was next"), "{err}");

    // And from the start, behind a purge point. (A log never purged may
    // begin anywhere; that the entries before were acknowledged is the
    // commit witness's to tell.)
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..40 {
        log.append([entry(1, i)]).unwrap();
    }
    log.purge(log_id(1, 1, 5)).unwrap();
    drop(log);
    let segments = list_segments(dir.path()).unwrap();
    fs::remove_file(&segments[0].1).unwrap();
    let err = LogFile::open_with(dir.path(), 100).err().unwrap();
    assert!(err.to_string().contains("missing entries 6 to"), "{err}");
}

#[test]
fn a_log_never_purged_may_begin_past_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append([entry(1, 5), entry(1, 6)]).unwrap();
    assert_eq!(indexes(&log, 0, 10), vec![(1, 5), (1, 6)]);
    assert!(
        log.append([entry(1, 9)]).is_err(),
        "a hole later is refused"
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!(indexes(&log, 0, 10), vec![(1, 5), (1, 6)]);
    assert_eq!(segment_count(dir.path()), 1);
}

#[test]
fn segments_are_sized_ahead_and_a_reopen_keeps_their_zeros_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogFile::open_with(dir.path(), 4096).unwrap();
    for i in 0..10 {
        log.append([entry(1, i)]).unwrap();
    }
    log.sync_data().unwrap();
    drop(log);
    let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 4096, "sized ahead");
    let log = LogFile::open_with(dir.path(), 4096).unwrap();
    assert_eq!(indexes(&log, 0, 20).len(), 10);
    assert_eq!(fs::metadata(&path).unwrap().len(), 4096, "nothing was cut");

    // A truncation leaves zeros behind the cut, so a reopen ends there too.
    log.truncate(6).unwrap();
    log.append([entry(2, 6)]).unwrap();
    drop(log);
    let log = LogFile::open_with(dir.path(), 4096).unwrap();
    assert_eq!(log.last_log_id(), Some(log_id(2, 1, 6)));
    assert_eq!(indexes(&log, 0, 20).len(), 7);
}

#[test]
fn a_segment_of_the_first_format_without_zeros_is_read_and_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogFile::open_with(dir.path(), 4096).unwrap();
    for i in 0..5 {
        log.append([entry(1, i)]).unwrap();
    }
    drop(log);
    // As an earlier binary wrote it: format 1, exactly as long as its records.
    let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(record::scan(&bytes).valid_len as usize);
    bytes[6] = 1;
    fs::write(&path, &bytes).unwrap();
    let log = LogFile::open_with(dir.path(), 4096).unwrap();
    assert_eq!(indexes(&log, 0, 10).len(), 5);
    log.append([entry(1, 5)]).unwrap();
    drop(log);
    let log = LogFile::open_with(dir.path(), 4096).unwrap();
    assert_eq!(log.last_log_id(), Some(log_id(1, 1, 5)));
}

/// A purge past the end of the log (a snapshot installed ahead of it)
/// begins a new segment after the purge point and then removes the old
/// ones; stopped in between, the log still opens, at the purge point.
#[test]
fn a_purge_past_the_end_stopped_before_removing_old_segments_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append((0..3).map(|i| entry(1, i))).unwrap();
    log.sync_data().unwrap();
    let old_segments = list_segments(dir.path()).unwrap();
    let kept: Vec<(PathBuf, Vec<u8>)> = old_segments
        .iter()
        .map(|(_, p)| (p.clone(), fs::read(p).unwrap()))
        .collect();
    log.purge(log_id(2, 1, 599)).unwrap();
    log.append([entry(2, 600)]).unwrap();
    log.sync_data().unwrap();
    drop(log);
    for (path, bytes) in &kept {
        fs::write(path, bytes).unwrap();
    }
    assert_eq!(segment_count(dir.path()), kept.len() + 1);

    // And a segment whose creation was stopped before it was renamed.
    fs::write(dir.path().join("00000000000000000700.new"), b"").unwrap();
    let log = open(dir.path());
    assert_eq!(log.last_purged(), Some(log_id(2, 1, 599)));
    assert_eq!(indexes(&log, 0, 1000), vec![(2, 600)]);
    assert_eq!(segment_count(dir.path()), 1, "the purged segments are gone");
    log.append([entry(2, 601)]).unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(indexes(&log, 0, 1000), vec![(2, 600), (2, 601)]);
}
