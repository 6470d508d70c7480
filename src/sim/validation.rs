//! Kubernetes' validation of names and labels (DNS-1123 labels and subdomains, label keys and
//! values), with the API server's messages.
//!
//! Pure; depends on nothing else in the crate.

/// Longest object name (DNS subdomain) and namespace name or label part (DNS label), as
/// Kubernetes defines them.
const MAX_SUBDOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 label (namespace names), with Kubernetes' message.
pub fn validate_dns_label(s: &str) -> Result<(), String> {
    if s.len() > MAX_LABEL_LEN {
        return Err(format!("must be no more than {MAX_LABEL_LEN} characters"));
    }
    if is_dns_label(s) {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// DNS-1123 subdomain (object names), with Kubernetes' message.
pub fn validate_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!(
            "must be no more than {MAX_SUBDOMAIN_LEN} characters"
        ));
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A label or annotation key: `[prefix/]name`, with Kubernetes' message.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        validate_dns_subdomain(p).map_err(|m| format!("prefix part {m}"))?;
    }
    if is_qualified_name_part(name) {
        Ok(())
    } else {
        Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into())
    }
}

/// A label value (may be empty), with Kubernetes' message.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else if value.len() > MAX_LABEL_LEN {
        Err(format!("must be no more than {MAX_LABEL_LEN} characters"))
    } else {
        Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(validate_dns_label("a-b1").is_ok());
        assert!(validate_dns_label("a.b").is_err());
        assert!(validate_dns_label(&"a".repeat(64)).is_err());
        assert!(validate_dns_subdomain("a.b-c").is_ok());
        assert!(validate_dns_subdomain("a..b").is_err());
        assert!(validate_label_key("wukong.novasphere.dev/fleet").is_ok());
        assert!(validate_label_key("Bad_Prefix/x").is_err());
        assert!(validate_label_key("-x").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("My_value.1").is_ok());
        assert!(validate_label_value(&"x".repeat(64)).is_err());
    }
}
