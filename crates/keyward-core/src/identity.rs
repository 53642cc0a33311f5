//! Identities and the records that give them access: access policies (a subject's roles on a
//! scope) and service-to-service authorizations (a source service's roles on a KMS instance or
//! key). Policies and authorizations are signed by custody like key records: a row edited in the
//! database grants nothing.

use keyward_crypto::Canonical;
use time::OffsetDateTime;

use crate::access::{Role, Scope};

/// What kind of subject an identity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A person.
    User,
    /// A service ID: an identity for an application.
    ServiceId,
    /// An instance of an integrated service (Event Streams, a database, ...), which calls with
    /// its own identity and is authorized through service-to-service authorizations.
    Service,
}

impl IdentityKind {
    /// The name used on the wire and in storage.
    pub fn name(self) -> &'static str {
        match self {
            IdentityKind::User => "user",
            IdentityKind::ServiceId => "service_id",
            IdentityKind::Service => "service",
        }
    }

    /// The kind for a name.
    pub fn from_name(name: &str) -> Option<IdentityKind> {
        [
            IdentityKind::User,
            IdentityKind::ServiceId,
            IdentityKind::Service,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// IBM IAM's `sub_type` claim for the kind.
    pub fn sub_type(self) -> &'static str {
        match self {
            IdentityKind::User => "user",
            IdentityKind::ServiceId => "ServiceId",
            IdentityKind::Service => "CRN",
        }
    }
}

/// A subject of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The IAM id (`IBMid-…`, `iam-ServiceId-…`, `crn-…`).
    pub iam_id: String,
    /// The account it belongs to.
    pub account: String,
    /// User, service ID or service instance.
    pub kind: IdentityKind,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// For a service instance: the service's name (e.g. `messagehub`).
    pub service_name: Option<String>,
    /// For a service instance: its instance id or CRN.
    pub service_instance: Option<String>,
    /// A locked identity cannot obtain tokens, and its tokens stop working.
    pub locked: bool,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
}

fn push_scope(c: &mut Canonical, scope: &Scope) {
    match scope {
        Scope::Account(a) => c.field(b"account").field(a.as_bytes()),
        Scope::Instance(i) => c.field(b"instance").field(i.as_bytes()),
        Scope::KeyRing(i, r) => c.field(b"key_ring").field(i.as_bytes()).field(r.as_bytes()),
        Scope::Key(i, k) => c.field(b"key").field(i.as_bytes()).field(k.as_bytes()),
    };
}

fn push_roles(c: &mut Canonical, roles: &[Role]) {
    let mut names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    c.field(names.join(",").as_bytes());
}

