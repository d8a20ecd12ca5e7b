//! Checksums, registries and Python's character classes: the port of dlp/_checks.py (Luhn, SSN
//! rules, IBAN mod-97 and BBAN structure, IPv4), of `ipaddress.IPv6Address` parsing, of
//! `base64.urlsafe_b64decode` (CPython's non-strict `binascii.a2b_base64`), and of
//! `str.isalnum` / `isalpha` / `isdigit` for any character (tables exported by Python).
//!
//! Everything here works on `&str` / bytes without allocating.

use serde::Deserialize;

// --- Python's Unicode character classes --------------------------------------------------------

/// A set of non-ASCII code points as sorted, disjoint, inclusive ranges (from `_validate._unicode_tables`).
#[derive(Debug, Clone, Default)]
pub struct CharClass {
    ranges: Vec<(u32, u32)>,
}

impl CharClass {
    pub fn new(mut ranges: Vec<(u32, u32)>) -> Result<CharClass, String> {
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if w[0].1 >= w[1].0 {
                return Err(format!(
                    "overlapping character ranges {:?} {:?}",
                    w[0], w[1]
                ));
            }
        }
        if ranges.iter().any(|&(lo, hi)| lo > hi || lo < 0x80) {
            return Err("character ranges must be non-ASCII and ordered".into());
        }
        Ok(CharClass { ranges })
    }

    /// Membership of a non-ASCII character.
    #[inline]
    fn contains_non_ascii(&self, c: char) -> bool {
        let cp = c as u32;
        // The last range starting at or before cp.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= cp);
        i > 0 && self.ranges[i - 1].1 >= cp
    }
}

#[derive(Debug, Deserialize)]
pub struct UnicodeTables {
    pub alnum: Vec<(u32, u32)>,
    pub alpha: Vec<(u32, u32)>,
    pub digit: Vec<(u32, u32)>,
}

/// `str.isalnum()`, `str.isalpha()`, `str.isdigit()` of one character, as the Python that
/// exported the tables answers them.
#[derive(Debug, Clone, Default)]
pub struct PyChars {
    alnum: CharClass,
    alpha: CharClass,
    digit: CharClass,
}

impl PyChars {
    pub fn new(t: UnicodeTables) -> Result<PyChars, String> {
        Ok(PyChars {
            alnum: CharClass::new(t.alnum)?,
            alpha: CharClass::new(t.alpha)?,
            digit: CharClass::new(t.digit)?,
        })
    }

    #[inline]
    pub fn isalnum(&self, c: char) -> bool {
        if c.is_ascii() {
            c.is_ascii_alphanumeric()
        } else {
            self.alnum.contains_non_ascii(c)
        }
    }

    #[inline]
    pub fn isalpha(&self, c: char) -> bool {
        if c.is_ascii() {
            c.is_ascii_alphabetic()
        } else {
            self.alpha.contains_non_ascii(c)
        }
    }

    #[inline]
    pub fn isdigit(&self, c: char) -> bool {
        if c.is_ascii() {
            c.is_ascii_digit()
        } else {
            self.digit.contains_non_ascii(c)
        }
    }

    /// `s.isdigit()` for a whole string: non-empty and every character a digit.
    #[inline]
    pub fn str_isdigit(&self, s: &str) -> bool {
        !s.is_empty() && s.chars().all(|c| self.isdigit(c))
    }
}

// --- Luhn --------------------------------------------------------------------------------------

/// `_checks.luhn_ok` over the characters `chars` yields (the digits of a card, in order), with
/// Python's arithmetic for any character: the UTF-8 bytes of every other character from the
/// right are summed, the others are first mapped through the doubling table when they are ASCII
/// digits, and 48 is taken off per character.
#[inline]
pub fn luhn_ok_chars<I>(chars: I) -> bool
where
    I: DoubleEndedIterator<Item = char>,
{
    let mut total: i64 = 0;
    let mut n: i64 = 0;
    for (i, c) in chars.rev().enumerate() {
        n += 1;
        let c = if i % 2 == 1 && c.is_ascii_digit() {
            // "0123456789" -> "0246813579"
            const DOUBLE: [u8; 10] = *b"0246813579";
            DOUBLE[(c as u8 - b'0') as usize] as char
        } else {
            c
        };
        if c.is_ascii() {
            total += c as i64;
        } else {
            let mut buf = [0u8; 4];
            total += c.encode_utf8(&mut buf).bytes().map(i64::from).sum::<i64>();
        }
    }
    (total - 48 * n) % 10 == 0
}

