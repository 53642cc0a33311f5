//! Reading the audit trail through the API: the caller's instance only, Managers only.

use super::{Caller, KeyService};
use crate::access::Target;
use crate::op;
use crate::{AuditQuery, AuditStore, ChainedEvent, KeyError};

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
}
