//! `keyward hsm rotate-master`: a new MKEK version in every HSM token, every stored piece of
//! wrapped material moved to it while servers keep running, then the old versions retired.
//!
//! Resumable by construction: the MKEK version is added to the tokens before anything is
//! rewrapped, each item moves in its own compare-and-swap write, and a run that finds items
//! still on an older version (or older versions still in the tokens) finishes that rotation
//! instead of starting another.

use std::time::{Duration, Instant};

use anyhow::Context;
use keyward_core::{Custody, RewrapStore, rewrap_pass};
use keyward_custody_pkcs11::{
    Pkcs11Custody, add_mkek_version, mkek_versions, retire_mkek_versions,
};

use crate::config::ServerConfig;

/// How a rotation runs.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Items read and moved per pass.
    pub batch: u32,
    /// At most this many items per second (spares a busy HSM); `None`: as fast as it goes.
    pub max_per_second: Option<u32>,
    /// How long to wait, once nothing is left, before the final count: servers pick up a new
    /// MKEK version within [`RESCAN`] and a wrap in flight needs a moment to commit.
    pub grace: Duration,
}

/// The longest a running server keeps wrapping with an MKEK version older than the newest.
pub const RESCAN: Duration = keyward_custody_pkcs11::MKEK_RESCAN;

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            batch: 100,
            max_per_second: None,
            grace: RESCAN * 2 + Duration::from_secs(1),
        }
    }
}

/// Where a rotation stands, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Items moved so far in this run.
    pub done: u64,
    /// Items that were on older versions when this run counted (grows if servers wrap with
    /// an old version meanwhile).
    pub total: u64,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The MKEK version everything is wrapped by now.
    pub version: u32,
    /// This run finished a rotation an earlier run started.
    pub resumed: bool,
    /// Items moved by this run.
    pub moved: u64,
    /// Old MKEK objects destroyed (`token: label`).
    pub retired: Vec<String>,
    /// Tokens that could not be reached to retire old versions (run again later).
    pub unreachable: Vec<String>,
}

async fn stale(store: &dyn RewrapStore, current: &str) -> anyhow::Result<u64> {
    Ok(store
        .wrapped_counts()
        .await?
        .iter()
        .filter(|(k, _)| k != current)
        .map(|(_, n)| n)
        .sum())
}

/// Runs (or resumes) a master key rotation against the data directory and HSMs of `config`.
pub async fn rotate_master(
    config: &ServerConfig,
    options: &RotateOptions,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<RotateReport> {
    config.validate()?;
    let hsm = config.custody.require_pkcs11()?;
    let stores = crate::open_store(config).await?;
    let store = stores.rewrap.as_ref();

    let versions = mkek_versions(&hsm)?;
    let newest = |v: &[(String, Vec<u32>)]| {
        v.iter()
            .filter_map(|(_, vs)| vs.last().copied())
            .max()
            .unwrap_or(0)
    };
    let top = newest(&versions);
    let uneven = versions
        .iter()
        .any(|(_, vs)| vs.last().copied() != Some(top));
    let older_in_tokens = versions.iter().any(|(_, vs)| vs.iter().any(|v| *v < top));
    let current = format!("pkcs11:{}:{top}", hsm.mkek_label);
    let resumed = uneven || older_in_tokens || stale(store, &current).await? > 0;
    let version = if resumed && !uneven {
        top
    } else {
        // Either a fresh rotation, or an interrupted one whose new version reached only some
        // tokens: `add_mkek_version` completes the latter instead of adding another.
        add_mkek_version(&hsm)?
    };
    let custody = Pkcs11Custody::open(&hsm).context("opening the PKCS#11 custody backend")?;
    let current = custody.current_wrapping_key()?;
    anyhow::ensure!(
        current == format!("pkcs11:{}:{version}", hsm.mkek_label),
        "the tokens' newest MKEK is {current}, expected version {version}"
    );

    let started = Instant::now();
    let mut p = Progress {
        done: 0,
        total: stale(store, &current).await?,
    };
    progress(p);
    loop {
        let pass = rewrap_pass(&custody, store, options.batch.max(1), |_| {
            p.done += 1;
            progress(p);
        })
        .await?;
        if pass.moved + pass.raced == 0 {
            // Nothing left: wait out servers that have not seen the new version yet, recount.
            tokio::time::sleep(options.grace).await;
            let left = stale(store, &current).await?;
            if left == 0 {
                break;
            }
            p.total = p.done + left;
            progress(p);
            continue;
        }
        if let Some(rate) = options.max_per_second.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(p.done as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    let (retired, unreachable) = retire_mkek_versions(&hsm, version)?;
    Ok(RotateReport {
        version,
        resumed,
        moved: p.done,
        retired,
        unreachable,
    })
}
