//! Properties of the upload splitter: no input makes it panic or overflow
//! the stack, and what it accepts is exactly what was sent.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use cmd_api::extract::{BodyFormat, ExtractError, split};

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A company: a name with at least one ASCII letter, and arbitrary fields.
fn company() -> impl Strategy<Value = Value> {
    (
        "[A-Za-z][^\\x00]{0,30}",
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..4),
    )
        .prop_map(|(name, fields)| {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            object.insert("name".into(), Value::String(name));
            Value::Object(object)
        })
}

fn format() -> impl Strategy<Value = BodyFormat> {
    prop_oneof![Just(BodyFormat::Json), Just(BodyFormat::NdJson)]
}

fn same_verdict_as_serde_json(body: &[u8]) -> Result<(), TestCaseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match (
        split(body, BodyFormat::Json, 64),
        serde_json::from_slice::<Value>(body),
    ) {
        (Err(ExtractError::InvalidJson { line, column, .. }), Err(e)) => {
            prop_assert_eq!(
                (line, column),
                (e.line() as u64, e.column() as u64),
                "{}",
                e
            );
        }
        (Err(e @ ExtractError::InvalidJson { .. }), Ok(_)) => {
            prop_assert!(false, "refused JSON that serde_json reads: {e:?}");
        }
        (Ok(_) | Err(ExtractError::NoUsableDocument { .. }), Err(e)) => {
            prop_assert!(false, "accepted what serde_json refuses: {e}");
        }
        // Too deep, a duplicate key, or an outcome both agree on.
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn any_bytes_give_documents_or_an_error_never_a_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
        format in format(),
    ) {
        if let Ok(docs) = split(&body, format, 64) {
            for doc in docs {
                // Each stored document is a piece of the body, byte for byte.
                prop_assert!(body.windows(doc.bytes.len()).any(|w| w == doc.bytes.as_slice()));
            }
        }
    }

    #[test]
    fn json_like_noise_never_panics(
        body in "[\\[\\]{}\",:0-9a-z\\\\ \\n.eE+-]{0,300}",
        format in format(),
    ) {
        let _ = split(body.as_bytes(), format, 64);
    }

    /// serde_json's parser is the reference for what JSON is: the split
    /// calls invalid exactly what it refuses, at the same place.
    #[test]
    fn json_noise_is_refused_where_serde_json_refuses_it(
        body in "[\\[\\]{}\",:0-9a-z\\\\ \\n.eE+-]{0,300}",
    ) {
        same_verdict_as_serde_json(body.as_bytes())?;
    }

    #[test]
    fn json_with_one_byte_changed_is_refused_where_serde_json_refuses_it(
        value in json_value(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(b"[]{},:\"0a \n-.e\\".to_vec()),
        remove in any::<bool>(),
    ) {
        let mut body = serde_json::to_vec(&json!([value])).unwrap();
        let at = at.index(body.len());
        if remove {
            body.remove(at);
        } else {
            body[at] = byte;
        }
        same_verdict_as_serde_json(&body)?;
    }

    #[test]
    fn arbitrary_json_is_accepted_whole_or_refused_whole(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        match split(&body, BodyFormat::Json, 64) {
            Ok(docs) => {
                let expected = match &value {
                    Value::Array(items) => items.len(),
                    _ => 1,
                };
                prop_assert_eq!(docs.len(), expected);
            }
            Err(ExtractError::NoUsableDocument { .. }) => {}
            Err(other) => prop_assert!(false, "serialized JSON refused as {:?}", other),
        }
    }

    #[test]
    fn companies_come_back_exactly_as_sent(
        companies in prop::collection::vec(company(), 1..8),
        as_ndjson in any::<bool>(),
    ) {
        let (body, format) = if as_ndjson {
            let lines: Vec<String> = companies.iter().map(Value::to_string).collect();
            (lines.join("\n").into_bytes(), BodyFormat::NdJson)
        } else {
            (serde_json::to_vec(&companies).unwrap(), BodyFormat::Json)
        };
        let docs = split(&body, format, 64).unwrap();
        prop_assert_eq!(docs.len(), companies.len());
        for (doc, company) in docs.iter().zip(&companies) {
            // Byte for byte what was sent, not merely equal JSON.
            prop_assert_eq!(&doc.bytes, &company.to_string().into_bytes());
        }
    }

    #[test]
    fn nesting_is_refused_exactly_beyond_the_limit(depth in 1usize..200, limit in 1usize..=100) {
        let mut body = "[".repeat(depth);
        body.push_str(&"]".repeat(depth));
        let result = split(body.as_bytes(), BodyFormat::Json, limit);
        if depth > limit {
            let too_deep = matches!(result, Err(ExtractError::TooDeep { .. }));
            prop_assert!(too_deep, "{:?}", result);
        } else {
            // Nested empty arrays are not companies, but they are not too deep.
            let not_too_deep = !matches!(result, Err(ExtractError::TooDeep { .. }));
            prop_assert!(not_too_deep, "{:?}", result);
        }
    }
}
