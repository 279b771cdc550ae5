//! Validated values of the pipeline. Each is parsed once at the edge and
//! carried as its type afterwards, so nothing downstream re-checks it.

mod file_id;
mod inn;
mod request_id;
mod slug;

pub use file_id::FileId;
pub use inn::{Inn, InnError};
pub use request_id::RequestId;
pub use slug::{CompanySlug, SlugError};
