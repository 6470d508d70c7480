//! Which API errors are worth retrying and how long to wait: server errors and throttling are
//! retried with capped exponential backoff, honouring the server's `retryAfterSeconds`; a
//! conflict means the object changed under us (re-read and re-plan); anything else is final,
//! and so are connection errors waiting cannot mend (`crate::reach::is_permanent`).
//! Pure: the executor passes the error's status code and details in.

use std::time::Duration;

/// First backoff after a retryable error.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest backoff between attempts: long enough to ride out an API server restart, short
/// enough that an operator watching progress sees movement.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Attempts per call before the step fails.
pub const MAX_ATTEMPTS: u32 = 8;

/// What to do after a failed API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try the same call again after this long.
    RetryAfter(Duration),
    /// 409: the object changed since it was read; re-read the live state and re-plan.
    Replan,
    /// Give up on this step.
    Fail,
}

/// Decide from the HTTP status code (None: no response, e.g. a connection error), the
/// server's `retryAfterSeconds` if it sent one, and the attempt number (1 = first failure).
pub fn decide(code: Option<u16>, retry_after_seconds: Option<u64>, attempt: u32) -> Decision {
    if attempt >= MAX_ATTEMPTS {
        return Decision::Fail;
    }
    match code {
        Some(409) => Decision::Replan,
        None | Some(429 | 500 | 502 | 503 | 504) => {
            let backoff = INITIAL_BACKOFF
                .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
                .min(MAX_BACKOFF);
            let wait = retry_after_seconds
                .map(Duration::from_secs)
                .map_or(backoff, |r| r.min(MAX_BACKOFF).max(backoff));
            Decision::RetryAfter(wait)
        }
        Some(_) => Decision::Fail,
    }
}

/// The status code and `retryAfterSeconds` of a failed call (None: no response at all).
pub fn classify(error: &kube::Error) -> (Option<u16>, Option<u64>) {
    match error {
        kube::Error::Api(status) => (
            Some(status.code),
            status
                .details
                .as_ref()
                .map(|d| u64::from(d.retry_after_seconds))
                .filter(|s| *s > 0),
        ),
        _ => (None, None),
    }
}

/// Run `call` until it succeeds, fails for good, or hits a conflict, sleeping as [`decide`]
/// says between attempts. Returns the last error when it gives up.
pub async fn run<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        let error = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        attempt += 1;
        // A name that does not resolve or a certificate that does not verify stays so:
        // say it at once rather than after the whole backoff.
        if crate::reach::is_permanent(&error) {
            return Err(error);
        }
        let (code, retry_after) = classify(&error);
        match decide(code, retry_after, attempt) {
            Decision::RetryAfter(wait) => {
                tracing::debug!(call = what, attempt, ?code, ?wait, "retrying: {error}");
                tokio::time::sleep(wait).await;
            }
            Decision::Replan | Decision::Fail => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_back_off_exponentially_up_to_the_cap() {
        assert_eq!(
            decide(Some(503), None, 1),
            Decision::RetryAfter(INITIAL_BACKOFF)
        );
        assert_eq!(
            decide(Some(500), None, 3),
            Decision::RetryAfter(INITIAL_BACKOFF * 4)
        );
        assert_eq!(
            decide(None, None, 7),
            Decision::RetryAfter(Duration::from_millis(12_800))
        );
        assert_eq!(decide(Some(503), None, MAX_ATTEMPTS), Decision::Fail);
    }

    #[test]
    fn throttling_honours_retry_after() {
        assert_eq!(
            decide(Some(429), Some(5), 1),
            Decision::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            decide(Some(429), Some(3600), 1),
            Decision::RetryAfter(MAX_BACKOFF)
        );
    }

    #[test]
    fn conflicts_replan_and_client_errors_fail() {
        assert_eq!(decide(Some(409), None, 1), Decision::Replan);
        assert_eq!(decide(Some(422), None, 1), Decision::Fail);
        assert_eq!(decide(Some(403), None, 1), Decision::Fail);
    }
}
