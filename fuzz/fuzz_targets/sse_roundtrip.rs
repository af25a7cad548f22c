//! Any body and event type → the SSE encoding → an independent reading of the WHATWG
//! event-stream rules gives back the same data (with CR and CRLF normalised to LF), type and id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sseloop::http::request::valid_event_type;
use sseloop::sse::encode_event;

/// Parses a stream the way a browser does; returns (id, type, data) per dispatched event.
fn browser_parse(stream: &str) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    let (mut data, mut kind, mut id) = (String::new(), String::new(), String::new());
    let mut rest = stream;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..end];
        let mut next = &rest[end..];
        if next.starts_with("\r\n") {
            next = &next[2..];
        } else if !next.is_empty() {
            next = &next[1..];
        }
        rest = next;
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let k = if kind.is_empty() { "message".to_string() } else { kind.clone() };
                events.push((id.clone(), k, std::mem::take(&mut data)));
            }
            data.clear();
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => kind = value.to_string(),
            "id" if !value.contains('\0') => id = value.to_string(),
            _ => {}
        }
    }
    events
}

fuzz_target!(|input: (&str, &str)| {
    let (body, event_type) = input;
    let event_type = valid_event_type(event_type).then_some(event_type);
    let mut out = Vec::new();
    encode_event(&mut out, "run-7", event_type, body);
    let text = std::str::from_utf8(&out).expect("encoding of UTF-8 stays UTF-8");
    assert!(!text.contains('\r'), "only LF is written");
    let parsed = browser_parse(text);
    let want = body.replace("\r\n", "\n").replace('\r', "\n");
    let kind = event_type.unwrap_or("message").to_string();
    assert_eq!(parsed, vec![("run-7".to_string(), kind, want)]);
});
