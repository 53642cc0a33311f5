//! One configured HSM token: its health, the handles of its MKEK and SKEY, and a pool of
//! logged-in sessions, so concurrent callers each get their own session instead of queueing on
//! one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// Sessions kept open per token beyond those in use; more are opened on demand.
const MAX_IDLE_SESSIONS: usize = 32;

/// A token found, logged in and holding its keys. Handles are valid only for this generation:
/// a token that failed and came back gets new ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    pub slot: Slot,
    pub mkek: ObjectHandle,
    pub skey: ObjectHandle,
    pub generation: u64,
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
            match &*h {
                Health::Live(live) => return Ok(*live),
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
                *h = Health::Live(live);
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
        let mkek = find_key(&session, &keys.mkek_label, ObjectClass::SECRET_KEY)?;
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
            mkek,
            skey,
            generation,
        })
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
