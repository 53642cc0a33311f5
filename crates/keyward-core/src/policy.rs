//! Instance policies (Key Protect's `/instance/policies`): settings that apply to a whole
//! instance and are enforced, not only stored. Each policy is persisted as one signed row whose
//! attributes are the canonical JSON [`InstancePolicy::attributes_json`] produces.

use std::net::IpAddr;

use ipnet::IpNet;
use keyward_crypto::Canonical;
use serde::{Deserialize, Serialize};

use crate::key::{KeyKind, PolicyMeta};
use crate::{InstanceId, KeyError};

/// Months allowed in a rotation policy.
pub const ROTATION_MONTHS: std::ops::RangeInclusive<u8> = 1..=12;
/// Most address ranges in an allowedIP policy (Key Protect documents no limit; we keep one).
pub const MAX_ALLOWED_IP_RANGES: usize = 1_000;

/// Which networks may reach the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowedNetwork {
    /// Every endpoint.
    #[serde(rename = "public-and-private")]
    PublicAndPrivate,
    /// Only the private endpoint.
    #[serde(rename = "private-only")]
    PrivateOnly,
}

/// Which kinds of key may be created or imported, and whether imports must use an import token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateImportAccess {
    /// Generate root keys.
    pub create_root_key: bool,
    /// Generate standard keys.
    pub create_standard_key: bool,
    /// Import root keys.
    pub import_root_key: bool,
    /// Import standard keys.
    pub import_standard_key: bool,
    /// Imports only through an import token (secure import).
    pub enforce_token: bool,
}

impl Default for CreateImportAccess {
    /// Key Protect's defaults: everything allowed, tokens not enforced.
    fn default() -> Self {
        CreateImportAccess {
            create_root_key: true,
            create_standard_key: true,
            import_root_key: true,
            import_standard_key: true,
            enforce_token: false,
        }
    }
}

/// One instance policy's setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySetting {
    /// New keys get a dual-authorization delete policy.
    DualAuthDelete,
    /// New root keys get a rotation policy of this many months.
    Rotation {
        /// 1 to 12.
        interval_month: u8,
    },
    /// Which networks may call.
    AllowedNetwork(AllowedNetwork),
    /// Which client addresses may call.
    AllowedIp(Vec<IpNet>),
    /// Which creations and imports are allowed.
    KeyCreateImportAccess(CreateImportAccess),
    /// Operational metrics for the instance.
    Metrics,
}

/// The kinds of instance policy, with Key Protect's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `dualAuthDelete`.
    DualAuthDelete,
    /// `rotation`.
    Rotation,
    /// `allowedNetwork`.
    AllowedNetwork,
    /// `allowedIP`.
    AllowedIp,
    /// `keyCreateImportAccess`.
    KeyCreateImportAccess,
    /// `metrics`.
    Metrics,
}

