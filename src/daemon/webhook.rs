//! Verifying Git webhooks: GitHub's `X-Hub-Signature-256: sha256=<hex>` header, an
//! HMAC-SHA256 of the raw request body keyed by a shared secret (Gitea and Forgejo send the same
//! header). The comparison is constant-time.
//!
//! Pure; depends on nothing else in the crate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The prefix of the header's value.
const PREFIX: &str = "sha256=";

/// Why a request's signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Hub-Signature-256 header")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=` and 64 hex digits")]
    Malformed,
    #[error("the X-Hub-Signature-256 signature does not match the body and the shared secret")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// Check `header` (the value of [`SIGNATURE_HEADER`], if present) against `body` and `secret`.
/// An empty secret verifies nothing.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let signature = precheck(secret, header)?;
    verify_signature(secret, body, &signature)
}

/// Everything that can be checked before the body is read: a secret is configured and the
/// header is present and well formed. The signature's bytes, to check against the body with
/// [`verify_signature`]. (The HTTP layer refuses an unsigned request without reading its body.)
pub fn precheck(secret: &[u8], header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex = header
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::Malformed)?;
    let signature = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    if signature.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    Ok(signature)
}

/// Whether `signature` (from [`precheck`]) is the HMAC-SHA256 of `body` under `secret`.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value a sender computes for `body`: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + 64);
    out.push_str(PREFIX);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";

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
        assert_eq!(
            verify(SECRET, b"Hello, World?", Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another secret", BODY, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        let flipped = format!("{}0", &good[..good.len() - 1]);
        let flipped = if flipped == good {
            format!("{}1", &good[..good.len() - 1])
        } else {
            flipped
        };
        assert_eq!(
            verify(SECRET, BODY, Some(&flipped)),
            Err(SignatureError::Mismatch)
        );
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
    }
}
