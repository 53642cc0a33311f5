//! Durable files: JSON written atomically (temporary file, fsync, rename, fsync of the
//! directory), append-only message logs of length-prefixed records, and shredding (overwrite with
//! zeros, fsync, unlink).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;

/// Writes `value` as JSON to `path`, atomically and durably.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(value)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Reads JSON from `path`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Appends one record (u32 big-endian length, then the bytes) to `path` and fsyncs it.
pub fn append_record(path: &Path, record: &[u8]) -> anyhow::Result<()> {
    let len = u32::try_from(record.len()).context("record too large")?;
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = Vec::with_capacity(4 + record.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(record);
    f.write_all(&buf)?;
    f.sync_all()?;
    Ok(())
}

/// Every record of `path` (none when it does not exist). A torn last record (a crash during an
/// append that was never acknowledged) is ignored.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    }
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(record) = tail.get(..len) else { break };
        out.push(record.to_vec());
        rest = tail.get(len..).unwrap_or_default();
    }
    Ok(out)
}

/// Overwrites `path` with zeros, fsyncs, and removes it (absent is fine).
pub fn shred(path: &Path) -> anyhow::Result<()> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    {
        let mut f = OpenOptions::new().write(true).open(path)?;
        let zeros = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(zeros.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    std::fs::remove_file(path)?;
    sync_dir(path)
}
