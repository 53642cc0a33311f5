//! Aggregation of successful wrap, unwrap and rewrap events (`[audit] aggregate_crypto`, off by
//! default): instead of one durable audit row per request, the pipeline counts requests that are
//! alike in every field but their id, time and request id (caller, address, instance, key, key
//! state and version, action), per second, and a flush records one chained event per count
//! ([`AuditEvent::count`]). Refusals, failures and every other action are recorded one by one as
//! always.
//!
//! The trade-off: a request answered 2xx before the next flush (at most about a second) has no
//! durable audit record yet; a crash before it loses that second's counts. So it is off by
//! default, for operators who choose fewer bytes written over a record per request.
//!
//! Fail closed: a flush that cannot write keeps its events for the next one and turns folding
//! off until a flush succeeds, so while the audit trail cannot be written, requests are recorded
//! (and fail) one by one as without aggregation. Memory is bounded: past [`MAX_BUCKETS`] distinct
//! counts in one flush interval, further requests are recorded one by one.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{AuditEvent, Outcome, op};

/// Most counts held between two flushes; beyond it, requests are recorded one by one.
pub const MAX_BUCKETS: usize = 100_000;

/// The actions whose successes may be aggregated: envelope encryption, which changes nothing.
const AGGREGATED: [&str; 3] = [op::WRAP.action, op::UNWRAP.action, op::REWRAP.action];

/// The counts of one process (one per key service).
#[derive(Debug)]
pub struct CryptoAggregation {
    /// Only these instances (`None`: every instance).
    instances: Option<HashSet<String>>,
    /// Counts by the event they stand for: id nil, empty request id, time at its second.
    buckets: Mutex<HashMap<AuditEvent, u64>>,
    /// Aggregated events a failed flush could not write, for the next flush (oldest first).
    unwritten: Mutex<Vec<AuditEvent>>,
    /// False after a failed flush, until one succeeds: nothing is folded meanwhile.
    healthy: AtomicBool,
}

impl CryptoAggregation {
    /// Aggregation for the instances named in `instances`, or every instance when it is empty.
    pub fn new(instances: impl IntoIterator<Item = String>) -> Self {
        let instances: HashSet<String> = instances.into_iter().collect();
        CryptoAggregation {
            instances: (!instances.is_empty()).then_some(instances),
            buckets: Mutex::new(HashMap::new()),
            unwritten: Mutex::new(Vec::new()),
            healthy: AtomicBool::new(true),
        }
    }

    /// Counts `e` when it is a success of an aggregated action in an aggregated instance; true
    /// when it was counted (the caller then records nothing now), false when it must be recorded
    /// one by one.
    pub fn fold(&self, e: &AuditEvent) -> bool {
        if e.outcome != Outcome::Success
            || e.count.is_some()
            || !AGGREGATED.contains(&e.action.as_str())
            || !self.healthy.load(Ordering::Relaxed)
        {
            return false;
        }
        match (&self.instances, &e.instance) {
            (None, _) => {}
            (Some(only), Some(i)) if only.contains(i) => {}
            (Some(_), _) => return false,
        }
        let Ok(second) = OffsetDateTime::from_unix_timestamp(e.time.unix_timestamp()) else {
            return false;
        };
        let bucket = AuditEvent {
            id: Uuid::nil(),
            time: second,
            request_id: String::new(),
            ..e.clone()
        };
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        let full = buckets.len() >= MAX_BUCKETS;
        match buckets.get_mut(&bucket) {
            Some(n) => *n += 1,
            None if full => return false,
            None => {
                buckets.insert(bucket, 1);
            }
        }
        true
    }

    /// Everything to record now, oldest first: the events a failed flush left, then one event
    /// per count (fresh id and request id, time at the start of its second) of the seconds
    /// before `until` (every second when `None`: at shutdown). The caller records them and
    /// reports with [`CryptoAggregation::written`] or [`CryptoAggregation::unwritten`].
    pub fn take(&self, until: Option<OffsetDateTime>) -> Vec<AuditEvent> {
        let mut out = match self.unwritten.lock() {
            Ok(mut u) => std::mem::take(&mut *u),
            Err(_) => Vec::new(),
        };
        let mut counted: Vec<(AuditEvent, u64)> = match self.buckets.lock() {
            Ok(mut b) => match until {
                None => b.drain().collect(),
                Some(until) => b.extract_if(|bucket, _| bucket.time < until).collect(),
            },
            Err(_) => Vec::new(),
        };
        // In time order, so the chain holds a flush's seconds in order (same second: any order).
        counted.sort_by_key(|(bucket, _)| bucket.time);
        out.extend(counted.into_iter().map(|(bucket, n)| {
            let id = Uuid::new_v4();
            AuditEvent {
                id,
                request_id: id.to_string(),
                count: Some(n),
                ..bucket
            }
        }));
        out
    }

    /// The events [`take`](Self::take) gave are recorded: folding goes on (again).
    pub fn written(&self) {
        self.healthy.store(true, Ordering::Relaxed);
    }

