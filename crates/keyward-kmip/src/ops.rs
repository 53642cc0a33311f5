//! The operations: each parses its request payload, works through the core's [`KmipSession`]
//! (which authorizes, audits, seals under the adapter's root key and signs) and builds its
//! response payload in the request's version.

use std::borrow::Cow;

use keyward_core::{
    KeyError, KmipClient, KmipError, KmipObjectFilter, KmipObjectRecord, KmipService, KmipSession,
    NewKmipObject, Secret, op,
};
use keyward_crypto::objects::{self as crypto, HmacHash, RsaHash, RsaScheme};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::attrs::{self, Attr};
use crate::enums::*;
use crate::message::{
    Failure, RequestItem, ResponseItem, SUPPORTED_OPERATIONS, SUPPORTED_VERSIONS, Version,
};
use crate::tag;
use crate::ttlv::{Ttlv, Value};

/// Most ids one Locate returns.
const MAX_LOCATE: u32 = 1_000;
/// Internal attributes (never shown to clients): what Get needs to rebuild an object.
const KEY_FORMAT: &str = "keyward:key-format";
const SECRET_DATA_TYPE: &str = "keyward:secret-data-type";
const OPAQUE_DATA_TYPE: &str = "keyward:opaque-data-type";
const CERTIFICATE_TYPE: &str = "keyward:certificate-type";

/// Runs the batch items of one request for `client`, in order, with the ID Placeholder carried
/// from one item to the next. After a failure, the rest run only when `continue_on_error`.
pub async fn run_batch(
    service: &KmipService,
    client: &KmipClient,
    version: Version,
    items: Vec<RequestItem>,
    continue_on_error: bool,
) -> Vec<ResponseItem> {
    let mut batch = Batch {
        service,
        client,
        version,
        last_id: None,
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let outcome = batch.item(&item).await;
        let failed = outcome.is_err();
        out.push(ResponseItem {
            operation: Some(item.operation),
            id: item.id,
            outcome,
        });
        if failed && !continue_on_error {
            break;
        }
    }
    out
}

struct Batch<'a> {
    service: &'a KmipService,
    client: &'a KmipClient,
    version: Version,
    last_id: Option<Uuid>,
}

fn uid(id: Uuid) -> Ttlv {
    Ttlv::new(tag::UNIQUE_IDENTIFIER, Value::TextString(id.to_string()))
}

fn text(t: u32, v: impl Into<String>) -> Ttlv {
    Ttlv::new(t, Value::TextString(v.into()))
}

fn enumeration(t: u32, v: u32) -> Ttlv {
    Ttlv::new(t, Value::Enumeration(v))
}

fn bytes(t: u32, v: Vec<u8>) -> Ttlv {
    Ttlv::new(t, Value::ByteString(v))
}

/// Maps a core failure to KMIP's reasons. Messages name the cause, never material.
fn failure(e: KmipError) -> Failure {
    use result_reason::*;
    match e {
        KmipError::ObjectNotFound => Failure::not_found(),
        KmipError::InvalidField(m) => Failure::invalid(m),
        KmipError::IntegrityFailure => Failure::new(
            GENERAL_FAILURE,
            "a stored record failed its integrity check",
        ),
        KmipError::Key(KeyError::InvalidCiphertext) => Failure::new(
            CRYPTOGRAPHIC_FAILURE,
            "the object's sealed material does not open under the adapter's root key",
        ),
        KmipError::Key(e @ (KeyError::InvalidState { .. } | KeyError::NotFound)) => {
            Failure::denied(format!("the adapter's root key cannot be used: {e}"))
        }
        KmipError::Key(KeyError::Forbidden(_)) => Failure::denied("not allowed"),
        e => Failure::new(GENERAL_FAILURE, e.to_string()),
    }
}

/// A core failure or a protocol one, inside a session.
enum Fail {
    Kmip(Failure),
    Core(KmipError),
}

impl From<KmipError> for Fail {
    fn from(e: KmipError) -> Self {
        Fail::Core(e)
    }
}

impl From<Failure> for Fail {
    fn from(f: Failure) -> Self {
        Fail::Kmip(f)
    }
}

impl From<KeyError> for Fail {
    fn from(e: KeyError) -> Self {
        Fail::Core(KmipError::Key(e))
    }
}

/// The client's failure back from the pipeline, with the reason the operation chose.
fn unrefuse(e: KmipError) -> Failure {
    match e {
        KmipError::Protocol(reason, message) => Failure::new(reason, message),
        e => failure(e),
    }
}

impl From<Fail> for KmipError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Kmip(f) => KmipError::Protocol(f.reason, f.message),
            Fail::Core(e) => e,
        }
    }
}

type R<T> = Result<T, Fail>;

/// An object's attributes, decoded.
fn object_attrs(o: &KmipObjectRecord) -> Result<Vec<Attr>, Failure> {
    attrs::from_json(&o.attributes)
}

fn internal(a: &Attr) -> bool {
    a.name.starts_with("keyward:")
}

fn internal_enum(list: &[Attr], name: &str) -> Option<u32> {
    attrs::first(list, name).and_then(Ttlv::as_enum)
}

/// A new object of type `ty` with `list` as its attributes: its initial state and its Locate
/// columns derived from them.
fn new_object(ty: u32, list: &[Attr]) -> NewKmipObject {
    let mut new = NewKmipObject {
        object_type: ty,
        state: initial_state(list),
        ..NewKmipObject::default()
    };
    set_columns(&mut new, list);
    new
}

/// Derives the Locate columns of an object from its attributes.
fn set_columns(o: &mut NewKmipObject, list: &[Attr]) {
    o.name = list
        .iter()
        .find(|a| a.name == "Name")
        .and_then(attrs::name_text)
        .map(str::to_owned);
    o.algorithm = attrs::first(list, "Cryptographic Algorithm").and_then(Ttlv::as_enum);
    o.length = attrs::first(list, "Cryptographic Length").and_then(Ttlv::as_int);
    o.object_group = attrs::first(list, "Object Group")
        .and_then(Ttlv::as_text)
        .map(str::to_owned);
    o.attributes = attrs::to_json(list);
}

