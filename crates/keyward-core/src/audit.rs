//! Audit events: one per API action, success or failure, shaped after CADF. They never hold key
//! material, tokens or API keys: only ids, names, states and outcomes.

use keyward_crypto::{Canonical, Framing};
use time::OffsetDateTime;
use uuid::Uuid;

/// Whether the action happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action completed.
    Success,
    /// The action was refused or failed.
    Failure,
}

impl Outcome {
    /// CADF's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Initiator {
    /// Subject id (IAM id of the user or service).
    pub id: String,
    /// Client address, when known.
    pub address: Option<String>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditEvent {
    /// Unique id.
    pub id: Uuid,
    /// When it happened.
    pub time: OffsetDateTime,
    /// Key Protect's action name, e.g. `kms.secrets.wrap`.
    pub action: String,
    /// Success or failure.
    pub outcome: Outcome,
    /// HTTP status given to the caller.
    pub reason_code: u16,
    /// Short reason for a failure (never secret).
    pub reason: Option<String>,
    /// Who.
    pub initiator: Initiator,
    /// The instance acted on.
    pub instance: Option<String>,
    /// The key acted on, if any.
    pub target: Option<String>,
    /// The key's state after the action, if a key was involved.
    pub key_state: Option<u8>,
    /// The key version involved (wrap, unwrap, rotate).
    pub key_version: Option<String>,
    /// The request id, to join with logs.
    pub request_id: String,
    /// `Some(n)`: an aggregated event (`[audit] aggregate_crypto`), standing for `n` successful
    /// requests that were alike in every field but their id, time and request id, made in the
    /// second that starts at `time`; its `request_id` is the aggregate's own. `None`: one
    /// request.
    pub count: Option<u64>,
}

impl AuditEvent {
    /// An event of `action` by `initiator` at `time`, with a fresh id; the optional fields
    /// (reason, instance, target, key state and version) start empty.
    pub fn new(
        action: &str,
        outcome: Outcome,
        reason_code: u16,
        initiator: Initiator,
        request_id: String,
        time: OffsetDateTime,
    ) -> Self {
        AuditEvent {
            id: Uuid::new_v4(),
            time,
            action: action.to_owned(),
            outcome,
            reason_code,
            reason: None,
            initiator,
            instance: None,
            target: None,
            key_state: None,
            key_version: None,
            request_id,
            count: None,
        }
    }
}

/// The `prev_hash` of the first event in the chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Domain separation for event hashes, so no other SHA-256 in Keyward can collide with one.
const EVENT_DOMAIN: &[u8] = b"keyward.audit.event.v1\0";
/// The domain of an aggregated event's hash, which also covers its count: no aggregate encodes
/// like a single event.
const AGGREGATE_DOMAIN: &[u8] = b"keyward.audit.aggregate.v1\0";
/// Domain separation for the bytes a checkpoint signature covers.
const CHECKPOINT_DOMAIN: &[u8] = b"keyward.audit.checkpoint.v1\0";

/// An event as stored: its place in the hash chain and the hash that links it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    /// Position in the chain, from 1, with no gaps.
    pub seq: u64,
    /// The hash of the event at `seq - 1` ([`GENESIS_HASH`] for the first).
    pub prev_hash: [u8; 32],
    /// [`chain_hash`] of this event.
    pub hash: [u8; 32],
    /// The event.
    pub event: AuditEvent,
}

/// A signed statement that the chain had `hash` at `seq` at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The chain head's position.
    pub seq: u64,
    /// The chain head's hash.
    pub hash: [u8; 32],
    /// When the checkpoint was taken.
    pub time: OffsetDateTime,
    /// The custody backend's record signature over [`checkpoint_bytes`].
    pub signature: Vec<u8>,
}

