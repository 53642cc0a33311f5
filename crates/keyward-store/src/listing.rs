//! The SQL of key listings: states, kind, ring, name/alias search, date filters and sort order,
//! always as bound parameters (never user text in the statement). Shared by both backends: the
//! statement differs only in its placeholders (`?` for SQLite, `$n` for PostgreSQL) and, on
//! PostgreSQL, in spelling out SQLite's ordering (NULLs first ascending, text compared bytewise).

use keyward_core::{Compare, InstanceId, KeyDate, KeyFilter, KeyId, KeyState, SortKey};

use crate::rows::nanos;

/// How a backend writes bound parameters and orders rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `?` placeholders, bound in order; NULLs sort first ascending, text bytewise.
    Sqlite,
    /// `$1`, `$2`, ...; orderings are spelled out to match SQLite's.
    Postgres,
}

/// A bound argument of a listing statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A TEXT value.
    Text(String),
    /// An INTEGER / BIGINT value.
    Int(i64),
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::Int(i) => i.to_sql(),
        }
    }
}

/// A listing's `WHERE` condition, its arguments and its `ORDER BY` clause.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    dialect: Dialect,
    /// The condition (over table `keys`).
    pub cond: String,
    /// The condition's arguments, in placeholder order.
    pub args: Vec<Arg>,
    /// The `ORDER BY` clause (without the keywords).
    pub order: String,
}

impl KeyQuery {
    /// Adds an argument after the condition's (e.g. a page's limit) and returns its placeholder.
    pub fn bind(&mut self, arg: Arg) -> String {
        bind(self.dialect, &mut self.args, arg)
    }
}

fn bind(dialect: Dialect, args: &mut Vec<Arg>, arg: Arg) -> String {
    args.push(arg);
    match dialect {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${}", args.len()),
    }
}

fn date_column(d: KeyDate) -> &'static str {
    match d {
        KeyDate::Creation => "created_at",
        KeyDate::LastUpdate => "updated_at",
        KeyDate::LastRotate => "last_rotated_at",
        KeyDate::Deletion => "deleted_at",
        KeyDate::Expiration => "expiration",
    }
}

