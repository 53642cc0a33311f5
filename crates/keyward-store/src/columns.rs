//! Reading a row's columns the same way from either backend, so each record's row mapping is
//! written once (in `rows.rs` and beside each concern) and shared by SQLite and PostgreSQL.
//!
//! Both schemas store the same columns in the same order: text as TEXT, integers as
//! INTEGER/BIGINT, bytes as BLOB/BYTEA, times as Unix nanoseconds. Booleans are INTEGER 0/1 in
//! SQLite and BOOLEAN in PostgreSQL; [`Columns::bool`] reads both.

use keyward_core::StoreError;

/// A column that could not be read as the record needs it: stored data is corrupt.
#[derive(Debug)]
pub struct Bad(pub String);

impl Bad {
    pub fn new(msg: impl Into<String>) -> Self {
        Bad(msg.into())
    }
}

impl From<Bad> for StoreError {
    fn from(b: Bad) -> Self {
        StoreError::Corrupt(b.0)
    }
}

impl From<Bad> for rusqlite::Error {
    fn from(b: Bad) -> Self {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, b.0.into())
    }
}

/// One row, by column position.
pub trait Columns {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>, Bad>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Bad>;
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, Bad>;
    fn opt_bool(&self, i: usize) -> Result<Option<bool>, Bad>;

    fn i64(&self, i: usize) -> Result<i64, Bad> {
        self.opt_i64(i)?
            .ok_or_else(|| Bad(format!("column {i} is NULL")))
    }
    fn text(&self, i: usize) -> Result<String, Bad> {
        self.opt_text(i)?
            .ok_or_else(|| Bad(format!("column {i} is NULL")))
    }
    fn blob(&self, i: usize) -> Result<Vec<u8>, Bad> {
        self.opt_blob(i)?
            .ok_or_else(|| Bad(format!("column {i} is NULL")))
    }
    fn bool(&self, i: usize) -> Result<bool, Bad> {
        self.opt_bool(i)?
            .ok_or_else(|| Bad(format!("column {i} is NULL")))
    }
    /// An integer column narrowed to `T` (a version number, a bit length, a state code).
    fn int<T: TryFrom<i64>>(&self, i: usize) -> Result<T, Bad> {
        let v = self.i64(i)?;
        T::try_from(v).map_err(|_| Bad(format!("column {i}: {v} out of range")))
    }
    fn opt_int<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>, Bad> {
        self.opt_i64(i)?
            .map(|v| T::try_from(v).map_err(|_| Bad(format!("column {i}: {v} out of range"))))
            .transpose()
    }
    /// A text column parsed (an id).
    fn parsed<T: std::str::FromStr>(&self, i: usize) -> Result<T, Bad> {
        let s = self.text(i)?;
        s.parse().map_err(|_| Bad(format!("bad identifier {s:?}")))
    }
}

fn sqlite_bad(i: usize, e: rusqlite::Error) -> Bad {
    Bad(format!("column {i}: {e}"))
}

impl Columns for rusqlite::Row<'_> {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>, Bad> {
        self.get(i).map_err(|e| sqlite_bad(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, Bad> {
        self.get(i).map_err(|e| sqlite_bad(i, e))
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, Bad> {
        self.get(i).map_err(|e| sqlite_bad(i, e))
    }
    fn opt_bool(&self, i: usize) -> Result<Option<bool>, Bad> {
        self.get(i).map_err(|e| sqlite_bad(i, e))
    }
}

fn pg_bad(i: usize, e: tokio_postgres::Error) -> Bad {
    Bad(format!("column {i}: {e}"))
}

impl Columns for tokio_postgres::Row {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>, Bad> {
        self.try_get(i).map_err(|e| pg_bad(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, Bad> {
        self.try_get(i).map_err(|e| pg_bad(i, e))
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, Bad> {
        self.try_get(i).map_err(|e| pg_bad(i, e))
    }
    fn opt_bool(&self, i: usize) -> Result<Option<bool>, Bad> {
        self.try_get(i).map_err(|e| pg_bad(i, e))
    }
}

/// A value bound to a statement the same way on either backend, for SQL written once.
#[derive(Debug, Clone)]
pub enum Param {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(t) => t.to_sql(),
            Param::Int(i) => i.to_sql(),
            Param::Blob(b) => b.to_sql(),
        }
    }
}

/// `values` as tokio-postgres binds them (TEXT, BIGINT, BYTEA).
pub fn pg_params(values: &[Param]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|p| match p {
            Param::Text(t) => t as &(dyn tokio_postgres::types::ToSql + Sync),
            Param::Int(i) => i as &(dyn tokio_postgres::types::ToSql + Sync),
            Param::Blob(b) => b as &(dyn tokio_postgres::types::ToSql + Sync),
        })
        .collect()
}
