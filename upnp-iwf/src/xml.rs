//! XML text escaping shared by the description, SOAP and GENA writers.

use std::borrow::Cow;

/// Escapes `&`, `<`, `>`, `"` and `'` for element text or attribute values. Control
/// characters other than tab/CR/LF (invalid in XML 1.0) are dropped.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| matches!(c, '&' | '<' | '>' | '"' | '\'') || invalid_char(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if invalid_char(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn invalid_char(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\r' | '\n')) || matches!(c, '\u{fffe}' | '\u{ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped_and_control_characters_dropped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a&b<c>\"d'\u{1}"), "a&amp;b&lt;c&gt;&quot;d&apos;");
    }
}