    /// The events [`take`](Self::take) gave could not be recorded: they are kept for the next
    /// flush, and requests are recorded one by one until a flush succeeds.
    pub fn unwritten(&self, events: Vec<AuditEvent>) {
        self.healthy.store(false, Ordering::Relaxed);
        if let Ok(mut u) = self.unwritten.lock() {
            let newer = std::mem::replace(&mut *u, events);
            u.extend(newer);
        }
    }

    /// Requests counted and not yet handed to a flush.
    pub fn pending(&self) -> u64 {
        self.buckets
            .lock()
            .map(|b| b.values().sum())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Initiator;

    fn event(action: &str, outcome: Outcome, caller: &str, nanos: i64) -> AuditEvent {
        let mut e = AuditEvent::new(
            action,
            outcome,
            200,
            Initiator {
                id: caller.into(),
                address: Some("10.0.0.1".into()),
            },
            Uuid::new_v4().to_string(),
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap(),
        );
        e.instance = Some("inst".into());
        e.target = Some("key".into());
        e.key_state = Some(1);
        e.key_version = Some("v1".into());
        e
    }

    const T: i64 = 1_700_000_000_000_000_000;
    const S: i64 = 1_000_000_000;

    /// See: issue 20. Successes alike but for id, time and request id fold into one count per
    /// second; anything else is recorded one by one.
    #[test]
    fn successes_fold_per_caller_key_and_second_and_nothing_else_does() {
        let a = CryptoAggregation::new([]);
        for i in 0..5 {
            assert!(a.fold(&event(op::WRAP.action, Outcome::Success, "alice", T + i)));
        }
        assert!(a.fold(&event(
            op::WRAP.action,
            Outcome::Success,
            "alice",
            T + S + 1
        )));
        assert!(a.fold(&event(op::WRAP.action, Outcome::Success, "bob", T + 2)));
        assert!(a.fold(&event(op::UNWRAP.action, Outcome::Success, "alice", T + 3)));
        assert!(!a.fold(&event(op::WRAP.action, Outcome::Failure, "alice", T + 4)));
        assert!(!a.fold(&event(op::ROTATE.action, Outcome::Success, "alice", T + 4)));
        assert!(!a.fold(&event(
            op::READ_KEY.action,
            Outcome::Success,
            "alice",
            T + 4
        )));
        assert_eq!(a.pending(), 8);
        // A flush during the second after takes the second before only.
        let second = |s: i64| OffsetDateTime::from_unix_timestamp(T / S + s).unwrap();
        let first = a.take(Some(second(1)));
        assert_eq!(a.pending(), 1);
        assert!(first.iter().all(|e| e.time == second(0)), "{first:?}");
        let mut out = a.take(None);
        assert_eq!(a.pending(), 0);
        assert_eq!(out.len(), 1);
        out.extend(first);
        let mut got: Vec<(&str, &str, i64, u64)> = out
            .iter()
            .map(|e| {
                (
                    e.action.as_str(),
                    e.initiator.id.as_str(),
                    e.time.unix_timestamp(),
                    e.count.unwrap(),
                )
            })
            .collect();
        got.sort();
        let t = T / S;
        assert_eq!(
            got,
            vec![
                (op::UNWRAP.action, "alice", t, 1),
                (op::WRAP.action, "alice", t, 5),
                (op::WRAP.action, "alice", t + 1, 1),
                (op::WRAP.action, "bob", t, 1),
            ]
        );
        for e in &out {
            assert_eq!(e.time.nanosecond(), 0);
            assert_eq!(e.request_id, e.id.to_string());
            assert_eq!(e.key_version.as_deref(), Some("v1"));
        }
        assert!(a.take(None).is_empty());
    }

    #[test]
    fn only_the_instances_named_are_aggregated() {
        let a = CryptoAggregation::new(["other".to_owned()]);
        assert!(!a.fold(&event(op::WRAP.action, Outcome::Success, "alice", T)));
        let a = CryptoAggregation::new(["inst".to_owned()]);
        assert!(a.fold(&event(op::WRAP.action, Outcome::Success, "alice", T)));
    }

    /// A failed flush keeps its events for the next one, and nothing is folded until a flush
    /// succeeds: the requests meanwhile are recorded (or refused) one by one.
    #[test]
    fn a_failed_flush_is_retried_and_stops_folding_until_one_succeeds() {
        let a = CryptoAggregation::new([]);
        assert!(a.fold(&event(op::WRAP.action, Outcome::Success, "alice", T)));
        let first = a.take(None);
        a.unwritten(first.clone());
        assert!(!a.fold(&event(op::WRAP.action, Outcome::Success, "alice", T + 1)));
        let again = a.take(None);
        assert_eq!(again, first);
        a.written();
        assert!(a.fold(&event(op::WRAP.action, Outcome::Success, "alice", T + 2)));
    }

    #[test]
    fn counts_are_bounded() {
        let a = CryptoAggregation::new([]);
        for i in 0..MAX_BUCKETS {
            let caller = format!("c{i}");
            assert!(a.fold(&event(op::WRAP.action, Outcome::Success, &caller, T)));
        }
        // A new count is refused; an existing one still counts.
        assert!(!a.fold(&event(op::WRAP.action, Outcome::Success, "new", T)));
        assert!(a.fold(&event(op::WRAP.action, Outcome::Success, "c0", T)));
    }
}
