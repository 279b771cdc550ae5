//! Reading the few values the store needs out of S3's XML answers: keys of
//! a listing, bucket names, an error's code and message. S3 writes these as
//! leaf elements without attributes, so finding `<Tag>…</Tag>` and decoding
//! its entities is all the parsing they need.

/// The decoded text of every `<tag>…</tag>` in `xml`, in order.
pub fn texts(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    found
}

/// The first `<tag>…</tag>` of `xml`, decoded.
pub fn text(xml: &str, tag: &str) -> Option<String> {
    texts(xml, tag).into_iter().next()
}

/// The part of `xml` inside the first `<tag …>…</tag>`, or `""`.
pub fn section<'a>(xml: &'a str, tag: &str) -> &'a str {
    let Some(start) = xml.find(&format!("<{tag}")) else {
        return "";
    };
    let inner = &xml[start..];
    let Some(open_end) = inner.find('>') else {
        return "";
    };
    let inner = &inner[open_end + 1..];
    inner
        .find(&format!("</{tag}>"))
        .map_or("", |end| &inner[..end])
}

/// Decodes the five predefined entities and numeric character references.
fn unescape(raw: &str) -> String {
    if !raw.contains('&') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let entity = &rest[amp..];
        let Some(semi) = entity.find(';') else {
            out.push_str(entity);
            return out;
        };
        match decode_entity(&entity[1..semi]) {
            Some(c) => out.push(c),
            None => out.push_str(&entity[..=semi]),
        }
        rest = &entity[semi + 1..];
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_its_keys_decoded() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Contents><Key>a&amp;b/c&#233;&#x41;.json</Key><Size>3</Size></Contents>
<Contents><Key>plain</Key></Contents><IsTruncated>true</IsTruncated>
<NextContinuationToken>t&lt;1&gt;</NextContinuationToken></ListBucketResult>"#;
        assert_eq!(texts(xml, "Key"), ["a&b/céA.json", "plain"]);
        assert_eq!(text(xml, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(text(xml, "NextContinuationToken").as_deref(), Some("t<1>"));
        assert_eq!(text(xml, "Missing"), None);
    }

    #[test]
    fn bucket_names_come_from_the_buckets_section_alone() {
        let xml = "<ListAllMyBucketsResult><Owner><ID>x</ID><Name>owner</Name></Owner>\
                   <Buckets><Bucket><Name>one</Name></Bucket><Bucket><Name>two</Name></Bucket>\
                   </Buckets></ListAllMyBucketsResult>";
        assert_eq!(texts(section(xml, "Buckets"), "Name"), ["one", "two"]);
        assert_eq!(section(xml, "Nothing"), "");
    }

    #[test]
    fn unknown_or_broken_entities_are_kept_as_written() {
        assert_eq!(
            unescape("a &nbsp; b &#xZZ; c & d"),
            "a &nbsp; b &#xZZ; c & d"
        );
    }
}