/// `LIKE` pattern matching `s` anywhere, with `%`, `_` and the escape character escaped.
fn contains_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The `WHERE` condition with its arguments, and the `ORDER BY` clause, for `filter`.
pub fn key_query(instance: InstanceId, filter: &KeyFilter, dialect: Dialect) -> KeyQuery {
    let states = listed_states(filter);
    let mut args: Vec<Arg> = Vec::new();
    let inst = bind(dialect, &mut args, Arg::Text(instance.to_string()));
    let states: Vec<String> = states
        .into_iter()
        .map(|s| bind(dialect, &mut args, Arg::Int(s)))
        .collect();
    // An exact search finds a handful of keys by index (below); without statistics SQLite
    // would rather walk the instance's listing index in page order and test each key against
    // them. A unary `+` keeps it from using the instance column for an index, so it starts
    // from the search's lookups (PostgreSQL plans with statistics and has no unary `+` on
    // text).
    let lookup =
        dialect == Dialect::Sqlite && filter.search.as_ref().is_some_and(|s| s.exact && !s.not);
    let inst_col = if lookup {
        "+instance_id"
    } else {
        "instance_id"
    };
    let mut cond = format!(
        "{inst_col} = {inst} AND purged_at IS NULL AND state IN ({})",
        states.join(",")
    );
    if let Some(extractable) = filter.extractable {
        let p = bind(dialect, &mut args, Arg::Int(i64::from(extractable)));
        cond.push_str(&format!(" AND kind = {p}"));
    }
    if let Some(ring) = &filter.key_ring {
        let p = bind(dialect, &mut args, Arg::Text(ring.clone()));
        cond.push_str(&format!(" AND key_ring = {p}"));
    }
    if let Some(search) = &filter.search {
        let needle = if search.exact {
            search.query.to_lowercase()
        } else {
            contains_pattern(&search.query)
        };
        let mut any = Vec::new();
        let id = search
            .query
            .parse::<KeyId>()
            .is_ok()
            .then(|| search.query.to_lowercase());
        if search.exact {
            // An exact search is a union of index lookups (migration 12's indexes on the
            // lowered name and alias, and the primary key), which both planners drive the
            // page from; an OR of those terms would scan the instance's keys.
            let mut ids = Vec::new();
            if search.in_name {
                let p = bind(dialect, &mut args, Arg::Text(needle.clone()));
                ids.push(format!("SELECT id FROM keys WHERE lower(name) = {p}"));
            }
            if search.in_alias {
                let i = bind(dialect, &mut args, Arg::Text(instance.to_string()));
                let p = bind(dialect, &mut args, Arg::Text(needle));
                ids.push(format!(
                    "SELECT key_id FROM key_aliases WHERE instance_id = {i} AND lower(alias) = {p}"
                ));
            }
            if let Some(id) = id {
                let p = bind(dialect, &mut args, Arg::Text(id));
                ids.push(format!("SELECT CAST({p} AS TEXT)"));
            }
            if !ids.is_empty() {
                any.push(format!("id IN ({})", ids.join(" UNION ALL ")));
            }
        } else {
            if search.in_name {
                let p = bind(dialect, &mut args, Arg::Text(needle.clone()));
                any.push(format!("lower(name) LIKE {p} ESCAPE '\\'"));
            }
            if search.in_alias {
                let p = bind(dialect, &mut args, Arg::Text(needle));
                any.push(format!(
                    "EXISTS (SELECT 1 FROM key_aliases a WHERE a.key_id = keys.id \
                     AND lower(a.alias) LIKE {p} ESCAPE '\\')"
                ));
            }
            if let Some(id) = id {
                let p = bind(dialect, &mut args, Arg::Text(id));
                any.push(format!("id = {p}"));
            }
        }
        let any = if any.is_empty() {
            "FALSE".to_owned()
        } else {
            any.join(" OR ")
        };
        let not = if search.not { "NOT " } else { "" };
        cond.push_str(&format!(" AND {not}({any})"));
    }
    for f in &filter.dates {
        let col = date_column(f.field);
        match (f.value, f.op) {
            (None, Compare::Eq) => cond.push_str(&format!(" AND {col} IS NULL")),
            // "before none" and the like match nothing meaningful: match nothing.
            (None, _) => cond.push_str(" AND FALSE"),
            (Some(t), op) => {
                let op = match op {
                    Compare::Eq => "=",
                    Compare::Lt => "<",
                    Compare::Lte => "<=",
                    Compare::Gt => ">",
                    Compare::Gte => ">=",
                };
                let p = bind(dialect, &mut args, Arg::Int(nanos(t)));
                cond.push_str(&format!(" AND {col} {op} {p}"));
            }
        }
    }
    // SQLite sorts NULLs first ascending (last descending) and compares text bytewise;
    // PostgreSQL is told to do the same.
    let (text, nulls_asc, nulls_desc) = match dialect {
        Dialect::Sqlite => ("", "", ""),
        Dialect::Postgres => (" COLLATE \"C\"", " NULLS FIRST", " NULLS LAST"),
    };
    let mut order: Vec<String> = filter
        .sort
        .iter()
        .map(|(key, desc)| {
            let col = match key {
                SortKey::Id => format!("id{text}"),
                SortKey::State => "state".to_owned(),
                SortKey::Extractable => "kind".to_owned(),
                SortKey::Imported => "imported".to_owned(),
                SortKey::Date(d) => date_column(*d).to_owned(),
            };
            if *desc {
                format!("{col} DESC{nulls_desc}")
            } else {
                format!("{col} ASC{nulls_asc}")
            }
        })
        .collect();
    if order.is_empty() {
        order.push("created_at ASC".to_owned());
    }
    order.push(format!("id{text} ASC"));
    KeyQuery {
        dialect,
        cond,
        args,
        order: order.join(", "),
    }
}

