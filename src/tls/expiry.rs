//! A certificate's validity period, read from its DER (X.509 `tbsCertificate.validity`), so that
//! an expired certificate is reported at start and at reload. Pure; a malformed input gives
//! `None`, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `(notBefore, notAfter)` of a DER certificate.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1; // explicit version
    }
    let (_, rest) = element(tbs, 0x02)?; // serialNumber
    let (_, rest) = element(rest, 0x30)?; // signature algorithm
    let (_, rest) = element(rest, 0x30)?; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some((not_before, not_after))
}

/// The content of the element of type `tag` at the start of `der`, and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, &b| (l << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(der: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (text, rest, year) = match der.first()? {
        0x17 => {
            let (t, rest) = element(der, 0x17)?;
            let yy = digits(t.get(..2)?)?;
            (
                t.get(2..)?,
                rest,
                if yy < 50 { 2000 + yy } else { 1900 + yy },
            )
        }
        0x18 => {
            let (t, rest) = element(der, 0x18)?;
            (t.get(4..)?, rest, digits(t.get(..4)?)?)
        }
        _ => return None,
    };
    if text.len() != 11 || text[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&text[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, min, sec) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)? + hour * 3600 + min * 60 + sec;
    Some((UNIX_EPOCH + Duration::from_secs(secs), rest))
}

fn digits(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Days from 1970-01-01 to a date (Howard Hinnant's algorithm); dates before 1970 give 0.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year } as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_time(tag: u8, s: &str) -> Vec<u8> {
        let mut v = vec![tag, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn seq(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut v = vec![tag];
        if body.len() < 0x80 {
            v.push(body.len() as u8);
        } else {
            v.extend_from_slice(&[0x82, (body.len() >> 8) as u8, body.len() as u8]);
        }
        v.extend(body);
        v
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        let validity = seq(
            0x30,
            &[
                &der_time(0x17, "700102000000Z"),
                &der_time(0x18, "20380119031407Z"),
            ],
        );
        let tbs = seq(
            0x30,
            &[
                &seq(0xa0, &[&[0x02, 1, 2]]),
                &[0x02, 1, 7],
                &seq(0x30, &[]),
                &seq(0x30, &[&[0u8; 200]]),
                &validity,
            ],
        );
        let cert = seq(0x30, &[&tbs, &seq(0x30, &[]), &[0x03, 1, 0]]);
        let (nb, na) = validity_of(&cert);
        assert_eq!(nb, UNIX_EPOCH + Duration::from_secs(86_400));
        assert_eq!(na, UNIX_EPOCH + Duration::from_secs(2_147_483_647));
    }

    fn validity_of(der: &[u8]) -> (SystemTime, SystemTime) {
        validity(der).unwrap()
    }

    #[test]
    fn malformed_input_is_none() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01]), None);
        let bad_month = seq(0x30, &[&der_time(0x17, "701302000000Z")]);
        assert_eq!(time(&bad_month[2..]), None);
    }
}
