//! Audit archive segments: closed ranges of the hash chain written out of the database as
//! self-contained, gzip-compressed JSON Lines files, and the walk that verifies them with the
//! rows still in the database as one chain.
//!
//! A segment `audit-<first>-<last>.jsonl.gz` (positions zero-padded to 20 digits, so names sort
//! in chain order) holds, one JSON object a line: a header (format, range, and the hash of the
//! event before `first`: the previous segment's head), every event of the range with its
//! `prev_hash` and `hash`, and the custody-signed checkpoint of `last` that closes it. It
//! verifies on its own (with the signing key) and links to its neighbours by hash.
//!
//! A segment is written to a hidden temporary file, fsynced, renamed into place and its
//! directory fsynced ([`SegmentWriter::finish`]): a name that exists is a whole, durable segment,
//! and only then may the rows it holds be pruned from the database (the archiver moves the
//! `archive` cursor after `finish`, and pruning never passes that cursor).
//!
//! Where segments live is a [`SegmentStore`]: a directory ([`DirSegments`], here), or an
//! S3-compatible object store (keyward-runtime's `archive_s3`), where a segment is written to a
//! local staging directory, fsynced, and then PUT (an acknowledged PUT is durable).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use keyward_core::{
    AuditCheckpoint, AuditEvent, BreakKind, ChainBreak, ChainReport, ChainedEvent, Custody,
    GENESIS_HASH, Initiator, Outcome, StoreError, chain_hash, checkpoint_bytes,
};
use serde::{Deserialize, Serialize};

use crate::audit::ChainWalk;
use crate::rows::{nanos, time_of};

/// The export cursor under which the archiver keeps the last archived position (and its lease).
pub const ARCHIVE_CURSOR: &str = "archive";

/// The format a segment's header names.
const FORMAT: &str = "keyward.audit.segment.v1";

/// The file name of the segment holding `first..=last`.
pub fn segment_name(first: u64, last: u64) -> String {
    format!("audit-{first:020}-{last:020}.jsonl.gz")
}

/// The range a segment file name says it holds.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name
        .strip_prefix("audit-")?
        .strip_suffix(".jsonl.gz")?
        .split_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// A segment in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// First position its name says it holds.
    pub first: u64,
    /// Last position its name says it holds.
    pub last: u64,
    /// Its name ([`segment_name`]).
    pub name: String,
}

/// The segments among `names` (anything else is skipped: temporary files, other objects), in
/// chain order.
pub fn segments_named(names: impl IntoIterator<Item = String>) -> Vec<SegmentFile> {
    let mut out: Vec<SegmentFile> = names
        .into_iter()
        .filter_map(|name| {
            let (first, last) = parse_name(&name)?;
            Some(SegmentFile { first, last, name })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Where an archive's segments are kept. Its methods block (the archiver calls them from its
/// own thread, `keyward audit verify` from the command line).
pub trait SegmentStore: Send + Sync {
    /// Where, in words for messages: a directory's path, or `s3://bucket/prefix`.
    fn location(&self) -> String;
    /// The segments, in chain order by name. An archive never written to is empty.
    fn list(&self) -> Result<Vec<SegmentFile>, StoreError>;
    /// Reads a segment's bytes.
    fn open(&self, seg: &SegmentFile) -> Result<Box<dyn Read + Send>, StoreError>;
    /// A local directory where segments are written before [`place`](Self::place).
    fn staging(&self) -> &Path;
    /// Makes the finished and fsynced file `tmp` (in [`staging`](Self::staging)) the segment
    /// `name`, durably: when this returns `Ok`, the segment survives a crash of this host.
    /// `tmp` is gone afterwards.
    fn place(&self, tmp: &Path, name: &str) -> Result<(), StoreError>;
}

/// Segments as files in a directory.
#[derive(Debug, Clone)]
pub struct DirSegments {
    dir: PathBuf,
}

impl DirSegments {
    /// The archive in `dir` (created 0700 when the first segment is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSegments { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl SegmentStore for DirSegments {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn list(&self) -> Result<Vec<SegmentFile>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(segments_named(names))
    }

    fn open(&self, seg: &SegmentFile) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.dir.join(&seg.name);
        Ok(Box::new(File::open(&path).map_err(|e| io_error(&path, e))?))
    }

    fn staging(&self) -> &Path {
        &self.dir
    }

    /// A rename within the directory, then the directory synced.
    fn place(&self, tmp: &Path, name: &str) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        std::fs::rename(tmp, &path).map_err(|e| io_error(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&self.dir, e))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("audit archive {}: {e}", path.display()))
}