impl PolicyKind {
    /// Every kind, in the order listings show them.
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::AllowedNetwork,
        PolicyKind::AllowedIp,
        PolicyKind::DualAuthDelete,
        PolicyKind::KeyCreateImportAccess,
        PolicyKind::Metrics,
        PolicyKind::Rotation,
    ];

    /// Key Protect's name for the policy (`policy=` query value and `policy_type`).
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::DualAuthDelete => "dualAuthDelete",
            PolicyKind::Rotation => "rotation",
            PolicyKind::AllowedNetwork => "allowedNetwork",
            PolicyKind::AllowedIp => "allowedIP",
            PolicyKind::KeyCreateImportAccess => "keyCreateImportAccess",
            PolicyKind::Metrics => "metrics",
        }
    }

    /// The kind for a Key Protect name.
    pub fn from_name(name: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One instance policy as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePolicy {
    /// The instance it governs.
    pub instance: InstanceId,
    /// Whether it is in force. A disabled policy keeps its attributes.
    pub enabled: bool,
    /// What it says.
    pub setting: PolicySetting,
    /// Who set it and when.
    pub meta: PolicyMeta,
    /// Custody signature over [`InstancePolicy::signed_bytes`].
    pub signature: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RotationAttrs {
    interval_month: u8,
}
#[derive(Serialize, Deserialize)]
struct NetworkAttrs {
    allowed_network: AllowedNetwork,
}
#[derive(Serialize, Deserialize)]
struct IpAttrs {
    allowed_ip: Vec<IpNet>,
}

impl PolicySetting {
    /// Its kind.
    pub fn kind(&self) -> PolicyKind {
        match self {
            PolicySetting::DualAuthDelete => PolicyKind::DualAuthDelete,
            PolicySetting::Rotation { .. } => PolicyKind::Rotation,
            PolicySetting::AllowedNetwork(_) => PolicyKind::AllowedNetwork,
            PolicySetting::AllowedIp(_) => PolicyKind::AllowedIp,
            PolicySetting::KeyCreateImportAccess(_) => PolicyKind::KeyCreateImportAccess,
            PolicySetting::Metrics => PolicyKind::Metrics,
        }
    }

    /// Checks the values Key Protect bounds.
    pub fn validate(&self) -> Result<(), KeyError> {
        match self {
            PolicySetting::Rotation { interval_month }
                if !ROTATION_MONTHS.contains(interval_month) =>
            {
                Err(KeyError::InvalidInput(
                    "interval_month: must be 1 to 12".to_owned(),
                ))
            }
            PolicySetting::AllowedIp(ranges) if ranges.len() > MAX_ALLOWED_IP_RANGES => {
                Err(KeyError::InvalidInput(format!(
                    "allowed_ip: at most {MAX_ALLOWED_IP_RANGES} ranges"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl InstancePolicy {
    /// The attributes as canonical JSON (what is stored and signed); `None` for policies that
    /// have only `enabled`.
    pub fn attributes_json(&self) -> Option<String> {
        let json = match &self.setting {
            PolicySetting::DualAuthDelete | PolicySetting::Metrics => return None,
            PolicySetting::Rotation { interval_month } => serde_json::to_string(&RotationAttrs {
                interval_month: *interval_month,
            }),
            PolicySetting::AllowedNetwork(n) => serde_json::to_string(&NetworkAttrs {
                allowed_network: *n,
            }),
            PolicySetting::AllowedIp(ranges) => serde_json::to_string(&IpAttrs {
                allowed_ip: ranges.clone(),
            }),
            PolicySetting::KeyCreateImportAccess(a) => serde_json::to_string(a),
        };
        json.ok()
    }

    /// The setting of `kind` from stored attributes.
    pub fn setting_from_json(
        kind: PolicyKind,
        json: Option<&str>,
    ) -> Result<PolicySetting, String> {
        fn parse<T: for<'a> Deserialize<'a>>(json: Option<&str>) -> Result<T, String> {
            serde_json::from_str(json.ok_or("missing attributes")?).map_err(|e| e.to_string())
        }
        Ok(match kind {
            PolicyKind::DualAuthDelete => PolicySetting::DualAuthDelete,
            PolicyKind::Metrics => PolicySetting::Metrics,
            PolicyKind::Rotation => PolicySetting::Rotation {
                interval_month: parse::<RotationAttrs>(json)?.interval_month,
            },
            PolicyKind::AllowedNetwork => {
                PolicySetting::AllowedNetwork(parse::<NetworkAttrs>(json)?.allowed_network)
            }
            PolicyKind::AllowedIp => PolicySetting::AllowedIp(parse::<IpAttrs>(json)?.allowed_ip),
            PolicyKind::KeyCreateImportAccess => PolicySetting::KeyCreateImportAccess(parse(json)?),
        })
    }

    /// The bytes the signature covers: instance, kind, enabled and attributes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/instance-policy/v1")
            .field(self.instance.as_bytes())
            .field(self.setting.kind().name().as_bytes())
            .field(&[self.enabled as u8])
            .field(self.attributes_json().unwrap_or_default().as_bytes());
        c.finish()
    }
}

/// The policies of one instance in force, as the request path consults them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstancePolicies {
    /// Every stored policy, enabled or not.
    pub all: Vec<InstancePolicy>,
}

impl InstancePolicies {
    fn enabled(&self, kind: PolicyKind) -> Option<&PolicySetting> {
        self.all
            .iter()
            .find(|p| p.enabled && p.setting.kind() == kind)
            .map(|p| &p.setting)
    }

    /// The stored policy of `kind`, enabled or not.
    pub fn get(&self, kind: PolicyKind) -> Option<&InstancePolicy> {
        self.all.iter().find(|p| p.setting.kind() == kind)
    }

    /// Whether a client at `addr` may call (allowedIP). IPv4-mapped IPv6 addresses are compared
    /// as IPv4.
    pub fn allows_address(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        match self.enabled(PolicyKind::AllowedIp) {
            Some(PolicySetting::AllowedIp(ranges)) => ranges.iter().any(|r| r.contains(&addr)),
            _ => true,
        }
    }

    /// Whether a call through an endpoint of `network` is allowed (allowedNetwork).
    pub fn allows_network(&self, private_endpoint: bool) -> bool {
        match self.enabled(PolicyKind::AllowedNetwork) {
            Some(PolicySetting::AllowedNetwork(AllowedNetwork::PrivateOnly)) => private_endpoint,
            _ => true,
        }
    }

    /// Whether creating (or importing, `imported`) a key of `kind` is allowed
    /// (keyCreateImportAccess). `with_token` says the material came through an import token.
    pub fn allows_creation(&self, kind: KeyKind, imported: bool, with_token: bool) -> bool {
        let Some(PolicySetting::KeyCreateImportAccess(a)) =
            self.enabled(PolicyKind::KeyCreateImportAccess)
        else {
            return true;
        };
        match (kind, imported) {
            (KeyKind::Root, false) => a.create_root_key,
            (KeyKind::Standard, false) => a.create_standard_key,
            (KeyKind::Root, true) => a.import_root_key && (with_token || !a.enforce_token),
            (KeyKind::Standard, true) => a.import_standard_key && (with_token || !a.enforce_token),
        }
    }

    /// The rotation interval new root keys get, if the instance sets one.
    pub fn rotation_months(&self) -> Option<u8> {
        match self.enabled(PolicyKind::Rotation) {
            Some(PolicySetting::Rotation { interval_month }) => Some(*interval_month),
            _ => None,
        }
    }

    /// Whether new keys get a dual-authorization delete policy.
    pub fn dual_auth_delete(&self) -> bool {
        self.enabled(PolicyKind::DualAuthDelete).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn policy(enabled: bool, setting: PolicySetting) -> InstancePolicy {
        let now = OffsetDateTime::UNIX_EPOCH;
        InstancePolicy {
            instance: InstanceId::random(),
            enabled,
            setting,
            meta: PolicyMeta {
                created_at: now,
                created_by: "a".into(),
                updated_at: now,
                updated_by: "a".into(),
            },
            signature: Vec::new(),
        }
    }

    #[test]
    fn allowed_ip_matches_ranges_and_mapped_addresses() {
        let ranges = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let p = InstancePolicies {
            all: vec![policy(true, PolicySetting::AllowedIp(ranges.clone()))],
        };
        assert!(p.allows_address("127.0.0.1".parse().unwrap()));
        assert!(p.allows_address("10.9.8.7".parse().unwrap()));
        assert!(p.allows_address("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.allows_address("127.0.0.2".parse().unwrap()));
        assert!(!p.allows_address("::1".parse().unwrap()));
        let off = InstancePolicies {
            all: vec![policy(false, PolicySetting::AllowedIp(ranges))],
        };
        assert!(off.allows_address("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn create_import_access_follows_each_flag() {
        let access = CreateImportAccess {
            create_root_key: true,
            create_standard_key: false,
            import_root_key: true,
            import_standard_key: false,
            enforce_token: true,
        };
        let p = InstancePolicies {
            all: vec![policy(true, PolicySetting::KeyCreateImportAccess(access))],
        };
        assert!(p.allows_creation(KeyKind::Root, false, false));
        assert!(!p.allows_creation(KeyKind::Standard, false, false));
        assert!(
            !p.allows_creation(KeyKind::Root, true, false),
            "token enforced"
        );
        assert!(p.allows_creation(KeyKind::Root, true, true));
        assert!(!p.allows_creation(KeyKind::Standard, true, true));
        assert!(InstancePolicies::default().allows_creation(KeyKind::Standard, true, false));
    }

    #[test]
    fn attributes_round_trip_and_are_signed() {
        for setting in [
            PolicySetting::DualAuthDelete,
            PolicySetting::Metrics,
            PolicySetting::Rotation { interval_month: 3 },
            PolicySetting::AllowedNetwork(AllowedNetwork::PrivateOnly),
            PolicySetting::AllowedIp(vec!["192.168.0.0/16".parse().unwrap()]),
            PolicySetting::KeyCreateImportAccess(CreateImportAccess::default()),
        ] {
            let p = policy(true, setting.clone());
            let json = p.attributes_json();
            let back = InstancePolicy::setting_from_json(setting.kind(), json.as_deref()).unwrap();
            assert_eq!(back, setting);
            let mut q = p.clone();
            q.enabled = false;
            assert_ne!(p.signed_bytes(), q.signed_bytes());
        }
        assert!(
            PolicySetting::Rotation { interval_month: 13 }
                .validate()
                .is_err()
        );
        assert!(
            PolicySetting::Rotation { interval_month: 0 }
                .validate()
                .is_err()
        );
    }
}
