//! How the command writes JSON: serde_json, in one of two layouts.
//!
//! - [`compact`]: no spaces (`{"a":1,"b":[2,3]}`), for files other programs
//!   read (the run report).
//! - [`inline`]: one line with a space after each `:` and `,`
//!   (`{"a": 1, "b": [2, 3]}`), the layout `kb`, `kernel-params` and
//!   `run --show` have always printed.
//!
//! Both escape DEL and the line and paragraph separators (U+2028, U+2029) as
//! well as the control characters serde_json escapes, so that no string a
//! user supplied (a command line, a path) can move a terminal's cursor or
//! break a line in a log viewer.

use serde::Serialize;
use serde_json::ser::Formatter;
use std::io::{self, Write};

/// A serde_json formatter with the two layouts above.
struct Layout {
    spaced: bool,
}

impl Formatter for Layout {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        match (first, self.spaced) {
            (true, _) => Ok(()),
            (false, true) => w.write_all(b", "),
            (false, false) => w.write_all(b","),
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.begin_array_value(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(if self.spaced { b": " } else { b":" })
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['\u{7f}', '\u{2028}', '\u{2029}']) {
            let c = rest[at..].chars().next().unwrap_or_default();
            w.write_all(&rest.as_bytes()[..at])?;
            write!(w, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

fn write<T: Serialize + ?Sized>(value: &T, spaced: bool) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Layout { spaced });
    // Serializing the command's own view structs into memory cannot fail
    // (string keys only, no I/O); an empty string would show if it did.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `{"a":1,"b":[2,3]}`.
pub fn compact<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, false)
}

/// `{"a": 1, "b": [2, 3]}`.
pub fn inline<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, true)
}

/// Serializes `(name, value)` pairs as one JSON object, in their order.
pub fn pairs<S: serde::Serializer>(items: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(items.iter().map(|(k, v)| (k, v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layouts_and_escapes() {
        let v = json!({"a": 1, "b": [2, 3], "c": {"d": null}});
        assert_eq!(compact(&v), r#"{"a":1,"b":[2,3],"c":{"d":null}}"#);
        assert_eq!(inline(&v), r#"{"a": 1, "b": [2, 3], "c": {"d": null}}"#);
        assert_eq!(inline(&json!([])), "[]");
        assert_eq!(inline(&json!({})), "{}");
        assert_eq!(
            inline("a\"b\\c\nd\u{1}é\u{7f}x\u{2028}\u{2029}"),
            r#""a\"b\\c\nd\u0001é\u007fx\u2028\u2029""#
        );
        let s = inline("\u{7f}\u{2028}\u{2029}\u{1b}[2J");
        assert!(serde_json::from_str::<String>(&s).unwrap() == "\u{7f}\u{2028}\u{2029}\u{1b}[2J");
    }
}