/// The event time as stored: Unix nanoseconds (saturating; far outside any real clock).
pub fn time_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// SHA-256 over a canonical encoding of `seq`, `prev_hash` and every field of `e`: fixed-width
/// integers and length-prefixed strings in a fixed order, so two different events never encode
/// alike. Changing any field, the position or the predecessor changes the hash. An aggregated
/// event is hashed under its own domain, with its count last; a single event's encoding is the
/// one the chain was first written with.
pub fn chain_hash(seq: u64, prev_hash: &[u8; 32], e: &AuditEvent) -> [u8; 32] {
    // The chain's framing (u64 lengths) is the one it was first written with: re-hashing would
    // break every checkpoint on disk.
    let mut c = Canonical::with_capacity(Framing::U64, 320);
    let domain = match e.count {
        None => EVENT_DOMAIN,
        Some(_) => AGGREGATE_DOMAIN,
    };
    c.fixed(domain)
        .u64(seq)
        .fixed(prev_hash)
        .fixed(e.id.as_bytes())
        .i64(time_nanos(e.time))
        .field(e.action.as_bytes())
        .field(e.outcome.as_str().as_bytes())
        .u16(e.reason_code)
        .opt(e.reason.as_deref().map(str::as_bytes))
        .field(e.initiator.id.as_bytes())
        .opt(e.initiator.address.as_deref().map(str::as_bytes))
        .opt(e.instance.as_deref().map(str::as_bytes))
        .opt(e.target.as_deref().map(str::as_bytes));
    match e.key_state {
        None => c.u8(0),
        Some(s) => c.u8(1).u8(s),
    };
    c.opt(e.key_version.as_deref().map(str::as_bytes))
        .field(e.request_id.as_bytes());
    if let Some(n) = e.count {
        c.u64(n);
    }
    keyward_crypto::sha256(&c.finish())
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_bytes(seq: u64, hash: &[u8; 32], time: OffsetDateTime) -> Vec<u8> {
    let mut c = Canonical::with_capacity(Framing::U64, CHECKPOINT_DOMAIN.len() + 48);
    c.fixed(CHECKPOINT_DOMAIN)
        .u64(seq)
        .fixed(hash)
        .i64(time_nanos(time));
    c.finish()
}

impl Outcome {
    /// Parses CADF's word.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// One batch of retention: which of the oldest events the store may delete. An event is deleted
/// only if its seq is at most `safe_through` (archived, and delivered by every export sink) and
/// it is outside the retention: its seq is at most `count_through` (beyond the newest
/// `retain_events`) or it is older than `older_than` (`retain_days`). Events go oldest first,
/// and the first one that must stay ends the batch, so the database keeps a suffix of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPrune {
    /// Highest seq that is archived and exported.
    pub safe_through: u64,
    /// Highest seq outside the newest `retain_events` (0: no count rule).
    pub count_through: u64,
    /// Events older than this are outside the retention (`None`: no age rule).
    pub older_than: Option<OffsetDateTime>,
    /// Most events deleted in this batch.
    pub batch: u32,
}

/// Which events a query returns; every filter set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events of this instance (always set for API callers).
    pub instance: Option<String>,
    /// Events at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Events before this time.
    pub to: Option<OffsetDateTime>,
    /// Exact action name.
    pub action: Option<String>,
    /// Exact target (key id).
    pub target: Option<String>,
    /// Exact initiator id.
    pub initiator: Option<String>,
    /// Success or failure.
    pub outcome: Option<Outcome>,
    /// Most events returned.
    pub limit: u32,
    /// Events skipped first (oldest first order).
    pub offset: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        let mut e = AuditEvent::new(
            crate::op::WRAP.action,
            Outcome::Success,
            200,
            Initiator {
                id: "IBMid-1".into(),
                address: Some("127.0.0.1".into()),
            },
            "req-1".into(),
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap(),
        );
        e.target = Some("k".into());
        e
    }

    #[test]
    fn chain_hash_covers_every_field_position_and_predecessor() {
        let e = event();
        let h = chain_hash(7, &GENESIS_HASH, &e);
        assert_eq!(h, chain_hash(7, &GENESIS_HASH, &e.clone()));
        assert_ne!(h, chain_hash(8, &GENESIS_HASH, &e));
        assert_ne!(h, chain_hash(7, &[1; 32], &e));
        let mut changes: Vec<AuditEvent> = Vec::new();
        let mut c = e.clone();
        c.outcome = Outcome::Failure;
        changes.push(c);
        let mut c = e.clone();
        c.reason_code = 201;
        changes.push(c);
        let mut c = e.clone();
        c.time += time::Duration::nanoseconds(1);
        changes.push(c);
        let mut c = e.clone();
        c.key_state = Some(1);
        changes.push(c);
        let mut c = e.clone();
        c.request_id = "req-2".into();
        changes.push(c);
        let mut c = e.clone();
        c.count = Some(1);
        changes.push(c);
        for c in changes {
            assert_ne!(h, chain_hash(7, &GENESIS_HASH, &c));
        }
    }

    /// A chain of `n` events from seq 1.
    fn chain(n: u64) -> Vec<ChainedEvent> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let e = event();
                let hash = chain_hash(seq, &prev, &e);
                let c = ChainedEvent {
                    seq,
                    prev_hash: prev,
                    hash,
                    event: e,
                };
                prev = hash;
                c
            })
            .collect()
    }

    fn walk(mut v: ChainVerifier, rows: &[ChainedEvent]) -> Option<ChainBreak> {
        for (i, r) in rows.iter().enumerate() {
            v.push(r, rows.get(i + 1).map(|n| &n.prev_hash), |_| None);
        }
        v.first_break().cloned()
    }

    /// See: issue 20. After pruning, the database's rows resume mid-chain: a resuming walk
    /// accepts their start and says where it is; every row after it is held to the chain.
    #[test]
    fn a_resuming_walk_starts_at_the_first_row_and_still_catches_what_follows() {
        let rows = chain(10);
        let tail = &rows[4..];
        let b = walk(ChainVerifier::new(), tail).unwrap();
        assert_eq!((b.kind, b.seq), (BreakKind::Removed, 1));
        assert_eq!(walk(ChainVerifier::resuming(), tail), None);
        let mut v = ChainVerifier::resuming();
        for r in tail {
            v.push(r, None, |_| None);
        }
        assert_eq!(v.head(), Some((10, rows[9].hash)));
        assert_eq!(v.first, Some((5, rows[3].hash)));
        let mut gap = tail.to_vec();
        gap.remove(2);
        let b = walk(ChainVerifier::resuming(), &gap).unwrap();
        assert_eq!((b.kind, b.seq), (BreakKind::Removed, 7));
    }

    #[test]
    fn chain_hash_is_unambiguous_across_field_boundaries() {
        // The same concatenated text split differently between two fields must differ.
        let mut a = event();
        a.target = Some("ab".into());
        a.key_version = Some("c".into());
        let mut b = event();
        b.target = Some("a".into());
        b.key_version = Some("bc".into());
        assert_ne!(
            chain_hash(1, &GENESIS_HASH, &a),
            chain_hash(1, &GENESIS_HASH, &b)
        );
        let mut none = event();
        none.reason = None;
        let mut empty = event();
        empty.reason = Some(String::new());
        assert_ne!(
            chain_hash(1, &GENESIS_HASH, &none),
            chain_hash(1, &GENESIS_HASH, &empty)
        );
    }
}