fn update_columns(o: &mut KmipObjectRecord, list: &[Attr]) {
    let mut n = NewKmipObject::default();
    set_columns(&mut n, list);
    o.name = n.name;
    o.algorithm = n.algorithm;
    o.length = n.length;
    o.object_group = n.object_group;
    o.attributes = n.attributes;
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A client's attribute set, each checked settable; single-valued ones at most once.
fn client_attrs(sets: &[&Ttlv]) -> Result<Vec<Attr>, Failure> {
    let mut out: Vec<Attr> = Vec::new();
    for set in sets {
        for a in attrs::parse_set(set)? {
            attrs::check_settable(&a.name)?;
            if !attrs::multi(&a.name) && out.iter().any(|b| b.name == a.name) {
                return Err(Failure::invalid(format!("{} is given twice", a.name)));
            }
            out.push(a);
        }
    }
    Ok(out)
}

fn require_uid(t: &Ttlv, last: Option<Uuid>) -> Result<Uuid, Failure> {
    match t.child(tag::UNIQUE_IDENTIFIER).and_then(Ttlv::as_text) {
        Some(s) => s.parse().map_err(|_| Failure::not_found()),
        None => last.ok_or_else(|| Failure::missing("Unique Identifier")),
    }
}

fn usage_allows(list: &[Attr], bit: i32) -> Result<(), Failure> {
    match attrs::first(list, "Cryptographic Usage Mask").and_then(Ttlv::as_int) {
        Some(mask) if mask & bit == 0 => Err(Failure::denied(
            "the object's Cryptographic Usage Mask does not allow this operation",
        )),
        _ => Ok(()),
    }
}

/// A new object is Active when the client gave an Activation Date that has come, else
/// Pre-Active (KMIP 1.4 §3.24).
fn initial_state(list: &[Attr]) -> u8 {
    match attrs::first(list, "Activation Date").map(|v| &v.value) {
        Some(Value::DateTime(t)) if *t <= now() => state::ACTIVE,
        _ => state::PRE_ACTIVE,
    }
}

fn require_active(o: &KmipObjectRecord) -> Result<(), Failure> {
    if o.state == state::ACTIVE {
        Ok(())
    } else {
        Err(Failure::denied(format!(
            "the object is in state {} and must be Active",
            state_name(o.state)
        )))
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        state::PRE_ACTIVE => "Pre-Active",
        state::ACTIVE => "Active",
        state::DEACTIVATED => "Deactivated",
        state::COMPROMISED => "Compromised",
        state::DESTROYED => "Destroyed",
        _ => "Destroyed Compromised",
    }
}

fn destroyed(o: &KmipObjectRecord) -> bool {
    matches!(o.state, state::DESTROYED | state::DESTROYED_COMPROMISED)
}

impl Batch<'_> {
    async fn item(&mut self, item: &RequestItem) -> Result<Vec<Ttlv>, Failure> {
        use operation::*;
        let p = &item.payload;
        match item.operation {
            DISCOVER_VERSIONS => self.query(p, true).await,
            QUERY => self.query(p, false).await,
            CREATE => self.create(p).await,
            CREATE_KEY_PAIR => self.create_key_pair(p).await,
            REGISTER => self.register(p).await,
            GET => self.get(p).await,
            GET_ATTRIBUTES => self.get_attributes(p, false).await,
            GET_ATTRIBUTE_LIST => self.get_attributes(p, true).await,
            ADD_ATTRIBUTE | MODIFY_ATTRIBUTE | DELETE_ATTRIBUTE => {
                self.set_attribute(item.operation, p).await
            }
            LOCATE => self.locate(p).await,
            ACTIVATE | REVOKE | DESTROY => self.transition(item.operation, p).await,
            ENCRYPT | DECRYPT | SIGN | SIGNATURE_VERIFY | MAC => {
                self.crypto(item.operation, p).await
            }
            CHECK | GET_USAGE_ALLOCATION => self.check(p).await,
            op => Err(Failure::new(
                result_reason::OPERATION_NOT_SUPPORTED,
                format!("operation {op:#x} is not supported"),
            )),
        }
    }

    /// Runs `body` as `op` in a session, mapping failures back to KMIP's reasons.
    async fn session<T>(
        &self,
        op: &'static keyward_core::Op,
        body: impl AsyncFnOnce(&mut KmipSession<'_, '_>) -> R<T>,
    ) -> Result<T, Failure> {
        self.service
            .run(self.client, op, async |s| {
                body(s).await.map_err(KmipError::from)
            })
            .await
            .map_err(unrefuse)
    }

    async fn query(&mut self, p: &Ttlv, discover: bool) -> Result<Vec<Ttlv>, Failure> {
        let out = if discover {
            let asked: Vec<Version> = p
                .children(tag::PROTOCOL_VERSION)
                .filter_map(Version::from_ttlv)
                .collect();
            SUPPORTED_VERSIONS
                .iter()
                .filter(|v| asked.is_empty() || asked.contains(v))
                .map(|v| v.to_ttlv())
                .collect()
        } else {
            let mut out = Vec::new();
            for f in p.children(tag::QUERY_FUNCTION).filter_map(Ttlv::as_enum) {
                match f {
                    query_function::OPERATIONS => out.extend(
                        SUPPORTED_OPERATIONS
                            .iter()
                            .map(|o| enumeration(tag::OPERATION, *o)),
                    ),
                    query_function::OBJECTS => out.extend(
                        [
                            object_type::SYMMETRIC_KEY,
                            object_type::PUBLIC_KEY,
                            object_type::PRIVATE_KEY,
                            object_type::CERTIFICATE,
                            object_type::SECRET_DATA,
                            object_type::OPAQUE_OBJECT,
                        ]
                        .map(|o| enumeration(tag::OBJECT_TYPE, o)),
                    ),
                    query_function::SERVER_INFORMATION => {
                        out.push(text(tag::VENDOR_IDENTIFICATION, "Keyward"));
                        out.push(Ttlv::structure(
                            tag::SERVER_INFORMATION,
                            vec![text(
                                tag::SERVER_NAME,
                                concat!("Keyward ", env!("CARGO_PKG_VERSION")),
                            )],
                        ));
                    }
                    _ => {}
                }
            }
            out
        };
        self.session(&op::KMIP_QUERY, async |_| Ok(())).await?;
        Ok(out)
    }

    fn attr_sets<'p>(&self, p: &'p Ttlv, v1: u32, v2: u32) -> Vec<&'p Ttlv> {
        p.children(v1).chain(p.children(v2)).collect()
    }

    async fn create(&mut self, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let ty = p
            .child(tag::OBJECT_TYPE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| Failure::missing("Object Type"))?;
        if ty != object_type::SYMMETRIC_KEY {
            return Err(Failure::invalid(
                "Create makes symmetric keys: use Create Key Pair or Register for other objects",
            ));
        }
        let list = client_attrs(&self.attr_sets(p, tag::TEMPLATE_ATTRIBUTE, tag::ATTRIBUTES))?;
        let alg = attrs::first(&list, "Cryptographic Algorithm")
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| Failure::missing("Cryptographic Algorithm"))?;
        let bits = attrs::first(&list, "Cryptographic Length")
            .and_then(Ttlv::as_int)
            .ok_or_else(|| Failure::missing("Cryptographic Length"))?;
        check_symmetric(alg, bits)?;
        let material = keyward_crypto::random_secret(bits as usize / 8)
            .map_err(|_| Failure::new(result_reason::GENERAL_FAILURE, "no randomness"))?;
        let new = new_object(ty, &list);
        let obj = self
            .session(&op::KMIP_OBJECT_CREATE, async |s| {
                Ok(s.create(new, &material).await?)
            })
            .await?;
        self.last_id = Some(obj.id);
        Ok(vec![enumeration(tag::OBJECT_TYPE, ty), uid(obj.id)])
    }

    async fn create_key_pair(&mut self, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let common = client_attrs(&self.attr_sets(
            p,
            tag::COMMON_TEMPLATE_ATTRIBUTE,
            tag::COMMON_ATTRIBUTES,
        ))?;
        let private = client_attrs(&self.attr_sets(
            p,
            tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
            tag::PRIVATE_KEY_ATTRIBUTES,
        ))?;
        let public = client_attrs(&self.attr_sets(
            p,
            tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
            tag::PUBLIC_KEY_ATTRIBUTES,
        ))?;
        let find = |name: &str| {
            [&common, &private, &public]
                .into_iter()
                .find_map(|l| attrs::first(l, name))
        };
        let alg = find("Cryptographic Algorithm")
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| Failure::missing("Cryptographic Algorithm"))?;
        if alg != algorithm::RSA {
            return Err(Failure::unsupported("Create Key Pair makes RSA keys only"));
        }
        let bits = find("Cryptographic Length")
            .and_then(Ttlv::as_int)
            .ok_or_else(|| Failure::missing("Cryptographic Length"))?;
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(Failure::invalid("RSA keys are 2048, 3072 or 4096 bits"));
        }
        // RSA generation takes tens of milliseconds to seconds: off the async workers.
        let (private_der, public_der) =
            tokio::task::spawn_blocking(move || crypto::rsa_generate(bits as u32))
                .await
                .map_err(|_| Failure::new(result_reason::GENERAL_FAILURE, "key generation failed"))?
                .map_err(|_| {
                    Failure::new(result_reason::GENERAL_FAILURE, "key generation failed")
                })?;
        let (private_id, public_id) = (Uuid::new_v4(), Uuid::new_v4());
        let half = |own: &[Attr], ty: u32, link_type: u32, other: Uuid, format: u32| {
            let mut list: Vec<Attr> = common
                .iter()
                .chain(own)
                .filter(|a| {
                    !matches!(
                        a.name.as_str(),
                        "Cryptographic Algorithm" | "Cryptographic Length"
                    )
                })
                .cloned()
                .collect();
            list.push(attrs::plain(
                "Cryptographic Algorithm",
                Value::Enumeration(alg),
            ));
            list.push(attrs::plain("Cryptographic Length", Value::Integer(bits)));
            list.push(link(link_type, other));
            list.push(attrs::plain(KEY_FORMAT, Value::Enumeration(format)));
            new_object(ty, &list)
        };
        let mut private_new = half(
            &private,
            object_type::PRIVATE_KEY,
            LINK_PUBLIC_KEY,
            public_id,
            key_format::PKCS_8,
        );
        private_new.id = Some(private_id);
        let mut public_new = half(
            &public,
            object_type::PUBLIC_KEY,
            LINK_PRIVATE_KEY,
            private_id,
            key_format::PKCS_1,
        );
        public_new.id = Some(public_id);
        let public_secret = Secret::new(public_der);
        self.session(&op::KMIP_OBJECT_CREATE_KEY_PAIR, async |s| {
            s.create(private_new, &private_der).await?;
            s.create(public_new, &public_secret).await?;
            s.target(private_id);
            Ok(())
        })
        .await?;
        self.last_id = Some(private_id);
        Ok(vec![
            text(tag::PRIVATE_KEY_UNIQUE_IDENTIFIER, private_id.to_string()),
            text(tag::PUBLIC_KEY_UNIQUE_IDENTIFIER, public_id.to_string()),
        ])
    }

    async fn register(&mut self, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let ty = p
            .child(tag::OBJECT_TYPE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| Failure::missing("Object Type"))?;
        let mut list = client_attrs(&self.attr_sets(p, tag::TEMPLATE_ATTRIBUTE, tag::ATTRIBUTES))?;
        let (material, extra) = parse_object(ty, p)?;
        for a in extra {
            if let Some(pos) = list
                .iter()
                .position(|b| b.name == a.name && !attrs::multi(&a.name))
            {
                if list[pos].value != a.value && !a.name.starts_with("keyward:") {
                    return Err(Failure::invalid(format!(
                        "{} in the attributes does not match the object",
                        a.name
                    )));
                }
                list[pos] = a;
            } else {
                list.push(a);
            }
        }
        let new = new_object(ty, &list);
        let obj = self
            .session(&op::KMIP_OBJECT_REGISTER, async |s| {
                Ok(s.create(new, &material).await?)
            })
            .await?;
        self.last_id = Some(obj.id);
        Ok(vec![uid(obj.id)])
    }

    async fn get(&mut self, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let id = require_uid(p, self.last_id)?;
        let format = p.child(tag::KEY_FORMAT_TYPE).and_then(Ttlv::as_enum);
        let wrapping = p
            .child(tag::KEY_WRAPPING_SPECIFICATION)
            .map(parse_wrapping)
            .transpose()?;
        if p.child(tag::KEY_COMPRESSION_TYPE).is_some() {
            return Err(Failure::new(
                result_reason::KEY_COMPRESSION_TYPE_NOT_SUPPORTED,
                "key compression is not supported",
            ));
        }
        let (obj, material, wrapping_key) = self
            .session(&op::KMIP_OBJECT_GET, async |s| {
                let obj = s.object(id).await?;
                if destroyed(&obj) {
                    return Err(Failure::new(
                        result_reason::ITEM_NOT_FOUND,
                        "the object is destroyed",
                    )
                    .into());
                }
                let material = s.material(&obj).await?;
                let wrapping_key = match &wrapping {
                    Some(w) => {
                        let kek = s.object(w.key).await?;
                        s.target(id);
                        if destroyed(&kek)
                            || kek.object_type != object_type::SYMMETRIC_KEY
                            || kek.algorithm != Some(algorithm::AES)
                        {
                            return Err(Failure::invalid(
                                "the wrapping key must be an AES key that is not destroyed",
                            )
                            .into());
                        }
                        require_active(&kek)?;
                        usage_allows(&object_attrs(&kek)?, usage_mask::WRAP_KEY)?;
                        Some(s.material(&kek).await?)
                    }
                    None => None,
                };
                Ok((obj, material, wrapping_key))
            })
            .await?;
        let list = object_attrs(&obj)?;
        let mut object = build_object(&obj, &list, &material, format)?;
        if let (Some(w), Some(kek)) = (&wrapping, &wrapping_key) {
            wrap_key_value(&mut object, w, kek)?;
        }
        Ok(vec![
            enumeration(tag::OBJECT_TYPE, obj.object_type),
            uid(obj.id),
            object,
        ])
    }

    async fn get_attributes(&mut self, p: &Ttlv, names_only: bool) -> Result<Vec<Ttlv>, Failure> {
        let id = require_uid(p, self.last_id)?;
        let wanted: Vec<String> = p
            .children(tag::ATTRIBUTE_NAME)
            .filter_map(Ttlv::as_text)
            .map(str::to_owned)
            .chain(
                p.children(tag::ATTRIBUTE_REFERENCE)
                    .filter_map(|r| r.as_enum().and_then(attrs::name_of))
                    .map(str::to_owned),
            )
            .collect();
        let op = if names_only {
            &op::KMIP_OBJECT_GET_ATTRIBUTE_LIST
        } else {
            &op::KMIP_OBJECT_GET_ATTRIBUTES
        };
        let obj = self.session(op, async |s| Ok(s.object(id).await?)).await?;
        let mut all = server_attrs(&obj);
        all.extend(object_attrs(&obj)?.into_iter().filter(|a| !internal(a)));
        if !wanted.is_empty() {
            all.retain(|a| wanted.contains(&a.name));
        }
        let mut out = vec![uid(obj.id)];
        if names_only {
            let mut names: Vec<&str> = Vec::new();
            for a in &all {
                if !names.contains(&a.name.as_str()) {
                    names.push(&a.name);
                }
            }
            for n in names {
                if self.version.v2() {
                    if let Some(t) = attrs::tag_of(n) {
                        out.push(enumeration(tag::ATTRIBUTE_REFERENCE, t));
                    }
                } else {
                    out.push(text(tag::ATTRIBUTE_NAME, n));
                }
            }
        } else if self.version.v2() {
            out.push(Ttlv::structure(
                tag::ATTRIBUTES,
                attrs::encode(&all, self.version),
            ));
        } else {
            out.extend(attrs::encode(&all, self.version));
        }
        Ok(out)
    }

    async fn set_attribute(&mut self, operation: u32, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let id = require_uid(p, self.last_id)?;
        let v2 = self.version.v2();
        // What the client names: the attribute to add, the new value, or the one to delete.
        let (attr, index) = if v2 {
            let item = p
                .child(tag::NEW_ATTRIBUTE)
                .or_else(|| p.child(tag::CURRENT_ATTRIBUTE))
                .and_then(|t| t.items().first())
                .ok_or_else(|| Failure::missing("New Attribute"))?;
            (attrs::parse_v2(item)?, None)
        } else if operation == operation::DELETE_ATTRIBUTE {
            let name = p
                .child(tag::ATTRIBUTE_NAME)
                .and_then(Ttlv::as_text)
                .ok_or_else(|| Failure::missing("Attribute Name"))?;
            let index = p.child(tag::ATTRIBUTE_INDEX).and_then(Ttlv::as_int);
            (attrs::plain(name, Value::Boolean(false)), index)
        } else {
            let t = p
                .child(tag::ATTRIBUTE)
                .ok_or_else(|| Failure::missing("Attribute"))?;
            attrs::parse_v1(t)?
        };
        attrs::check_settable(&attr.name)?;
        if matches!(
            attr.name.as_str(),
            "Cryptographic Algorithm" | "Cryptographic Length"
        ) {
            return Err(Failure::denied(format!("{} cannot be changed", attr.name)));
        }
        let current = if v2 && operation == operation::MODIFY_ATTRIBUTE {
            p.child(tag::CURRENT_ATTRIBUTE)
                .and_then(|t| t.items().first())
                .map(attrs::parse_v2)
                .transpose()?
        } else {
            None
        };
        let version = self.version;
        let shown = self
            .session(&op::KMIP_OBJECT_SET_ATTRIBUTE, async |s| {
                let mut obj = s.object(id).await?;
                if destroyed(&obj) {
                    return Err(Failure::not_found().into());
                }
                let mut list = object_attrs(&obj)?;
                let same: Vec<usize> = list
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.name == attr.name)
                    .map(|(i, _)| i)
                    .collect();
                let pick = |list: &[Attr]| -> Result<usize, Failure> {
                    let at = match (&current, index) {
                        (Some(c), _) => same.iter().copied().find(|i| list[*i].value == c.value),
                        (None, Some(i)) => {
                            usize::try_from(i).ok().and_then(|i| same.get(i).copied())
                        }
                        (None, None) => same.first().copied(),
                    };
                    at.ok_or_else(|| {
                        Failure::new(
                            result_reason::ITEM_NOT_FOUND,
                            format!("the object has no such {}", attr.name),
                        )
                    })
                };
                let shown_index;
                match operation {
                    operation::ADD_ATTRIBUTE => {
                        if !attrs::multi(&attr.name) && !same.is_empty() {
                            return Err(Failure::new(
                                result_reason::ILLEGAL_OPERATION,
                                format!("the object already has a {}", attr.name),
                            )
                            .into());
                        }
                        shown_index = same.len();
                        list.push(attr.clone());
                    }
                    operation::MODIFY_ATTRIBUTE => {
                        let at = pick(&list)?;
                        shown_index = same.iter().position(|i| *i == at).unwrap_or(0);
                        list[at].value = attr.value.clone();
                    }
                    _ => {
                        let at = pick(&list)?;
                        shown_index = same.iter().position(|i| *i == at).unwrap_or(0);
                        list.remove(at);
                    }
                }
                update_columns(&mut obj, &list);
                s.update(obj).await?;
                Ok(shown_index)
            })
            .await?;
        let mut out = vec![uid(id)];
        if operation != operation::DELETE_ATTRIBUTE && !version.v2() {
            let mut fields = vec![text(tag::ATTRIBUTE_NAME, attr.name.clone())];
            fields.push(Ttlv::new(
                tag::ATTRIBUTE_INDEX,
                Value::Integer(shown as i32),
            ));
            fields.push(attr.value);
            out.push(Ttlv::structure(tag::ATTRIBUTE, fields));
        }
        Ok(out)
    }

    async fn locate(&mut self, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let mut filter = KmipObjectFilter {
            limit: MAX_LOCATE,
            ..KmipObjectFilter::default()
        };
        if let Some(m) = p.child(tag::MAXIMUM_ITEMS).and_then(Ttlv::as_int) {
            if m <= 0 {
                return Err(Failure::invalid("Maximum Items must be positive"));
            }
            filter.limit = (m as u32).min(MAX_LOCATE);
        }
        if let Some(o) = p.child(tag::OFFSET_ITEMS).and_then(Ttlv::as_int) {
            filter.offset =
                u32::try_from(o).map_err(|_| Failure::invalid("Offset Items is negative"))?;
        }
        let mut criteria: Vec<Attr> = Vec::new();
        for a in p.children(tag::ATTRIBUTE) {
            criteria.push(attrs::parse_v1(a)?.0);
        }
        for set in p.children(tag::ATTRIBUTES) {
            for a in set.items() {
                criteria.push(attrs::parse_v2(a)?);
            }
        }
        for c in criteria {
            let v = &c.value;
            let bad = || Failure::invalid(format!("{} has the wrong type", c.name));
            match c.name.as_str() {
                "Object Type" => filter.object_type = Some(v.as_enum().ok_or_else(bad)?),
                "State" => {
                    filter.state = Some(
                        v.as_enum()
                            .and_then(|s| u8::try_from(s).ok())
                            .ok_or_else(bad)?,
                    )
                }
                "Name" => {
                    filter.name = Some(attrs::name_text(&c).ok_or_else(bad)?.to_owned());
                }
                "Cryptographic Algorithm" => filter.algorithm = Some(v.as_enum().ok_or_else(bad)?),
                "Cryptographic Length" => filter.length = Some(v.as_int().ok_or_else(bad)?),
                "Object Group" => {
                    filter.object_group = Some(v.as_text().ok_or_else(bad)?.to_owned())
                }
                other => {
                    return Err(Failure::unsupported(format!(
                        "Locate by {other} is not supported"
                    )));
                }
            }
        }
        let ids = self
            .session(&op::KMIP_OBJECT_LOCATE, async |s| {
                Ok(s.locate(&filter).await?)
            })
            .await?;
        if let Some(first) = ids.first() {
            self.last_id = Some(*first);
        }
        Ok(ids.into_iter().map(uid).collect())
    }

    async fn transition(&mut self, operation: u32, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let id = require_uid(p, self.last_id)?;
        let reason = p
            .child(tag::REVOCATION_REASON)
            .and_then(|r| r.child(tag::REVOCATION_REASON_CODE))
            .and_then(Ttlv::as_enum);
        if operation == operation::REVOKE && reason.is_none() {
            return Err(Failure::missing("Revocation Reason"));
        }
        let op = match operation {
            operation::ACTIVATE => &op::KMIP_OBJECT_ACTIVATE,
            operation::REVOKE => &op::KMIP_OBJECT_REVOKE,
            _ => &op::KMIP_OBJECT_DESTROY,
        };
        self.session(op, async |s| {
            let mut obj = s.object(id).await?;
            if destroyed(&obj) {
                return Err(Failure::not_found().into());
            }
            let mut list = object_attrs(&obj)?;
            let set_date = |list: &mut Vec<Attr>, name: &str| {
                list.retain(|a| a.name != name);
                list.push(attrs::plain(name, Value::DateTime(now())));
            };
            match operation {
                operation::ACTIVATE => {
                    if obj.state != state::PRE_ACTIVE {
                        return Err(Failure::denied(format!(
                            "the object is {} and only a Pre-Active object can be activated",
                            state_name(obj.state)
                        ))
                        .into());
                    }
                    obj.state = state::ACTIVE;
                    set_date(&mut list, "Activation Date");
                }
                operation::REVOKE => {
                    let code = reason.unwrap_or(1);
                    if matches!(
                        code,
                        revocation_reason::KEY_COMPROMISE | revocation_reason::CA_COMPROMISE
                    ) {
                        obj.state = state::COMPROMISED;
                        set_date(&mut list, "Compromise Date");
                    } else {
                        if obj.state == state::COMPROMISED {
                            return Err(Failure::denied("the object is Compromised").into());
                        }
                        obj.state = state::DEACTIVATED;
                        set_date(&mut list, "Deactivation Date");
                    }
                    list.retain(|a| a.name != "Revocation Reason");
                    list.push(Attr {
                        name: "Revocation Reason".into(),
                        value: Ttlv::structure(
                            tag::ATTRIBUTE_VALUE,
                            vec![enumeration(tag::REVOCATION_REASON_CODE, code)],
                        ),
                    });
                }
                _ => {
                    if obj.state == state::ACTIVE {
                        return Err(Failure::denied(
                            "the object is Active: revoke it before destroying it",
                        )
                        .into());
                    }
                    obj.state = if obj.state == state::COMPROMISED {
                        state::DESTROYED_COMPROMISED
                    } else {
                        state::DESTROYED
                    };
                    set_date(&mut list, "Destroy Date");
                }
            }
            update_columns(&mut obj, &list);
            s.update(obj).await?;
            Ok(())
        })
        .await?;
        Ok(vec![uid(id)])
    }

    async fn check(&mut self, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let id = require_uid(p, self.last_id)?;
        let mask = p
            .child(tag::CRYPTOGRAPHIC_USAGE_MASK)
            .and_then(Ttlv::as_int);
        self.session(&op::KMIP_OBJECT_CHECK, async |s| {
            let obj = s.object(id).await?;
            if destroyed(&obj) {
                return Err(Failure::not_found().into());
            }
            if let Some(m) = mask {
                usage_allows(&object_attrs(&obj)?, m)?;
            }
            Ok(())
        })
        .await?;
        Ok(vec![uid(id)])
    }

    async fn crypto(&mut self, operation: u32, p: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
        let id = require_uid(p, self.last_id)?;
        let data = p
            .child(tag::DATA)
            .and_then(Ttlv::as_bytes)
            .map(<[u8]>::to_vec);
        let params = p.child(tag::CRYPTOGRAPHIC_PARAMETERS).cloned();
        let payload = p.clone();
        self.session(&op::KMIP_OBJECT_CRYPTO, async |s| {
            let obj = s.object(id).await?;
            if destroyed(&obj) {
                return Err(Failure::not_found().into());
            }
            require_active(&obj)?;
            let list = object_attrs(&obj)?;
            let data = data.ok_or_else(|| Failure::missing("Data"))?;
            let params = params.as_ref();
            let param = |t: u32| params.and_then(|c| c.child(t)).and_then(Ttlv::as_enum);
            let material = s.material(&obj).await?;
            let out = match operation {
                operation::ENCRYPT | operation::DECRYPT => {
                    cipher(operation, &obj, &list, &material, &data, &param, &payload)?
                }
                operation::SIGN | operation::SIGNATURE_VERIFY => {
                    signature(operation, &obj, &list, &material, &data, &param, &payload)?
                }
                _ => {
                    if obj.object_type != object_type::SYMMETRIC_KEY {
                        return Err(Failure::invalid("MAC needs a symmetric key").into());
                    }
                    usage_allows(&list, usage_mask::MAC_GENERATE)?;
                    let alg = param(tag::CRYPTOGRAPHIC_ALGORITHM)
                        .or(obj.algorithm)
                        .ok_or_else(|| Failure::missing("Cryptographic Algorithm"))?;
                    let hash = match alg {
                        algorithm::HMAC_SHA256 => HmacHash::Sha256,
                        algorithm::HMAC_SHA384 => HmacHash::Sha384,
                        algorithm::HMAC_SHA512 => HmacHash::Sha512,
                        _ => {
                            return Err(Failure::unsupported(
                                "MAC supports HMAC-SHA256, HMAC-SHA384 and HMAC-SHA512",
                            )
                            .into());
                        }
                    };
                    vec![bytes(tag::MAC_DATA, crypto::hmac(hash, &material, &data))]
                }
            };
            Ok(out)
        })
        .await
        .map(|out| {
            let mut v = vec![uid(id)];
            v.extend(out);
            v
        })
    }
}

