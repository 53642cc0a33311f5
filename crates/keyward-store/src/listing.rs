//! The SQL of key listings: states, kind, ring, name/alias search, date filters and sort order,
//! always as bound parameters (never user text in the statement). Shared by both backends: the
//! statement differs only in its placeholders (`?` for SQLite, `$n` for PostgreSQL) and, on
//! PostgreSQL, in spelling out SQLite's ordering (NULLs first ascending, text compared bytewise).

use keyward_core::{Compare, InstanceId, KeyDate, KeyFilter, KeyId, KeySearch, KeyState, SortKey};

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

/// A listing's `WHERE` condition, its arguments and its sort order.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    dialect: Dialect,
    /// The condition (over table `keys`).
    pub cond: String,
    /// The condition's arguments, in placeholder order.
    pub args: Vec<Arg>,
    /// The sort, first key first, ending with the id (a total order).
    sort: Vec<SortTerm>,
}

impl KeyQuery {
    /// Adds an argument after the condition's (e.g. a page's limit) and returns its placeholder.
    pub fn bind(&mut self, arg: Arg) -> String {
        bind(self.dialect, &mut self.args, arg)
    }

    /// The `ORDER BY` clause (without the keywords); `reverse`: every term the other way
    /// round, NULLs included, so the walk meets the rows in exactly the opposite order.
    pub fn order(&self, reverse: bool) -> String {
        self.sort
            .iter()
            .map(|t| {
                // SQLite sorts NULLs first ascending (last descending); PostgreSQL is told to
                // do the same where a column can be NULL (and left to its default, which its
                // indexes on NOT NULL columns have, where not).
                let (nulls_asc, nulls_desc) = match self.dialect {
                    Dialect::Postgres if t.nullable => (" NULLS FIRST", " NULLS LAST"),
                    _ => ("", ""),
                };
                let plus = if t.plain { "+" } else { "" };
                if t.desc != reverse {
                    format!("{plus}{} DESC{nulls_desc}", t.column)
                } else {
                    format!("{plus}{} ASC{nulls_asc}", t.column)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One key of a listing's sort.
#[derive(Debug, Clone)]
struct SortTerm {
    column: &'static str,
    /// Written `+column`: no index provides this order (SQLite).
    plain: bool,
    desc: bool,
    nullable: bool,
}

/// Which rows of the sorted listing a page reads: `limit` rows after `offset`, in the listing's
/// order or (`reversed`) in the opposite order, to be turned around once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWalk {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to read.
    pub limit: u64,
    /// Read in the opposite order; the rows are then reversed.
    pub reversed: bool,
}

/// How to read the page at `offset` of a listing of `total` rows. Skipping costs a step per
/// row skipped, so a page past the middle is read from the end: the last page of a million
/// keys skips none instead of 999 800. Pages in the middle still skip up to half the rows.
pub fn page_walk(offset: u32, limit: u32, total: u64) -> PageWalk {
    let (offset, limit) = (u64::from(offset), u64::from(limit));
    if offset >= total || offset <= total / 2 {
        return PageWalk {
            offset,
            limit,
            reversed: false,
        };
    }
    // Rows [offset, end) of the listing are rows [total - end, total - offset) backwards.
    let end = offset.saturating_add(limit).min(total);
    PageWalk {
        offset: total - end,
        limit: end - offset,
        reversed: true,
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

/// Whether a key date can be missing (NULL).
fn date_nullable(d: KeyDate) -> bool {
    matches!(
        d,
        KeyDate::LastRotate | KeyDate::Deletion | KeyDate::Expiration
    )
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

/// The FTS5 query (a phrase: its trigrams at consecutive positions, i.e. the text as a
/// substring) for a needle that is already lowered; `"` is doubled inside the quotes.
fn trigram_phrase(needle: &str) -> String {
    format!("\"{}\"", needle.replace('"', "\"\""))
}

/// Fewest characters a substring search needs to go through the trigram index: a shorter
/// needle has no trigram, and is matched by scanning the instance's names and aliases.
pub const TRIGRAM_MIN_CHARS: usize = 3;

/// The `WHERE` condition with its arguments, and the sort order, for `filter`.
pub fn key_query(instance: InstanceId, filter: &KeyFilter, dialect: Dialect) -> KeyQuery {
    let states = listed_states(filter);
    let mut args: Vec<Arg> = Vec::new();
    let inst = bind(dialect, &mut args, Arg::Text(instance.to_string()));
    let states: Vec<String> = states
        .into_iter()
        .map(|s| bind(dialect, &mut args, Arg::Int(s)))
        .collect();
    // An exact search, or a substring search long enough for trigrams, finds its keys by
    // index (below); without statistics SQLite would rather walk the instance's listing index
    // in page order and test each key against them. A unary `+` keeps it from using the
    // instance column for an index, so it starts from the search's lookups (PostgreSQL plans
    // with statistics and has no unary `+` on text).
    let lookup = dialect == Dialect::Sqlite
        && filter
            .search
            .as_ref()
            .is_some_and(|s| !s.not && (s.exact || trigram_search(s)));
    let inst_col = if lookup {
        "+instance_id"
    } else {
        "instance_id"
    };
    // SQLite without statistics would take an equality on the state or kind as a reason to
    // look keys up in a sort index on that column, then read the table in id order (random
    // pages: 5x slower than the listing's walk at a million keys) and sort. A unary `+` leaves
    // them tests on the columns the index being walked carries.
    let (state_col, kind_col) = match dialect {
        Dialect::Sqlite => ("+state", "+kind"),
        Dialect::Postgres => ("state", "kind"),
    };
    let mut cond = format!(
        "{inst_col} = {inst} AND purged_at IS NULL AND {state_col} IN ({})",
        states.join(",")
    );
    if let Some(extractable) = filter.extractable {
        let p = bind(dialect, &mut args, Arg::Int(i64::from(extractable)));
        cond.push_str(&format!(" AND {kind_col} = {p}"));
    }
    if let Some(ring) = &filter.key_ring {
        let p = bind(dialect, &mut args, Arg::Text(ring.clone()));
        cond.push_str(&format!(" AND key_ring = {p}"));
    }
    if let Some(search) = &filter.search {
        let any = search_terms(instance, search, dialect, &mut args);
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
    // Text compares bytewise on both (PostgreSQL is told to).
    let id = match dialect {
        Dialect::Sqlite => "id",
        Dialect::Postgres => "id COLLATE \"C\"",
    };
    // A sort by several columns is served by no index (SQLite is kept from walking the first
    // column's and sorting each run of equal values, which at a million keys of one state
    // sorts them all: a `+` makes it keep the best rows of one pass instead).
    let plain = dialect == Dialect::Sqlite && filter.sort.len() > 1;
    let mut sort: Vec<SortTerm> = filter
        .sort
        .iter()
        .map(|(key, desc)| {
            let (column, nullable) = match key {
                SortKey::Id => (id, false),
                SortKey::State => ("state", false),
                SortKey::Extractable => ("kind", false),
                SortKey::Imported => ("imported", false),
                SortKey::Date(d) => (date_column(*d), date_nullable(*d)),
            };
            SortTerm {
                column,
                plain,
                desc: *desc,
                nullable,
            }
        })
        .collect();
    if sort.is_empty() {
        sort.push(SortTerm {
            column: "created_at",
            plain: false,
            desc: false,
            nullable: false,
        });
    }
    // Ties are broken by creation and then id, in the direction of the first column: a
    // one-column sort is then exactly the order of that column's index (instance, column,
    // created_at, id), walked forwards or backwards, with nothing to sort; and a new key's
    // entry lands at the end of its run of equal values (most keys have no deletion date,
    // say) rather than at a random place, which costs every key creation a page write per
    // index. A sort that names the id is total already.
    let desc = filter.sort.first().is_some_and(|(_, desc)| *desc);
    let named = |k: SortKey| filter.sort.iter().any(|(key, _)| *key == k);
    if !named(SortKey::Id) {
        if !filter.sort.is_empty() && !named(SortKey::Date(KeyDate::Creation)) {
            sort.push(SortTerm {
                column: "created_at",
                plain: false,
                desc,
                nullable: false,
            });
        }
        sort.push(SortTerm {
            column: id,
            plain: false,
            desc,
            nullable: false,
        });
    }
    KeyQuery {
        dialect,
        cond,
        args,
        sort,
    }
}

/// Whether a search is a substring search the trigram index serves (its lowered needle has
/// at least [`TRIGRAM_MIN_CHARS`] characters).
fn trigram_search(search: &KeySearch) -> bool {
    !search.exact && search.query.to_lowercase().chars().count() >= TRIGRAM_MIN_CHARS
}

/// The alternatives of a name/alias search (any one matching selects the key). What matches
/// is the same on both backends and for every plan: the lowered query equal to (exact) or
/// inside the name or an alias as lowered by the database (ASCII only, both backends'
/// `lower()`), or equal to the key's id.
fn search_terms(
    instance: InstanceId,
    search: &KeySearch,
    dialect: Dialect,
    args: &mut Vec<Arg>,
) -> Vec<String> {
    let lowered = search.query.to_lowercase();
    let id = search
        .query
        .parse::<KeyId>()
        .is_ok()
        .then(|| lowered.clone());
    let mut any = Vec::new();
    if !search.exact && !trigram_search(search) {
        // Too short for trigrams: the instance's names and aliases are scanned.
        let needle = contains_pattern(&search.query);
        if search.in_name {
            let p = bind(dialect, args, Arg::Text(needle.clone()));
            any.push(format!("lower(name) LIKE {p} ESCAPE '\\'"));
        }
        if search.in_alias {
            let p = bind(dialect, args, Arg::Text(needle));
            any.push(format!(
                "EXISTS (SELECT 1 FROM key_aliases a WHERE a.key_id = keys.id \
                 AND lower(a.alias) LIKE {p} ESCAPE '\\')"
            ));
        }
        if let Some(id) = id {
            let p = bind(dialect, args, Arg::Text(id));
            any.push(format!("id = {p}"));
        }
        return any;
    }
    // A union of index lookups, which both planners drive the page from; an OR of the
    // terms would scan the instance's keys.
    let mut ids = Vec::new();
    if search.exact {
        // Migration 12's indexes on the lowered name and alias.
        if search.in_name {
            let p = bind(dialect, args, Arg::Text(lowered.clone()));
            ids.push(format!("SELECT id FROM keys WHERE lower(name) = {p}"));
        }
        if search.in_alias {
            let i = bind(dialect, args, Arg::Text(instance.to_string()));
            let p = bind(dialect, args, Arg::Text(lowered));
            ids.push(format!(
                "SELECT key_id FROM key_aliases WHERE instance_id = {i} AND lower(alias) = {p}"
            ));
        }
    } else if dialect == Dialect::Sqlite {
        // Migration 13's FTS5 trigram index over the lowered names and aliases (`key_texts`):
        // a phrase of the needle's trigrams matches exactly the texts holding it.
        let which = match (search.in_name, search.in_alias) {
            (true, true) => Some(""),
            (true, false) => Some(" AND alias = ''"),
            (false, true) => Some(" AND alias <> ''"),
            (false, false) => None,
        };
        if let Some(which) = which {
            let p = bind(dialect, args, Arg::Text(trigram_phrase(&lowered)));
            ids.push(format!(
                "SELECT key_id FROM key_texts WHERE id IN \
                 (SELECT rowid FROM key_trigrams WHERE key_trigrams MATCH {p}){which}"
            ));
        }
    } else {
        // PostgreSQL's migration 8: `pg_trgm` GIN indexes serve these LIKEs (rechecked, so
        // exact); where the extension could not be installed they are scans.
        let needle = contains_pattern(&search.query);
        if search.in_name {
            let i = bind(dialect, args, Arg::Text(instance.to_string()));
            let p = bind(dialect, args, Arg::Text(needle.clone()));
            ids.push(format!(
                "SELECT id FROM keys WHERE instance_id = {i} AND lower(name) LIKE {p} ESCAPE '\\'"
            ));
        }
        if search.in_alias {
            let i = bind(dialect, args, Arg::Text(instance.to_string()));
            let p = bind(dialect, args, Arg::Text(needle));
            ids.push(format!(
                "SELECT key_id FROM key_aliases WHERE instance_id = {i} \
                 AND lower(alias) LIKE {p} ESCAPE '\\'"
            ));
        }
    }
    if let Some(id) = id {
        let p = bind(dialect, args, Arg::Text(id));
        ids.push(format!("SELECT CAST({p} AS TEXT)"));
    }
    if !ids.is_empty() {
        any.push(format!("id IN ({})", ids.join(" UNION ALL ")));
    }
    any
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
    fn pages_past_the_middle_are_walked_from_the_end() {
        let walk = |offset, limit, total| page_walk(offset, limit, total);
        let fwd = |offset, limit| PageWalk {
            offset,
            limit,
            reversed: false,
        };
        let back = |offset, limit| PageWalk {
            offset,
            limit,
            reversed: true,
        };
        assert_eq!(walk(0, 200, 1_000_000), fwd(0, 200));
        assert_eq!(walk(500_000, 200, 1_000_000), fwd(500_000, 200));
        assert_eq!(walk(999_800, 200, 1_000_000), back(0, 200));
        assert_eq!(walk(999_900, 200, 1_000_000), back(0, 100));
        assert_eq!(walk(600_000, 200, 1_000_000), back(399_800, 200));
        // Past the end: nothing to read, either way.
        assert_eq!(walk(1_000_000, 200, 1_000_000), fwd(1_000_000, 200));
        assert_eq!(walk(7, 5, 0), fwd(7, 5));
        assert_eq!(walk(2, 5, 3), back(0, 1));
    }

    #[test]
    fn trigram_phrases_quote_the_needle() {
        assert_eq!(trigram_phrase("abc"), "\"abc\"");
        assert_eq!(trigram_phrase("a\"b c*"), "\"a\"\"b c*\"");
    }

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
        let page_plan = |filter: &KeyFilter, reverse: bool| {
            let mut q = key_query(instance, filter, Dialect::Sqlite);
            let limit = q.bind(Arg::Int(200));
            let offset = q.bind(Arg::Int(0));
            plan(
                &format!(
                    "SELECT id FROM keys WHERE {} ORDER BY {} LIMIT {limit} OFFSET {offset}",
                    q.cond,
                    q.order(reverse)
                ),
                &q.args,
            )
        };
        let page = |filter: &KeyFilter| page_plan(filter, false);
        let listing = page(&KeyFilter::default());
        assert!(listing.contains("USING INDEX keys_listed"), "{listing}");
        assert!(!listing.contains("TEMP B-TREE"), "{listing}");
        // A last page walks the same index from its end.
        let last = page_plan(&KeyFilter::default(), true);
        assert!(last.contains("USING INDEX keys_listed"), "{last}");
        assert!(!last.contains("TEMP B-TREE"), "{last}");
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
        // A substring search of 3 characters or more starts from the trigram index (over
        // names, aliases or both), and so does its count; a shorter one scans.
        for (in_name, in_alias) in [(true, true), (true, false), (false, true)] {
            let filter = KeyFilter {
                search: Some(KeySearch {
                    query: "ymen".into(),
                    exact: false,
                    not: false,
                    in_name,
                    in_alias,
                }),
                ..KeyFilter::default()
            };
            let sub = page(&filter);
            assert!(sub.contains("key_trigrams VIRTUAL TABLE"), "{sub}");
            assert!(!sub.contains("SCAN keys"), "{sub}");
            let q = key_query(instance, &filter, Dialect::Sqlite);
            let count = plan(
                &format!("SELECT COUNT(*) FROM keys WHERE {}", q.cond),
                &q.args,
            );
            assert!(count.contains("key_trigrams VIRTUAL TABLE"), "{count}");
            assert!(!count.contains("SCAN keys"), "{count}");
        }
        let short = page(&KeyFilter {
            search: Some(KeySearch {
                query: "ym".into(),
                exact: false,
                not: false,
                in_name: true,
                in_alias: true,
            }),
            ..KeyFilter::default()
        });
        assert!(!short.contains("key_trigrams"), "{short}");
        assert!(short.contains("USING INDEX keys_listed"), "{short}");
        // Filters on state and kind test the listing index's columns while it is walked in
        // page order; they are not lookups into a sort index (read in id order, then sorted).
        for filter in [
            KeyFilter {
                states: vec![KeyState::Active],
                ..KeyFilter::default()
            },
            KeyFilter {
                extractable: Some(false),
                ..KeyFilter::default()
            },
        ] {
            let p = page(&filter);
            assert!(p.contains("USING INDEX keys_listed"), "{filter:?}: {p}");
            assert!(!p.contains("TEMP B-TREE"), "{filter:?}: {p}");
        }
        // Every sort the API accepts walks its column's index, either way round and for a
        // last page: nothing is sorted.
        let sorts = [
            (SortKey::Id, "keys_sorted_by_id"),
            (SortKey::State, "keys_sorted_by_state"),
            (SortKey::Extractable, "keys_sorted_by_kind"),
            (SortKey::Imported, "keys_sorted_by_imported"),
            (SortKey::Date(KeyDate::Creation), "keys_listed"),
            (SortKey::Date(KeyDate::LastUpdate), "keys_sorted_by_update"),
            (
                SortKey::Date(KeyDate::LastRotate),
                "keys_sorted_by_rotation",
            ),
            (SortKey::Date(KeyDate::Deletion), "keys_sorted_by_deletion"),
            (
                SortKey::Date(KeyDate::Expiration),
                "keys_sorted_by_expiration",
            ),
        ];
        for (key, index) in sorts {
            for desc in [false, true] {
                for reverse in [false, true] {
                    let filter = KeyFilter {
                        sort: vec![(key, desc)],
                        ..KeyFilter::default()
                    };
                    let p = page_plan(&filter, reverse);
                    assert!(p.contains(&format!("USING INDEX {index} ")), "{key:?}: {p}");
                    assert!(!p.contains("TEMP B-TREE"), "{key:?} {desc} {reverse}: {p}");
                }
            }
        }
        let (sql, args) = counted_total(instance, &KeyFilter::default(), Dialect::Sqlite).unwrap();
        let total = plan(&sql, &args);
        assert!(total.contains("key_counts"), "{total}");
        assert!(!total.contains("SCAN"), "{total}");
        assert!(counted_total(instance, &search("x"), Dialect::Sqlite).is_none());
    }
}