/// Roles for a subject on a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicyRecord {
    /// Policy id.
    pub id: String,
    /// The account.
    pub account: String,
    /// The subject's IAM id.
    pub subject: String,
    /// The roles.
    pub roles: Vec<Role>,
    /// What they cover.
    pub scope: Scope,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Custody signature over [`AccessPolicyRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

impl AccessPolicyRecord {
    /// The bytes the signature covers: id, account, subject, roles and scope.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/access-policy/v1")
            .field(self.id.as_bytes())
            .field(self.account.as_bytes())
            .field(self.subject.as_bytes());
        push_roles(&mut c, &self.roles);
        push_scope(&mut c, &self.scope);
        c.finish()
    }
}

/// A source service's roles on a KMS instance, key ring or key of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecord {
    /// Authorization id.
    pub id: String,
    /// The account that owns the target.
    pub account: String,
    /// The source service's name (e.g. `messagehub`).
    pub source_service: String,
    /// One instance of the source service, or every instance when `None`.
    pub source_instance: Option<String>,
    /// What it covers (an instance, a key ring or a key; never the whole account).
    pub target: Scope,
    /// The roles (Key Protect integrations use Reader).
    pub roles: Vec<Role>,
    /// Whether the source service may grant its dependent services the same access
    /// (IAM's "Authorization Delegator").
    pub delegation: bool,
    /// With `delegation`: the services the source may authorize (its dependent services, which
    /// IBM Cloud takes from its catalog and Keyward from the administrator). Empty otherwise.
    pub dependents: Vec<String>,
    /// The delegating authorization this one was made under, if a service made it; deleting
    /// that one deletes this one.
    pub delegated_from: Option<String>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Custody signature over [`AuthorizationRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

impl AuthorizationRecord {
    /// The bytes the signature covers: everything but the creation metadata.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/authorization/v1")
            .field(self.id.as_bytes())
            .field(self.account.as_bytes())
            .field(self.source_service.as_bytes())
            .field(self.source_instance.as_deref().unwrap_or("*").as_bytes());
        push_scope(&mut c, &self.target);
        push_roles(&mut c, &self.roles);
        c.field(&[self.delegation as u8]);
        // Appended only when set, so authorizations signed before these fields still verify.
        if !self.dependents.is_empty() || self.delegated_from.is_some() {
            let mut dependents: Vec<&str> = self.dependents.iter().map(String::as_str).collect();
            dependents.sort_unstable();
            c.field(b"delegation/v2")
                .field(dependents.join(",").as_bytes())
                .opt(self.delegated_from.as_deref().map(str::as_bytes));
        }
        c.finish()
    }

    /// Whether this authorization applies to a service instance.
    pub fn applies_to(&self, service: &str, instance: Option<&str>) -> bool {
        self.source_service == service
            && match (&self.source_instance, instance) {
                (None, _) => true,
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceId;

    #[test]
    fn signatures_cover_roles_scope_and_subject() {
        let p = AccessPolicyRecord {
            id: "p1".into(),
            account: "a".into(),
            subject: "iam-x".into(),
            roles: vec![Role::Reader, Role::Writer],
            scope: Scope::Instance(InstanceId::random()),
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: "admin".into(),
            signature: vec![],
        };
        let mut reordered = p.clone();
        reordered.roles = vec![Role::Writer, Role::Reader];
        assert_eq!(p.signed_bytes(), reordered.signed_bytes());
        for change in [
            |p: &mut AccessPolicyRecord| p.roles.push(Role::Manager),
            |p: &mut AccessPolicyRecord| p.subject = "iam-y".into(),
            |p: &mut AccessPolicyRecord| p.scope = Scope::Account("a".into()),
        ] {
            let mut q = p.clone();
            change(&mut q);
            assert_ne!(p.signed_bytes(), q.signed_bytes());
        }
    }

    #[test]
    fn authorizations_match_service_and_instance() {
        let a = AuthorizationRecord {
            id: "z".into(),
            account: "a".into(),
            source_service: "messagehub".into(),
            source_instance: Some("es-1".into()),
            target: Scope::Instance(InstanceId::random()),
            roles: vec![Role::Reader],
            delegation: false,
            dependents: vec![],
            delegated_from: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: "admin".into(),
            signature: vec![],
        };
        assert!(a.applies_to("messagehub", Some("es-1")));
        assert!(!a.applies_to("messagehub", Some("es-2")));
        assert!(!a.applies_to("messagehub", None));
        assert!(!a.applies_to("cloud-object-storage", Some("es-1")));
        let any = AuthorizationRecord {
            source_instance: None,
            ..a
        };
        assert!(any.applies_to("messagehub", Some("es-9")));
    }

    #[test]
    fn signatures_cover_dependents_and_the_delegating_authorization() {
        let a = AuthorizationRecord {
            id: "z".into(),
            account: "a".into(),
            source_service: "backup".into(),
            source_instance: Some("b-1".into()),
            target: Scope::Instance(InstanceId::random()),
            roles: vec![Role::Reader],
            delegation: false,
            dependents: vec![],
            delegated_from: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: "admin".into(),
            signature: vec![],
        };
        let delegated = AuthorizationRecord {
            delegated_from: Some("parent".into()),
            ..a.clone()
        };
        let other_parent = AuthorizationRecord {
            delegated_from: Some("other".into()),
            ..a.clone()
        };
        let with_dependents = AuthorizationRecord {
            dependents: vec!["cos".into()],
            ..a.clone()
        };
        let bytes = [&a, &delegated, &other_parent, &with_dependents].map(|r| r.signed_bytes());
        for (i, x) in bytes.iter().enumerate() {
            for y in bytes.iter().skip(i + 1) {
                assert_ne!(x, y);
            }
        }
    }
}
