//! Known answers for every encoding a custody signature or the audit chain covers: the exact
//! bytes (or hash) release 0.1.0's hand-written encoders gave for fixed records. Records and
//! chains already on disk verify only while these stay the same (issue 15).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use keyward_core::{
    AccessPolicyRecord, AliasRecord, AuditEvent, AuthorizationRecord, DEFAULT_KEY_RING,
    DeletionAuthorization, DualAuthPolicy, Initiator, InstanceId, InstancePolicy, KeyId, KeyKind,
    KeyRecord, KeyState, KeyVersion, KeyVersionId, KmipAdapterRecord, KmipCertificateRecord,
    Outcome, PolicyMeta, PolicySetting, Role, RotationPolicy, Scope, WrappedMaterial, chain_hash,
    checkpoint_bytes,
};
use time::OffsetDateTime;
use uuid::Uuid;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn at(secs: i64, nanos: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
        .unwrap()
}

fn uuid(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn instance() -> InstanceId {
    InstanceId::from_bytes([0x11; 16])
}

fn key_id() -> KeyId {
    KeyId::from_bytes([0x22; 16])
}

fn meta() -> PolicyMeta {
    PolicyMeta {
        created_at: at(1_700_000_000, 1),
        created_by: "creator".into(),
        updated_at: at(1_700_000_001, 2),
        updated_by: "updater".into(),
    }
}

/// A key record as first written: no extension fields set.
fn plain_key() -> KeyRecord {
    KeyRecord {
        id: key_id(),
        instance: instance(),
        kind: KeyKind::Root,
        name: "not signed".into(),
        description: Some("not signed either".into()),
        state: KeyState::Active,
        imported: false,
        key_ring: DEFAULT_KEY_RING.into(),
        expiration: None,
        bits: 256,
        current_version: 2,
        current_version_id: KeyVersionId::from_bytes([0x33; 16]),
        revision: 7,
        created_at: at(1_700_000_000, 0),
        created_by: "creator".into(),
        updated_at: at(1_700_000_002, 0),
        state_changed_at: at(1_700_000_000, 123_456_789),
        last_rotated_at: Some(at(1_700_000_001, 5)),
        deleted_at: None,
        deleted_by: None,
        rotation: None,
        dual_auth_delete: None,
        deletion_authorized: None,
        purged_at: None,
        next_rotation_at: None,
        aliases: vec!["not-signed".into()],
        signature: Vec::new(),
    }
}

/// A key record with every extension field set.
fn extended_key() -> KeyRecord {
    KeyRecord {
        kind: KeyKind::Standard,
        state: KeyState::Destroyed,
        imported: true,
        key_ring: "ring-a".into(),
        expiration: Some(at(1_800_000_000, 0)),
        deleted_at: Some(at(1_700_000_003, 0)),
        deleted_by: Some("deleter".into()),
        rotation: Some(RotationPolicy {
            enabled: true,
            interval_month: 3,
            meta: meta(),
        }),
        dual_auth_delete: Some(DualAuthPolicy {
            enabled: false,
            meta: meta(),
        }),
        deletion_authorized: Some(DeletionAuthorization {
            by: "approver".into(),
            at: at(1_700_000_004, 9),
        }),
        purged_at: Some(at(1_700_000_005, 0)),
        ..plain_key()
    }
}

fn version() -> KeyVersion {
    KeyVersion {
        key_id: key_id(),
        number: 2,
        id: KeyVersionId::from_bytes([0x33; 16]),
        created_at: at(1_700_000_000, 0),
        material: WrappedMaterial {
            wrapping_key: "software:mkek:1".into(),
            bytes: vec![0xa0, 0xa1, 0xa2, 0xa3, 0xa4],
        },
        signature: Vec::new(),
    }
}

fn event(full: bool) -> AuditEvent {
    AuditEvent {
        id: uuid(0x44),
        time: at(1_700_000_000, 42),
        action: "kms.secrets.wrap".into(),
        outcome: if full {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        reason_code: if full { 409 } else { 200 },
        reason: full.then(|| "state".into()),
        initiator: Initiator {
            id: "iam-ServiceId-x".into(),
            address: full.then(|| "127.0.0.1".into()),
        },
        instance: full.then(|| "inst".into()),
        target: full.then(|| "key".into()),
        key_state: full.then_some(1),
        key_version: full.then(|| "ver".into()),
        request_id: "req-1".into(),
        count: None,
    }
}

/// `(what, bytes)`: every encoding under test.
fn encodings() -> Vec<(&'static str, Vec<u8>)> {
    let access_policy = |scope| AccessPolicyRecord {
        id: "policy-1".into(),
        account: "acct".into(),
        subject: "IBMid-1".into(),
        roles: vec![Role::Writer, Role::Reader],
        scope,
        created_at: at(1_700_000_000, 0),
        created_by: "admin".into(),
        signature: Vec::new(),
    };
    let authorization = |source_instance, delegation| AuthorizationRecord {
        id: "auth-1".into(),
        account: "acct".into(),
        source_service: "messagehub".into(),
        source_instance,
        target: Scope::KeyRing(instance(), "ring-a".into()),
        roles: vec![Role::Reader],
        delegation,
        dependents: Vec::new(),
        delegated_from: None,
        created_at: at(1_700_000_000, 0),
        created_by: "admin".into(),
        signature: Vec::new(),
    };
    let policy = |enabled, setting| InstancePolicy {
        instance: instance(),
        enabled,
        setting,
        meta: meta(),
        signature: Vec::new(),
    };
    vec![
        ("key record", plain_key().signed_bytes()),
        ("key record, extended", extended_key().signed_bytes()),
        ("key version", version().signed_bytes(instance())),
        (
            "alias",
            AliasRecord {
                instance: instance(),
                alias: "my-alias".into(),
                key_id: key_id(),
                created_at: at(1_700_000_000, 0),
                created_by: "admin".into(),
                signature: Vec::new(),
            }
            .signed_bytes(),
        ),
        (
            "instance policy, rotation",
            policy(true, PolicySetting::Rotation { interval_month: 6 }).signed_bytes(),
        ),
        (
            "instance policy, metrics off",
            policy(false, PolicySetting::Metrics).signed_bytes(),
        ),
        (
            "access policy, account",
            access_policy(Scope::Account("acct".into())).signed_bytes(),
        ),
        (
            "access policy, instance",
            access_policy(Scope::Instance(instance())).signed_bytes(),
        ),
        (
            "access policy, key ring",
            access_policy(Scope::KeyRing(instance(), "ring-a".into())).signed_bytes(),
        ),
        (
            "access policy, key",
            access_policy(Scope::Key(instance(), key_id())).signed_bytes(),
        ),
        (
            "authorization, any instance",
            authorization(None, false).signed_bytes(),
        ),
        (
            "authorization, one instance, delegation",
            authorization(Some("es-1".into()), true).signed_bytes(),
        ),
        (
            "kmip adapter",
            KmipAdapterRecord {
                instance: instance(),
                id: uuid(0x55),
                name: "adapter".into(),
                description: Some("not signed".into()),
                profile: "native_1.0".into(),
                crk_id: key_id(),
                created_at: at(1_700_000_000, 0),
                created_by: "admin".into(),
                updated_at: at(1_700_000_000, 0),
                updated_by: "admin".into(),
                signature: Vec::new(),
            }
            .signed_bytes(),
        ),
        (
            "kmip certificate",
            KmipCertificateRecord {
                instance: instance(),
                adapter_id: uuid(0x55),
                id: uuid(0x66),
                name: "cert".into(),
                certificate: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
                fingerprint: [0x77; 32],
                created_at: at(1_700_000_000, 0),
                created_by: "admin".into(),
                signature: Vec::new(),
            }
            .signed_bytes(),
        ),
        (
            "chain hash, minimal event",
            chain_hash(1, &[0; 32], &event(false)).to_vec(),
        ),
        (
            "chain hash, every optional field",
            chain_hash(u64::MAX - 1, &[0xee; 32], &event(true)).to_vec(),
        ),
        (
            "checkpoint",
            checkpoint_bytes(41, &[0xcc; 32], at(1_700_000_000, 7)),
        ),
    ]
}

/// Release 0.1.0's answers, in the order of [`encodings`].
const GOLDEN: &[&str] = &[
    // key record
    "000000156b6579776172642f6b65792d7265636f72642f76310000001022222222222222222222222222222222000000101111111111111111111111111111111100000003010100000000020100000000040000000200000010333333333333333333333333333333330000000800000000000000070000000000000010000000000000000017979cfe3d85cd1500000010000000000000000017979cfe71c4ca0500000000",
    // key record, extended
    "000000156b6579776172642f6b65792d7265636f72642f763100000010222222222222222222222222222222220000001011111111111111111111111111111111000000030005010000000201000000000400000002000000103333333333333333333333333333333300000008000000000000000700000010000000000000000018fae27693b4000000000010000000000000000017979cfe3d85cd1500000010000000000000000017979cfe71c4ca0500000010000000000000000017979cfee8fa5e00000000066578742f76310000000301010300000002010000000008617070726f76657200000010000000000000000017979cff2495280900000010000000000000000017979cff602ff2000000000672696e672d61",
    // key version
    "000000166b6579776172642f6b65792d76657273696f6e2f763100000010222222222222222222222222222222220000001011111111111111111111111111111111000000040000000200000010333333333333333333333333333333330000000f736f6674776172653a6d6b656b3a3100000005a0a1a2a3a4",
    // alias
    "000000106b6579776172642f616c6961732f76310000001011111111111111111111111111111111000000086d792d616c6961730000001022222222222222222222222222222222",
    // instance policy, rotation
    "0000001a6b6579776172642f696e7374616e63652d706f6c6963792f7631000000101111111111111111111111111111111100000008726f746174696f6e0000000101000000147b22696e74657276616c5f6d6f6e7468223a367d",
    // instance policy, metrics off
    "0000001a6b6579776172642f696e7374616e63652d706f6c6963792f76310000001011111111111111111111111111111111000000076d657472696373000000010000000000",
    // access policy, account
    "000000186b6579776172642f6163636573732d706f6c6963792f763100000008706f6c6963792d3100000004616363740000000749424d69642d310000000d5265616465722c577269746572000000076163636f756e740000000461636374",
    // access policy, instance
    "000000186b6579776172642f6163636573732d706f6c6963792f763100000008706f6c6963792d3100000004616363740000000749424d69642d310000000d5265616465722c57726974657200000008696e7374616e63650000001011111111111111111111111111111111",
    // access policy, key ring
    "000000186b6579776172642f6163636573732d706f6c6963792f763100000008706f6c6963792d3100000004616363740000000749424d69642d310000000d5265616465722c577269746572000000086b65795f72696e6700000010111111111111111111111111111111110000000672696e672d61",
    // access policy, key
    "000000186b6579776172642f6163636573732d706f6c6963792f763100000008706f6c6963792d3100000004616363740000000749424d69642d310000000d5265616465722c577269746572000000036b657900000010111111111111111111111111111111110000001022222222222222222222222222222222",
    // authorization, any instance
    "000000186b6579776172642f617574686f72697a6174696f6e2f763100000006617574682d3100000004616363740000000a6d657373616765687562000000012a000000086b65795f72696e6700000010111111111111111111111111111111110000000672696e672d61000000065265616465720000000100",
    // authorization, one instance, delegation
    "000000186b6579776172642f617574686f72697a6174696f6e2f763100000006617574682d3100000004616363740000000a6d6573736167656875620000000465732d31000000086b65795f72696e6700000010111111111111111111111111111111110000000672696e672d61000000065265616465720000000101",
    // kmip adapter
    "000000176b6579776172642f6b6d69705f616461707465722f76310000001011111111111111111111111111111111000000105555555555555555555555555555555500000007616461707465720000000a6e61746976655f312e300000001022222222222222222222222222222222",
    // kmip certificate
    "0000001b6b6579776172642f6b6d69705f63657274696669636174652f7631000000101111111111111111111111111111111100000010555555555555555555555555555555550000001066666666666666666666666666666666000000207777777777777777777777777777777777777777777777777777777777777777000000362d2d2d2d2d424547494e2043455254494649434154452d2d2d2d2d0a2d2d2d2d2d454e442043455254494649434154452d2d2d2d2d0a",
    // chain hash, minimal event
    "8caafee717587236aef202a26037543747e203b878a9a72e5fd917a281ef8c57",
    // chain hash, every optional field
    "93f8e7deeab7447b2683204b2bf6de9cebd432b05fdec6d27d580070d1d11e5a",
    // checkpoint
    "6b6579776172642e61756469742e636865636b706f696e742e7631000000000000000029cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc17979cfe362a0007",
];

#[test]
fn every_signed_encoding_gives_release_0_1_0_bytes() {
    let got = encodings();
    assert_eq!(got.len(), GOLDEN.len());
    for ((what, bytes), want) in got.iter().zip(GOLDEN) {
        assert_eq!(&hex(bytes), want, "{what}");
    }
}

/// See: issue 20. An aggregated event's hash, pinned when it was introduced: its own domain and
/// its count, so it matches no single event's, and the count is covered.
#[test]
fn an_aggregated_event_hashes_under_its_own_domain_and_covers_its_count() {
    let mut e = event(true);
    e.outcome = Outcome::Success;
    e.reason_code = 200;
    e.reason = None;
    let single = chain_hash(7, &[0xee; 32], &e);
    e.count = Some(12_345);
    let aggregated = chain_hash(7, &[0xee; 32], &e);
    assert_ne!(single, aggregated);
    e.count = Some(12_346);
    assert_ne!(chain_hash(7, &[0xee; 32], &e), aggregated);
    assert_eq!(
        hex(&aggregated),
        "52d1bc7635a5b54732bc10ea42dba193642d77fdad81362c62641714050a13f2"
    );
}
