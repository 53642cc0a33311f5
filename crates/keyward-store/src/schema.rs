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
    // 13: substring search and every sort of the key listing served by indexes (issue 19).
    // `key_texts` holds each unpurged key's lowered name (`alias` = '') and each alias
    // (lowered in `text`), kept by triggers; `key_trigrams`, an FTS5 trigram index over it
    // (external content: the text is stored once), answers "which texts hold this substring"
    // with a phrase query. Case-sensitive trigrams over the text SQLite's `lower()` made keep
    // the semantics of `lower(name) LIKE '%..%'` exactly. Its rows are keyed by
    // `key_texts.id`, an INTEGER PRIMARY KEY, which VACUUM (and `VACUUM INTO` backups) keep;
    // the implicit rowids of `keys` and `key_aliases` they may renumber. One partial index per
    // sortable column, (instance, column, created_at, id) as the listing breaks ties, with the
    // state and kind its filters test, lets a page of any one-column sort walk an index
    // instead of sorting the instance's keys.
    "CREATE TABLE key_texts (
        id INTEGER PRIMARY KEY,
        key_id TEXT NOT NULL,
        alias TEXT NOT NULL,
        text TEXT NOT NULL
    );
    INSERT INTO key_texts (key_id, alias, text)
        SELECT id, '', lower(name) FROM keys WHERE purged_at IS NULL;
    INSERT INTO key_texts (key_id, alias, text)
        SELECT key_id, alias, lower(alias) FROM key_aliases;
    CREATE UNIQUE INDEX key_texts_by_key ON key_texts(key_id, alias);
    CREATE VIRTUAL TABLE key_trigrams USING fts5(text, content = 'key_texts',
        content_rowid = 'id', tokenize = 'trigram case_sensitive 1');
    INSERT INTO key_trigrams (key_trigrams) VALUES ('rebuild');
    CREATE TRIGGER key_texts_insert AFTER INSERT ON key_texts BEGIN
        INSERT INTO key_trigrams (rowid, text) VALUES (NEW.id, NEW.text);
    END;
    CREATE TRIGGER key_texts_delete AFTER DELETE ON key_texts BEGIN
        INSERT INTO key_trigrams (key_trigrams, rowid, text) VALUES ('delete', OLD.id, OLD.text);
    END;
    CREATE TRIGGER key_texts_update AFTER UPDATE ON key_texts BEGIN
        INSERT INTO key_trigrams (key_trigrams, rowid, text) VALUES ('delete', OLD.id, OLD.text);
        INSERT INTO key_trigrams (rowid, text) VALUES (NEW.id, NEW.text);
    END;
    CREATE TRIGGER key_texts_key_insert AFTER INSERT ON keys WHEN NEW.purged_at IS NULL BEGIN
        INSERT INTO key_texts (key_id, alias, text) VALUES (NEW.id, '', lower(NEW.name));
    END;
    CREATE TRIGGER key_texts_key_update AFTER UPDATE OF id, name, purged_at ON keys
        WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name
            OR OLD.purged_at IS NOT NEW.purged_at BEGIN
        DELETE FROM key_texts WHERE key_id = OLD.id AND alias = '';
        INSERT INTO key_texts (key_id, alias, text)
            SELECT NEW.id, '', lower(NEW.name) WHERE NEW.purged_at IS NULL;
    END;
    CREATE TRIGGER key_texts_key_delete AFTER DELETE ON keys BEGIN
        DELETE FROM key_texts WHERE key_id = OLD.id AND alias = '';
    END;
    CREATE TRIGGER key_texts_alias_insert AFTER INSERT ON key_aliases BEGIN
        INSERT INTO key_texts (key_id, alias, text)
            VALUES (NEW.key_id, NEW.alias, lower(NEW.alias));
    END;
    CREATE TRIGGER key_texts_alias_update AFTER UPDATE OF key_id, alias ON key_aliases BEGIN
        DELETE FROM key_texts WHERE key_id = OLD.key_id AND alias = OLD.alias;
        INSERT INTO key_texts (key_id, alias, text)
            VALUES (NEW.key_id, NEW.alias, lower(NEW.alias));
    END;
    CREATE TRIGGER key_texts_alias_delete AFTER DELETE ON key_aliases BEGIN
        DELETE FROM key_texts WHERE key_id = OLD.key_id AND alias = OLD.alias;
    END;
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
        ON keys(instance_id, last_rotated_at, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_deletion
        ON keys(instance_id, deleted_at, created_at, id, state, kind)
        WHERE purged_at IS NULL;
    CREATE INDEX keys_sorted_by_expiration
        ON keys(instance_id, expiration, created_at, id, state, kind)
        WHERE purged_at IS NULL;",
    // 14: key versions without the index on their own id (issue 19). Every read of a version
    // names its key (`key_id = ? AND number = ?`, `key_id = ? AND id = ?`), which the primary
    // key serves; the `UNIQUE` index on `id` served no query and cost every creation and
    // rotation one more insert at a random place of a B-tree (the ids are random UUIDs): about
    // one of the five pages a key creation wrote to the log at 100 000 keys. SQLite drops a
    // column constraint only by rebuilding the table (the same rows, rowids and signatures);
    // its triggers go with the old table and are made again.
    "CREATE TABLE key_versions_14 (
        key_id TEXT NOT NULL REFERENCES keys(id),
        number INTEGER NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        wrapping_key TEXT NOT NULL,
        material BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (key_id, number)
    );
    INSERT INTO key_versions_14
        (rowid, key_id, number, id, created_at, wrapping_key, material, signature)
        SELECT rowid, key_id, number, id, created_at, wrapping_key, material, signature
        FROM key_versions ORDER BY rowid;
    DROP TABLE key_versions;
    ALTER TABLE key_versions_14 RENAME TO key_versions;
    CREATE TRIGGER key_generation_version_update AFTER UPDATE ON key_versions BEGIN
        UPDATE key_generation SET n = n + 1 WHERE id = 0;
    END;
    CREATE TRIGGER key_generation_version_delete AFTER DELETE ON key_versions BEGIN
        UPDATE key_generation SET n = n + 1 WHERE id = 0;
    END;",
    // 15: aggregated audit events (`[audit] aggregate_crypto`, issue 20): how many successful
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of migration 12 with keys and aliases gets its trigram index filled by
    /// migration 13, and the index then follows renames, purges and alias changes (checked
    /// against its content with FTS5's own integrity check). See: issue 19.
    #[test]
    fn migration_13_indexes_existing_names_and_aliases() {
        let mut c = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS.iter().take(12) {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 12).unwrap();
        c.execute_batch(
            "INSERT INTO instances VALUES ('i', 'a', 'n', 0);
             INSERT INTO keys (id, instance_id, kind, name, state, imported, key_ring, bits,
                 current_version, current_version_id, revision, created_at, created_by,
                 updated_at, state_changed_at, signature)
             VALUES ('k1', 'i', 0, 'Payments-DB', 1, 0, 'default', 256, 1, 'v1', 1, 1, 'u', 1,
                 1, x''),
                ('k2', 'i', 0, 'ledger', 1, 0, 'default', 256, 1, 'v2', 1, 2, 'u', 2, 2, x'');
             INSERT INTO key_aliases VALUES ('i', 'Books-2024', 'k2', 0, 'u', x'');",
        )
        .unwrap();
        migrate(&mut c).unwrap();
        let found = |c: &Connection, needle: &str| -> Vec<String> {
            let mut st = c
                .prepare(
                    "SELECT key_id || ':' || alias FROM key_texts WHERE id IN \
                     (SELECT rowid FROM key_trigrams WHERE key_trigrams MATCH ?1) ORDER BY 1",
                )
                .unwrap();
            st.query_map([format!("\"{needle}\"")], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let intact = |c: &Connection| {
            c.execute(
                "INSERT INTO key_trigrams (key_trigrams, rank) VALUES ('integrity-check', 1)",
                [],
            )
            .unwrap();
        };
        intact(&c);
        assert_eq!(found(&c, "ments-d"), ["k1:"]);
        assert_eq!(found(&c, "books-2"), ["k2:Books-2024"]);
        // Case-sensitive trigrams over lowered text: the raw spelling is not indexed.
        assert!(found(&c, "Books").is_empty());
        c.execute_batch(
            "UPDATE keys SET name = 'Receipts' WHERE id = 'k1';
             UPDATE keys SET purged_at = 5 WHERE id = 'k2';
             DELETE FROM key_aliases WHERE alias = 'Books-2024';
             INSERT INTO key_aliases VALUES ('i', 'pay-2', 'k1', 0, 'u', x'');",
        )
        .unwrap();
        intact(&c);
        assert!(found(&c, "ments").is_empty());
        assert!(found(&c, "ledger").is_empty());
        assert!(found(&c, "books").is_empty());
        assert_eq!(found(&c, "eipt"), ["k1:"]);
        assert_eq!(found(&c, "pay-"), ["k1:pay-2"]);
        c.execute_batch("DELETE FROM key_aliases; DELETE FROM keys;")
            .unwrap();
        intact(&c);
        assert_eq!(
            c.query_row("SELECT COUNT(*) FROM key_texts", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            0
        );
    }
}