// --- US SSN ------------------------------------------------------------------------------------

/// `_checks.ssn_ok` for nine ASCII digits (`digits` as bytes); `None` where Python would raise
/// (an empty string).
#[inline]
pub fn ssn_ok(digits: &[u8], blocklist: &[Vec<u8>]) -> Option<bool> {
    let area = &digits[..digits.len().min(3)];
    let first = *area.first()?;
    let group = &digits[digits.len().min(3)..digits.len().min(5)];
    let serial = &digits[digits.len().min(5)..];
    Some(
        !(area == b"000"
            || area == b"666"
            || first == b'9'
            || group == b"00"
            || serial == b"0000"
            || blocklist.iter().any(|b| b.as_slice() == digits)),
    )
}

// --- IBAN --------------------------------------------------------------------------------------

/// One part of a BBAN structure: `count` characters of `class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BbanClass {
    Digit,      // [0-9]
    Upper,      // [A-Z]
    AlnumMixed, // [A-Za-z0-9]
}

#[derive(Debug)]
enum Structure {
    /// The usual shape: classes with counts, matched by hand.
    Parts(Vec<(BbanClass, usize)>),
    /// Anything else the registry might hold: the exported regex, anchored.
    Regex(regex::bytes::Regex),
}

impl Structure {
    fn parse(pattern: &str) -> Result<Structure, String> {
        let mut parts = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            let (class, tail) = if let Some(t) = rest.strip_prefix("[0-9]{") {
                (BbanClass::Digit, t)
            } else if let Some(t) = rest.strip_prefix("[A-Z]{") {
                (BbanClass::Upper, t)
            } else if let Some(t) = rest.strip_prefix("[A-Za-z0-9]{") {
                (BbanClass::AlnumMixed, t)
            } else {
                parts.clear();
                break;
            };
            let close = match tail.find('}') {
                Some(i) => i,
                None => {
                    parts.clear();
                    break;
                }
            };
            let count: usize = match tail[..close].parse() {
                Ok(n) if tail[..close].bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    parts.clear();
                    break;
                }
            };
            parts.push((class, count));
            rest = &tail[close + 1..];
        }
        if rest.is_empty() {
            return Ok(Structure::Parts(parts));
        }
        // Python compiles it with `re` (Unicode mode, no flags) and calls fullmatch.
        let re = regex::bytes::RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
            .build()
            .map_err(|e| format!("BBAN structure {pattern:?}: {e}"))?;
        Ok(Structure::Regex(re))
    }

    #[inline]
    fn fullmatch(&self, bban: &[u8]) -> bool {
        match self {
            Structure::Parts(parts) => {
                let mut at = 0;
                for &(class, count) in parts {
                    let Some(chunk) = bban.get(at..at + count) else {
                        return false;
                    };
                    let ok = match class {
                        BbanClass::Digit => chunk.iter().all(u8::is_ascii_digit),
                        BbanClass::Upper => chunk.iter().all(u8::is_ascii_uppercase),
                        BbanClass::AlnumMixed => chunk.iter().all(u8::is_ascii_alphanumeric),
                    };
                    if !ok {
                        return false;
                    }
                    at += count;
                }
                at == bban.len()
            }
            Structure::Regex(re) => re.is_match(bban),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct IbanCountryTable {
    pub structure: String,
    pub module: bool,
}

#[derive(Debug)]
struct IbanCountry {
    structure: Structure,
    module: bool,
}

/// "stdnum's country module for this IBAN's country accepts the compact IBAN" (BE, ES, ME, NO in
/// python-stdnum 2.2): `get_cc_module(cc, "iban").validate(compact)` raises no ValidationError.
pub type IbanModuleCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// `_checks.iban_ok`: the IBAN registry of stdnum, by country code.
pub struct Iban {
    by_cc: Vec<Option<IbanCountry>>, // index: cc_index(a) * 36 + cc_index(b)
    module: Option<IbanModuleCheck>,
}

#[inline]
fn cc_index(b: u8) -> Option<usize> {
    match b {
        b'A'..=b'Z' => Some((b - b'A') as usize),
        b'0'..=b'9' => Some(26 + (b - b'0') as usize),
        _ => None,
    }
}

impl Iban {
    pub fn new(
        countries: std::collections::HashMap<String, IbanCountryTable>,
        module: Option<IbanModuleCheck>,
    ) -> Result<Iban, String> {
        let mut by_cc: Vec<Option<IbanCountry>> = (0..36 * 36).map(|_| None).collect();
        for (cc, t) in countries {
            let b = cc.as_bytes();
            let idx = match (
                b.len(),
                b.first().copied().and_then(cc_index),
                b.get(1).copied().and_then(cc_index),
            ) {
                (2, Some(x), Some(y)) => x * 36 + y,
                _ => {
                    return Err(format!(
                        "IBAN country code {cc:?} is not two characters of [A-Z0-9]"
                    ))
                }
            };
            by_cc[idx] = Some(IbanCountry {
                structure: Structure::parse(&t.structure)?,
                module: t.module,
            });
        }
        Ok(Iban { by_cc, module })
    }

    pub fn set_module_check(&mut self, module: Option<IbanModuleCheck>) {
        self.module = module;
    }

    /// `_checks.iban_ok(compact)` for an upper-case ASCII alphanumeric string.  `None` where Python
    /// would raise (a character `int()` does not take in the mod-97 number).
    pub fn ok(&self, compact: &[u8]) -> Option<bool> {
        if compact.len() < 5 {
            return Some(false);
        }
        if !mod97_ok(compact)? {
            return Some(false);
        }
        let country = match (cc_index(compact[0]), cc_index(compact[1])) {
            (Some(x), Some(y)) => self.by_cc[x * 36 + y].as_ref(),
            _ => None,
        };
        let Some(country) = country else {
            return Some(false);
        };
        if !country.structure.fullmatch(&compact[4..]) {
            return Some(false);
        }
        if country.module {
            return Some(match (&self.module, std::str::from_utf8(compact)) {
                (Some(check), Ok(s)) => check(s),
                _ => false, // no country check available: reject (see `Validators::set_iban_module_check`)
            });
        }
        Some(true)
    }
}

/// `_checks.iban_mod97_ok`: letters as 10..35, the first four characters moved to the end, mod 97.
#[inline]
fn mod97_ok(compact: &[u8]) -> Option<bool> {
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        match b {
            b'0'..=b'9' => rem = (rem * 10 + (b - b'0') as u32) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + (b - b'A' + 10) as u32) % 97,
            _ => return None,
        }
    }
    Some(rem == 1)
}

