//! The event body the tool publishes and recognises on the way back.
//!
//! Layout: 16 lowercase hex digits of the publish time (nanoseconds since the tool started), 16
//! hex digits of the global event number `g`, then filler up to the chosen size. Event `g` goes
//! to topic `g % topics`, so `g` alone tells a subscriber its topic and its per-topic sequence
//! (`g / topics`): that is what makes loss, duplicate and reorder detection allocation-free.
//! The body is ASCII without line breaks, so every SSE server sends it as one `data:` line.

/// Bytes of the body that carry information; the rest is filler.
pub const HEADER_LEN: usize = 32;

/// Filler bytes, copied in slices rather than pushed one by one.
const FILLER: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

/// Appends a body of exactly `size` bytes (`size >= HEADER_LEN`, checked by the CLI).
pub fn encode(out: &mut Vec<u8>, ts_ns: u64, g: u64, size: usize) {
    push_hex(out, ts_ns);
    push_hex(out, g);
    let mut left = size.saturating_sub(HEADER_LEN);
    while left > 0 {
        let n = left.min(FILLER.len());
        out.extend_from_slice(&FILLER[..n]);
        left -= n;
    }
}

/// Reads `(ts_ns, g)` from the start of a received body; `None` for anything the tool did not
/// publish (another publisher's event, a server's reset notice).
pub fn decode(body: &[u8]) -> Option<(u64, u64)> {
    let ts = parse_hex(body.get(..16)?)?;
    let g = parse_hex(body.get(16..32)?)?;
    Some((ts, g))
}

fn push_hex(out: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    for (i, slot) in buf.iter_mut().enumerate() {
        *slot = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&buf);
}

/// Hex digit values, 0xff for anything else: one load per digit on the receive hot path.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &d in digits {
        let n = HEX[usize::from(d)];
        // Checked once at the end: the loop stays branch-free.
        bad |= n;
        v = (v << 4) | u64::from(n & 0xf);
    }
    (bad & 0xf0 == 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_size() {
        for size in [32, 33, 64, 100, 200, 4096] {
            let mut out = Vec::new();
            encode(&mut out, 0x0123_4567_89ab_cdef, u64::MAX - 1, size);
            assert_eq!(out.len(), size);
            assert!(out.iter().all(|b| b.is_ascii_graphic()));
            assert_eq!(decode(&out), Some((0x0123_4567_89ab_cdef, u64::MAX - 1)));
        }
    }

    #[test]
    fn foreign_bodies_are_not_ours() {
        assert_eq!(decode(b"hello"), None);
        assert_eq!(
            decode(b"{\"reason\":\"expired\"}xxxxxxxxxxxxxxxxxxxxx"),
            None
        );
        assert_eq!(decode(&[b'0'; 31]), None);
        assert_eq!(parse_hex(b"00000000000000Ff"), Some(255));
        for bad in [
            b"000000000000000g",
            b"0000000 00000000",
            b"\xff000000000000000",
        ] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }
}
