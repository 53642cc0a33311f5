//! Audit archive segments in an S3-compatible bucket (`[audit.s3]`): the [`SegmentStore`] the
//! archiver writes to and `keyward audit verify` reads from when the archive is not a
//! directory.
//!
//! A segment is written and fsynced in a local staging directory as with a directory archive,
//! then PUT whole (S3 acknowledges a PUT only once the object is stored durably), and only then
//! may the archiver move its cursor and the pruner delete the rows. A crash between the PUT and
//! the cursor leaves a whole object, which the next holder adopts, as with a directory. Objects
//! are read whole (one segment in memory at a time: ~14 MB at the default 100 000 events).
//!
//! The client is Apache Arrow's `object_store` (SigV4 signing, retries, path-style requests for
//! MinIO and Ceph): no S3 protocol is written here.

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_core::StoreError;
use keyward_store::archive::{SegmentFile, SegmentStore, segments_named};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::S3ArchiveSection;

/// Segments as objects under a prefix of a bucket.
pub struct S3Segments {
    store: Arc<dyn ObjectStore>,
    /// The key prefix, without a trailing slash ("" for the bucket's root).
    prefix: String,
    location: String,
    staging: PathBuf,
    /// Runs the client's futures. Its own, so that the blocking calls of [`SegmentStore`] work
    /// from any thread: each call drives it from a scoped thread of its own, outside whatever
    /// runtime the caller is in. `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Segments {
    /// The bucket `s3` names, staging segments in `staging`. Reads the secret access key from
    /// its file or variable; no request is made until the first use.
    pub fn open(s3: &S3ArchiveSection, staging: PathBuf) -> anyhow::Result<Self> {
        use anyhow::Context;
        let secret = zeroize::Zeroizing::new(
            match (&s3.secret_access_key_file, &s3.secret_access_key_env) {
                (Some(f), _) => std::fs::read_to_string(f).with_context(|| {
                    format!("reading the S3 secret access key file {}", f.display())
                })?,
                (None, Some(v)) => std::env::var(v)
                    .with_context(|| format!("the S3 secret access key variable {v} is not set"))?,
                (None, None) => anyhow::bail!("[audit.s3] has no secret access key"),
            },
        );
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(secret.trim_end_matches(['\r', '\n']))
            .with_allow_http(s3.allow_http)
            .with_virtual_hosted_style_request(false);
        if let Some(e) = &s3.endpoint {
            builder = builder.with_endpoint(e);
        }
        let store = builder
            .build()
            .context("configuring the S3 audit archive")?;
        let prefix = s3.prefix.trim_matches('/').to_owned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the S3 archive's runtime")?;
        Ok(S3Segments {
            store: Arc::new(store),
            location: format!("s3://{}/{prefix}", s3.bucket),
            prefix,
            staging,
            runtime: Some(runtime),
        })
    }

    fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs `f` to completion on this archive's runtime, from a thread of its own.
    fn block<T: Send>(&self, f: impl Future<Output = T> + Send) -> Result<T, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| self.error("the archive is closing"))?;
        std::thread::scope(|s| s.spawn(|| runtime.block_on(f)).join())
            .map_err(|_| self.error("the S3 client panicked"))
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("audit archive {}: {e}", self.location))
    }
}

impl Drop for S3Segments {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime worker may not do: let it go in the
        // background (nothing is in flight once the last call returned).
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

impl SegmentStore for S3Segments {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self) -> Result<Vec<SegmentFile>, StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listed = self
            .block(self.store.list_with_delimiter(prefix.as_ref()))?
            .map_err(|e| self.error(e))?;
        Ok(segments_named(
            listed
                .objects
                .into_iter()
                .filter_map(|o| o.location.filename().map(str::to_owned)),
        ))
    }

    fn open(&self, seg: &SegmentFile) -> Result<Box<dyn Read + Send>, StoreError> {
        let key = self.key(&seg.name);
        let bytes = self
            .block(async { self.store.get(&key).await?.bytes().await })?
            .map_err(|e| self.error(format!("{}: {e}", seg.name)))?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn staging(&self) -> &Path {
        &self.staging
    }

    /// One PUT of the whole file; the staged file is removed once it is acknowledged.
    fn place(&self, tmp: &Path, name: &str) -> Result<(), StoreError> {
        let bytes =
            std::fs::read(tmp).map_err(|e| self.error(format!("{}: {e}", tmp.display())))?;
        let key = self.key(name);
        self.block(self.store.put(&key, PutPayload::from(bytes)))?
            .map_err(|e| self.error(format!("{name}: {e}")))?;
        std::fs::remove_file(tmp).map_err(|e| self.error(format!("{}: {e}", tmp.display())))
    }
}
