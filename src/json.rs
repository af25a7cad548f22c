//! JSON string literals for the few places that write JSON by hand (the console's `/stats`, JSON
//! log lines): no serializer is linked for so little.

/// Appends `s` as a JSON string literal. Besides what JSON requires, `<` and the two Unicode line
/// separators are escaped, so the text can never close a script element it is pasted into.
pub fn push_json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
