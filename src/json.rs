//! Quick reads of JSON text that do not build it: the text of one
//! top-level member's value, and whether the text nests deeper than a
//! limit. The contents of strings (most of a chat body or answer) are
//! skipped with `memchr`, a few bytes per instruction, instead of being
//! decoded.
//!
//! These find, they do not validate: a value found here is still parsed
//! (by serde) before it is used, and text that is not JSON finds nothing
//! or a piece that will not parse. A leaf: it imports nothing from the
//! crate.

/// The text of the value of the member `key` of the object `text` is,
/// found without reading the other members' values beyond their ends.
/// `None` when `text` is not an object, has no such member, or breaks off
/// before it. A key is compared as written (`"usage"`, not an escaped
/// spelling of it); of two members with the key, the first counts.
pub fn member<'a>(text: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut found = None;
    walk_members(text, |name, value| {
        if name == key.as_bytes() {
            found = Some(value);
            return false;
        }
        true
    });
    found
}

/// Hands `visit` the members of the object `text` is, in order: each
/// one's key as written between its quotes (escapes not decoded) and the
/// text of its value. `visit` returns `false` to stop there. Returns
/// whether the walk ended well: at the object's closing brace, or where
/// `visit` stopped it; `false` when `text` is not an object or breaks
/// off first (the members before the break were visited).
pub fn walk_members<'a>(text: &'a [u8], mut visit: impl FnMut(&'a [u8], &'a [u8]) -> bool) -> bool {
    let mut i = skip_space(text, 0);
    if text.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_space(text, i + 1);
    if text.get(i) == Some(&b'}') {
        return true;
    }
    loop {
        if text.get(i) != Some(&b'"') {
            return false;
        }
        let Some(name_end) = string_end(text, i) else {
            return false;
        };
        let name = &text[i + 1..name_end - 1];
        i = skip_space(text, name_end);
        if text.get(i) != Some(&b':') {
            return false;
        }
        let start = skip_space(text, i + 1);
        let Some(end) = value_end(text, start) else {
            return false;
        };
        if !visit(name, &text[start..end]) {
            return true;
        }
        i = skip_space(text, end);
        match text.get(i) {
            Some(b',') => i = skip_space(text, i + 1),
            Some(b'}') => return true,
            _ => return false,
        }
    }
}

