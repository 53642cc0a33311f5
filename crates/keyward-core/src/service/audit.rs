//! Reading the audit trail through the API: the caller's instance only, Managers only.

use super::{Caller, KeyService, authorize};
use crate::access::{Operation, Target};
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
        let result = async {
            authorize(caller, Operation::ReadAuditEvents, Target::Instance)?;
            // Events of other instances are never visible, whatever the query says.
            query.instance = Some(caller.instance.to_string());
            Ok(trail.audit_events(&query).await?)
        }
        .await;
        self.audit(caller, "kms.auditevents.list", None, &result, |_| {
            (None, None)
        })
        .await?;
        result
    }
}
