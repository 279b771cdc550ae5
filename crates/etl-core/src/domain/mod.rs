//! Validated values of the pipeline. Each is parsed once at the edge and
//! carried as its type afterwards, so nothing downstream re-checks it.

mod file_id;
mod inn;
mod request_id;
mod slug;
mod snils;

pub use file_id::FileId;
pub use inn::{Inn, InnError};
pub use request_id::RequestId;
pub use slug::{CompanySlug, SlugError};
pub use snils::{Snils, SnilsError};

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A UUID (version 8) made of the first 16 bytes of the SHA-256 of `parts`,
/// one after the other: the same parts always give the same id.
pub(crate) fn derived_uuid(parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    Uuid::new_v8(bytes)
}
