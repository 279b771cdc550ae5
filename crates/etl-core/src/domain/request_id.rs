use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const MAX_LEN: usize = 128;

/// Correlates one HTTP request with every event, object and log line it causes.
/// A client-sent `X-Request-Id` is kept if it is printable and short;
/// otherwise a fresh one is generated, so log lines cannot be forged or bloated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// The client's id if acceptable, else `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_when_safe() {
        assert_eq!(
            RequestId::parse("req-42_a.b:c").unwrap().as_str(),
            "req-42_a.b:c"
        );
    }

    #[test]
    fn unsafe_client_ids_are_refused() {
        for s in ["", "a b", "line\nbreak", "{\"json\"}", &"x".repeat(129)] {
            assert!(RequestId::parse(s).is_none(), "{s:?}");
        }
    }
}