/// One line of a segment.
// One line lives at a time while a segment is read or written: boxing the event would cost an
// allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header {
        format: String,
        first: u64,
        last: u64,
        prev_hash: String,
    },
    Event {
        seq: u64,
        id: String,
        time: i64,
        action: String,
        outcome: String,
        reason_code: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        initiator: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_state: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_version: Option<String>,
        request_id: String,
        /// An aggregated event's count (absent for an event of one request).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        prev_hash: String,
        hash: String,
    },
    Checkpoint {
        seq: u64,
        hash: String,
        time: i64,
        signature: String,
    },
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err("bad hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| "bad hex".to_owned())
        })
        .collect()
}

fn unhex32(s: &str) -> Result<[u8; 32], String> {
    <[u8; 32]>::try_from(unhex(s)?.as_slice()).map_err(|_| "a hash is not 32 bytes".to_owned())
}

fn event_line(e: &ChainedEvent) -> Line {
    let ev = &e.event;
    Line::Event {
        seq: e.seq,
        id: ev.id.to_string(),
        time: nanos(ev.time),
        action: ev.action.clone(),
        outcome: ev.outcome.as_str().to_owned(),
        reason_code: ev.reason_code,
        reason: ev.reason.clone(),
        initiator: ev.initiator.id.clone(),
        address: ev.initiator.address.clone(),
        instance: ev.instance.clone(),
        target: ev.target.clone(),
        key_state: ev.key_state,
        key_version: ev.key_version.clone(),
        request_id: ev.request_id.clone(),
        count: ev.count,
        prev_hash: hex(&e.prev_hash),
        hash: hex(&e.hash),
    }
}

/// A line back into an event; `Err` names what does not decode.
fn event_of(line: Line) -> Result<ChainedEvent, String> {
    let Line::Event {
        seq,
        id,
        time,
        action,
        outcome,
        reason_code,
        reason,
        initiator,
        address,
        instance,
        target,
        key_state,
        key_version,
        request_id,
        count,
        prev_hash,
        hash,
    } = line
    else {
        return Err("expected an event".into());
    };
    Ok(ChainedEvent {
        seq,
        prev_hash: unhex32(&prev_hash)?,
        hash: unhex32(&hash)?,
        event: AuditEvent {
            id: id.parse().map_err(|_| "bad event id".to_owned())?,
            time: time_of(time).map_err(|e| e.0)?,
            action,
            outcome: Outcome::parse(&outcome).ok_or_else(|| "bad outcome".to_owned())?,
            reason_code,
            reason,
            initiator: Initiator {
                id: initiator,
                address,
            },
            instance,
            target,
            key_state,
            key_version,
            request_id,
            count,
        },
    })
}

fn checkpoint_of(line: Line) -> Result<AuditCheckpoint, String> {
    let Line::Checkpoint {
        seq,
        hash,
        time,
        signature,
    } = line
    else {
        return Err("expected the closing checkpoint".into());
    };
    Ok(AuditCheckpoint {
        seq,
        hash: unhex32(&hash)?,
        time: time_of(time).map_err(|e| e.0)?,
        signature: unhex(&signature)?,
    })
}

/// Writes one segment: [`create`](SegmentWriter::create), [`push`](SegmentWriter::push) each
/// event of the range in order, then [`finish`](SegmentWriter::finish) with the checkpoint of
/// the last. Each event is checked as it is written (its position, its link to the one before
/// and its own hash): a segment never archives a broken chain. Dropped before `finish` (an
/// error, a lost lease), it removes its temporary file.
pub struct SegmentWriter {
    store: Arc<dyn SegmentStore>,
    tmp: PathBuf,
    /// `None` once `finish` took it.
    out: Option<GzEncoder<BufWriter<File>>>,
    /// Whether the segment was moved into place (then there is no temporary file to remove).
    placed: bool,
    first: u64,
    last: u64,
    next: u64,
    head: [u8; 32],
}

