//! Verifying Git webhooks from every forge, and telling which refs a push changed.
//!
//! | forge | header | check |
//! | --- | --- | --- |
//! | GitHub, Gitea, Forgejo | `X-Hub-Signature-256: sha256=<hex>` | HMAC-SHA256 of the raw body |
//! | Bitbucket Cloud, Bitbucket Data Center | `X-Hub-Signature: sha256=<hex>` | HMAC-SHA256 of the raw body |
//! | GitHub (legacy), other senders | `X-Hub-Signature: sha1=<hex>` | HMAC-SHA1 of the raw body |
//! | GitLab | `X-Gitlab-Token: <secret>` | the token is the secret (compared in constant time) |
//!
//! A request carrying several is checked by the first of that order. Every comparison is
//! constant-time. The header is checked before the body is read ([`precheck`]); a GitLab token
//! needs no body, a signature is checked against it afterwards ([`Credential::verify`]).
//!
//! [`pushed_refs`] reads the refs a push changed from each forge's payload (GitHub/Gitea/GitLab
//! `ref`, Bitbucket Cloud `push.changes[].new`, Bitbucket Data Center `changes[].ref.id`), so a
//! push to another branch than the one followed triggers nothing.
//!
//! Pure; depends on nothing else in the crate.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// GitHub's (and Gitea's, Forgejo's) signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Bitbucket's (`sha256=`) and GitHub's legacy (`sha1=`) signature header.
pub const HUB_SIGNATURE_HEADER: &str = "x-hub-signature";
/// GitLab's secret token header.
pub const GITLAB_TOKEN_HEADER: &str = "x-gitlab-token";

/// The prefix of [`SIGNATURE_HEADER`]'s value.
const PREFIX: &str = "sha256=";

/// Why a request's signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Hub-Signature-256, X-Hub-Signature or X-Gitlab-Token header")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=` and 64 hex digits")]
    Malformed,
    #[error("the X-Hub-Signature header is neither `sha256=` and 64 hex digits nor `sha1=` and 40")]
    MalformedHub,
    #[error("the {0} signature does not match the body and the shared secret")]
    Mismatch(&'static str),
    #[error("the X-Gitlab-Token does not match the shared secret")]
    TokenMismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// The algorithm of an HMAC signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha1,
}

/// What a request proves itself with, as far as the headers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An HMAC of the body, from `header`.
    Signature {
        header: &'static str,
        algorithm: Algorithm,
        signature: Vec<u8>,
    },
    /// GitLab's token, already checked: the body needs no check.
    Token,
}

impl Credential {
    /// Whether the body is what the sender signed (a token has nothing to check).
    pub fn verify(&self, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        match self {
            Credential::Token => Ok(()),
            Credential::Signature {
                header,
                algorithm: Algorithm::Sha256,
                signature,
            } => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
                mac.update(body);
                // `verify_slice` compares in constant time.
                mac.verify_slice(signature)
                    .map_err(|_| SignatureError::Mismatch(header_name(header)))
            }
            Credential::Signature {
                header,
                algorithm: Algorithm::Sha1,
                signature,
            } => {
                let mut mac =
                    Hmac::<Sha1>::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
                mac.update(body);
                mac.verify_slice(signature)
                    .map_err(|_| SignatureError::Mismatch(header_name(header)))
            }
        }
    }
}

fn header_name(header: &str) -> &'static str {
    if header == SIGNATURE_HEADER {
        "X-Hub-Signature-256"
    } else {
        "X-Hub-Signature"
    }
}

/// Check `header` (the value of [`SIGNATURE_HEADER`], if present) against `body` and `secret`.
/// An empty secret verifies nothing.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let signature = precheck(secret, header)?;
    verify_signature(secret, body, &signature)
}

