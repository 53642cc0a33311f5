//! The PostgreSQL schema: the same tables and columns as SQLite's (`crate::schema`), in the same
//! column order, so each record's row mapping is shared. Integers are BIGINT, bytes BYTEA,
//! booleans BOOLEAN, times BIGINT Unix nanoseconds (record signatures cover them exactly). Text
//! is `COLLATE "C"`: it sorts bytewise and `lower()` folds ASCII only, as in SQLite, whatever
//! locale the database was created with (listings page the same on both backends).
//!
//! Migrations run at start in one transaction under an advisory lock, so two nodes starting
//! together migrate once; the version is kept in `keyward_schema`. A database of a newer version
//! than this build knows is refused (an older node must not write to a schema it does not know).

use keyward_core::StoreError;

use super::pg_error;

/// `pg_advisory_xact_lock` key of migrations ("keyward" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6b65_7977_6172_6401;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's migrations 1 to 8 made, and the audit events not yet linked into
    // the chain (`audit_pending`, see audit.rs).
    "CREATE TABLE instances (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        account TEXT COLLATE \"C\" NOT NULL,
        name TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE keys (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        instance_id TEXT COLLATE \"C\" NOT NULL REFERENCES instances(id),
        kind BIGINT NOT NULL,
        name TEXT COLLATE \"C\" NOT NULL,
        description TEXT COLLATE \"C\",
        state BIGINT NOT NULL,
        imported BOOLEAN NOT NULL,
        key_ring TEXT COLLATE \"C\" NOT NULL,
        expiration BIGINT,
        bits BIGINT NOT NULL,
        current_version BIGINT NOT NULL,
        current_version_id TEXT COLLATE \"C\" NOT NULL,
        revision BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        updated_at BIGINT NOT NULL,
        state_changed_at BIGINT NOT NULL,
        last_rotated_at BIGINT,
        deleted_at BIGINT,
        deleted_by TEXT COLLATE \"C\",
        signature BYTEA NOT NULL,
        rotation TEXT COLLATE \"C\",
        dual_auth TEXT COLLATE \"C\",
        deletion_set_by TEXT COLLATE \"C\",
        deletion_set_at BIGINT,
        purged_at BIGINT,
        next_rotation_at BIGINT
    );
    CREATE INDEX keys_by_instance ON keys(instance_id, created_at, id);
    CREATE INDEX keys_due_rotation ON keys(next_rotation_at) WHERE next_rotation_at IS NOT NULL;
    CREATE INDEX keys_due_expiry ON keys(expiration) WHERE expiration IS NOT NULL AND state = 1;
    CREATE INDEX keys_due_purge ON keys(deleted_at) WHERE state = 5 AND purged_at IS NULL;
    CREATE INDEX keys_by_ring ON keys(instance_id, key_ring);
    CREATE TABLE key_versions (
        key_id TEXT COLLATE \"C\" NOT NULL REFERENCES keys(id),
        number BIGINT NOT NULL,
        id TEXT COLLATE \"C\" NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        wrapping_key TEXT COLLATE \"C\" NOT NULL,
        material BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        PRIMARY KEY (key_id, number)
    );
    CREATE TABLE api_keys (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        secret_hash BYTEA NOT NULL,
        subject TEXT COLLATE \"C\" NOT NULL,
        account TEXT COLLATE \"C\" NOT NULL,
        name TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL,
        locked BOOLEAN NOT NULL
    );
    CREATE INDEX api_keys_by_account ON api_keys(account, subject);
    CREATE TABLE signing_keys (
        kid TEXT COLLATE \"C\" PRIMARY KEY,
        wrapping_key TEXT COLLATE \"C\" NOT NULL,
        private_key BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE key_rings (
        instance_id TEXT COLLATE \"C\" NOT NULL REFERENCES instances(id),
        id TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        PRIMARY KEY (instance_id, id)
    );
    CREATE TABLE key_aliases (
        instance_id TEXT COLLATE \"C\" NOT NULL,
        alias TEXT COLLATE \"C\" NOT NULL,
        key_id TEXT COLLATE \"C\" NOT NULL REFERENCES keys(id),
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        signature BYTEA NOT NULL,
        PRIMARY KEY (instance_id, alias)
    );
    CREATE INDEX key_aliases_by_key ON key_aliases(key_id);
    CREATE TABLE instance_policies (
        instance_id TEXT COLLATE \"C\" NOT NULL REFERENCES instances(id),
        policy_type TEXT COLLATE \"C\" NOT NULL,
        enabled BOOLEAN NOT NULL,
        attributes TEXT COLLATE \"C\",
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        updated_at BIGINT NOT NULL,
        updated_by TEXT COLLATE \"C\" NOT NULL,
        signature BYTEA NOT NULL,
        PRIMARY KEY (instance_id, policy_type)
    );
    CREATE TABLE kmip_adapters (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        instance_id TEXT COLLATE \"C\" NOT NULL REFERENCES instances(id),
        name TEXT COLLATE \"C\" NOT NULL,
        description TEXT COLLATE \"C\",
        profile TEXT COLLATE \"C\" NOT NULL,
        crk_id TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        updated_at BIGINT NOT NULL,
        updated_by TEXT COLLATE \"C\" NOT NULL,
        signature BYTEA NOT NULL,
        UNIQUE (instance_id, name)
    );
    CREATE INDEX kmip_adapters_by_instance ON kmip_adapters(instance_id, created_at, id);
    CREATE TABLE kmip_certificates (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        instance_id TEXT COLLATE \"C\" NOT NULL,
        adapter_id TEXT COLLATE \"C\" NOT NULL REFERENCES kmip_adapters(id),
        name TEXT COLLATE \"C\" NOT NULL,
        certificate TEXT COLLATE \"C\" NOT NULL,
        fingerprint BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        signature BYTEA NOT NULL,
        UNIQUE (adapter_id, name),
        UNIQUE (instance_id, fingerprint)
    );
    CREATE INDEX kmip_certificates_by_adapter ON kmip_certificates(adapter_id, created_at, id);
    CREATE TABLE kmip_objects (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        instance_id TEXT COLLATE \"C\" NOT NULL,
        adapter_id TEXT COLLATE \"C\" NOT NULL REFERENCES kmip_adapters(id),
        object_type BIGINT NOT NULL,
        state BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by_cert_id TEXT COLLATE \"C\" NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        updated_at BIGINT,
        updated_by_cert_id TEXT COLLATE \"C\",
        updated_by TEXT COLLATE \"C\",
        destroyed_at BIGINT,
        destroyed_by_cert_id TEXT COLLATE \"C\",
        destroyed_by TEXT COLLATE \"C\"
    );
    CREATE INDEX kmip_objects_by_adapter ON kmip_objects(adapter_id, state, created_at, id);
    CREATE TABLE identities (
        iam_id TEXT COLLATE \"C\" PRIMARY KEY,
        account TEXT COLLATE \"C\" NOT NULL,
        kind TEXT COLLATE \"C\" NOT NULL,
        name TEXT COLLATE \"C\" NOT NULL,
        description TEXT COLLATE \"C\",
        service_name TEXT COLLATE \"C\",
        service_instance TEXT COLLATE \"C\",
        locked BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL
    );
    CREATE INDEX identities_by_account ON identities(account, created_at);
    CREATE TABLE access_policies (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        account TEXT COLLATE \"C\" NOT NULL,
        subject TEXT COLLATE \"C\" NOT NULL,
        roles TEXT COLLATE \"C\" NOT NULL,
        scope TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        signature BYTEA NOT NULL
    );
    CREATE INDEX access_policies_by_subject ON access_policies(account, subject);
    CREATE TABLE authorizations (
        id TEXT COLLATE \"C\" PRIMARY KEY,
        account TEXT COLLATE \"C\" NOT NULL,
        source_service TEXT COLLATE \"C\" NOT NULL,
        source_instance TEXT COLLATE \"C\",
        target TEXT COLLATE \"C\" NOT NULL,
        roles TEXT COLLATE \"C\" NOT NULL,
        delegation BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL,
        signature BYTEA NOT NULL
    );
    CREATE INDEX authorizations_by_service ON authorizations(account, source_service);
    CREATE TABLE refresh_tokens (
        hash BYTEA PRIMARY KEY,
        api_key_id TEXT COLLATE \"C\" NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE import_tokens (
        instance_id TEXT COLLATE \"C\" PRIMARY KEY REFERENCES instances(id),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        max_retrievals BIGINT NOT NULL,
        remaining BIGINT NOT NULL,
        nonce BYTEA NOT NULL,
        public_key BYTEA NOT NULL,
        wrapping_key TEXT COLLATE \"C\" NOT NULL,
        private_key BYTEA NOT NULL,
        created_by TEXT COLLATE \"C\" NOT NULL
    );
    CREATE TABLE audit_events (
        seq BIGINT PRIMARY KEY,
        id TEXT COLLATE \"C\" NOT NULL,
        time BIGINT NOT NULL,
        action TEXT COLLATE \"C\" NOT NULL,
        outcome TEXT COLLATE \"C\" NOT NULL,
        reason_code BIGINT NOT NULL,
        reason TEXT COLLATE \"C\",
        initiator TEXT COLLATE \"C\" NOT NULL,
        address TEXT COLLATE \"C\",
        instance_id TEXT COLLATE \"C\",
        target TEXT COLLATE \"C\",
        key_state BIGINT,
        key_version TEXT COLLATE \"C\",
        request_id TEXT COLLATE \"C\" NOT NULL,
        prev_hash BYTEA NOT NULL,
        hash BYTEA NOT NULL
    );
    CREATE INDEX audit_events_by_instance ON audit_events(instance_id, seq);
    CREATE TABLE audit_pending (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT COLLATE \"C\" NOT NULL,
        time BIGINT NOT NULL,
        action TEXT COLLATE \"C\" NOT NULL,
        outcome TEXT COLLATE \"C\" NOT NULL,
        reason_code BIGINT NOT NULL,
        reason TEXT COLLATE \"C\",
        initiator TEXT COLLATE \"C\" NOT NULL,
        address TEXT COLLATE \"C\",
        instance_id TEXT COLLATE \"C\",
        target TEXT COLLATE \"C\",
        key_state BIGINT,
        key_version TEXT COLLATE \"C\",
        request_id TEXT COLLATE \"C\" NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        time BIGINT NOT NULL,
        signature BYTEA NOT NULL
    );
    CREATE TABLE audit_export_cursors (
        sink TEXT COLLATE \"C\" PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        holder TEXT COLLATE \"C\",
        lease_until BIGINT
    );
    CREATE TABLE registrations (
        key_id TEXT COLLATE \"C\" NOT NULL REFERENCES keys(id),
        resource_crn TEXT COLLATE \"C\" NOT NULL,
        instance_id TEXT COLLATE \"C\" NOT NULL,
        owner TEXT COLLATE \"C\" NOT NULL,
        description TEXT COLLATE \"C\",
        metadata TEXT COLLATE \"C\",
        prevent_key_deletion BOOLEAN NOT NULL,
        key_version_id TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL,
        updated_by TEXT COLLATE \"C\" NOT NULL,
        updated_at BIGINT NOT NULL,
        adopter_state TEXT COLLATE \"C\",
        PRIMARY KEY (key_id, resource_crn)
    );
    CREATE INDEX registrations_by_instance ON registrations(instance_id, key_id, resource_crn);
    CREATE TABLE key_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT COLLATE \"C\" NOT NULL UNIQUE,
        recipient TEXT COLLATE \"C\" NOT NULL,
        instance_id TEXT COLLATE \"C\" NOT NULL,
        key_id TEXT COLLATE \"C\" NOT NULL,
        kind TEXT COLLATE \"C\" NOT NULL,
        key_state BIGINT NOT NULL,
        key_version TEXT COLLATE \"C\" NOT NULL,
        resource_crns TEXT COLLATE \"C\" NOT NULL,
        created_at BIGINT NOT NULL,
        acked_at BIGINT,
        ack_state TEXT COLLATE \"C\",
        ack_version TEXT COLLATE \"C\",
        delivered_at BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        lease_owner TEXT COLLATE \"C\",
        lease_until BIGINT
    );
    CREATE INDEX key_events_by_recipient ON key_events(recipient, instance_id, seq);
    CREATE INDEX key_events_by_key ON key_events(key_id, recipient, seq);
    CREATE INDEX key_events_undelivered ON key_events(seq)
        WHERE delivered_at IS NULL AND acked_at IS NULL;
    CREATE TABLE event_subscriptions (
        recipient TEXT COLLATE \"C\" NOT NULL,
        instance_id TEXT COLLATE \"C\" NOT NULL,
        url TEXT COLLATE \"C\" NOT NULL,
        wrapping_key TEXT COLLATE \"C\" NOT NULL,
        secret BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (recipient, instance_id)
    );",
    // 2: committed changes that other nodes cache are announced (LISTEN/NOTIFY, delivered at
    // commit): a key's id on `keyward_keys`; on `keyward_access`, the name of the table of
    // identities, API keys, access policies, authorizations or instance policies that changed.
    "CREATE FUNCTION keyward_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('keyward_keys', OLD.id);
        ELSE
            PERFORM pg_notify('keyward_keys', NEW.id);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER keys_changed AFTER UPDATE OR DELETE ON keys
        FOR EACH ROW EXECUTE FUNCTION keyward_key_changed();
    CREATE FUNCTION keyward_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('keyward_access', TG_TABLE_NAME);
        RETURN NULL;
    END $$;
    CREATE TRIGGER access_policies_changed AFTER INSERT OR UPDATE OR DELETE ON access_policies
        FOR EACH STATEMENT EXECUTE FUNCTION keyward_access_changed();
    CREATE TRIGGER authorizations_changed AFTER INSERT OR UPDATE OR DELETE ON authorizations
        FOR EACH STATEMENT EXECUTE FUNCTION keyward_access_changed();
    CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION keyward_access_changed();
    CREATE TRIGGER identities_changed AFTER UPDATE OR DELETE ON identities
        FOR EACH STATEMENT EXECUTE FUNCTION keyward_access_changed();
    CREATE TRIGGER instance_policies_changed AFTER INSERT OR UPDATE OR DELETE ON instance_policies
        FOR EACH STATEMENT EXECUTE FUNCTION keyward_access_changed();",
    // 3: migrations from a SQLite store (`keyward store migrate`), to resume one and to refuse
    // a second.
    "CREATE TABLE store_migrations (
        source TEXT COLLATE \"C\" PRIMARY KEY,
        started_at BIGINT NOT NULL,
        finished_at BIGINT
    );",
    // 4: refresh tokens are spent, not deleted, and know their family (the tokens descending
    // from one login), so a spent one presented again revokes its descendants; expired ones
    // are purged. A token stored before this is its own family (as SQLite's migration 9).
    "ALTER TABLE refresh_tokens ADD COLUMN family BYTEA;
    ALTER TABLE refresh_tokens ADD COLUMN spent_at BIGINT;
    UPDATE refresh_tokens SET family = hash;
    CREATE INDEX refresh_tokens_by_family ON refresh_tokens(family);
    CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens(expires_at);",
    // 5: SQLite's migration 10: delegation's dependent services and the delegating authorization
    // a delegated one was made under (deleted with it).
    "ALTER TABLE authorizations ADD COLUMN dependents TEXT COLLATE \"C\";
    ALTER TABLE authorizations ADD COLUMN delegated_from TEXT COLLATE \"C\";
    CREATE INDEX authorizations_by_parent ON authorizations(account, delegated_from);",
    // 6: SQLite's migration 11: what the KMIP listener keeps of an object (Locate's attributes,
    // the others as JSON, sealed material, a signature), Locate's indexes, and certificates by
    // fingerprint.
    "ALTER TABLE kmip_objects ADD COLUMN name TEXT COLLATE \"C\";
    ALTER TABLE kmip_objects ADD COLUMN algorithm BIGINT;
    ALTER TABLE kmip_objects ADD COLUMN length BIGINT;
    ALTER TABLE kmip_objects ADD COLUMN object_group TEXT COLLATE \"C\";
    ALTER TABLE kmip_objects ADD COLUMN attributes TEXT COLLATE \"C\" NOT NULL DEFAULT '{}';
    ALTER TABLE kmip_objects ADD COLUMN material BYTEA;
    ALTER TABLE kmip_objects ADD COLUMN signature BYTEA NOT NULL DEFAULT ''::bytea;
    CREATE INDEX kmip_objects_by_created ON kmip_objects(adapter_id, created_at, id);
    CREATE INDEX kmip_objects_by_name ON kmip_objects(adapter_id, name, created_at, id)
        WHERE name IS NOT NULL;
    CREATE INDEX kmip_objects_by_group ON kmip_objects(adapter_id, object_group, created_at, id)
        WHERE object_group IS NOT NULL;
    CREATE INDEX kmip_certificates_by_fingerprint ON kmip_certificates(fingerprint);",
    // 7: SQLite's migration 12: per-instance, per-state counts of unpurged keys kept by
    // triggers (split over 16 shards by key id, so nodes creating keys in one instance at once
    // do not queue on one row), the default listing's partial index, and indexes for exact
    // name and alias searches.
    "CREATE TABLE key_counts (
        instance_id TEXT COLLATE \"C\" NOT NULL,
        state BIGINT NOT NULL,
        shard BIGINT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (instance_id, state, shard)
    );
    INSERT INTO key_counts (instance_id, state, shard, n)
        SELECT instance_id, state, 0, COUNT(*) FROM keys WHERE purged_at IS NULL
        GROUP BY instance_id, state;
    CREATE FUNCTION keyward_key_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' AND OLD.purged_at IS NULL THEN
            -- A shard may go below zero (its keys were counted in another): only sums count.
            INSERT INTO key_counts (instance_id, state, shard, n)
                VALUES (OLD.instance_id, OLD.state, abs(hashtext(OLD.id)) % 16, -1)
                ON CONFLICT (instance_id, state, shard) DO UPDATE SET n = key_counts.n - 1;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.purged_at IS NULL THEN
            INSERT INTO key_counts (instance_id, state, shard, n)
                VALUES (NEW.instance_id, NEW.state, abs(hashtext(NEW.id)) % 16, 1)
                ON CONFLICT (instance_id, state, shard) DO UPDATE SET n = key_counts.n + 1;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER key_counts_insert_delete AFTER INSERT OR DELETE ON keys
        FOR EACH ROW EXECUTE FUNCTION keyward_key_counts();
    CREATE TRIGGER key_counts_update AFTER UPDATE OF instance_id, state, purged_at ON keys
        FOR EACH ROW WHEN (OLD.instance_id IS DISTINCT FROM NEW.instance_id
            OR OLD.state IS DISTINCT FROM NEW.state OR OLD.purged_at IS DISTINCT FROM NEW.purged_at)
        EXECUTE FUNCTION keyward_key_counts();
    CREATE INDEX keys_listed ON keys(instance_id, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_by_name ON keys(lower(name));
    CREATE INDEX key_aliases_by_lower ON key_aliases(instance_id, lower(alias));",
    // 8: SQLite's migration 13: substring search and every sort of the key listing served by
    // indexes. `pg_trgm` GIN indexes on the lowered name and alias serve `LIKE '%..%'` (the
    // index is lossy and the LIKE rechecked, so what matches does not change). The extension
    // ships with PostgreSQL's contrib and is trusted (a database owner may create it); where
    // it cannot be created the indexes are left out and searches scan as before (the
    // statements to run by hand are in the README). One partial index per sortable column,
    // NULLs first where a column can be NULL, as the listing orders them.
    "DO $$
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX keys_name_trigrams ON keys USING gin (lower(name) gin_trgm_ops);
        CREATE INDEX key_aliases_trigrams ON key_aliases USING gin (lower(alias) gin_trgm_ops);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_trgm is not available (%): substring searches of key names and \
            aliases scan the instance''s keys', SQLERRM;
    END $$;
    CREATE INDEX keys_sorted_by_id
        ON keys(instance_id, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_state
        ON keys(instance_id, state, created_at, id, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_kind
        ON keys(instance_id, kind, created_at, id, state)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_imported
        ON keys(instance_id, imported, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_update
        ON keys(instance_id, updated_at, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_rotation
        ON keys(instance_id, last_rotated_at NULLS FIRST, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_deletion
        ON keys(instance_id, deleted_at NULLS FIRST, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_expiration
        ON keys(instance_id, expiration NULLS FIRST, created_at, id, state, kind)
        WHERE purged_at IS NULL;",
    // 9: SQLite's migration 15: how many successful requests an aggregated audit event stands
    // for (NULL for an event of one request), linked and pending alike.
    "ALTER TABLE audit_events ADD COLUMN count BIGINT;
    ALTER TABLE audit_pending ADD COLUMN count BIGINT;",
];

/// Brings the database to the latest schema: one transaction under the migration lock, so a
/// node that starts while another migrates waits and then finds nothing to do.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS keyward_schema (version BIGINT NOT NULL)")
        .await
        .map_err(pg_error)?;
    let current: Option<i64> = tx
        .query_opt("SELECT version FROM keyward_schema", &[])
        .await
        .map_err(pg_error)?
        .map(|r| r.get(0));
    let known = MIGRATIONS.len();
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(usize::MAX);
    if current > known {
        return Err(StoreError::Unavailable(format!(
            "the database's schema is version {current}, newer than this Keyward knows \
             ({known}): upgrade this node to the version the other nodes run"
        )));
    }
    for sql in MIGRATIONS.iter().skip(current) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
    }
    if current < known {
        let v = i64::try_from(known).unwrap_or(i64::MAX);
        tx.execute("DELETE FROM keyward_schema", &[])
            .await
            .map_err(pg_error)?;
        tx.execute("INSERT INTO keyward_schema (version) VALUES ($1)", &[&v])
            .await
            .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}