impl SegmentWriter {
    /// Starts the segment of `first..=last` in `store` (its staging directory is created 0700
    /// if missing), after the event whose hash is `prev_hash`.
    pub fn create(
        store: Arc<dyn SegmentStore>,
        first: u64,
        last: u64,
        prev_hash: [u8; 32],
    ) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if first == 0 || last < first {
            return Err(StoreError::Unavailable(format!(
                "audit archive: empty range {first}..={last}"
            )));
        }
        let dir = store.staging();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error(dir, e))?;
        let tmp = dir.join(format!(".{}.tmp", segment_name(first, last)));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, e))?;
        let mut w = SegmentWriter {
            store,
            tmp,
            out: Some(GzEncoder::new(BufWriter::new(file), Compression::fast())),
            placed: false,
            first,
            last,
            next: first,
            head: prev_hash,
        };
        w.line(&Line::Header {
            format: FORMAT.into(),
            first,
            last,
            prev_hash: hex(&prev_hash),
        })?;
        Ok(w)
    }

    fn line(&mut self, l: &Line) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec(l)
            .map_err(|e| StoreError::Unavailable(format!("audit archive: {e}")))?;
        bytes.push(b'\n');
        match self.out.as_mut() {
            Some(out) => out.write_all(&bytes).map_err(|e| io_error(&self.tmp, e)),
            None => Err(StoreError::Unavailable(
                "audit archive: the segment is already finished".into(),
            )),
        }
    }

    /// Appends the next event of the range.
    pub fn push(&mut self, e: &ChainedEvent) -> Result<(), StoreError> {
        if e.seq != self.next || e.seq > self.last {
            return Err(StoreError::Corrupt(format!(
                "audit archive: expected seq {}, read {}",
                self.next, e.seq
            )));
        }
        if e.prev_hash != self.head || chain_hash(e.seq, &e.prev_hash, &e.event) != e.hash {
            return Err(StoreError::Corrupt(format!(
                "the audit chain is broken at seq {} (run `keyward audit verify`); it is not archived",
                e.seq
            )));
        }
        self.line(&event_line(e))?;
        self.next += 1;
        self.head = e.hash;
        Ok(())
    }

    /// The hash of the last event pushed (the one before `first` if none was).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Closes the segment with `checkpoint` (of its last event), syncs it and places it in the
    /// store ([`SegmentStore::place`]: in a directory, renamed into place and the directory
    /// synced). Returns where it is, in words.
    pub fn finish(mut self, checkpoint: &AuditCheckpoint) -> Result<String, StoreError> {
        if self.next != self.last + 1 || checkpoint.seq != self.last || checkpoint.hash != self.head
        {
            return Err(StoreError::Corrupt(format!(
                "audit archive: segment {}..={} is incomplete or its checkpoint does not match",
                self.first, self.last
            )));
        }
        self.line(&Line::Checkpoint {
            seq: checkpoint.seq,
            hash: hex(&checkpoint.hash),
            time: nanos(checkpoint.time),
            signature: hex(&checkpoint.signature),
        })?;
        let tmp = self.tmp.clone();
        let file = self
            .out
            .take()
            .ok_or_else(|| io_error(&tmp, std::io::ErrorKind::Other.into()))?
            .finish()
            .and_then(|b| b.into_inner().map_err(|e| e.into_error()))
            .map_err(|e| io_error(&tmp, e))?;
        file.sync_all().map_err(|e| io_error(&tmp, e))?;
        drop(file);
        let name = segment_name(self.first, self.last);
        self.store.place(&tmp, &name)?;
        self.placed = true;
        Ok(format!("{} in {}", name, self.store.location()))
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads a segment line by line.
struct SegmentReader {
    lines: std::io::Lines<Gunzipped>,
}

/// A segment's bytes, decompressed and buffered.
type Gunzipped = BufReader<GzDecoder<BufReader<Box<dyn Read + Send>>>>;

impl SegmentReader {
    fn open(store: &dyn SegmentStore, seg: &SegmentFile) -> Result<Self, String> {
        let f = store.open(seg).map_err(|e| e.to_string())?;
        Ok(SegmentReader {
            lines: BufReader::new(GzDecoder::new(BufReader::new(f))).lines(),
        })
    }

    /// The next line, `Ok(None)` at the end.
    fn next(&mut self) -> Result<Option<Line>, String> {
        match self.lines.next() {
            None => Ok(None),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(l)) => serde_json::from_str(&l)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The last position and hash a segment's closing checkpoint names (the archiver's resume
/// point: the next segment links to it). Reads the whole file.
pub fn segment_head(
    store: &dyn SegmentStore,
    seg: &SegmentFile,
) -> Result<(u64, [u8; 32]), StoreError> {
    let bad = |why: String| {
        StoreError::Corrupt(format!(
            "audit archive segment {} in {}: {why}",
            seg.name,
            store.location()
        ))
    };
    let mut r = SegmentReader::open(store, seg).map_err(bad)?;
    let mut last = None;
    while let Some(l) = r.next().map_err(bad)? {
        last = Some(l);
    }
    match last {
        Some(l @ Line::Checkpoint { .. }) => checkpoint_of(l).map(|c| (c.seq, c.hash)).map_err(bad),
        _ => Err(bad("it does not end with its checkpoint".into())),
    }
}

/// What the walk of an archive found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Segment files walked.
    pub segments: u64,
    /// Events read.
    pub events: u64,
    /// The last archived position and its hash.
    pub head: Option<(u64, [u8; 32])>,
    /// The first break in the archive.
    pub first_break: Option<ChainBreak>,
    /// The stored hash at the position asked for, if the archive holds it.
    pub probe: Option<[u8; 32]>,
    /// With [`ArchiveStart::OldestSegment`], the seq the walk started at when the segments
    /// before it were gone (aged out): the events before it were not verified.
    pub aged_out_before: Option<u64>,
}

/// Keeps the lower of two breaks.
fn earlier(a: Option<ChainBreak>, b: Option<ChainBreak>) -> Option<ChainBreak> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn broken(kind: BreakKind, seq: u64, detail: String) -> Option<ChainBreak> {
    Some(ChainBreak {
        kind,
        seq,
        id: None,
        detail,
    })
}

/// Where a walk of the archive starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveStart {
    /// At seq 1: a missing first segment is a break.
    #[default]
    Genesis,
    /// At the oldest segment present, for an archive whose old segments are deleted on purpose
    /// (aged out by a retention rule on the directory or the bucket). That segment's link to the
    /// ones before it is taken as given; its events are still proven by the signed checkpoint
    /// that closes it, and everything after it is checked as usual. What this cannot see is a
    /// deletion of the oldest segments that was not meant: the report names where the walk
    /// started ([`ArchiveReport::aged_out_before`]).
    OldestSegment,
}

/// Walks every segment in `dir` as one chain from seq 1 (or, with [`ArchiveStart::OldestSegment`],
/// from the oldest segment present), in constant memory (one event and one
/// line at a time), checking each closing checkpoint with `custody`; names the first break: a
/// missing segment (a gap between names), a renamed, swapped or reordered one (its header does
/// not hold the range its name says, or its range is out of order), an altered one (an event
/// that does not match its hash or link, a checkpoint that does not match or verify, bytes that
/// do not decompress). `probe` asks for the stored hash at one position (where the database's
/// rows resume).
pub fn verify_archive(
    store: &dyn SegmentStore,
    custody: &dyn Custody,
    probe: Option<u64>,
    start: ArchiveStart,
) -> Result<ArchiveReport, StoreError> {
    let segments = store.list()?;
    let aged_out = match (start, segments.first()) {
        (ArchiveStart::OldestSegment, Some(first)) if first.first > 1 => Some(first.first),
        _ => None,
    };
    let mut walk = if aged_out.is_some() {
        ChainWalk::resuming()
    } else {
        ChainWalk::default()
    };
    let mut report = ArchiveReport {
        segments: 0,
        events: 0,
        head: None,
        first_break: None,
        probe: None,
        aged_out_before: aged_out,
    };
    // The last event's stored position and hash (checked by the walk one row later).
    let mut last_read: Option<(u64, [u8; 32])> = None;
    for seg in &segments {
        report.segments += 1;
        let name = seg.name.clone();
        let expected = last_read.map_or(aged_out.unwrap_or(1), |l| l.0 + 1);
        if seg.first > expected {
            report.first_break = broken(
                BreakKind::Removed,
                expected,
                format!(
                    "archive segments for seq {expected}..={} are missing from {} (the next is {name})",
                    seg.first - 1,
                    store.location()
                ),
            );
            break;
        }
        if seg.first < expected {
            report.first_break = broken(
                BreakKind::Reordered,
                seg.first,
                format!(
                    "archive segment {name} starts at seq {}, inside a range already walked (up to seq {})",
                    seg.first,
                    expected - 1
                ),
            );
            break;
        }
        let problem = walk_segment(
            store,
            seg,
            custody,
            &mut walk,
            &mut last_read,
            probe,
            &mut report,
        );
        if let Some(b) = problem {
            report.first_break = Some(b);
            break;
        }
        if walk.first_break().is_some() {
            break;
        }
    }
    let chain = walk.end(|_| None).finish(&[], |_| None, custody);
    report.head = chain.head;
    report.first_break = earlier(report.first_break.take(), chain.first_break);
    Ok(report)
}

/// One segment of [`verify_archive`]: a structural problem is returned; chain breaks are the
/// walk's.
fn walk_segment(
    store: &dyn SegmentStore,
    seg: &SegmentFile,
    custody: &dyn Custody,
    walk: &mut ChainWalk,
    last_read: &mut Option<(u64, [u8; 32])>,
    probe: Option<u64>,
    report: &mut ArchiveReport,
) -> Option<ChainBreak> {
    let name = &seg.name;
    let unreadable = |why: String| {
        broken(
            BreakKind::Altered,
            seg.first,
            format!("archive segment {name} cannot be read ({why}): it was altered"),
        )
    };
    let mut r = match SegmentReader::open(store, seg) {
        Ok(r) => r,
        Err(e) => return unreadable(e),
    };
    match r.next() {
        Ok(Some(Line::Header {
            format,
            first,
            last,
            prev_hash,
        })) => {
            if format != FORMAT {
                return unreadable(format!("unknown format {format:?}"));
            }
            if (first, last) != (seg.first, seg.last) {
                return broken(
                    BreakKind::Reordered,
                    seg.first,
                    format!(
                        "archive segment {name} holds seq {first}..={last}, not the range its name says: segment files were renamed, swapped or reordered"
                    ),
                );
            }
            let Ok(prev) = unhex32(&prev_hash) else {
                return unreadable("its previous hash is not hex".into());
            };
            let expected = match *last_read {
                Some(l) => l.1,
                // The oldest segment left of an aged-out archive: its link is taken as given.
                None if report.aged_out_before == Some(first) => prev,
                None => GENESIS_HASH,
            };
            if prev != expected {
                return broken(
                    BreakKind::Altered,
                    seg.first,
                    format!(
                        "archive segment {name} does not link to the segment before it (its previous hash differs)"
                    ),
                );
            }
        }
        Ok(_) => return unreadable("no header".into()),
        Err(e) => return unreadable(e),
    }
    loop {
        let line = match r.next() {
            Ok(Some(l)) => l,
            Ok(None) => return unreadable("it ends before its checkpoint".into()),
            Err(e) => return unreadable(e),
        };
        if let Line::Checkpoint { .. } = line {
            let cp = match checkpoint_of(line) {
                Ok(c) => c,
                Err(e) => return unreadable(e),
            };
            let bad_sig = custody
                .verify_record(&checkpoint_bytes(cp.seq, &cp.hash, cp.time), &cp.signature)
                .is_err();
            if bad_sig {
                return broken(
                    BreakKind::BadCheckpoint,
                    cp.seq,
                    format!(
                        "the checkpoint closing archive segment {name} is not signed by this custody backend's key"
                    ),
                );
            }
            if cp.seq != seg.last || *last_read != Some((cp.seq, cp.hash)) {
                return broken(
                    BreakKind::Altered,
                    seg.first,
                    format!(
                        "archive segment {name} does not match the signed checkpoint that closes it: its events were removed or rewritten"
                    ),
                );
            }
            if !matches!(r.next(), Ok(None)) {
                return unreadable("data after its checkpoint".into());
            }
            return None;
        }
        let e = match event_of(line) {
            Ok(e) => e,
            Err(why) => return unreadable(format!("an event does not decode: {why}")),
        };
        if e.seq < seg.first || e.seq > seg.last {
            return broken(
                BreakKind::Inserted,
                e.seq,
                format!(
                    "archive segment {name} holds seq {}, outside its range",
                    e.seq
                ),
            );
        }
        report.events += 1;
        if probe == Some(e.seq) {
            report.probe = Some(e.hash);
        }
        *last_read = Some((e.seq, e.hash));
        walk.row(Ok(e), |_| None);
        if walk.first_break().is_some() {
            return None;
        }
    }
}

/// What `keyward audit verify` found over the archive and the database together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailReport {
    /// The database's walk, with `first_break` the first break across both.
    pub chain: ChainReport,
    /// The archive's walk, when an archive was given.
    pub archive: Option<ArchiveReport>,
}

