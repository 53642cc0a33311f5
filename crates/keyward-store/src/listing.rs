//! The SQL of key listings: states, kind, ring, name/alias search, date filters and sort order,
//! always as bound parameters (never user text in the statement).

use keyward_core::{Compare, InstanceId, KeyDate, KeyFilter, KeyId, KeyState, SortKey};
use rusqlite::types::Value;

use crate::rows::nanos;

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
pub fn key_query(instance: InstanceId, filter: &KeyFilter) -> (String, Vec<Value>, String) {
    let states: Vec<i64> = if filter.states.is_empty() {
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
    };
    let mut cond = format!(
        "instance_id = ? AND purged_at IS NULL AND state IN ({})",
        vec!["?"; states.len()].join(",")
    );
    let mut args: Vec<Value> = vec![instance.to_string().into()];
    args.extend(states.into_iter().map(Value::from));
    if let Some(extractable) = filter.extractable {
        cond.push_str(" AND kind = ?");
        args.push(i64::from(extractable).into());
    }
    if let Some(ring) = &filter.key_ring {
        cond.push_str(" AND key_ring = ?");
        args.push(ring.clone().into());
    }
    if let Some(search) = &filter.search {
        let (op, needle) = if search.exact {
            ("=", search.query.to_lowercase())
        } else {
            ("LIKE", contains_pattern(&search.query))
        };
        let escape = if search.exact { "" } else { " ESCAPE '\\'" };
        let mut any = Vec::new();
        if search.in_name {
            any.push(format!("lower(name) {op} ?{escape}"));
            args.push(needle.clone().into());
        }
        if search.in_alias {
            any.push(format!(
                "EXISTS (SELECT 1 FROM key_aliases a WHERE a.key_id = keys.id \
                 AND lower(a.alias) {op} ?{escape})"
            ));
            args.push(needle.into());
        }
        if search.query.parse::<KeyId>().is_ok() {
            any.push("id = ?".to_owned());
            args.push(search.query.to_lowercase().into());
        }
        let any = if any.is_empty() {
            "0".to_owned()
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
            (None, _) => cond.push_str(" AND 0"),
            (Some(t), op) => {
                let op = match op {
                    Compare::Eq => "=",
                    Compare::Lt => "<",
                    Compare::Lte => "<=",
                    Compare::Gt => ">",
                    Compare::Gte => ">=",
                };
                cond.push_str(&format!(" AND {col} {op} ?"));
                args.push(nanos(t).into());
            }
        }
    }
    let mut order: Vec<String> = filter
        .sort
        .iter()
        .map(|(key, desc)| {
            let col = match key {
                SortKey::Id => "id",
                SortKey::State => "state",
                SortKey::Extractable => "kind",
                SortKey::Imported => "imported",
                SortKey::Date(d) => date_column(*d),
            };
            format!("{col} {}", if *desc { "DESC" } else { "ASC" })
        })
        .collect();
    if order.is_empty() {
        order.push("created_at ASC".to_owned());
    }
    order.push("id ASC".to_owned());
    (cond, args, order.join(", "))
}
