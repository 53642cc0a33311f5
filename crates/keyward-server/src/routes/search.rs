//! Key Protect's list syntax for `GET /api/v2/keys`: `search`, `sort` and `filter`, parsed into
//! the core's filter types. Errors name the parameter and what it accepts.

use keyward_core::{Compare, DateFilter, KeyDate, KeySearch, KeyState, SortKey};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

/// Terms of one property a filter may hold (Key Protect: 3).
const MAX_TERMS_PER_PROPERTY: usize = 3;

fn bad(param: &str, what: &str) -> ApiError {
    ApiError::bad_request("INVALID_QUERY_PARAM_ERR", format!("{param}: {what}"))
}

/// `search=[not:][exact:][name:][alias:][escape:]query`: options and scopes in any order;
/// `escape:` ends them so the rest is taken literally. No scope searches both.
pub fn parse_search(raw: &str) -> Result<KeySearch, ApiError> {
    let mut s = KeySearch {
        query: String::new(),
        exact: false,
        not: false,
        in_name: false,
        in_alias: false,
    };
    let mut rest = raw;
    while let Some((word, after)) = rest.split_once(':') {
        match word {
            "not" => s.not = true,
            "exact" => s.exact = true,
            "name" => s.in_name = true,
            "alias" => s.in_alias = true,
            "escape" => {
                rest = after;
                break;
            }
            _ => break,
        }
        rest = after;
    }
    if !s.in_name && !s.in_alias {
        s.in_name = true;
        s.in_alias = true;
    }
    if rest.is_empty() || rest.chars().count() > 100 {
        return Err(bad("search", "1 to 100 characters to search for"));
    }
    s.query = rest.to_owned();
    Ok(s)
}

fn date_field(name: &str) -> Option<KeyDate> {
    Some(match name {
        "creationDate" => KeyDate::Creation,
        "lastUpdateDate" => KeyDate::LastUpdate,
        "lastRotateDate" => KeyDate::LastRotate,
        "deletionDate" => KeyDate::Deletion,
        "expirationDate" => KeyDate::Expiration,
        _ => return None,
    })
}

/// `sort=field,-field`: id, state, extractable, imported or a date; `-` for descending.
pub fn parse_sort(raw: &str) -> Result<Vec<(SortKey, bool)>, ApiError> {
    raw.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (desc, name) = match f.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, f),
            };
            let key = match name {
                "id" => SortKey::Id,
                "state" => SortKey::State,
                "extractable" => SortKey::Extractable,
                "imported" => SortKey::Imported,
                other => SortKey::Date(date_field(other).ok_or_else(|| {
                    bad(
                        "sort",
                        "id, state, extractable, imported, creationDate, lastUpdateDate, \
                         lastRotateDate, deletionDate or expirationDate, '-' for descending",
                    )
                })?),
            };
            Ok((key, desc))
        })
        .collect()
}

/// What `filter=` adds to a listing.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedFilter {
    /// Date conditions.
    pub dates: Vec<DateFilter>,
    /// `state=1,2`.
    pub states: Option<Vec<KeyState>>,
    /// `extractable=true`.
    pub extractable: Option<bool>,
}

/// Parses `state=1,2,5` (also the `state` query parameter).
pub fn parse_states(param: &str, raw: &str) -> Result<Vec<KeyState>, ApiError> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<i64>()
                .ok()
                .and_then(KeyState::from_code)
                .ok_or_else(|| bad(param, "a comma-separated list of 0, 1, 2, 3, 5"))
        })
        .collect()
}

/// `filter=prop=value prop=op:value ...`: dates (`"RFC 3339"` in double quotes, or `none`) with
/// `lt: lte: gt: gte:` or equality, `extractable=true|false`, `state=1,2`. At most three terms
/// per property.
pub fn parse_filter(raw: &str) -> Result<ParsedFilter, ApiError> {
    let mut out = ParsedFilter::default();
    let mut counts = std::collections::HashMap::new();
    for term in raw.split_whitespace() {
        let (prop, value) = term
            .split_once('=')
            .ok_or_else(|| bad("filter", "terms of the form property=value"))?;
        let n = counts.entry(prop.to_owned()).or_insert(0usize);
        *n += 1;
        if *n > MAX_TERMS_PER_PROPERTY {
            return Err(bad("filter", "at most three terms per property"));
        }
        match prop {
            "state" => out.states = Some(parse_states("filter", value)?),
            "extractable" => {
                out.extractable = Some(match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("filter", "extractable=true or extractable=false")),
                })
            }
            other => {
                let field = date_field(other).ok_or_else(|| {
                    bad(
                        "filter",
                        "properties: creationDate, deletionDate, expirationDate, \
                         lastRotateDate, lastUpdateDate, extractable, state",
                    )
                })?;
                let (op, value) = match value.split_once(':') {
                    Some(("lt", v)) => (Compare::Lt, v),
                    Some(("lte", v)) => (Compare::Lte, v),
                    Some(("gt", v)) => (Compare::Gt, v),
                    Some(("gte", v)) => (Compare::Gte, v),
                    _ => (Compare::Eq, value),
                };
                let value = if value.eq_ignore_ascii_case("none") {
                    None
                } else {
                    let quoted = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or_else(|| bad("filter", "dates are RFC 3339 in double quotes"))?;
                    Some(
                        OffsetDateTime::parse(quoted, &Rfc3339)
                            .map_err(|_| bad("filter", "dates are RFC 3339 in double quotes"))?,
                    )
                };
                out.dates.push(DateFilter { field, op, value });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_options_scopes_and_escape() {
        let s = parse_search("payments").unwrap();
        assert!(s.in_name && s.in_alias && !s.exact && !s.not);
        let s = parse_search("not:exact:alias:db").unwrap();
        assert!(s.not && s.exact && s.in_alias && !s.in_name);
        assert_eq!(s.query, "db");
        let s = parse_search("exact:escape:not:foobar").unwrap();
        assert!(s.exact && !s.not);
        assert_eq!(s.query, "not:foobar");
        assert_eq!(parse_search("a:b").unwrap().query, "a:b");
        assert!(parse_search("not:").is_err());
        assert!(parse_search(&"x".repeat(101)).is_err());
    }

    #[test]
    fn sort_fields_and_direction() {
        assert_eq!(
            parse_sort("-creationDate,id").unwrap(),
            vec![
                (SortKey::Date(KeyDate::Creation), true),
                (SortKey::Id, false)
            ]
        );
        assert!(parse_sort("name").is_err());
    }

    #[test]
    fn filter_terms() {
        let f = parse_filter(
            r#"lastRotateDate=gte:"2022-02-15T00:00:00Z" lastRotateDate=lt:"2022-03-15T00:00:00Z" extractable=FALSE deletionDate=none state=1,5"#,
        )
        .unwrap();
        assert_eq!(f.dates.len(), 3);
        assert_eq!(f.dates[0].op, Compare::Gte);
        assert_eq!(f.dates[2].value, None);
        assert_eq!(f.extractable, Some(false));
        assert_eq!(f.states, Some(vec![KeyState::Active, KeyState::Destroyed]));
        for bad in [
            "creationDate=2022-01-01T00:00:00Z",
            "name=x",
            "extractable=maybe",
            "state=4",
            "noequals",
            r#"creationDate=gt:"1" creationDate=gt:"2" creationDate=gt:"3" creationDate=gt:"4""#,
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
