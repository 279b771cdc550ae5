//! Properties of the company slug, the one value S3 keys and Kafka keys are
//! built from: whatever name a client sends, the slug is a single safe path
//! segment or an error, never a panic.

use proptest::prelude::*;

use etl_core::domain::{CompanySlug, SlugError};

fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        // Anything at all, control characters and all scripts included.
        any::<String>(),
        // What path-traversal attempts look like.
        "[./\\\\%2eE\\x00 ]{0,40}(etc|passwd)?[./\\\\]{0,10}",
        // Long names, mixed scripts.
        "[a-zA-Zа-яА-ЯёЁ0-9 \\-_.,()\"«»]{50,400}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_slug_is_one_safe_path_segment_or_an_error(name in names()) {
        match CompanySlug::from_name(&name) {
            Ok(slug) => {
                let s = slug.as_str();
                prop_assert!(!s.is_empty() && s.len() <= 63, "{s:?}");
                prop_assert!(
                    s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{s:?}"
                );
                prop_assert!(!s.starts_with('-') && !s.ends_with('-') && !s.contains("--"), "{s:?}");
                // What consumers do with a key must give the same slug back.
                prop_assert_eq!(CompanySlug::parse(s).map(|p| p.as_str().to_owned()), Ok(s.to_owned()));
                // Slugging a slug changes nothing.
                prop_assert_eq!(CompanySlug::from_name(s).map(|p| p.as_str().to_owned()), Ok(s.to_owned()));
            }
            Err(SlugError::Empty(_)) => {
                prop_assert!(!name.chars().any(|c| c.is_ascii_alphanumeric()), "{name:?} has letters");
            }
            Err(other) => prop_assert!(false, "from_name gave {other:?}"),
        }
    }

    #[test]
    fn parse_never_accepts_what_from_name_could_not_produce(text in any::<String>()) {
        if let Ok(slug) = CompanySlug::parse(&text) {
            prop_assert_eq!(CompanySlug::from_name(&text).map(|s| s.as_str().to_owned()), Ok(slug.as_str().to_owned()));
        }
    }
}
