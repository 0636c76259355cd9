//! How the command writes JSON: serde_json, in one of two layouts.
//!
//! - [`compact`]: no spaces (`{"a":1,"b":[2,3]}`), for files other programs
//!   read (the run report).
//! - [`inline`]: one line with a space after each `:` and `,`
//!   (`{"a": 1, "b": [2, 3]}`), the layout `kb`, `kernel-params` and
//!   `run --show` have always printed.
//! - [`pretty`]: two-space indentation, one member a line, the layout of
//!   `doctor --json`; a member wrapped in [`Inline`] or [`Compact`] stays on
//!   its line in that layout (`"sources": ["a", "b"]`).
//!
//! Both escape DEL and the line and paragraph separators (U+2028, U+2029) as
//! well as the control characters serde_json escapes, so that no string a
//! user supplied (a command line, a path) can move a terminal's cursor or
//! break a line in a log viewer.

use serde::{Serialize, Serializer};
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::value::RawValue;
use std::io::{self, Write};

/// Writes a string's contents as serde_json does, with DEL, U+2028 and
/// U+2029 escaped as well (serde_json has escaped the rest of `fragment`).
fn write_escaped<W: ?Sized + Write>(w: &mut W, fragment: &str) -> io::Result<()> {
    let mut rest = fragment;
    while let Some(at) = rest.find(['\u{7f}', '\u{2028}', '\u{2029}']) {
        let c = rest[at..].chars().next().unwrap_or_default();
        w.write_all(&rest.as_bytes()[..at])?;
        write!(w, "\\u{:04x}", c as u32)?;
        rest = &rest[at + c.len_utf8()..];
    }
    w.write_all(rest.as_bytes())
}

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
        write_escaped(w, fragment)
    }
}

/// serde_json's pretty layout (two spaces), with [`Layout`]'s escapes.
struct Indented(PrettyFormatter<'static>);

impl Formatter for Indented {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_escaped(w, fragment)
    }
}

fn write<T: Serialize + ?Sized, F: Formatter>(value: &T, formatter: F) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing the command's own view structs into memory cannot fail
    // (string keys only, no I/O); an empty string would show if it did.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `{"a":1,"b":[2,3]}`.
pub fn compact<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, Layout { spaced: false })
}

/// `{"a": 1, "b": [2, 3]}`.
pub fn inline<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, Layout { spaced: true })
}

/// `{\n  "a": 1,\n  "b": [\n    2,\n    3\n  ]\n}`: one member or item a
/// line, indented by two spaces a level; `{}` and `[]` when empty.
pub fn pretty<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, Indented(PrettyFormatter::new()))
}

/// Serializes `text`, JSON already written, as it is.
fn raw<S: Serializer>(text: String, s: S) -> Result<S::Ok, S::Error> {
    RawValue::from_string(text)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// A value kept on one line, in the [`inline`] layout, wherever it is
/// written (a member of a [`pretty`] document).
pub struct Inline<T>(pub T);

impl<T: Serialize> Serialize for Inline<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        raw(inline(&self.0), s)
    }
}

/// A value kept on one line, in the [`compact`] layout, wherever it is
/// written.
pub struct Compact<T>(pub T);

impl<T: Serialize> Serialize for Compact<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        raw(compact(&self.0), s)
    }
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
        assert_eq!(
            pretty(&v),
            "{\n  \"a\": 1,\n  \"b\": [\n    2,\n    3\n  ],\n  \"c\": {\n    \"d\": null\n  }\n}"
        );
        assert_eq!(
            pretty(&json!({"a": [], "b": {}})),
            "{\n  \"a\": [],\n  \"b\": {}\n}"
        );
        #[derive(Serialize)]
        struct Nested {
            a: Inline<serde_json::Value>,
            c: [Compact<serde_json::Value>; 1],
        }
        let nested = Nested {
            a: Inline(json!([1, {"b": 2}])),
            c: [Compact(json!({"d": [3]}))],
        };
        assert_eq!(
            pretty(&nested),
            "{\n  \"a\": [1, {\"b\": 2}],\n  \"c\": [\n    {\"d\":[3]}\n  ]\n}"
        );
        assert_eq!(pretty("\u{7f}\u{2028}"), r#""\u007f\u2028""#);
        let s = inline("\u{7f}\u{2028}\u{2029}\u{1b}[2J");
        assert!(serde_json::from_str::<String>(&s).unwrap() == "\u{7f}\u{2028}\u{2029}\u{1b}[2J");
    }
}