/// How the chain was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// An event's fields no longer match its hash (or a rewritten chain no longer matches a
    /// signed checkpoint).
    Altered,
    /// Events are missing (a gap, a lost predecessor, or a tail cut short of a checkpoint).
    Removed,
    /// An event that was not in the chain was put into it.
    Inserted,
    /// Events are stored out of their chain order.
    Reordered,
    /// A checkpoint's signature does not verify with the custody signing key.
    BadCheckpoint,
}

impl BreakKind {
    /// A word for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Altered => "altered",
            BreakKind::Removed => "removed",
            BreakKind::Inserted => "inserted",
            BreakKind::Reordered => "reordered",
            BreakKind::BadCheckpoint => "bad_checkpoint",
        }
    }
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// What happened.
    pub kind: BreakKind,
    /// The position of the event named.
    pub seq: u64,
    /// Its id, when it is still in the store.
    pub id: Option<Uuid>,
    /// One sentence for the operator.
    pub detail: String,
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events read.
    pub events: u64,
    /// The last event's position and hash.
    pub head: Option<(u64, [u8; 32])>,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The newest checkpoint whose signature and hash matched, if any.
    pub last_good_checkpoint: Option<u64>,
    /// The first break, if the chain is not intact.
    pub first_break: Option<ChainBreak>,
    /// The first row walked and the `prev_hash` it links to: what a walk that resumes after
    /// an archived, pruned range must check against the archive ([`ChainVerifier::resuming`]).
    pub first: Option<(u64, [u8; 32])>,
}

