//! Per-source bounds on what anyone may send before authenticating: the token exchange and
//! requests whose authentication is refused are rate-limited per client address, and their
//! refusals are sampled in the audit trail (one event per source per interval, noting how many
//! it stands for) rather than written one row per request. 378 582 bad API keys in 40 s wrote
//! 100 MB of audit trail before these bounds (issue 18).
//!
//! A source is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64, so counting
//! addresses would let it mint fresh buckets); requests without a known peer address share one
//! source. Authenticated requests are never counted here: a flood from an address leaves a
//! client with a valid token at that address unaffected.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use keyward_core::Sampled;

type Limiter = RateLimiter<Source, DefaultKeyedStateStore<Source>, DefaultClock>;

/// Sources remembered at most, by each limiter and by the audit sampler: past this, idle
/// entries are dropped, and a sampler still full counts new sources as one.
const MAX_SOURCES: usize = 100_000;

/// The per-source limits. A rate of 0 turns its limit off.
#[derive(Debug, Clone, Copy)]
pub struct SourceLimits {
    /// Token exchanges (`/identity/token`, any outcome) per second per source.
    pub token_per_second: u32,
    /// Token exchanges a source may make at once above the sustained rate.
    pub token_burst: u32,
    /// Requests with a refused authentication (a missing, malformed, expired or revoked bearer
    /// token) per second per source; past it they are answered 429.
    pub unauthenticated_per_second: u32,
    /// Such requests a source may make at once above the sustained rate.
    pub unauthenticated_burst: u32,
    /// At most one audit event per source per this interval for refused unauthenticated
    /// requests; the next one notes how many were not recorded.
    pub audit_interval: Duration,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            token_per_second: 10,
            token_burst: 100,
            unauthenticated_per_second: 10,
            unauthenticated_burst: 100,
            audit_interval: Duration::from_secs(10),
        }
    }
}

/// Which per-source limit a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The token exchange.
    Token,
    /// Requests whose authentication was refused.
    Unauthenticated,
}

/// A source over its limit: retry after this many seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests from this address; retry in {0} s")]
pub struct Throttled(pub u64);

/// Where unauthenticated requests are counted from: an IPv4 address, an IPv6 /64, or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(Option<IpAddr>);

impl Source {
    /// The source of a client address (text, as requests carry it); unparsable or absent is
    /// the one unknown source.
    pub fn of(address: Option<&str>) -> Self {
        Source(
            address
                .and_then(|a| a.parse::<IpAddr>().ok())
                .map(|ip| match ip {
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => IpAddr::V4(v4),
                        None => {
                            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                            IpAddr::V6(Ipv6Addr::from(prefix))
                        }
                    },
                    v4 => v4,
                }),
        )
    }

    /// How the audit trail names the source.
    pub fn address(&self) -> Option<String> {
        self.0.map(|ip| match ip {
            IpAddr::V6(v6) => format!("{v6}/64"),
            v4 => v4.to_string(),
        })
    }
}

/// How often a source was refused since its last recorded event.
struct Tally {
    recorded_at: Instant,
    skipped: u64,
}

/// The limiters and the audit sampler of one process.
pub(crate) struct Sources {
    token: Option<Limiter>,
    unauthenticated: Option<Limiter>,
    interval: Duration,
    tallies: Mutex<HashMap<Source, Tally>>,
    checks: AtomicU64,
}

fn limiter(per_second: u32, burst: u32) -> Option<Limiter> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

fn note(skipped: u64) -> Option<String> {
    (skipped > 0).then(|| {
        format!("{skipped} more refused requests from this address since its last recorded event")
    })
}

impl Sources {
    pub(crate) fn new(limits: SourceLimits) -> Self {
        Sources {
            token: limiter(limits.token_per_second, limits.token_burst),
            unauthenticated: limiter(
                limits.unauthenticated_per_second,
                limits.unauthenticated_burst,
            ),
            interval: limits.audit_interval,
            tallies: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `source` against `limit`.
    pub(crate) fn check(&self, limit: Limit, source: Source) -> Result<(), Throttled> {
        let limiter = match limit {
            Limit::Token => &self.token,
            Limit::Unauthenticated => &self.unauthenticated,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        // Bounded: a source's state is dropped once its bucket is full again.
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && limiter.len() > MAX_SOURCES
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&source).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Throttled(wait.as_secs().max(1))
        })
    }

