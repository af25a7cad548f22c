//! Event ids: `<run>-<seq>`. This file owns the run prefix, which names one server run (or, with
//! a backplane, one Redis dataset): the start time in base-36 milliseconds plus a random salt, so
//! that two runs never share a prefix. The seq comes from the `Sequencer` (`handle.rs`) or from
//! Redis.

use std::time::{SystemTime, UNIX_EPOCH};

/// The run prefix of ids: the start time in milliseconds and 20 random bits, base 36. Different for
/// every run, even two starting in the same millisecond or after the clock stepped back.
pub fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // RandomState is seeded from the OS's random source: enough for a uniqueness salt.
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        & 0xf_ffff;
    format!("{}{}", base36(millis), base36(salt + 36u64.pow(3)))
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}