/// What a Key Wrapping Specification asks for: the AES key to wrap with, and the mode.
struct Wrapping {
    key: Uuid,
    padded: bool,
}

/// Parses a Key Wrapping Specification: wrapping method Encrypt with an AES key, AES Key Wrap
/// (RFC 3394, the default) or AES Key Wrap with Padding (RFC 5649), no encoding.
fn parse_wrapping(spec: &Ttlv) -> Result<Wrapping, Failure> {
    const ENCRYPT: u32 = 1;
    const NO_ENCODING: u32 = 1;
    const NIST_KEY_WRAP: u32 = 13;
    const AES_KEY_WRAP_PADDING: u32 = 12;
    if spec.child(tag::WRAPPING_METHOD).and_then(Ttlv::as_enum) != Some(ENCRYPT) {
        return Err(Failure::unsupported("keys are wrapped by encryption only"));
    }
    if spec.child(tag::MAC_SIGNATURE_KEY_INFORMATION).is_some() {
        return Err(Failure::unsupported(
            "MAC or signature over a wrapped key is not offered",
        ));
    }
    if spec
        .child(tag::ENCODING_OPTION)
        .and_then(Ttlv::as_enum)
        .is_some_and(|e| e != NO_ENCODING)
    {
        return Err(Failure::unsupported("wrapped keys are not TTLV-encoded"));
    }
    let info = spec
        .child(tag::ENCRYPTION_KEY_INFORMATION)
        .ok_or_else(|| Failure::missing("Encryption Key Information"))?;
    let key = info
        .child(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .ok_or_else(|| Failure::missing("the wrapping key's Unique Identifier"))?
        .parse()
        .map_err(|_| Failure::not_found())?;
    let padded = match info
        .child(tag::CRYPTOGRAPHIC_PARAMETERS)
        .and_then(|c| c.child(tag::BLOCK_CIPHER_MODE))
        .and_then(Ttlv::as_enum)
    {
        None | Some(NIST_KEY_WRAP) => false,
        Some(AES_KEY_WRAP_PADDING) => true,
        Some(_) => {
            return Err(Failure::unsupported(
                "keys are wrapped with AES Key Wrap (NIST) or AES Key Wrap with Padding",
            ));
        }
    };
    Ok(Wrapping { key, padded })
}

/// Replaces an object's Key Value with its key material wrapped under `kek`, and says how in its
/// Key Wrapping Data.
fn wrap_key_value(object: &mut Ttlv, w: &Wrapping, kek: &Secret) -> Result<(), Failure> {
    let Value::Structure(fields) = &mut object.value else {
        return Err(Failure::invalid("this object has no key to wrap"));
    };
    let block = fields
        .iter_mut()
        .find(|f| f.tag == tag::KEY_BLOCK)
        .ok_or_else(|| Failure::invalid("only objects with a Key Block can be wrapped"))?;
    let Value::Structure(block_fields) = &mut block.value else {
        return Err(Failure::invalid(
            "only objects with a Key Block can be wrapped",
        ));
    };
    let value = block_fields
        .iter_mut()
        .find(|f| f.tag == tag::KEY_VALUE)
        .ok_or_else(|| Failure::invalid("only objects with a Key Value can be wrapped"))?;
    let material = value
        .child(tag::KEY_MATERIAL)
        .and_then(Ttlv::as_bytes)
        .ok_or_else(|| Failure::invalid("a Transparent key cannot be wrapped: ask for Raw"))?;
    let material = Secret::from_slice(material);
    let wrapped = if w.padded {
        keyward_crypto::kwp_wrap(kek, &material)
    } else {
        crypto::kw_wrap(kek, &material)
    }
    .map_err(|_| {
        Failure::invalid(
            "the key cannot be wrapped this way (AES Key Wrap takes whole 8-byte blocks of 16 \
             bytes or more; a 128- or 256-bit wrapping key)",
        )
    })?;
    // The wrapped bytes go in Key Material inside the Key Value structure, where PyKMIP (client
    // and server) puts and reads them; the specification also allows a bare Byte String.
    *value = Ttlv::structure(tag::KEY_VALUE, vec![bytes(tag::KEY_MATERIAL, wrapped)]);
    let mode = if w.padded { 12 } else { 13 };
    block_fields.push(Ttlv::structure(
        tag::KEY_WRAPPING_DATA,
        vec![
            enumeration(tag::WRAPPING_METHOD, 1),
            Ttlv::structure(
                tag::ENCRYPTION_KEY_INFORMATION,
                vec![
                    uid(w.key),
                    Ttlv::structure(
                        tag::CRYPTOGRAPHIC_PARAMETERS,
                        vec![enumeration(tag::BLOCK_CIPHER_MODE, mode)],
                    ),
                ],
            ),
            enumeration(tag::ENCODING_OPTION, 1),
        ],
    ));
    Ok(())
}

const LINK_PUBLIC_KEY: u32 = 0x102;
const LINK_PRIVATE_KEY: u32 = 0x103;

fn link(link_type: u32, other: Uuid) -> Attr {
    Attr {
        name: "Link".into(),
        value: Ttlv::structure(
            tag::ATTRIBUTE_VALUE,
            vec![
                enumeration(tag::LINK_TYPE, link_type),
                text(tag::LINKED_OBJECT_IDENTIFIER, other.to_string()),
            ],
        ),
    }
}

fn check_symmetric(alg: u32, bits: i32) -> Result<(), Failure> {
    match alg {
        algorithm::AES if [128, 192, 256].contains(&bits) => Ok(()),
        algorithm::AES => Err(Failure::invalid("AES keys are 128, 192 or 256 bits")),
        algorithm::HMAC_SHA1
        | algorithm::HMAC_SHA256
        | algorithm::HMAC_SHA384
        | algorithm::HMAC_SHA512
            if (128..=4096).contains(&bits) && bits % 8 == 0 =>
        {
            Ok(())
        }
        algorithm::HMAC_SHA1
        | algorithm::HMAC_SHA256
        | algorithm::HMAC_SHA384
        | algorithm::HMAC_SHA512 => Err(Failure::invalid(
            "HMAC keys are 128 to 4096 bits, whole bytes",
        )),
        _ => Err(Failure::unsupported(
            "symmetric keys are AES or HMAC-SHA1/256/384/512",
        )),
    }
}

/// The attributes the server keeps for an object.
fn server_attrs(o: &KmipObjectRecord) -> Vec<Attr> {
    let v = vec![
        attrs::plain("Unique Identifier", Value::TextString(o.id.to_string())),
        attrs::plain("Object Type", Value::Enumeration(o.object_type)),
        attrs::plain("State", Value::Enumeration(u32::from(o.state))),
        attrs::plain(
            "Initial Date",
            Value::DateTime(o.created_at.unix_timestamp()),
        ),
        attrs::plain(
            "Last Change Date",
            Value::DateTime(o.updated_at.unwrap_or(o.created_at).unix_timestamp()),
        ),
    ];
    v
}

/// The material and the attributes an object brought (its type-specific fields).
fn parse_object(ty: u32, p: &Ttlv) -> Result<(Secret, Vec<Attr>), Failure> {
    let object_tag = match ty {
        object_type::SYMMETRIC_KEY => tag::SYMMETRIC_KEY,
        object_type::PRIVATE_KEY => tag::PRIVATE_KEY,
        object_type::PUBLIC_KEY => tag::PUBLIC_KEY,
        object_type::CERTIFICATE => tag::CERTIFICATE,
        object_type::SECRET_DATA => tag::SECRET_DATA,
        object_type::OPAQUE_OBJECT => tag::OPAQUE_OBJECT,
        _ => {
            return Err(Failure::unsupported(
                "this Object Type cannot be registered",
            ));
        }
    };
    let o = p
        .child(object_tag)
        .ok_or_else(|| Failure::missing("the object"))?;
    let mut extra = Vec::new();
    match ty {
        object_type::CERTIFICATE => {
            let ct = o
                .child(tag::CERTIFICATE_TYPE)
                .and_then(Ttlv::as_enum)
                .ok_or_else(|| Failure::missing("Certificate Type"))?;
            if ct != 1 {
                return Err(Failure::unsupported("only X.509 certificates"));
            }
            let der = o
                .child(tag::CERTIFICATE_VALUE)
                .and_then(Ttlv::as_bytes)
                .ok_or_else(|| Failure::missing("Certificate Value"))?;
            match x509_parser::parse_x509_certificate(der) {
                Ok(([], _)) => {}
                _ => {
                    return Err(Failure::invalid(
                        "Certificate Value is not an X.509 certificate",
                    ));
                }
            }
            extra.push(attrs::plain(CERTIFICATE_TYPE, Value::Enumeration(ct)));
            return Ok((Secret::from_slice(der), extra));
        }
        object_type::OPAQUE_OBJECT => {
            let t = o
                .child(tag::OPAQUE_DATA_TYPE)
                .and_then(Ttlv::as_enum)
                .ok_or_else(|| Failure::missing("Opaque Data Type"))?;
            let v = o
                .child(tag::OPAQUE_DATA_VALUE)
                .and_then(Ttlv::as_bytes)
                .ok_or_else(|| Failure::missing("Opaque Data Value"))?;
            extra.push(attrs::plain(OPAQUE_DATA_TYPE, Value::Enumeration(t)));
            return Ok((Secret::from_slice(v), extra));
        }
        _ => {}
    }
    if ty == object_type::SECRET_DATA {
        let t = o
            .child(tag::SECRET_DATA_TYPE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| Failure::missing("Secret Data Type"))?;
        extra.push(attrs::plain(SECRET_DATA_TYPE, Value::Enumeration(t)));
    }
    let block = o
        .child(tag::KEY_BLOCK)
        .ok_or_else(|| Failure::missing("Key Block"))?;
    if block.child(tag::KEY_WRAPPING_DATA).is_some() {
        return Err(Failure::unsupported(
            "registering wrapped keys is not supported",
        ));
    }
    if block.child(tag::KEY_COMPRESSION_TYPE).is_some() {
        return Err(Failure::new(
            result_reason::KEY_COMPRESSION_TYPE_NOT_SUPPORTED,
            "key compression is not supported",
        ));
    }
    let format = block
        .child(tag::KEY_FORMAT_TYPE)
        .and_then(Ttlv::as_enum)
        .ok_or_else(|| Failure::missing("Key Format Type"))?;
    let value = block
        .child(tag::KEY_VALUE)
        .ok_or_else(|| Failure::missing("Key Value"))?;
    let km = value
        .child(tag::KEY_MATERIAL)
        .ok_or_else(|| Failure::missing("Key Material"))?;
    let raw = match (format, &km.value) {
        (key_format::TRANSPARENT_SYMMETRIC_KEY, Value::Structure(_)) => km
            .child(tag::KEY)
            .and_then(Ttlv::as_bytes)
            .ok_or_else(|| Failure::missing("Key"))?,
        (_, Value::ByteString(b)) => b.as_slice(),
        _ => {
            return Err(Failure::new(
                result_reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                "this Key Format Type is not supported for registration",
            ));
        }
    };
    if raw.is_empty() {
        return Err(Failure::invalid("the key material is empty"));
    }
    let alg = block
        .child(tag::CRYPTOGRAPHIC_ALGORITHM)
        .and_then(Ttlv::as_enum);
    let len = block
        .child(tag::CRYPTOGRAPHIC_LENGTH)
        .and_then(Ttlv::as_int);
    let unsupported_format = || {
        Failure::new(
            result_reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
            "this Key Format Type is not supported for this object",
        )
    };
    let material = match ty {
        object_type::SYMMETRIC_KEY => {
            if !matches!(
                format,
                key_format::RAW | key_format::TRANSPARENT_SYMMETRIC_KEY
            ) {
                return Err(unsupported_format());
            }
            let alg = alg.ok_or_else(|| Failure::missing("Cryptographic Algorithm"))?;
            let bits = (raw.len() * 8) as i32;
            if len.is_some_and(|l| l != bits) {
                return Err(Failure::invalid(
                    "Cryptographic Length does not match the key",
                ));
            }
            check_symmetric(alg, bits)?;
            extra.push(attrs::plain(
                "Cryptographic Algorithm",
                Value::Enumeration(alg),
            ));
            extra.push(attrs::plain("Cryptographic Length", Value::Integer(bits)));
            Secret::from_slice(raw)
        }
        object_type::PRIVATE_KEY => {
            if !matches!(format, key_format::PKCS_1 | key_format::PKCS_8) {
                return Err(unsupported_format());
            }
            let der = Secret::from_slice(raw);
            let (bits, _) = crypto::rsa_private_info(&der)
                .map_err(|_| Failure::invalid("Key Material is not an RSA private key"))?;
            extra.push(attrs::plain(
                "Cryptographic Algorithm",
                Value::Enumeration(algorithm::RSA),
            ));
            extra.push(attrs::plain(
                "Cryptographic Length",
                Value::Integer(bits as i32),
            ));
            extra.push(attrs::plain(KEY_FORMAT, Value::Enumeration(format)));
            crypto::rsa_private_pkcs8(&der)
                .map_err(|_| Failure::invalid("Key Material is not an RSA private key"))?
        }
        object_type::PUBLIC_KEY => {
            if !matches!(format, key_format::PKCS_1 | key_format::X_509) {
                return Err(unsupported_format());
            }
            let (bits, _, _) = crypto::rsa_public_info(raw)
                .map_err(|_| Failure::invalid("Key Material is not an RSA public key"))?;
            extra.push(attrs::plain(
                "Cryptographic Algorithm",
                Value::Enumeration(algorithm::RSA),
            ));
            extra.push(attrs::plain(
                "Cryptographic Length",
                Value::Integer(bits as i32),
            ));
            extra.push(attrs::plain(KEY_FORMAT, Value::Enumeration(format)));
            Secret::new(
                crypto::rsa_public_spki(raw)
                    .map_err(|_| Failure::invalid("Key Material is not an RSA public key"))?,
            )
        }
        _ => {
            if !matches!(format, key_format::OPAQUE | key_format::RAW) {
                return Err(unsupported_format());
            }
            Secret::from_slice(raw)
        }
    };
    Ok((material, extra))
}

/// Rebuilds an object's structure for Get, in `format` when the client asks for one.
fn build_object(
    o: &KmipObjectRecord,
    list: &[Attr],
    material: &Secret,
    format: Option<u32>,
) -> Result<Ttlv, Failure> {
    let not_supported = || {
        Failure::new(
            result_reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
            "this Key Format Type is not offered for this object",
        )
    };
    let key_block = |format: u32, material: Ttlv| {
        let mut fields = vec![
            enumeration(tag::KEY_FORMAT_TYPE, format),
            Ttlv::structure(tag::KEY_VALUE, vec![material]),
        ];
        if let Some(a) = o.algorithm {
            fields.push(enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, a));
        }
        if let Some(l) = o.length {
            fields.push(Ttlv::new(tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(l)));
        }
        Ttlv::structure(tag::KEY_BLOCK, fields)
    };
    let raw = |b: &[u8]| bytes(tag::KEY_MATERIAL, b.to_vec());
    Ok(match o.object_type {
        object_type::SYMMETRIC_KEY => {
            let block = match format.unwrap_or(key_format::RAW) {
                key_format::RAW => key_block(key_format::RAW, raw(material.expose())),
                key_format::TRANSPARENT_SYMMETRIC_KEY => key_block(
                    key_format::TRANSPARENT_SYMMETRIC_KEY,
                    Ttlv::structure(
                        tag::KEY_MATERIAL,
                        vec![bytes(tag::KEY, material.expose().to_vec())],
                    ),
                ),
                _ => return Err(not_supported()),
            };
            Ttlv::structure(tag::SYMMETRIC_KEY, vec![block])
        }
        object_type::PRIVATE_KEY => {
            let stored = internal_enum(list, KEY_FORMAT).unwrap_or(key_format::PKCS_8);
            let (format, der) = asymmetric_der(
                material.expose(),
                format.unwrap_or(stored),
                key_format::PKCS_8,
                pkcs8_to_pkcs1,
            )
            .ok_or_else(not_supported)?;
            Ttlv::structure(tag::PRIVATE_KEY, vec![key_block(format, raw(&der))])
        }
        object_type::PUBLIC_KEY => {
            let stored = internal_enum(list, KEY_FORMAT).unwrap_or(key_format::PKCS_1);
            let (format, der) = asymmetric_der(
                material.expose(),
                format.unwrap_or(stored),
                key_format::X_509,
                spki_to_pkcs1,
            )
            .ok_or_else(not_supported)?;
            Ttlv::structure(tag::PUBLIC_KEY, vec![key_block(format, raw(&der))])
        }
        object_type::CERTIFICATE => {
            if format.is_some_and(|f| f != key_format::X_509) {
                return Err(not_supported());
            }
            Ttlv::structure(
                tag::CERTIFICATE,
                vec![
                    enumeration(
                        tag::CERTIFICATE_TYPE,
                        internal_enum(list, CERTIFICATE_TYPE).unwrap_or(1),
                    ),
                    bytes(tag::CERTIFICATE_VALUE, material.expose().to_vec()),
                ],
            )
        }
        object_type::SECRET_DATA => {
            if format.is_some_and(|f| f != key_format::OPAQUE) {
                return Err(not_supported());
            }
            Ttlv::structure(
                tag::SECRET_DATA,
                vec![
                    enumeration(
                        tag::SECRET_DATA_TYPE,
                        internal_enum(list, SECRET_DATA_TYPE).unwrap_or(1),
                    ),
                    key_block(key_format::OPAQUE, raw(material.expose())),
                ],
            )
        }
        _ => Ttlv::structure(
            tag::OPAQUE_OBJECT,
            vec![
                enumeration(
                    tag::OPAQUE_DATA_TYPE,
                    internal_enum(list, OPAQUE_DATA_TYPE).unwrap_or(0x8000_0000),
                ),
                bytes(tag::OPAQUE_DATA_VALUE, material.expose().to_vec()),
            ],
        ),
    })
}

