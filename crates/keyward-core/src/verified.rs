//! `Unverified<T>` and `Verified<T>`: "a signed record is verified before use" as types. A store
//! hands out every custody-signed record as `Unverified<T>`; the only way to a `Verified<T>`, which
//! is what services use and what the key cache holds, is through custody's signature check.

use std::ops::Deref;

use crate::{
    AccessPolicyRecord, AuthorizationRecord, Custody, CustodyError, InstanceId, KeyRecord,
    KeyVersion, KmipAdapterRecord, KmipCertificateRecord,
};

/// A record with a custody signature over canonical bytes of its own.
pub trait Signed {
    /// The canonical bytes the signature covers.
    fn signed_bytes(&self) -> Vec<u8>;
    /// The custody signature.
    fn signature(&self) -> &[u8];
}

/// A signed record as read from a store: not yet checked against its signature. Anyone may make
/// one (a store does); nothing but [`Verified::check`] (or [`Verified::check_version`]) turns it
/// into something a service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified<T>(T);

impl<T> Unverified<T> {
    /// Wraps a record read from storage.
    pub fn new(record: T) -> Self {
        Unverified(record)
    }

    /// The record, unchecked. For tests of a store, and for code that reads a field that is not
    /// security relevant before it verifies (the scheduler reads a due key's instance to name
    /// its caller); never for deciding what a key may do.
    pub fn peek_unverified(&self) -> &T {
        &self.0
    }

    /// The record, unchecked, by value; see [`Unverified::peek_unverified`].
    pub fn unverified_inner(self) -> T {
        self.0
    }
}

/// A record whose custody signature verified (and, for a key version, that belongs to its
/// verified key). Made only here, by custody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T: Signed> Verified<T> {
    /// Verifies a record's signature through custody: `IntegrityFailure` for a record that does
    /// not match it, `Unavailable` when the backend cannot answer.
    pub fn check(record: Unverified<T>, custody: &dyn Custody) -> Result<Self, CustodyError> {
        let record = record.0;
        custody.verify_record(&record.signed_bytes(), record.signature())?;
        Ok(Verified(record))
    }
}

impl Verified<KeyVersion> {
    /// Verifies a version of `key`: it names the key, and its signature (which covers the key and
    /// its instance) verifies.
    pub fn check_version(
        version: Unverified<KeyVersion>,
        key: &Verified<KeyRecord>,
        custody: &dyn Custody,
    ) -> Result<Self, CustodyError> {
        let version = version.0;
        if version.key_id != key.id {
            return Err(CustodyError::IntegrityFailure);
        }
        custody.verify_record(&version.signed_bytes(key.instance), &version.signature)?;
        Ok(Verified(version))
    }

    /// Verifies a version read without its key (the master-key rotation pass): its signature,
    /// which covers its key's id and `instance`, verifies.
    pub fn check_version_in(
        version: Unverified<KeyVersion>,
        instance: InstanceId,
        custody: &dyn Custody,
    ) -> Result<Self, CustodyError> {
        let version = version.0;
        custody.verify_record(&version.signed_bytes(instance), &version.signature)?;
        Ok(Verified(version))
    }
}

impl Verified<KmipAdapterRecord> {
    /// Verifies an adapter read for `instance`: its signature verifies and it belongs to the
    /// instance (`IntegrityFailure` otherwise).
    pub fn check_adapter(
        adapter: Unverified<KmipAdapterRecord>,
        instance: InstanceId,
        custody: &dyn Custody,
    ) -> Result<Self, CustodyError> {
        let adapter = Verified::check(adapter, custody)?;
        if adapter.instance != instance {
            return Err(CustodyError::IntegrityFailure);
        }
        Ok(adapter)
    }
}

impl Verified<KmipCertificateRecord> {
    /// Verifies a client certificate of `adapter`: its signature verifies and it belongs to the
    /// adapter and its instance (`IntegrityFailure` otherwise).
    pub fn check_certificate(
        cert: Unverified<KmipCertificateRecord>,
        adapter: &Verified<KmipAdapterRecord>,
        custody: &dyn Custody,
    ) -> Result<Self, CustodyError> {
        let cert = Verified::check(cert, custody)?;
        if cert.instance != adapter.instance || cert.adapter_id != adapter.id {
            return Err(CustodyError::IntegrityFailure);
        }
        Ok(cert)
    }
}

impl<T> Verified<T> {
    /// The verified record, to change (a changed record is signed again before it is stored).
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Signed for KeyRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        KeyRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for crate::AliasRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        crate::AliasRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for crate::InstancePolicy {
    fn signed_bytes(&self) -> Vec<u8> {
        crate::InstancePolicy::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for AccessPolicyRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        AccessPolicyRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for AuthorizationRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        AuthorizationRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for KmipAdapterRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        KmipAdapterRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for KmipCertificateRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        KmipCertificateRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for crate::KmipObjectRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        crate::KmipObjectRecord::signed_bytes(self)
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}