/// The statement and arguments counting the keys `filter` selects from the maintained counts
/// (migration 12's `key_counts`), when it filters by state alone (what `HEAD` and a plain
/// listing ask): a few rows read whatever the number of keys. `None`: count the rows.
pub fn counted_total(
    instance: InstanceId,
    filter: &KeyFilter,
    dialect: Dialect,
) -> Option<(String, Vec<Arg>)> {
    let plain = filter.extractable.is_none()
        && filter.key_ring.is_none()
        && filter.search.is_none()
        && filter.dates.is_empty();
    if !plain {
        return None;
    }
    let mut args = Vec::new();
    let inst = bind(dialect, &mut args, Arg::Text(instance.to_string()));
    let states: Vec<String> = listed_states(filter)
        .into_iter()
        .map(|s| bind(dialect, &mut args, Arg::Int(s)))
        .collect();
    Some((
        format!(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM key_counts \
             WHERE instance_id = {inst} AND state IN ({})",
            states.join(",")
        ),
        args,
    ))
}

/// The state codes a listing selects: the filter's, or all but Destroyed.
fn listed_states(filter: &KeyFilter) -> Vec<i64> {
    if filter.states.is_empty() {
        [
            KeyState::PreActive,
            KeyState::Active,
            KeyState::Suspended,
            KeyState::Deactivated,
        ]
        .iter()
        .map(|s| i64::from(s.code()))
        .collect()
    } else {
        filter.states.iter().map(|s| i64::from(s.code())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        let instance = InstanceId::random();
        let filter = KeyFilter {
            key_ring: Some("r".into()),
            ..KeyFilter::default()
        };
        let mut lite = key_query(instance, &filter, Dialect::Sqlite);
        let mut pg = key_query(instance, &filter, Dialect::Postgres);
        assert_eq!(lite.args, pg.args);
        assert!(!lite.cond.contains('$'));
        assert_eq!(lite.bind(Arg::Int(1)), "?");
        let n = pg.args.len() + 1;
        assert_eq!(pg.bind(Arg::Int(1)), format!("${n}"));
        assert!(pg.cond.starts_with("instance_id = $1 AND"));
        assert!(pg.cond.ends_with(&format!("key_ring = ${}", n - 1)));
    }

    /// The plans SQLite picks for the statements `SqliteStore::keys` runs, on an empty database
    /// (no statistics): each starts from an index, none scans the keys table. See: issue 19.
    #[test]
    fn sqlite_listings_start_from_an_index() {
        use keyward_core::KeySearch;
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let plan = |sql: &str, args: &[Arg]| -> String {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = st
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let instance = InstanceId::random();
        let page = |filter: &KeyFilter| {
            let mut q = key_query(instance, filter, Dialect::Sqlite);
            let limit = q.bind(Arg::Int(200));
            let offset = q.bind(Arg::Int(0));
            plan(
                &format!(
                    "SELECT id FROM keys WHERE {} ORDER BY {} LIMIT {limit} OFFSET {offset}",
                    q.cond, q.order
                ),
                &q.args,
            )
        };
        let listing = page(&KeyFilter::default());
        assert!(listing.contains("USING INDEX keys_listed"), "{listing}");
        assert!(!listing.contains("TEMP B-TREE"), "{listing}");
        let search = |query: &str| KeyFilter {
            search: Some(KeySearch {
                query: query.into(),
                exact: true,
                not: false,
                in_name: true,
                in_alias: true,
            }),
            ..KeyFilter::default()
        };
        let exact = page(&search("payments"));
        assert!(exact.contains("keys_by_name"), "{exact}");
        assert!(exact.contains("key_aliases_by_lower"), "{exact}");
        assert!(exact.contains("sqlite_autoindex_keys_1 (id=?)"), "{exact}");
        assert!(!exact.contains("SCAN keys"), "{exact}");
        let (sql, args) = counted_total(instance, &KeyFilter::default(), Dialect::Sqlite).unwrap();
        let total = plan(&sql, &args);
        assert!(total.contains("key_counts"), "{total}");
        assert!(!total.contains("SCAN"), "{total}");
        assert!(counted_total(instance, &search("x"), Dialect::Sqlite).is_none());
    }
}