/// Walks stored events in `seq` order and names the first break. Feed every row to [`push`]
/// with the `prev_hash` of the row after it, then call [`finish`] with the checkpoints.
///
/// Memory is constant: the walk keeps only the last row it accepted. Where a broken row's
/// predecessor really is (to tell a reordered event from an inserted one) is asked of the
/// caller's lookup, once, at the first break.
///
/// [`push`]: ChainVerifier::push
/// [`finish`]: ChainVerifier::finish
#[derive(Default)]
pub struct ChainVerifier {
    /// The last row accepted: seq, hash, id.
    prev: Option<(u64, [u8; 32], Uuid)>,
    events: u64,
    first_break: Option<ChainBreak>,
    /// Whether the first row may start anywhere (the rows before it were pruned).
    resume: bool,
    /// The first row pushed: its seq and `prev_hash`.
    first: Option<(u64, [u8; 32])>,
}

impl ChainVerifier {
    /// A verifier that has seen nothing yet; the first row must be seq 1 after the genesis hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier that continues after an event already known good (the one a verified
    /// checkpoint signs): the next row must be `seq + 1` and link to `hash`.
    pub fn resuming_after(seq: u64, hash: [u8; 32], id: Uuid) -> Self {
        Self {
            prev: Some((seq, hash, id)),
            ..Self::default()
        }
    }

    /// A verifier for a trail whose oldest rows may have been pruned (after archiving): the
    /// first row pushed may sit at any position and link to any hash, and the report's
    /// [`ChainReport::first`] says which, for the caller to check against the archive. Every
    /// row after it is held to the chain as with [`ChainVerifier::new`].
    pub fn resuming() -> Self {
        ChainVerifier {
            resume: true,
            ..Self::default()
        }
    }

