//! Reading the audit trail through the API: the caller's instance only, Managers only; and
//! verifying the chain's newest signed checkpoint and the events after it.

use super::{Caller, KeyService};
use crate::access::Target;
use crate::op;
use crate::{
    AuditCheckpoint, AuditQuery, AuditStore, BreakKind, ChainBreak, ChainVerifier, ChainedEvent,
    KeyError, chain_hash, checkpoint_bytes,
};

/// Events [`KeyService::verify_audit_tail`] walks in one request at most (the checkpointer
/// signs every `checkpoint_every_events`, 10 000 by default, so the tail is normally shorter).
pub const AUDIT_TAIL_MAX: u64 = 100_000;

/// Events read per store query during the walk.
const TAIL_BATCH: u32 = 1000;

/// What [`KeyService::verify_audit_tail`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailReport {
    /// The chain head: position and hash.
    pub head: Option<(u64, [u8; 32])>,
    /// The newest checkpoint, if any.
    pub checkpoint: Option<AuditCheckpoint>,
    /// Whether its signature verifies with custody's record-signing key and the stored event at
    /// its position still has the hash it signs.
    pub checkpoint_valid: bool,
    /// The first position walked (1 without a checkpoint, else the checkpoint's).
    pub from: u64,
    /// Events checked.
    pub checked: u64,
    /// Whether the walk reached the head ([`AUDIT_TAIL_MAX`] bounds it).
    pub complete: bool,
    /// The first break found, if any.
    pub first_break: Option<ChainBreak>,
}

impl KeyService {
    /// Events of the caller's instance matching `query` (its `instance` is overridden), oldest
    /// first, and how many match in all. Recorded as `kms.auditevents.list`.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        trail: &dyn AuditStore,
        mut query: AuditQuery,
    ) -> Result<(Vec<ChainedEvent>, u64), KeyError> {
        self.pipe
            .run_in(
                &op::LIST_AUDIT_EVENTS,
                caller,
                Target::Instance,
                async |_| {
                    // Events of other instances are never visible, whatever the query says.
                    query.instance = Some(caller.instance().to_string());
                    Ok(trail.audit_events(&query).await?)
                },
            )
            .await
    }

    /// Verifies the audit chain's newest signed checkpoint (its signature, and that the stored
    /// event at its position still has the signed hash) and every event after it up to the head
    /// (each matches its hash and links to the one before), at most [`AUDIT_TAIL_MAX`] events.
    /// The part before the checkpoint is what the checkpoint's signature already vouches for;
    /// `keyward audit verify` walks the whole chain offline. Recorded as
    /// `kms.auditevents.verify`, for Managers of the instance (the chain is the server's, across
    /// instances: only positions and hashes are reported, never another instance's events).
    pub async fn verify_audit_tail(
        &self,
        caller: &Caller,
        trail: &dyn AuditStore,
    ) -> Result<TailReport, KeyError> {
        let custody = self.custody().clone();
        self.pipe
            .run_in(
                &op::VERIFY_AUDIT_CHAIN,
                caller,
                Target::Instance,
                async |_| {
                    let head = trail.audit_head().await?;
                    let checkpoint = trail.latest_audit_checkpoint().await?;
                    let mut report = TailReport {
                        head,
                        checkpoint: checkpoint.clone(),
                        checkpoint_valid: false,
                        from: 1,
                        checked: 0,
                        complete: false,
                        first_break: None,
                    };
                    let mut verifier = ChainVerifier::new();
                    let mut after = 0;
                    if let Some(cp) = &checkpoint {
                        let signed = checkpoint_bytes(cp.seq, &cp.hash, cp.time);
                        let at = trail
                            .audit_events_after(cp.seq.saturating_sub(1), 1)
                            .await?;
                        let stored = at.first().filter(|e| e.seq == cp.seq);
                        let problem = if custody.verify_record(&signed, &cp.signature).is_err() {
                            Some((
                                BreakKind::BadCheckpoint,
                                format!(
                                    "the checkpoint at seq {} is not signed by this custody \
                                     backend's key",
                                    cp.seq
                                ),
                            ))
                        } else {
                            match stored {
                                None => Some((
                                    BreakKind::Removed,
                                    format!(
                                        "the event at seq {} a signed checkpoint covers is missing",
                                        cp.seq
                                    ),
                                )),
                                Some(e)
                                    if e.hash != cp.hash
                                        || chain_hash(e.seq, &e.prev_hash, &e.event) != e.hash =>
                                {
                                    Some((
                                        BreakKind::Altered,
                                        format!(
                                            "the event at seq {} does not have the hash its \
                                             signed checkpoint holds",
                                            cp.seq
                                        ),
                                    ))
                                }
                                Some(_) => None,
                            }
                        };
                        report.from = cp.seq;
                        match (problem, stored) {
                            (None, Some(e)) => {
                                report.checkpoint_valid = true;
                                report.checked = 1;
                                verifier = ChainVerifier::resuming_after(e.seq, e.hash, e.event.id);
                                after = e.seq;
                            }
                            (problem, _) => {
                                let (kind, detail) = problem.unwrap_or((
                                    BreakKind::Removed,
                                    format!("the event at seq {} is missing", cp.seq),
                                ));
                                report.first_break = Some(ChainBreak {
                                    kind,
                                    seq: cp.seq,
                                    id: None,
                                    detail,
                                });
                                return Ok(report);
                            }
                        }
                    }
                    // Each row is checked with the next row's `prev_hash` at hand (to tell an
                    // inserted event from an altered one), so one row waits for its successor.
                    let mut pending: Option<ChainedEvent> = None;
                    let mut walked = 0u64;
                    let mut reached_end = false;
                    while walked < AUDIT_TAIL_MAX {
                        let batch = trail.audit_events_after(after, TAIL_BATCH).await?;
                        reached_end = batch.len() < TAIL_BATCH as usize;
                        for row in batch {
                            after = row.seq;
                            if let Some(p) = pending.take() {
                                verifier.push(&p, Some(&row.prev_hash), |_| None);
                                walked += 1;
                            }
                            pending = Some(row);
                        }
                        if reached_end {
                            break;
                        }
                    }
                    if let Some(p) = pending.take() {
                        verifier.push(&p, None, |_| None);
                        walked += 1;
                    }
                    report.checked += walked;
                    report.complete = reached_end;
                    // No checkpoints here: the one that matters was checked above.
                    let walk = verifier.finish(&[], |_| None, custody.as_ref());
                    report.first_break = walk.first_break;
                    Ok(report)
                },
            )
            .await
    }
}
