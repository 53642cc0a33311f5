//! Keyward's [`Store`](keyward_core::Store) on SQLite: schema and migrations, row mapping, and
//! group-committed writes.
//!
//! Every write goes through one writer thread that drains all pending writes into one
//! transaction, each in its own savepoint, and commits with `synchronous = FULL` in WAL mode: one
//! fsync for many requests, and a caller hears back only after its write is durable. Reads use a
//! small pool of read-only connections and run on the caller's thread (they hit the page cache and
//! take microseconds). This crate knows SQL and nothing of HTTP or key rules.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod archive;
mod audit;
mod check;
mod columns;
mod copy;
mod events;
mod iam;
mod kmip;
mod listing;
mod rewrap;
mod rows;
mod schema;
mod sqlite;
mod writer;

pub mod postgres;

pub use archive::{ArchiveReport, ArchiveStart, TrailReport, verify_archive};
pub use audit::{MAX_PAGE as MAX_AUDIT_PAGE, verify_audit_chain, verify_audit_trail};
pub use check::{CheckReport, QuickCheck, check_sqlite};
pub use copy::{CopyProgress, CopyReport, TABLES, copy_sqlite_to_postgres};
pub use postgres::{
    Change, ClusterLock, PgOptions, PgStore, verify_audit_chain_pg, verify_audit_trail_pg,
};
pub use sqlite::{DB_FILE, SqliteStore};