/// An RSA key's DER in `wanted` format: as stored when `wanted` is the form it is kept in
/// (`native`: PKCS #8 for a private key, X.509 SubjectPublicKeyInfo for a public one), or
/// converted to PKCS #1 by `to_pkcs1`; `None` for any other format.
fn asymmetric_der(
    der: &[u8],
    wanted: u32,
    native: u32,
    to_pkcs1: fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<(u32, Cow<'_, [u8]>)> {
    if wanted == native {
        Some((native, Cow::Borrowed(der)))
    } else if wanted == key_format::PKCS_1 {
        Some((key_format::PKCS_1, Cow::Owned(to_pkcs1(der)?)))
    } else {
        None
    }
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo.
fn spki_to_pkcs1(spki: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).ok()?;
    Some(info.subject_public_key.data.to_vec())
}

/// The RSAPrivateKey inside a PKCS #8 PrivateKeyInfo (its third field, an OCTET STRING).
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::der_parser::der::parse_der;
    let (_, seq) = parse_der(pkcs8).ok()?;
    let items = seq.as_sequence().ok()?;
    items.get(2)?.as_slice().ok().map(<[u8]>::to_vec)
}

type Param<'a> = dyn Fn(u32) -> Option<u32> + 'a;

fn cipher(
    operation: u32,
    o: &KmipObjectRecord,
    list: &[Attr],
    key: &Secret,
    data: &[u8],
    param: &Param<'_>,
    p: &Ttlv,
) -> Result<Vec<Ttlv>, Failure> {
    let encrypt = operation == operation::ENCRYPT;
    if o.object_type != object_type::SYMMETRIC_KEY || o.algorithm != Some(algorithm::AES) {
        return Err(Failure::invalid("Encrypt and Decrypt need an AES key"));
    }
    usage_allows(
        list,
        if encrypt {
            usage_mask::ENCRYPT
        } else {
            usage_mask::DECRYPT
        },
    )?;
    let mode = param(tag::BLOCK_CIPHER_MODE)
        .ok_or_else(|| Failure::missing("Cryptographic Parameters' Block Cipher Mode"))?;
    let iv = p.child(tag::IV_COUNTER_NONCE).and_then(Ttlv::as_bytes);
    let crypto_failure = || Failure::new(result_reason::CRYPTOGRAPHIC_FAILURE, "decryption failed");
    let mut out = Vec::new();
    match mode {
        block_cipher_mode::GCM => {
            let nonce: [u8; crypto::GCM_NONCE_LEN] = match iv {
                Some(iv) => iv
                    .try_into()
                    .map_err(|_| Failure::invalid("the AES-GCM nonce is 12 bytes"))?,
                None if encrypt => keyward_crypto::random_array()
                    .map_err(|_| Failure::new(result_reason::GENERAL_FAILURE, "no randomness"))?,
                None => return Err(Failure::missing("IV/Counter/Nonce")),
            };
            if let Some(t) = p
                .child(tag::CRYPTOGRAPHIC_PARAMETERS)
                .and_then(|c| c.child(tag::TAG_LENGTH))
                .and_then(Ttlv::as_int)
                && t != crypto::GCM_TAG_LEN as i32
            {
                return Err(Failure::invalid("the AES-GCM tag is 16 bytes"));
            }
            let aad = p
                .child(tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA)
                .and_then(Ttlv::as_bytes)
                .unwrap_or_default();
            if encrypt {
                let (ct, t) = crypto::gcm_encrypt(key, &nonce, aad, data).map_err(|_| {
                    Failure::new(result_reason::CRYPTOGRAPHIC_FAILURE, "encryption failed")
                })?;
                out.push(bytes(tag::DATA, ct));
                if iv.is_none() {
                    out.push(bytes(tag::IV_COUNTER_NONCE, nonce.to_vec()));
                }
                out.push(bytes(tag::AUTHENTICATED_ENCRYPTION_TAG, t.to_vec()));
            } else {
                let t = p
                    .child(tag::AUTHENTICATED_ENCRYPTION_TAG)
                    .and_then(Ttlv::as_bytes)
                    .ok_or_else(|| Failure::missing("Authenticated Encryption Tag"))?;
                let pt =
                    crypto::gcm_decrypt(key, &nonce, aad, data, t).map_err(|_| crypto_failure())?;
                out.push(bytes(tag::DATA, pt.expose().to_vec()));
            }
        }
        block_cipher_mode::CBC => {
            let pad = match param(tag::PADDING_METHOD) {
                None | Some(padding::PKCS5) => true,
                Some(padding::NONE) => false,
                Some(_) => {
                    return Err(Failure::unsupported(
                        "AES-CBC pads with PKCS5 or not at all",
                    ));
                }
            };
            let iv_arr: [u8; crypto::AES_BLOCK_LEN] = match iv {
                Some(iv) => iv
                    .try_into()
                    .map_err(|_| Failure::invalid("the AES-CBC IV is 16 bytes"))?,
                None if encrypt => keyward_crypto::random_array()
                    .map_err(|_| Failure::new(result_reason::GENERAL_FAILURE, "no randomness"))?,
                None => return Err(Failure::missing("IV/Counter/Nonce")),
            };
            if encrypt {
                let ct = crypto::cbc_encrypt(key, &iv_arr, data, pad).map_err(|_| {
                    Failure::invalid("without padding, data must be whole 16-byte blocks")
                })?;
                out.push(bytes(tag::DATA, ct));
                if iv.is_none() {
                    out.push(bytes(tag::IV_COUNTER_NONCE, iv_arr.to_vec()));
                }
            } else {
                let pt =
                    crypto::cbc_decrypt(key, &iv_arr, data, pad).map_err(|_| crypto_failure())?;
                out.push(bytes(tag::DATA, pt.expose().to_vec()));
            }
        }
        _ => {
            return Err(Failure::unsupported(
                "Encrypt and Decrypt support AES-GCM and AES-CBC",
            ));
        }
    }
    Ok(out)
}

