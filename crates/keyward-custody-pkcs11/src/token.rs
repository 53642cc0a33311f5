//! One configured HSM token: its health, the handles of its MKEK and SKEY, and a pool of
//! logged-in sessions, so concurrent callers each get their own session instead of queueing on
//! one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// Sessions kept open per token beyond those in use; more are opened on demand.
const MAX_IDLE_SESSIONS: usize = 32;

/// A token found, logged in and holding its keys. Handles are valid only for this generation:
/// a token that failed and came back gets new ones.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub slot: Slot,
    /// MKEK versions present, ascending; never empty.
    pub mkeks: Arc<[(u32, ObjectHandle)]>,
    pub skey: ObjectHandle,
    pub generation: u64,
    scanned: Instant,
}

impl Live {
    /// The newest MKEK version and its handle (`None` cannot happen: a probe or rescan that
    /// finds no MKEK fails).
    pub fn current(&self) -> Option<(u32, ObjectHandle)> {
        self.mkeks.last().copied()
    }

    /// The handle of MKEK `version`, if this token holds it.
    pub fn mkek(&self, version: u32) -> Option<ObjectHandle> {
        self.mkeks
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, h)| *h)
    }
}

#[derive(Debug)]
enum Health {
    Live(Live),
    /// Failed at `since`; the next call after `since + retry_after` probes it again.
    Down {
        since: Instant,
        reason: String,
    },
    /// One caller is probing it now; the others skip it.
    Probing,
}

pub(crate) struct Token {
    pub label: String,
    health: Mutex<Health>,
    generation: Mutex<u64>,
    pool: Mutex<Vec<(u64, Session)>>,
}

