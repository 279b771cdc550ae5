use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CompanySlug;

/// Identifies one stored company file. It is derived from the company slug and
/// the SHA-256 of the stored bytes, so posting identical content again yields
/// the same id, the same S3 key, and the processor's ledger recognises it:
/// a re-post can never cause a second load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(Uuid);

impl FileId {
    pub fn for_content(company: &CompanySlug, content_sha256: &[u8; 32]) -> Self {
        Self(super::derived_uuid(&[
            company.as_str().as_bytes(),
            &[0u8],
            content_sha256,
        ]))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for FileId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl FromStr for FileId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn sha(s: &str) -> [u8; 32] {
        Sha256::digest(s.as_bytes()).into()
    }

    #[test]
    fn same_company_and_content_give_the_same_id() {
        let c = CompanySlug::parse("acme").unwrap();
        assert_eq!(
            FileId::for_content(&c, &sha("x")),
            FileId::for_content(&c, &sha("x"))
        );
    }

    #[test]
    fn other_content_or_company_gives_another_id() {
        let a = CompanySlug::parse("acme").unwrap();
        let b = CompanySlug::parse("acme-2").unwrap();
        assert_ne!(
            FileId::for_content(&a, &sha("x")),
            FileId::for_content(&a, &sha("y"))
        );
        assert_ne!(
            FileId::for_content(&a, &sha("x")),
            FileId::for_content(&b, &sha("x"))
        );
    }

    /// Ids are stored (S3 keys, the ledger, events): the derivation must
    /// never change between versions.
    #[test]
    fn the_derivation_is_stable() {
        let id = FileId::for_content(&CompanySlug::parse("acme").unwrap(), &sha("x"));
        assert_eq!(id.to_string(), "9c10fda8-6a2c-8baf-9a7c-96cf3baf997e");
    }

    #[test]
    fn round_trips_through_its_text_form() {
        let id = FileId::for_content(&CompanySlug::parse("acme").unwrap(), &sha("x"));
        assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
    }
}
