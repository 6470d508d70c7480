//! Label and field selectors of list and watch requests (`labelSelector=app=web,tier!=db`,
//! `fieldSelector=metadata.name=vm1`), parsed and matched as the Kubernetes API server does.
//!
//! Pure; depends only on [`super::validation`].

use serde_json::Value;

use super::validation::{validate_label_key, validate_label_value};

/// A selector string that does not parse; the message is the API server's 400 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector: every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parse the `labelSelector` query parameter: comma-separated `k=v`, `k==v`, `k!=v`,
    /// `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let mut reqs = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(Error(format!(
                    "unable to parse requirement: found ',', expected: identifier in `{s}`"
                )));
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self(reqs))
    }

    /// Does an object with these labels (the `metadata.labels` value, if any) match?
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match &r.op {
            Op::Eq(v) => get(&r.key) == Some(v.as_str()),
            Op::NotEq(v) => get(&r.key) != Some(v.as_str()),
            Op::In(vs) => get(&r.key).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(&r.key).is_none_or(|x| vs.iter().all(|v| v != x)),
            Op::Exists => get(&r.key).is_some(),
            Op::NotExists => get(&r.key).is_none(),
        })
    }
}

/// Split at commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, Error> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    Error(format!(
                        "unable to parse requirement: unexpected ')' in `{s}`"
                    ))
                })?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(Error(format!(
            "unable to parse requirement: found '', expected: ')' in `{s}`"
        )));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, Error> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement {
            key: key.to_string(),
            op: Op::NotExists,
        });
    }
    for (sep, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(sep) {
            let (key, value) = (k.trim(), v.trim());
            check_key(key)?;
            check_value(value)?;
            let op = if neg {
                Op::NotEq(value.to_string())
            } else {
                Op::Eq(value.to_string())
            };
            return Ok(Requirement {
                key: key.to_string(),
                op,
            });
        }
    }
    if let Some(pos) = part.find(|c: char| c.is_whitespace() || c == '(') {
        let (key, rest) = (part[..pos].trim(), part[pos..].trim_start());
        let (negate, list) = if let Some(l) = rest.strip_prefix("notin") {
            (true, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (false, l)
        } else {
            return Err(Error(format!(
                "unable to parse requirement: found '{}', expected: in, notin, =, ==, !=, gt, lt",
                rest.split_whitespace().next().unwrap_or_default()
            )));
        };
        check_key(key)?;
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| {
                Error(format!(
                    "unable to parse requirement: found '{list}', expected: '('"
                ))
            })?;
        let mut values = Vec::new();
        for v in inner.split(',') {
            let v = v.trim();
            check_value(v)?;
            values.push(v.to_string());
        }
        return Ok(Requirement {
            key: key.to_string(),
            op: if negate {
                Op::NotIn(values)
            } else {
                Op::In(values)
            },
        });
    }
    check_key(part)?;
    Ok(Requirement {
        key: part.to_string(),
        op: Op::Exists,
    })
}

fn check_key(key: &str) -> Result<(), Error> {
    validate_label_key(key).map_err(|m| Error(format!("unable to parse requirement: {m}")))
}

fn check_value(value: &str) -> Result<(), Error> {
    validate_label_value(value).map_err(|m| {
        Error(format!(
            "unable to parse requirement: values[0]: Invalid value: \"{value}\": {m}"
        ))
    })
}

/// Fields every kind can be selected by.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// A parsed field selector: `metadata.name`, `metadata.namespace`, and the kind's own
/// selectable fields (for built-in kinds such as events' `involvedObject.name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse the `fieldSelector` query parameter: comma-separated `f=v`, `f==v`, `f!=v`, where
    /// `f` is a common field or one of `extra` (dotted paths into the object).
    pub fn parse(s: &str, extra: &[&str]) -> Result<Self, Error> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(Error(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !COMMON_FIELDS.contains(&field) && !extra.contains(&field) {
                return Err(Error(if extra.is_empty() {
                    format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )
                } else {
                    format!("field label not supported: {field}")
                }));
            }
            terms.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    /// Does the object match? A missing field has the value "".
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, negate, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    #[test]
    fn label_selector_operators() {
        let labels = json!({"app": "web", "tier": "front"});
        let l = Some(&labels);
        assert!(sel("").matches(l));
        assert!(sel("app=web").matches(l));
        assert!(sel("app==web,tier=front").matches(l));
        assert!(!sel("app=db").matches(l));
        assert!(sel("app!=db").matches(l));
        assert!(sel("missing!=x").matches(l));
        assert!(sel("app in (web, db)").matches(l));
        assert!(sel("app in(web)").matches(l));
        assert!(!sel("app in (db)").matches(l));
        assert!(sel("app notin (db,cache)").matches(l));
        assert!(sel("missing notin (db)").matches(l));
        assert!(!sel("tier notin (front)").matches(l));
        assert!(sel("app").matches(l));
        assert!(!sel("!app").matches(l));
        assert!(sel("!missing, app in (web), tier").matches(l));
        assert!(!sel("app").matches(None));
        assert!(sel("!app").matches(None));
    }

    #[test]
    fn label_selector_errors() {
        for bad in [
            "app in (web",
            "app)",
            "app=web,",
            "app ~ web",
            "bad key!=x",
            "app=not valid",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn field_selector() {
        let f =
            FieldSelector::parse("metadata.name=vm1,metadata.namespace!=kube-system", &[]).unwrap();
        let obj = |ns: &str, name: &str| json!({"metadata": {"name": name, "namespace": ns}});
        assert!(f.matches(&obj("default", "vm1")));
        assert!(!f.matches(&obj("kube-system", "vm1")));
        assert!(!f.matches(&obj("default", "vm2")));
        let err = FieldSelector::parse("spec.running=true", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"spec.running\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        let events = FieldSelector::parse(
            "involvedObject.name=vm1,type!=Normal",
            &["involvedObject.name", "type"],
        )
        .unwrap();
        assert!(events.matches(&json!({"involvedObject": {"name": "vm1"}, "type": "Warning"})));
        assert!(!events.matches(&json!({"involvedObject": {"name": "vm2"}})));
        assert!(FieldSelector::parse("x=1", &["type"]).is_err());
    }
}