/// The unsigned integer `text` spells, as JSON writes one (digits, no
/// leading zero, no sign, fraction or exponent) and if it fits a `u64`;
/// `None` for anything else.
pub fn uint(text: &[u8]) -> Option<u64> {
    if text.is_empty() || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether `text` opens more than `limit` arrays or objects at once,
/// brackets inside strings (escapes included) not counted. One pass, no
/// allocation.
pub fn nests_deeper_than(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => match string_end(text, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                // An unterminated string: nothing after it counts.
                None => return false,
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The index just past the closing quote of the string whose opening
/// quote is at `at`; `None` when the text ends first.
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    // (A byte-at-a-time start for short strings was tried: memchr2 is
    // cheaper even for keys, 1,250 instructions per plain request.)
    loop {
        i += memchr::memchr2(b'"', b'\\', text.get(i..)?)?;
        if text[i] == b'"' {
            return Some(i + 1);
        }
        // A backslash and the character it escapes.
        i += 2;
    }
}

/// The index just past the value starting at `at`: a string, an array
/// or object (to its matching bracket), or a literal (number, `true`,
/// `false`, `null`: up to the next delimiter).
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match *text.get(at)? {
        b'"' => string_end(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match *text.get(i)? {
                    b'"' => {
                        i = string_end(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        b',' | b'}' | b']' | b':' => None,
        _ => {
            let rest = &text[at..];
            let len = rest
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(at + len)
        }
    }
}

fn skip_space(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn find(text: &str, key: &str) -> Option<String> {
        member(text.as_bytes(), key).map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn finds_a_top_level_member_of_any_kind() {
        let text = r#"{"id":"x","n":-1.5e3,"ok":true,"none":null,"list":[1,[2],{"a":"]"}],
            "usage" : {"prompt_tokens":5,"completion_tokens":6}}"#;
        assert_eq!(
            find(text, "usage").as_deref(),
            Some(r#"{"prompt_tokens":5,"completion_tokens":6}"#)
        );
        assert_eq!(find(text, "n").as_deref(), Some("-1.5e3"));
        assert_eq!(find(text, "ok").as_deref(), Some("true"));
        assert_eq!(find(text, "none").as_deref(), Some("null"));
        assert_eq!(find(text, "id").as_deref(), Some(r#""x""#));
        assert_eq!(find(text, "list").as_deref(), Some(r#"[1,[2],{"a":"]"}]"#));
        assert_eq!(find(text, "missing"), None);
    }

    #[test]
    fn a_nested_or_quoted_key_is_not_a_top_level_member() {
        // In a nested object, in a string's text (escaped quotes), after
        // an escaped backslash: none of these is the top-level `usage`.
        let text = r#"{"choices":[{"usage":{"prompt_tokens":1}}],
            "content":"say \"usage\": {\"prompt_tokens\": 9} \\",
            "tail":"{[\"usage\"" }"#;
        assert_eq!(find(text, "usage"), None);
        let text = r#"{"meta":{"usage":1},"usage":2}"#;
        assert_eq!(find(text, "usage").as_deref(), Some("2"));
        // The first of two counts.
        assert_eq!(
            find(r#"{"usage":1,"usage":2}"#, "usage").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn text_that_is_not_an_object_or_breaks_off_finds_nothing() {
        for text in [
            "",
            "   ",
            "[]",
            r#"["usage",{"usage":1}]"#,
            r#""usage""#,
            "{",
            r#"{"usage""#,
            r#"{"usage":"#,
            r#"{"a":"unterminated, "usage":1}"#,
            r#"{"a":[1,2, "usage":1}"#,
            r#"{"a" 1, "usage":1}"#,
            r#"{"a":1 "usage":1}"#,
            r#"{,"usage":1}"#,
        ] {
            assert_eq!(find(text, "usage"), None, "{text}");
        }
        assert_eq!(find("{}", "usage"), None);
        assert_eq!(find(" { \"usage\" : 7 } ", "usage").as_deref(), Some("7"));
    }

    #[test]
    fn nesting_counts_brackets_outside_strings_only() {
        assert!(!nests_deeper_than(br#"{"a":[[1]]}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[[[1]]]}"#, 3));
        // Brackets in strings, escaped quotes and backslashes included.
        assert!(!nests_deeper_than(br#"{"a":"[[[[\"[[[[\\","b":[]}"#, 2));
        assert!(nests_deeper_than(br#"{"a":"\\","b":[[{}]]}"#, 3));
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert!(nests_deeper_than(deep.as_bytes(), 64));
        assert!(!nests_deeper_than(deep.as_bytes(), 65));
        // An unterminated string ends the count.
        assert!(!nests_deeper_than(br#"{"a":"[[[[[["#, 2));
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            // Quotes, backslashes, brackets and the key itself in text.
            prop::sample::select(vec!["usage", "\"usage\":1", "{[", "]}", "\\", "a\"b", ""])
                .prop_map(|s| Value::String(s.to_owned())),
            ".{0,12}".prop_map(Value::String),
            // Longer strings, escapes anywhere in them.
            "[a-z\"\\\\]{16,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop::sample::select(vec!["usage", "id", "choices", "a\"b", "\\", ""]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((keys, inner), 0..5).prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Finds what serde finds, in compact and pretty text alike.
        #[test]
        fn member_agrees_with_serde(v in value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            for key in ["usage", "id", "choices"] {
                let found = member(&text, key)
                    .map(|raw| serde_json::from_slice::<Value>(raw).unwrap());
                prop_assert_eq!(found.as_ref(), v.get(key).filter(|_| v.is_object()));
            }
        }

        /// Agrees with the real nesting of any JSON value serde writes.
        #[test]
        fn nesting_agrees_with_serde(depth in 0usize..100, wrap in any::<bool>(), text in ".*") {
            let mut v = Value::String(text);
            for i in 0..depth {
                v = if (i % 2 == 0) == wrap { json!([v]) } else { json!({ "k": v }) };
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(nests_deeper_than(&bytes, 64), depth > 64);
        }

        #[test]
        fn neither_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = nests_deeper_than(&bytes, 64);
            let _ = member(&bytes, "usage");
        }
    }
}