/// What the labels are and how to log in; shared by every token of one custody.
pub(crate) struct Keys {
    pub module: Pkcs11,
    pub pin: AuthPin,
    pub mkek_label: String,
    pub skey_label: String,
    pub retry_after: Duration,
    pub mkek_rescan: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain assignments).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Token {
    pub fn new(label: String) -> Arc<Self> {
        Arc::new(Token {
            label,
            health: Mutex::new(Health::Down {
                since: Instant::now() - Duration::from_secs(3600),
                reason: "not probed yet".into(),
            }),
            generation: Mutex::new(0),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// The token's live state, probing it first if it is down and its backoff has passed.
    /// `Err` carries why it cannot be used now.
    pub fn ready(&self, keys: &Keys) -> Result<Live, String> {
        {
            let mut h = lock(&self.health);
            match &mut *h {
                Health::Live(live) if live.scanned.elapsed() < keys.mkek_rescan => {
                    return Ok(live.clone());
                }
                Health::Live(live) => {
                    // This caller rescans; the others keep using what is known meanwhile.
                    live.scanned = Instant::now();
                    let live = live.clone();
                    drop(h);
                    return self.rescan(keys, &live);
                }
                Health::Probing => return Err("being probed".into()),
                Health::Down { since, reason } => {
                    if since.elapsed() < keys.retry_after {
                        return Err(reason.clone());
                    }
                }
            }
            *h = Health::Probing;
        }
        // Probe without holding the lock: a slow HSM must not stall callers of the others.
        let result = self.probe(keys);
        let mut h = lock(&self.health);
        match result {
            Ok(live) => {
                tracing::info!(token = %self.label, "HSM token is usable");
                *h = Health::Live(live.clone());
                Ok(live)
            }
            Err(reason) => {
                *h = Health::Down {
                    since: Instant::now(),
                    reason: reason.clone(),
                };
                Err(reason)
            }
        }
    }

    fn probe(&self, keys: &Keys) -> Result<Live, String> {
        let slot = find_slot(&keys.module, &self.label)?;
        let session = open_session(&keys.module, slot, &keys.pin)?;
        let mkeks = find_mkeks(&session, &keys.mkek_label)?;
        let skey = find_key(&session, &keys.skey_label, ObjectClass::SECRET_KEY)?;
        let generation = {
            let mut g = lock(&self.generation);
            *g += 1;
            *g
        };
        let mut pool = lock(&self.pool);
        pool.clear();
        pool.push((generation, session));
        Ok(Live {
            slot,
            mkeks: mkeks.into(),
            skey,
            generation,
            scanned: Instant::now(),
        })
    }

    /// Looks up the MKEK versions of a live token again (a new one may have been added). A
    /// failure marks the token down like any other.
    pub fn rescan(&self, keys: &Keys, live: &Live) -> Result<Live, String> {
        let found = self
            .take_session(keys, live)
            .map_err(|e| format!("cannot open a session: {e}"))
            .and_then(|s| {
                let r = find_mkeks(&s, &keys.mkek_label);
                if r.is_ok() {
                    self.put_session(live, s);
                }
                r
            });
        let mkeks: Arc<[(u32, ObjectHandle)]> = match found {
            Ok(m) => m.into(),
            Err(reason) => {
                self.fail(live.generation, reason.clone());
                return Err(reason);
            }
        };
        let mut h = lock(&self.health);
        match &mut *h {
            Health::Live(l) if l.generation == live.generation => {
                l.mkeks = mkeks;
                l.scanned = Instant::now();
                Ok(l.clone())
            }
            _ => Err("token changed while its keys were looked up".into()),
        }
    }

    /// Marks the token down after a failure seen on generation `generation` (a failure from a
    /// session of an older generation says nothing about the token as it is now).
    pub fn fail(&self, generation: u64, reason: String) {
        let mut h = lock(&self.health);
        if matches!(&*h, Health::Live(l) if l.generation == generation) {
            tracing::warn!(token = %self.label, %reason, "HSM token failed; failing over");
            *h = Health::Down {
                since: Instant::now(),
                reason,
            };
            // Closing a dead token's sessions may itself fail; the module owns them either way.
            lock(&self.pool).clear();
        }
    }

    /// A logged-in session for `live`, from the pool or newly opened.
    pub fn take_session(&self, keys: &Keys, live: &Live) -> Result<Session, CkError> {
        {
            let mut pool = lock(&self.pool);
            while let Some((generation, session)) = pool.pop() {
                if generation == live.generation {
                    return Ok(session);
                }
            }
        }
        let session = keys.module.open_ro_session(live.slot)?;
        login(&session, &keys.pin)?;
        Ok(session)
    }

    /// Returns a session that is still good to the pool.
    pub fn put_session(&self, live: &Live, session: Session) {
        let mut pool = lock(&self.pool);
        if pool.len() < MAX_IDLE_SESSIONS && *lock(&self.generation) == live.generation {
            pool.push((live.generation, session));
        }
    }
}

/// The slot holding the token labelled `label` (SoftHSM's slot ids are random: never cache
/// them across a token's failure).
pub(crate) fn find_slot(module: &Pkcs11, label: &str) -> Result<Slot, String> {
    let slots = module
        .get_slots_with_token()
        .map_err(|e| format!("cannot list slots: {e}"))?;
    // A slot whose token just vanished answers C_GetTokenInfo with an error: skip it, it is
    // not the one we are looking for (or, if it is, the token is not usable).
    for slot in slots {
        if let Ok(info) = module.get_token_info(slot)
            && info.token_initialized()
            && info.label().trim_end() == label
        {
            return Ok(slot);
        }
    }
    Err(format!("no token labelled {label:?}"))
}

pub(crate) fn login(session: &Session, pin: &AuthPin) -> Result<(), CkError> {
    // Login is per application and token: a second session finds it already logged in.
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn open_session(module: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session, String> {
    let session = module
        .open_ro_session(slot)
        .map_err(|e| format!("cannot open a session: {e}"))?;
    login(&session, pin).map_err(|e| format!("login failed: {e}"))?;
    Ok(session)
}

/// The label of MKEK `version`: version 1 is `label` itself (what `hsm init` creates), later
/// versions `label-v<N>`.
pub(crate) fn mkek_version_label(label: &str, version: u32) -> String {
    if version == 1 {
        label.to_owned()
    } else {
        format!("{label}-v{version}")
    }
}

/// The MKEK version a label names, if it names one.
pub(crate) fn mkek_version_of(label: &str, candidate: &str) -> Option<u32> {
    if candidate == label {
        return Some(1);
    }
    let n: u32 = candidate
        .strip_prefix(label)?
        .strip_prefix("-v")?
        .parse()
        .ok()?;
    (n >= 2 && candidate == mkek_version_label(label, n)).then_some(n)
}

/// Every MKEK version in the token, ascending; none is an error.
pub(crate) fn find_mkeks(
    session: &Session,
    label: &str,
) -> Result<Vec<(u32, ObjectHandle)>, String> {
    // Token objects only: the transient session objects of concurrent wraps are secret keys too,
    // and may be destroyed between this search and the label read.
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
        ])
        .map_err(|e| format!("cannot search objects: {e}"))?;
    let mut found = Vec::new();
    for h in handles {
        let attrs = match session.get_attributes(h, &[AttributeType::Label]) {
            Ok(a) => a,
            // Deleted since the search (by another process): not one of ours to use.
            Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
            Err(e) => return Err(format!("cannot read an object's label: {e}")),
        };
        for a in attrs {
            if let Attribute::Label(l) = a
                && let Some(v) = std::str::from_utf8(&l)
                    .ok()
                    .and_then(|l| mkek_version_of(label, l))
            {
                found.push((v, h));
            }
        }
    }
    found.sort_unstable_by_key(|(v, _)| *v);
    if found.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
        return Err(format!(
            "several objects hold the same version of {label:?}"
        ));
    }
    if found.is_empty() {
        return Err(format!("object {label:?} is missing"));
    }
    Ok(found)
}

/// The one object of `class` labelled `label`; none or several is an error.
pub(crate) fn find_key(
    session: &Session,
    label: &str,
    class: ObjectClass,
) -> Result<ObjectHandle, String> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("cannot search objects: {e}"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("object {label:?} is missing")),
        _ => Err(format!("{} objects are labelled {label:?}", found.len())),
    }
}