/// [`precheck_headers`] for a request whose only credential is [`SIGNATURE_HEADER`]; the
/// signature's bytes.
pub fn precheck(secret: &[u8], header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    match precheck_headers(secret, |name| {
        (name == SIGNATURE_HEADER).then_some(header).flatten()
    })? {
        Credential::Signature { signature, .. } => Ok(signature),
        Credential::Token => Err(SignatureError::Missing),
    }
}

/// Whether `signature` (from [`precheck`]) is the HMAC-SHA256 of `body` under `secret`.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    Credential::Signature {
        header: SIGNATURE_HEADER,
        algorithm: Algorithm::Sha256,
        signature: signature.to_vec(),
    }
    .verify(secret, body)
}

/// Everything that can be checked before the body is read: a secret is configured, a
/// credential header is present and well formed, and a GitLab token is the secret. `header`
/// gives a request header's value by its lower-case name.
pub fn precheck_headers<'a>(
    secret: &[u8],
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<Credential, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    if let Some(value) = header(SIGNATURE_HEADER) {
        let hex = value
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::Malformed)?;
        let signature = decode_hex(hex)
            .filter(|s| s.len() == 32)
            .ok_or(SignatureError::Malformed)?;
        return Ok(Credential::Signature {
            header: SIGNATURE_HEADER,
            algorithm: Algorithm::Sha256,
            signature,
        });
    }
    if let Some(token) = header(GITLAB_TOKEN_HEADER) {
        return if constant_time_eq(token.as_bytes(), secret) {
            Ok(Credential::Token)
        } else {
            Err(SignatureError::TokenMismatch)
        };
    }
    if let Some(value) = header(HUB_SIGNATURE_HEADER) {
        let value = value.trim();
        let (algorithm, hex, length) = if let Some(hex) = value.strip_prefix("sha256=") {
            (Algorithm::Sha256, hex, 32)
        } else if let Some(hex) = value.strip_prefix("sha1=") {
            (Algorithm::Sha1, hex, 20)
        } else {
            return Err(SignatureError::MalformedHub);
        };
        let signature = decode_hex(hex)
            .filter(|s| s.len() == length)
            .ok_or(SignatureError::MalformedHub)?;
        return Ok(Credential::Signature {
            header: HUB_SIGNATURE_HEADER,
            algorithm,
            signature,
        });
    }
    Err(SignatureError::Missing)
}

/// Equality that takes the same time wherever the inputs differ: both are hashed first (so
/// neither their length nor a common prefix shows), then every byte of the digests compared.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The header value a sender computes for `body`: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("{PREFIX}{}", hex(&mac.finalize().into_bytes()))
}

/// The `X-Hub-Signature` value of GitHub's legacy SHA-1 scheme: `sha1=<hex>`.
pub fn sign_sha1(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// What a verified delivery is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A connection test (GitHub `ping`, Bitbucket Data Center `diagnostics:ping`).
    Ping,
    /// A push of these full ref names (`refs/heads/main`, `refs/tags/v1`).
    Push(Vec<String>),
    /// Anything else, or a push whose refs cannot be read: worth a fetch.
    Unknown,
}

/// What a verified delivery is, from its event header (`header` by lower-case name) and body.
pub fn delivery<'a>(header: impl Fn(&str) -> Option<&'a str>, body: &[u8]) -> Delivery {
    let event = [
        "x-github-event",
        "x-gitea-event",
        "x-gogs-event",
        "x-gitlab-event",
        "x-event-key",
    ]
    .into_iter()
    .find_map(header)
    .unwrap_or_default();
    if event == "ping" || event == "diagnostics:ping" {
        return Delivery::Ping;
    }
    match pushed_refs(body) {
        Some(refs) if !refs.is_empty() => Delivery::Push(refs),
        _ => Delivery::Unknown,
    }
}