fn signature(
    operation: u32,
    o: &KmipObjectRecord,
    list: &[Attr],
    key: &Secret,
    data: &[u8],
    param: &Param<'_>,
    p: &Ttlv,
) -> Result<Vec<Ttlv>, Failure> {
    let sign = operation == operation::SIGN;
    let (scheme, hash) = match param(tag::DIGITAL_SIGNATURE_ALGORITHM) {
        Some(signature_algorithm::SHA256_WITH_RSA) => (RsaScheme::Pkcs1v15, RsaHash::Sha256),
        Some(signature_algorithm::SHA384_WITH_RSA) => (RsaScheme::Pkcs1v15, RsaHash::Sha384),
        Some(signature_algorithm::SHA512_WITH_RSA) => (RsaScheme::Pkcs1v15, RsaHash::Sha512),
        Some(signature_algorithm::RSASSA_PSS) | None => {
            let scheme = match param(tag::PADDING_METHOD) {
                Some(padding::PSS) => RsaScheme::Pss,
                Some(padding::PKCS1_V1_5) => RsaScheme::Pkcs1v15,
                None if param(tag::DIGITAL_SIGNATURE_ALGORITHM).is_some() => RsaScheme::Pss,
                None => {
                    return Err(Failure::missing(
                        "Padding Method or Digital Signature Algorithm",
                    ));
                }
                Some(_) => {
                    return Err(Failure::unsupported("RSA signatures use PSS or PKCS1 v1.5"));
                }
            };
            let hash = match param(tag::HASHING_ALGORITHM) {
                Some(hashing::SHA_256) | None => RsaHash::Sha256,
                Some(hashing::SHA_384) => RsaHash::Sha384,
                Some(hashing::SHA_512) => RsaHash::Sha512,
                Some(_) => {
                    return Err(Failure::unsupported(
                        "RSA signatures hash with SHA-256/384/512",
                    ));
                }
            };
            (scheme, hash)
        }
        Some(_) => {
            return Err(Failure::unsupported(
                "this Digital Signature Algorithm is not supported",
            ));
        }
    };
    if sign {
        if o.object_type != object_type::PRIVATE_KEY {
            return Err(Failure::invalid("Sign needs a private key"));
        }
        usage_allows(list, usage_mask::SIGN)?;
        let sig = crypto::rsa_sign(key, scheme, hash, data)
            .map_err(|_| Failure::new(result_reason::CRYPTOGRAPHIC_FAILURE, "signing failed"))?;
        Ok(vec![bytes(tag::SIGNATURE_DATA, sig)])
    } else {
        usage_allows(list, usage_mask::VERIFY)?;
        let public = match o.object_type {
            object_type::PUBLIC_KEY => key.expose().to_vec(),
            object_type::PRIVATE_KEY => {
                crypto::rsa_private_info(key)
                    .map_err(|_| Failure::invalid("not an RSA key"))?
                    .1
            }
            _ => return Err(Failure::invalid("Signature Verify needs an RSA key")),
        };
        let sig = p
            .child(tag::SIGNATURE_DATA)
            .and_then(Ttlv::as_bytes)
            .ok_or_else(|| Failure::missing("Signature Data"))?;
        let valid = crypto::rsa_verify(&public, scheme, hash, data, sig);
        Ok(vec![enumeration(
            tag::VALIDITY_INDICATOR,
            if valid {
                validity::VALID
            } else {
                validity::INVALID
            },
        )])
    }
}