// --- IPv4 / IPv6 -------------------------------------------------------------------------------

/// `_checks.ipv4_ok`: `_IPV4.fullmatch`, four decimal octets 0..=255 without leading zeros.
/// (Exactly the strings `ipaddress.IPv4Address` accepts, minus nothing: it also rejects `/`.)
#[inline]
pub fn ipv4_ok(value: &[u8]) -> bool {
    parse_ipv4(value).is_some()
}

/// `ipaddress.IPv4Address._ip_int_from_string` (which equals `_IPV4.fullmatch` on any string).
#[inline]
fn parse_ipv4(value: &[u8]) -> Option<u32> {
    let mut out: u32 = 0;
    let mut octets = 0;
    for part in value.split(|&b| b == b'.') {
        octets += 1;
        if octets > 4 || part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if part.len() > 1 && part[0] == b'0' {
            return None;
        }
        let v = part
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + (b - b'0') as u32);
        if v > 255 {
            return None;
        }
        out = (out << 8) | v;
    }
    (octets == 4).then_some(out)
}

/// `ipaddress.IPv6Address(value)` of Python 3.11 as an integer, or `None` where it raises
/// `AddressValueError` (scope ids after `%` are accepted and ignored, as Python does).
pub fn parse_ipv6(value: &str) -> Option<u128> {
    if value.contains('/') {
        return None;
    }
    // _split_scope_id: partition at the first '%'; the scope must be non-empty and '%'-free.
    let addr = match value.find('%') {
        Some(i) => {
            let scope = &value[i + 1..];
            if scope.is_empty() || scope.contains('%') {
                return None;
            }
            &value[..i]
        }
        None => value,
    };
    if addr.is_empty() {
        return None;
    }
    // parts = addr.split(':'); at most 9 survive, so count first (more is an error either way).
    const MAX_PARTS: usize = 9; // _HEXTET_COUNT + 1
    let n_colon = addr.bytes().filter(|&b| b == b':').count();
    let n = n_colon + 1;
    if !(3..=MAX_PARTS).contains(&n) {
        return None; // "at least 3 parts" / "at most 8 colons" (an IPv4 tail only adds a part)
    }
    #[derive(Clone, Copy)]
    enum Part<'a> {
        Text(&'a str),
        Value(u16),
    }
    let mut parts = [Part::Text(""); MAX_PARTS + 1];
    let mut len = 0;
    for p in addr.split(':') {
        parts[len] = Part::Text(p);
        len += 1;
    }
    if let Part::Text(last) = parts[len - 1] {
        if last.contains('.') {
            let v4 = parse_ipv4(last.as_bytes())?;
            parts[len - 1] = Part::Value((v4 >> 16) as u16);
            parts[len] = Part::Value(v4 as u16);
            len += 1;
        }
    }
    if len > MAX_PARTS {
        return None;
    }
    let empty = |p: Part| matches!(p, Part::Text(""));
    let mut skip_index = None;
    for (i, &p) in parts.iter().enumerate().take(len - 1).skip(1) {
        if empty(p) {
            if skip_index.is_some() {
                return None; // at most one '::'
            }
            skip_index = Some(i);
        }
    }
    let (parts_hi, parts_lo, parts_skipped);
    if let Some(skip) = skip_index {
        let mut hi = skip;
        let mut lo = len - skip - 1;
        if empty(parts[0]) {
            hi -= 1;
            if hi != 0 {
                return None;
            }
        }
        if empty(parts[len - 1]) {
            lo -= 1;
            if lo != 0 {
                return None;
            }
        }
        let skipped = 8i64 - (hi + lo) as i64;
        if skipped < 1 {
            return None;
        }
        parts_hi = hi;
        parts_lo = lo;
        parts_skipped = skipped as u32;
    } else {
        if len != 8 || empty(parts[0]) || empty(parts[len - 1]) {
            return None;
        }
        parts_hi = len;
        parts_lo = 0;
        parts_skipped = 0;
    }
    let hextet = |p: Part| -> Option<u128> {
        match p {
            Part::Value(v) => Some(v as u128),
            Part::Text(s) => {
                // _parse_hextet: hex digits only (ASCII), at most 4, and int('', 16) fails.
                if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                Some(u128::from_str_radix(s, 16).ok()?)
            }
        }
    };
    let mut ip: u128 = 0;
    for &p in &parts[..parts_hi] {
        ip = (ip << 16) | hextet(p)?;
    }
    // Python shifts an unbounded int; at most 8 hextets are ever placed, so no bit is lost.
    ip = if parts_skipped >= 8 {
        0
    } else {
        ip << (16 * parts_skipped)
    };
    for &p in &parts[len - parts_lo..len] {
        ip = (ip << 16) | hextet(p)?;
    }
    Some(ip)
}