    /// The first break found so far.
    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.first_break.as_ref()
    }

    /// The last row accepted: its seq and hash.
    pub fn head(&self) -> Option<(u64, [u8; 32])> {
        self.prev.map(|p| (p.0, p.1))
    }

    /// Records a row that could not even be decoded.
    pub fn push_unreadable(&mut self, seq: u64, why: &str) {
        self.events += 1;
        if self.first_break.is_none() {
            self.first_break = Some(ChainBreak {
                kind: BreakKind::Altered,
                seq,
                id: None,
                detail: format!("event seq {seq} cannot be decoded ({why})"),
            });
        }
    }

    /// Checks one row against the row before it; `next_prev_hash` is the `prev_hash` of the row
    /// after it, if any. `seq_of` finds the stored seq of the row with a given hash; it is called
    /// at most once, when this row is the first break.
    pub fn push(
        &mut self,
        r: &ChainedEvent,
        next_prev_hash: Option<&[u8; 32]>,
        seq_of: impl FnOnce(&[u8; 32]) -> Option<u64>,
    ) {
        self.events += 1;
        if self.first.is_none() {
            self.first = Some((r.seq, r.prev_hash));
        }
        if self.first_break.is_some() {
            return;
        }
        let (expected_seq, expected_prev) = match self.prev {
            Some(p) => (p.0 + 1, p.1),
            None if self.resume && r.seq > 0 => (r.seq, r.prev_hash),
            None => (1, GENESIS_HASH),
        };
        let self_ok = chain_hash(r.seq, &r.prev_hash, &r.event) == r.hash;
        let link_ok = r.prev_hash == expected_prev;
        let seq_ok = r.seq == expected_seq;
        if self_ok && link_ok && seq_ok {
            self.prev = Some((r.seq, r.hash, r.event.id));
            return;
        }
        let id = r.event.id;
        let seq = r.seq;
        let found_prev = seq_of(&r.prev_hash);
        let (kind, at, at_id, detail) = if !link_ok && found_prev.is_some_and(|s| s > seq) {
            (
                BreakKind::Reordered,
                seq,
                Some(id),
                format!(
                    "event seq {seq} (id {id}) is stored before its predecessor, stored at seq {}",
                    found_prev.unwrap_or_default()
                ),
            )
        } else if next_prev_hash == Some(&expected_prev) {
            (
                BreakKind::Inserted,
                seq,
                Some(id),
                format!(
                    "event seq {seq} (id {id}) was inserted: the event after it links to the one before it"
                ),
            )
        } else if seq > expected_seq {
            (
                BreakKind::Removed,
                expected_seq,
                None,
                format!(
                    "events seq {expected_seq}..={} are missing (the next present is seq {seq}, id {id})",
                    seq - 1
                ),
            )
        } else if !link_ok && found_prev.is_some_and(|s| s + 1 < expected_seq) {
            // This row links to an earlier one: what sits between them was inserted.
            let first = found_prev.unwrap_or_default() + 1;
            let first_id = self.prev.filter(|p| p.0 == first).map(|p| p.2);
            (
                BreakKind::Inserted,
                first,
                first_id,
                format!(
                    "event seq {first} was inserted: event seq {seq} (id {id}) links to seq {}",
                    first - 1
                ),
            )
        } else if !link_ok && found_prev.is_none() && self_ok {
            (
                BreakKind::Removed,
                expected_seq,
                None,
                format!(
                    "the event before seq {seq} (id {id}) is missing: its predecessor's hash is nowhere in the store"
                ),
            )
        } else if !self_ok {
            (
                BreakKind::Altered,
                seq,
                Some(id),
                format!("event seq {seq} (id {id}) does not match its hash: it was altered"),
            )
        } else {
            (
                BreakKind::Altered,
                seq,
                Some(id),
                format!("event seq {seq} (id {id}) does not link to the event before it"),
            )
        };
        self.first_break = Some(ChainBreak {
            kind,
            seq: at,
            id: at_id,
            detail,
        });
    }

    /// Checks every checkpoint's signature with `custody` and that the chain passes through its
    /// hash; `hash_at` gives the stored hash at a position. Returns the report.
    pub fn finish(
        self,
        checkpoints: &[AuditCheckpoint],
        mut hash_at: impl FnMut(u64) -> Option<[u8; 32]>,
        custody: &dyn crate::Custody,
    ) -> ChainReport {
        let head = self.prev.map(|p| (p.0, p.1));
        let mut first_break = self.first_break;
        let mut last_good = None;
        let mut checkpoint_break: Option<ChainBreak> = None;
        for cp in checkpoints {
            let signed = checkpoint_bytes(cp.seq, &cp.hash, cp.time);
            let problem = if custody.verify_record(&signed, &cp.signature).is_err() {
                Some(ChainBreak {
                    kind: BreakKind::BadCheckpoint,
                    seq: cp.seq,
                    id: None,
                    detail: format!(
                        "the checkpoint at seq {} is not signed by this custody backend's key",
                        cp.seq
                    ),
                })
            } else {
                match hash_at(cp.seq) {
                    None => Some(ChainBreak {
                        kind: BreakKind::Removed,
                        seq: head.map_or(1, |h| h.0 + 1),
                        id: None,
                        detail: format!(
                            "events after seq {} are missing: a signed checkpoint covers seq {}",
                            head.map_or(0, |h| h.0),
                            cp.seq
                        ),
                    }),
                    Some(h) if h != cp.hash => Some(ChainBreak {
                        kind: BreakKind::Altered,
                        seq: cp.seq,
                        id: None,
                        detail: format!(
                            "the chain up to seq {} differs from the signed checkpoint there: events after seq {} were rewritten",
                            cp.seq,
                            last_good.unwrap_or(0)
                        ),
                    }),
                    Some(_) => None,
                }
            };
            match problem {
                None => last_good = Some(cp.seq),
                Some(b) => {
                    if checkpoint_break.as_ref().is_none_or(|c| b.seq < c.seq) {
                        checkpoint_break = Some(b);
                    }
                }
            }
        }
        if let Some(cb) = checkpoint_break
            && first_break.as_ref().is_none_or(|fb| cb.seq < fb.seq)
        {
            first_break = Some(cb);
        }
        ChainReport {
            events: self.events,
            head,
            checkpoints: checkpoints.len() as u64,
            last_good_checkpoint: last_good,
            first_break,
            first: self.first,
        }
    }
}
