//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: instances, keys and versions, identities, token-signing keys, audit events.
    "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL REFERENCES instances(id),
        kind INTEGER NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        state INTEGER NOT NULL,
        imported INTEGER NOT NULL,
        key_ring TEXT NOT NULL,
        expiration INTEGER,
        bits INTEGER NOT NULL,
        current_version INTEGER NOT NULL,
        current_version_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        state_changed_at INTEGER NOT NULL,
        last_rotated_at INTEGER,
        deleted_at INTEGER,
        deleted_by TEXT,
        signature BLOB NOT NULL
    );
    CREATE INDEX keys_by_instance ON keys(instance_id, created_at, id);
    CREATE TABLE key_versions (
        key_id TEXT NOT NULL REFERENCES keys(id),
        number INTEGER NOT NULL,
        id TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        wrapping_key TEXT NOT NULL,
        material BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (key_id, number)
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        subject TEXT NOT NULL,
        account TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        locked INTEGER NOT NULL
    );
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        wrapping_key TEXT NOT NULL,
        private_key BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        time INTEGER NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason_code INTEGER NOT NULL,
        reason TEXT,
        initiator TEXT NOT NULL,
        address TEXT,
        instance_id TEXT,
        target TEXT,
        key_state INTEGER,
        key_version TEXT,
        request_id TEXT NOT NULL
    );",
    // 2: key policies, the deletion lifecycle, key rings, aliases, instance policies.
    "ALTER TABLE keys ADD COLUMN rotation TEXT;
    ALTER TABLE keys ADD COLUMN dual_auth TEXT;
    ALTER TABLE keys ADD COLUMN deletion_set_by TEXT;
    ALTER TABLE keys ADD COLUMN deletion_set_at INTEGER;
    ALTER TABLE keys ADD COLUMN purged_at INTEGER;
    ALTER TABLE keys ADD COLUMN next_rotation_at INTEGER;
    CREATE INDEX keys_due_rotation ON keys(next_rotation_at) WHERE next_rotation_at IS NOT NULL;
    CREATE INDEX keys_due_expiry ON keys(expiration) WHERE expiration IS NOT NULL AND state = 1;
    CREATE INDEX keys_due_purge ON keys(deleted_at) WHERE state = 5 AND purged_at IS NULL;
    CREATE INDEX keys_by_ring ON keys(instance_id, key_ring);
    CREATE TABLE key_rings (
        instance_id TEXT NOT NULL REFERENCES instances(id),
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (instance_id, id)
    );
    CREATE TABLE key_aliases (
        instance_id TEXT NOT NULL,
        alias TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES keys(id),
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (instance_id, alias)
    );
    CREATE INDEX key_aliases_by_key ON key_aliases(key_id);
    CREATE TABLE instance_policies (
        instance_id TEXT NOT NULL REFERENCES instances(id),
        policy_type TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        attributes TEXT,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (instance_id, policy_type)
    );",
    // 3: KMIP adapters, their client certificates and KMIP objects.
    "CREATE TABLE kmip_adapters (
        id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL REFERENCES instances(id),
        name TEXT NOT NULL,
        description TEXT,
        profile TEXT NOT NULL,
        crk_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        signature BLOB NOT NULL,
        UNIQUE (instance_id, name)
    );
    CREATE INDEX kmip_adapters_by_instance ON kmip_adapters(instance_id, created_at, id);
    CREATE TABLE kmip_certificates (
        id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        adapter_id TEXT NOT NULL REFERENCES kmip_adapters(id),
        name TEXT NOT NULL,
        certificate TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        signature BLOB NOT NULL,
        UNIQUE (adapter_id, name),
        UNIQUE (instance_id, fingerprint)
    );
    CREATE INDEX kmip_certificates_by_adapter ON kmip_certificates(adapter_id, created_at, id);
    CREATE TABLE kmip_objects (
        id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        adapter_id TEXT NOT NULL REFERENCES kmip_adapters(id),
        object_type INTEGER NOT NULL,
        state INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by_cert_id TEXT NOT NULL,
        created_by TEXT NOT NULL,
        updated_at INTEGER,
        updated_by_cert_id TEXT,
        updated_by TEXT,
        destroyed_at INTEGER,
        destroyed_by_cert_id TEXT,
        destroyed_by TEXT
    );
    CREATE INDEX kmip_objects_by_adapter ON kmip_objects(adapter_id, state, created_at, id);",
    // 4: identities, access policies, service authorizations, refresh tokens.
    "CREATE TABLE identities (
        iam_id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        service_name TEXT,
        service_instance TEXT,
        locked INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE INDEX identities_by_account ON identities(account, created_at);
    CREATE INDEX api_keys_by_account ON api_keys(account, subject);
    CREATE TABLE access_policies (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        subject TEXT NOT NULL,
        roles TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE INDEX access_policies_by_subject ON access_policies(account, subject);
    CREATE TABLE authorizations (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        source_service TEXT NOT NULL,
        source_instance TEXT,
        target TEXT NOT NULL,
        roles TEXT NOT NULL,
        delegation INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE INDEX authorizations_by_service ON authorizations(account, source_service);
    CREATE TABLE refresh_tokens (
        hash BLOB PRIMARY KEY,
        api_key_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 5: import tokens (one per instance).
    "CREATE TABLE import_tokens (
        instance_id TEXT PRIMARY KEY REFERENCES instances(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        max_retrievals INTEGER NOT NULL,
        remaining INTEGER NOT NULL,
        nonce BLOB NOT NULL,
        public_key BLOB NOT NULL,
        wrapping_key TEXT NOT NULL,
        private_key BLOB NOT NULL,
        created_by TEXT NOT NULL
    );",
    // 6: the audit hash chain (existing events are linked at open), signed checkpoints of its
    // head, export cursors, and the per-instance index behind audit queries.
    "ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
    ALTER TABLE audit_events ADD COLUMN hash BLOB;
    CREATE INDEX audit_events_by_instance ON audit_events(instance_id, seq);
    CREATE TABLE audit_checkpoints (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        time INTEGER NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE TABLE audit_export_cursors (
        sink TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // 7: registrations, lifecycle events (the outbox), webhook subscriptions.
    "CREATE TABLE registrations (
        key_id TEXT NOT NULL REFERENCES keys(id),
        resource_crn TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        description TEXT,
        metadata TEXT,
        prevent_key_deletion INTEGER NOT NULL,
        key_version_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        adopter_state TEXT,
        PRIMARY KEY (key_id, resource_crn)
    );
    CREATE INDEX registrations_by_instance ON registrations(instance_id, key_id, resource_crn);
    CREATE TABLE key_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key_state INTEGER NOT NULL,
        key_version TEXT NOT NULL,
        resource_crns TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        acked_at INTEGER,
        ack_state TEXT,
        ack_version TEXT,
        delivered_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        lease_owner TEXT,
        lease_until INTEGER
    );
    CREATE INDEX key_events_by_recipient ON key_events(recipient, instance_id, seq);
    CREATE INDEX key_events_by_key ON key_events(key_id, recipient, seq);
    CREATE INDEX key_events_undelivered ON key_events(seq)
        WHERE delivered_at IS NULL AND acked_at IS NULL;
    CREATE TABLE event_subscriptions (
        recipient TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        url TEXT NOT NULL,
        wrapping_key TEXT NOT NULL,
        secret BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (recipient, instance_id)
    );",
    // 8: export sinks are leased, so that of several processes on one database one exports each
    // sink at a time.
    "ALTER TABLE audit_export_cursors ADD COLUMN holder TEXT;
    ALTER TABLE audit_export_cursors ADD COLUMN lease_until INTEGER;",
    // 9: refresh tokens are spent, not deleted, and know their family (the tokens descending
    // from one login), so a spent one presented again revokes its descendants; expired ones
    // are purged. A token stored before this is its own family.
    "ALTER TABLE refresh_tokens ADD COLUMN family BLOB;
    ALTER TABLE refresh_tokens ADD COLUMN spent_at INTEGER;
    UPDATE refresh_tokens SET family = hash;
    CREATE INDEX refresh_tokens_by_family ON refresh_tokens(family);
    CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens(expires_at);",
    // 10: delegation: the services a delegating authorization may authorize, and the delegating
    // authorization a delegated one was made under (deleted with it).
    "ALTER TABLE authorizations ADD COLUMN dependents TEXT;
    ALTER TABLE authorizations ADD COLUMN delegated_from TEXT;
    CREATE INDEX authorizations_by_parent ON authorizations(account, delegated_from);",
    // 11: KMIP objects carry what the KMIP listener needs: the attributes Locate matches on
    // (first Name, Cryptographic Algorithm and Length, Object Group), the others as JSON, the
    // material sealed under the adapter's root key (NULL once destroyed) and a signature (empty
    // for an object stored before this). Locate pages oldest first within an adapter; the
    // listener finds a client's certificates by fingerprint in any instance.
    "ALTER TABLE kmip_objects ADD COLUMN name TEXT;
    ALTER TABLE kmip_objects ADD COLUMN algorithm INTEGER;
    ALTER TABLE kmip_objects ADD COLUMN length INTEGER;
    ALTER TABLE kmip_objects ADD COLUMN object_group TEXT;
    ALTER TABLE kmip_objects ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE kmip_objects ADD COLUMN material BLOB;
    ALTER TABLE kmip_objects ADD COLUMN signature BLOB NOT NULL DEFAULT x'';
    CREATE INDEX kmip_objects_by_created ON kmip_objects(adapter_id, created_at, id);
    CREATE INDEX kmip_objects_by_name ON kmip_objects(adapter_id, name, created_at, id)
        WHERE name IS NOT NULL;
    CREATE INDEX kmip_objects_by_group ON kmip_objects(adapter_id, object_group, created_at, id)
        WHERE object_group IS NOT NULL;
    CREATE INDEX kmip_certificates_by_fingerprint ON kmip_certificates(fingerprint);",
    // 12: listings that stay flat with many keys (issue 19). `key_counts` holds how many
    // unpurged keys each instance has in each state, kept by triggers in the key write's own
    // transaction, so a listing's total (and HEAD) without other filters reads a few rows
    // instead of counting the instance's keys (`shard` is PostgreSQL's, to spread concurrent
    // writers; always 0 here). A partial index carries what the default listing filters and
    // orders by, so skipping to a page reads no table rows; exact name and alias searches go
    // through indexes on the lowered text.
    "CREATE TABLE key_counts (
        instance_id TEXT NOT NULL,
        state INTEGER NOT NULL,
        shard INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (instance_id, state, shard)
    );
    INSERT INTO key_counts (instance_id, state, shard, n)
        SELECT instance_id, state, 0, COUNT(*) FROM keys WHERE purged_at IS NULL
        GROUP BY instance_id, state;
    CREATE TRIGGER key_counts_insert AFTER INSERT ON keys WHEN NEW.purged_at IS NULL BEGIN
        INSERT OR IGNORE INTO key_counts (instance_id, state, shard, n)
            VALUES (NEW.instance_id, NEW.state, 0, 0);
        UPDATE key_counts SET n = n + 1
            WHERE instance_id = NEW.instance_id AND state = NEW.state AND shard = 0;
    END;
    CREATE TRIGGER key_counts_update AFTER UPDATE OF instance_id, state, purged_at ON keys
        WHEN OLD.instance_id IS NOT NEW.instance_id OR OLD.state IS NOT NEW.state
            OR OLD.purged_at IS NOT NEW.purged_at BEGIN
        UPDATE key_counts SET n = n - 1
            WHERE OLD.purged_at IS NULL AND instance_id = OLD.instance_id AND state = OLD.state
            AND shard = 0;
        INSERT OR IGNORE INTO key_counts (instance_id, state, shard, n)
            SELECT NEW.instance_id, NEW.state, 0, 0 WHERE NEW.purged_at IS NULL;
        UPDATE key_counts SET n = n + 1
            WHERE NEW.purged_at IS NULL AND instance_id = NEW.instance_id AND state = NEW.state
            AND shard = 0;
    END;
    CREATE TRIGGER key_counts_delete AFTER DELETE ON keys WHEN OLD.purged_at IS NULL BEGIN
        UPDATE key_counts SET n = n - 1
            WHERE instance_id = OLD.instance_id AND state = OLD.state AND shard = 0;
    END;
    CREATE INDEX keys_listed ON keys(instance_id, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_by_name ON keys(lower(name));
    CREATE INDEX key_aliases_by_lower ON key_aliases(instance_id, lower(alias));
    -- The key generation (`Store::key_generation`): moved by every update or deletion of a
    -- key or version, by any process, in that write's transaction; the key cache reuses
    -- verified records while it stands still.
    CREATE TABLE key_generation (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
    INSERT INTO key_generation (id, n) VALUES (0, 0);
    CREATE TRIGGER key_generation_key_update AFTER UPDATE ON keys BEGIN
        UPDATE key_generation SET n = n + 1 WHERE id = 0;
    END;
    CREATE TRIGGER key_generation_key_delete AFTER DELETE ON keys BEGIN
        UPDATE key_generation SET n = n + 1 WHERE id = 0;
    END;
    CREATE TRIGGER key_generation_version_update AFTER UPDATE ON key_versions BEGIN
        UPDATE key_generation SET n = n + 1 WHERE id = 0;
    END;
    CREATE TRIGGER key_generation_version_delete AFTER DELETE ON key_versions BEGIN
        UPDATE key_generation SET n = n + 1 WHERE id = 0;
    END;",
    // 13: aggregated audit events (`[audit] aggregate_crypto`, issue 20): how many successful
    // requests an event stands for; NULL for an event of one request (every event before this).
    "ALTER TABLE audit_events ADD COLUMN count INTEGER;",
];

/// The schema version this build migrates to (`PRAGMA user_version`).
pub(crate) const VERSION: usize = MIGRATIONS.len();

/// Brings the database to the latest schema, one transaction per migration.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