/// The full ref names a push payload changed, from any forge's format; `None` when the body
/// is not such a payload.
pub fn pushed_refs(body: &[u8]) -> Option<Vec<String>> {
    let payload: Value = serde_json::from_slice(body).ok()?;
    // GitHub, Gitea, Forgejo, GitLab (push and tag push hooks).
    if let Some(r) = payload.get("ref").and_then(Value::as_str) {
        return Some(vec![r.to_owned()]);
    }
    let mut refs = Vec::new();
    // Bitbucket Cloud `repo:push`: the new state of each changed ref (the old one for a
    // deleted ref).
    if let Some(changes) = payload.pointer("/push/changes").and_then(Value::as_array) {
        for change in changes {
            let side = change
                .get("new")
                .filter(|v| !v.is_null())
                .or_else(|| change.get("old"));
            let (Some(kind), Some(name)) = (
                side.and_then(|s| s.get("type")).and_then(Value::as_str),
                side.and_then(|s| s.get("name")).and_then(Value::as_str),
            ) else {
                continue;
            };
            match kind {
                "branch" | "named_branch" => refs.push(format!("refs/heads/{name}")),
                "tag" | "annotated_tag" => refs.push(format!("refs/tags/{name}")),
                _ => {}
            }
        }
        return Some(refs);
    }
    // Bitbucket Data Center `repo:refs_changed`.
    if let Some(changes) = payload.get("changes").and_then(Value::as_array) {
        for change in changes {
            if let Some(id) = change
                .pointer("/ref/id")
                .or_else(|| change.get("refId"))
                .and_then(Value::as_str)
            {
                refs.push(id.to_owned());
            }
        }
        return Some(refs);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn githubs_documented_example_verifies() {
        // The example of GitHub's "Validating webhook deliveries".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, BODY), header);
        assert_eq!(verify(SECRET, BODY, Some(header)), Ok(()));
        assert_eq!(
            verify(
                SECRET,
                BODY,
                Some(&header.to_uppercase().replace("SHA256", "sha256"))
            ),
            Ok(()),
            "hex digits in either case"
        );
    }

    #[test]
    fn wrong_signatures_are_mismatches() {
        let good = sign(SECRET, BODY);
        let mismatch = Err(SignatureError::Mismatch("X-Hub-Signature-256"));
        assert_eq!(verify(SECRET, b"Hello, World?", Some(&good)), mismatch);
        assert_eq!(verify(b"another secret", BODY, Some(&good)), mismatch);
        let flipped = format!("{}0", &good[..good.len() - 1]);
        let flipped = if flipped == good {
            format!("{}1", &good[..good.len() - 1])
        } else {
            flipped
        };
        assert_eq!(verify(SECRET, BODY, Some(&flipped)), mismatch);
    }

    #[test]
    fn missing_and_malformed_headers() {
        assert_eq!(verify(SECRET, BODY, None), Err(SignatureError::Missing));
        let good = sign(SECRET, BODY);
        for bad in [
            "",
            "sha256=",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            &good[PREFIX.len()..],
            &good[..good.len() - 1],
            &format!("{good}00"),
            &format!("{}zz", &good[..good.len() - 2]),
            "sha256=ééé",
        ] {
            assert_eq!(
                verify(SECRET, BODY, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_secret_verifies_nothing() {
        let signed_with_empty = sign(b"", BODY);
        assert_eq!(
            verify(b"", BODY, Some(&signed_with_empty)),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            precheck_headers(b"", headers(&[(GITLAB_TOKEN_HEADER, "")])),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn gitlab_tokens_are_compared_with_the_secret() {
        let secret = std::str::from_utf8(SECRET).unwrap();
        assert_eq!(
            precheck_headers(SECRET, headers(&[(GITLAB_TOKEN_HEADER, secret)])),
            Ok(Credential::Token)
        );
        for wrong in [
            "",
            "It's a Secret to Everybody ",
            "it's a secret to everybody",
            "x",
        ] {
            assert_eq!(
                precheck_headers(SECRET, headers(&[(GITLAB_TOKEN_HEADER, wrong)])),
                Err(SignatureError::TokenMismatch),
                "{wrong:?}"
            );
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn x_hub_signature_takes_sha256_bitbucket_and_sha1_github() {
        let sha256 = sign(SECRET, BODY);
        let sha1 = sign_sha1(SECRET, BODY);
        for value in [&sha256, &sha1] {
            let credential =
                precheck_headers(SECRET, headers(&[(HUB_SIGNATURE_HEADER, value)])).unwrap();
            assert_eq!(credential.verify(SECRET, BODY), Ok(()), "{value}");
            assert_eq!(
                credential.verify(SECRET, b"tampered"),
                Err(SignatureError::Mismatch("X-Hub-Signature")),
                "{value}"
            );
        }
        // The same example under SHA-1 (as Python's hmac module computes it).
        assert_eq!(sha1, "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59");
        for bad in ["md5=00", "sha1=abcd", "sha256=abcd", "sha1="] {
            assert_eq!(
                precheck_headers(SECRET, headers(&[(HUB_SIGNATURE_HEADER, bad)])),
                Err(SignatureError::MalformedHub),
                "{bad}"
            );
        }
        // GitHub sends both: the SHA-256 one is checked.
        let both = precheck_headers(
            SECRET,
            headers(&[(HUB_SIGNATURE_HEADER, &sha1), (SIGNATURE_HEADER, &sha256)]),
        )
        .unwrap();
        assert!(matches!(
            both,
            Credential::Signature {
                header: SIGNATURE_HEADER,
                algorithm: Algorithm::Sha256,
                ..
            }
        ));
    }

    #[test]
    fn refs_of_every_forges_push() {
        let github = br#"{"ref": "refs/heads/main", "before": "a", "after": "b"}"#;
        assert_eq!(pushed_refs(github), Some(vec!["refs/heads/main".into()]));
        let gitlab_tag = br#"{"object_kind": "tag_push", "ref": "refs/tags/v1.2"}"#;
        assert_eq!(pushed_refs(gitlab_tag), Some(vec!["refs/tags/v1.2".into()]));
        let bitbucket_cloud = br#"{"push": {"changes": [
            {"new": {"type": "branch", "name": "main"}, "old": {"type": "branch", "name": "main"}},
            {"new": null, "old": {"type": "branch", "name": "gone"}},
            {"new": {"type": "tag", "name": "v2"}, "old": null}
        ]}}"#;
        assert_eq!(
            pushed_refs(bitbucket_cloud),
            Some(vec![
                "refs/heads/main".into(),
                "refs/heads/gone".into(),
                "refs/tags/v2".into()
            ])
        );
        let bitbucket_dc = br#"{"eventKey": "repo:refs_changed", "changes": [
            {"ref": {"id": "refs/heads/feature", "displayId": "feature", "type": "BRANCH"},
             "refId": "refs/heads/feature", "type": "UPDATE"}
        ]}"#;
        assert_eq!(
            pushed_refs(bitbucket_dc),
            Some(vec!["refs/heads/feature".into()])
        );
        assert_eq!(pushed_refs(b"payload=%7B%7D"), None);
        assert_eq!(
            pushed_refs(br#"{"zen": "Keep it logically awesome."}"#),
            None
        );
    }

    #[test]
    fn pings_are_told_from_pushes() {
        assert_eq!(
            delivery(headers(&[("x-github-event", "ping")]), b"{}"),
            Delivery::Ping
        );
        assert_eq!(
            delivery(headers(&[("x-event-key", "diagnostics:ping")]), b"{}"),
            Delivery::Ping
        );
        assert_eq!(
            delivery(
                headers(&[("x-gitlab-event", "Push Hook")]),
                br#"{"ref": "refs/heads/x"}"#
            ),
            Delivery::Push(vec!["refs/heads/x".into()])
        );
        assert_eq!(
            delivery(headers(&[("x-github-event", "issues")]), b"{}"),
            Delivery::Unknown
        );
    }
}