// --- base64 ------------------------------------------------------------------------------------

/// `base64.urlsafe_b64decode(s)` of CPython 3.11 (non-strict `binascii.a2b_base64` after mapping
/// `-_` to `+/`): characters outside the alphabet are skipped, `=` ends the data once a quad has
/// at least two characters and enough pads.  Calls `out` with each decoded byte; `false` where
/// Python raises (`binascii.Error`, or `ValueError` for a non-ASCII string).
pub fn urlsafe_b64decode(s: &str, out: impl FnMut(u8)) -> bool {
    urlsafe_b64decode_bytes(s.bytes(), !s.is_ascii(), out)
}

/// `urlsafe_b64decode` of the string whose bytes `bytes` yields; `non_ascii`: it has a non-ASCII
/// character (Python's `str.encode("ascii")` then raises before decoding).
pub fn urlsafe_b64decode_bytes(
    bytes: impl Iterator<Item = u8>,
    non_ascii: bool,
    mut out: impl FnMut(u8),
) -> bool {
    if non_ascii {
        return false;
    }
    let mut quad_pos = 0u8;
    let mut pads = 0u32;
    let mut leftchar: u8 = 0;
    for ch in bytes {
        if ch == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos as u32 + pads >= 4 {
                    return true;
                }
            }
            continue;
        }
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        pads = 0;
        match quad_pos {
            0 => {
                quad_pos = 1;
                leftchar = v;
            }
            1 => {
                quad_pos = 2;
                out((leftchar << 2) | (v >> 4));
                leftchar = v & 0x0f;
            }
            2 => {
                quad_pos = 3;
                out((leftchar << 4) | (v >> 2));
                leftchar = v & 0x03;
            }
            _ => {
                quad_pos = 0;
                out((leftchar << 6) | v);
                leftchar = 0;
            }
        }
    }
    quad_pos == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_ok_chars("4111111111111111".chars()));
        assert!(!luhn_ok_chars("4111111111111112".chars()));
        assert!(luhn_ok_chars("79927398713".chars()));
    }

    #[test]
    fn ipv4() {
        assert!(ipv4_ok(b"192.168.0.1"));
        assert!(ipv4_ok(b"0.0.0.0"));
        assert!(!ipv4_ok(b"192.168.0.01"));
        assert!(!ipv4_ok(b"256.1.1.1"));
        assert!(!ipv4_ok(b"1.1.1"));
        assert!(!ipv4_ok(b"1.1.1.1.1"));
    }

    #[test]
    fn ipv6() {
        assert_eq!(parse_ipv6("::1"), Some(1));
        assert_eq!(parse_ipv6("::"), Some(0));
        assert_eq!(parse_ipv6("1::"), Some(1u128 << 112));
        assert_eq!(parse_ipv6("::ffff:1.2.3.4"), Some(0xffff_0102_0304));
        assert_eq!(
            parse_ipv6("1:2:3:4:5:6:7:8"),
            Some(0x0001_0002_0003_0004_0005_0006_0007_0008)
        );
        assert_eq!(
            parse_ipv6("1:2:3:4:5:6:7::"),
            Some(0x0001_0002_0003_0004_0005_0006_0007_0000)
        );
        assert_eq!(parse_ipv6("1:2:3:4:5:6:7:8::"), None);
        assert_eq!(parse_ipv6(":1::2"), None);
        assert_eq!(parse_ipv6("1::2::3"), None);
        assert_eq!(parse_ipv6("::1%eth0"), Some(1));
        assert_eq!(parse_ipv6("::1%"), None);
        assert_eq!(parse_ipv6("::01.2.3.4"), None);
        assert_eq!(parse_ipv6("12345::"), None);
        assert_eq!(parse_ipv6("1:2"), None);
    }

    #[test]
    fn b64() {
        let mut v = Vec::new();
        assert!(urlsafe_b64decode("eyJhbGciOiJIUzI1NiJ9", |b| v.push(b)));
        assert_eq!(v, br#"{"alg":"HS256"}"#);
        assert!(!urlsafe_b64decode("abcde===", |_| ()));
        assert!(!urlsafe_b64decode("abc", |_| ()));
    }

    #[test]
    fn mod97() {
        assert_eq!(mod97_ok(b"GB82WEST12345698765432"), Some(true));
        assert_eq!(mod97_ok(b"GB82WEST12345698765433"), Some(false));
    }
}