/// Joins the database's walk (made with `ChainVerifier::resuming`) to the archive: the rows in
/// the database must resume where the archive holds their predecessor (or start at seq 1), the
/// archive must reach the position the database records as archived (`archived`), and where
/// both hold the archive's last event, they must hold the same one (`db_hash_at`).
pub(crate) fn join(
    mut chain: ChainReport,
    archive: Option<(String, ArchiveReport)>,
    archived: u64,
    db_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> TrailReport {
    let mut problem = None;
    let archive_head = archive.as_ref().and_then(|a| a.1.head);
    match (chain.first, &archive) {
        (Some((1, prev)), _) if prev != GENESIS_HASH => {
            problem = broken(
                BreakKind::Altered,
                1,
                "the first event does not link to the chain's start".into(),
            );
        }
        (Some((1, _)), _) => {}
        (Some((f, _)), None) => {
            let detail = if archived == 0 {
                format!(
                    "events 1..={} are missing from the database (and nothing was ever archived)",
                    f - 1
                )
            } else {
                format!(
                    "events 1..={} are not in the database (pruned after archiving through seq {archived}?): verify with the archive directory (--archive-dir)",
                    f - 1
                )
            };
            problem = broken(BreakKind::Removed, 1, detail);
        }
        (Some((f, prev)), Some((dir, a))) => match a.head {
            Some((h, _)) if h + 1 >= f => {
                if a.probe != Some(prev) {
                    problem = broken(
                        BreakKind::Altered,
                        f,
                        format!(
                            "the database's first event (seq {f}) does not link to seq {} in the archive",
                            f - 1
                        ),
                    );
                }
            }
            _ => {
                let from = a.head.map_or(a.aged_out_before.unwrap_or(1), |h| h.0 + 1);
                problem = broken(
                    BreakKind::Removed,
                    from,
                    format!(
                        "events {from}..={} are neither in the archive ({}) nor in the database",
                        f - 1,
                        dir
                    ),
                );
            }
        },
        (None, _) => {}
    }
    if let Some((dir, walked)) = &archive {
        // Where the archive's walk started: seq 1, or its oldest segment left when aged out.
        let start = walked.aged_out_before.unwrap_or(1);
        let held = archive_head.map_or(start - 1, |h| h.0);
        if held < archived {
            problem = earlier(
                problem,
                broken(
                    BreakKind::Removed,
                    held + 1,
                    format!(
                        "archive segments after seq {held} are missing from {}: the database records seq {archived} archived",
                        dir
                    ),
                ),
            );
        }
        if let Some((h, hash)) = archive_head
            && chain.first.is_some_and(|f| f.0 <= h)
            && db_hash_at(h).is_some_and(|d| d != hash)
        {
            problem = earlier(
                problem,
                broken(
                    BreakKind::Altered,
                    h,
                    format!(
                        "the database's events up to seq {h} differ from the archive's: one of them was rewritten"
                    ),
                ),
            );
        }
    }
    let archive = archive.map(|(_, a)| a);
    if let Some(a) = &archive {
        // The archive's own break first: where its walk stopped, the joins above see a shorter
        // archive and would name the same place less precisely.
        problem = earlier(a.first_break.clone(), problem);
        if chain.head.is_none() {
            chain.head = a.head;
        }
    }
    chain.first_break = earlier(chain.first_break.take(), problem);
    TrailReport { chain, archive }
}