    /// Whether a refusal from `source` is recorded: the first in an interval is, noting how
    /// many were not since the last; the others are counted.
    pub(crate) fn sample(&self, source: Source) -> Sampled {
        let Ok(mut tallies) = self.tallies.lock() else {
            return Sampled::Record(None);
        };
        let now = Instant::now();
        if tallies.len() >= MAX_SOURCES && !tallies.contains_key(&source) {
            let interval = self.interval;
            tallies.retain(|_, t| t.skipped > 0 || now.duration_since(t.recorded_at) < interval);
        }
        let source = if tallies.len() >= MAX_SOURCES && !tallies.contains_key(&source) {
            Source(None)
        } else {
            source
        };
        match tallies.get_mut(&source) {
            Some(t) if now.duration_since(t.recorded_at) < self.interval => {
                t.skipped = t.skipped.saturating_add(1);
                Sampled::Skip
            }
            Some(t) => {
                t.recorded_at = now;
                Sampled::Record(note(std::mem::take(&mut t.skipped)))
            }
            None => {
                tallies.insert(
                    source,
                    Tally {
                        recorded_at: now,
                        skipped: 0,
                    },
                );
                Sampled::Record(None)
            }
        }
    }

    /// The sources whose interval has passed with refusals not yet recorded, with their count
    /// (now taken: recorded by the caller); idle sources are forgotten.
    pub(crate) fn due(&self) -> Vec<(Source, u64)> {
        let Ok(mut tallies) = self.tallies.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let interval = self.interval;
        let mut due = Vec::new();
        tallies.retain(|source, t| {
            if now.duration_since(t.recorded_at) < interval {
                return true;
            }
            if t.skipped == 0 {
                return false;
            }
            due.push((*source, std::mem::take(&mut t.skipped)));
            t.recorded_at = now;
            true
        });
        due
    }

    /// The note of a summary event for `skipped` refusals.
    pub(crate) fn summary(skipped: u64) -> String {
        format!("{skipped} refused requests from this address were not recorded one by one")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            Source::of(Some("2001:db8:1:2:aaaa::1")),
            Source::of(Some("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(Some("2001:db8:1:2::1")),
            Source::of(Some("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(Some("::ffff:10.0.0.1")),
            Source::of(Some("10.0.0.1"))
        );
        assert_eq!(Source::of(None), Source::of(Some("not an address")));
        assert_eq!(
            Source::of(Some("2001:db8:1:2::1")).address().as_deref(),
            Some("2001:db8:1:2::/64")
        );
    }

    #[test]
    fn one_refusal_per_source_per_interval_is_recorded_with_the_count_of_the_others() {
        let s = Sources::new(SourceLimits {
            audit_interval: Duration::from_millis(50),
            ..SourceLimits::default()
        });
        let (a, b) = (Source::of(Some("10.0.0.1")), Source::of(Some("10.0.0.2")));
        assert_eq!(s.sample(a), Sampled::Record(None));
        assert_eq!(s.sample(b), Sampled::Record(None));
        for _ in 0..5 {
            assert_eq!(s.sample(a), Sampled::Skip);
        }
        assert!(s.due().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.due(), vec![(a, 5)]);
        assert_eq!(s.sample(a), Sampled::Skip);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.sample(a), Sampled::Record(note(1)));
    }

    #[test]
    fn a_source_over_its_rate_is_throttled_and_another_is_not() {
        let s = Sources::new(SourceLimits {
            token_per_second: 1,
            token_burst: 3,
            ..SourceLimits::default()
        });
        let (a, b) = (Source::of(Some("10.0.0.1")), Source::of(Some("10.0.0.2")));
        for _ in 0..3 {
            assert!(s.check(Limit::Token, a).is_ok());
        }
        assert!(matches!(s.check(Limit::Token, a), Err(Throttled(n)) if n >= 1));
        assert!(s.check(Limit::Token, b).is_ok());
        assert!(s.check(Limit::Unauthenticated, a).is_ok());
    }
}
