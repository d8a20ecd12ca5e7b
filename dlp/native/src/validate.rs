//! The candidate validators of dlp/_validate.py (with dlp/_checks.py and dlp/_dates.py), except
//! PHONE: a candidate span becomes `(base confidence, start, end)` or is rejected, with exactly
//! the Python verdicts and the same `f64` confidences.
//!
//! Offsets are UTF-8 byte offsets into `text`, the whole (joined) text the scanner sees; the
//! candidate is `text[start..end]`.  Like the Python validators, these look at the characters
//! around the candidate (`_embedded`, an IP address's neighbours, a private key's body), with
//! Python's Unicode-aware `str.isalnum` / `isalpha` / `isdigit` for any character (tables
//! exported by the Python that runs the reference, so the classes are that Python's).
//!
//! The candidate itself is assumed to have the shape its pattern (dlp/_patterns.py) gives it,
//! which is what the engine hands over; for strings no pattern can produce, the verdict is
//! still Python's wherever Python returns one, but where Python would raise (an e-mail without
//! `@`, an unknown kind, a non-ASCII IBAN whose `int()` or `upper()` Python would apply) the
//! port returns `None`.  Offsets that are not character boundaries of `text` give `None`.
//!
//! PHONE is not here: `validate` returns `None` for it, and the caller runs the phone module.
//!
//! IBAN: for countries whose stdnum country module also validates the IBAN (BE, ES, ME, NO in
//! python-stdnum 2.2; `native_tables()["checks"]["iban_countries"][cc]["module"]`), the verdict
//! of that module comes from a callback given to [`Validators::set_iban_module_check`].  Without
//! a callback such an IBAN is rejected (never a false finding, but not Python's verdict).

use std::collections::HashMap;

use serde::Deserialize;

use crate::checks::{self, Iban, IbanCountryTable, IbanModuleCheck, PyChars, UnicodeTables};
use crate::dates::{DateKind, Dates, DatesTables};
use crate::types::{Date, Detector, Validated};

/// `dlp._checks.native_tables()`.
#[derive(Debug, Deserialize)]
pub struct ChecksTables {
    pub ssn_blocklist: Vec<String>,
    pub iban_countries: HashMap<String, IbanCountryTable>,
    /// `_IPV4.pattern` (implemented by hand, checked unchanged).
    pub ipv4: String,
}

/// `dlp._validate.native_tables()` (JSON).
#[derive(Debug, Deserialize)]
pub struct ValidateTables {
    /// `_IIN`: (lowest prefix, highest prefix, prefix length, allowed lengths).
    pub iin: Vec<(u64, u64, usize, Vec<usize>)>,
    pub file_tlds: Vec<String>,
    /// `_DOMAIN.pattern` (implemented by hand, checked unchanged).
    pub domain: String,
    pub ssn_base: HashMap<String, f64>,
    /// `_HEXCOLON` as a string.
    pub hexcolon: String,
    pub secret_base: HashMap<String, f64>,
    pub placeholders: Vec<String>,
    /// `_KEY_END.pattern` (compiled here with `regex`).
    pub key_end: String,
    /// `_KEY_BODY.pattern` (implemented by hand, checked unchanged).
    pub key_body: String,
    pub max_key_block: usize,
    /// `_MAX_BASE` as (detector, kind, base).
    pub max_base: Vec<(Detector, String, f64)>,
    pub checks: ChecksTables,
    pub dates: DatesTables,
    pub unicode_version: String,
    pub unicode: UnicodeTables,
}

const DOMAIN: &str = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{1,63}";
const KEY_BODY: &str = r"[A-Za-z0-9+/=\s:,\-]{0,16384}";
const KEY_BODY_MAX: usize = 16384;
const IPV4: &str = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";

/// The card IIN table, expanded as `_expand_iin` does: a prefix string (`str(p).zfill(plen)`),
/// keyed by (its length, its value), to the set of allowed card lengths (bit n = length n).
struct IinTable {
    prefix_lengths: Vec<usize>, // _IIN_PREFIX_LENGTHS, ascending
    /// Keys of 1 to 4 characters: `direct[len][value]`.
    direct: [Vec<u64>; 5],
    /// Longer keys, sorted.
    entries: Vec<((u8, u64), u64)>,
    /// Every allowed card length of any prefix: a length outside it matches no prefix.
    any_length: u64,
}

const DIRECT_MAX: usize = 4;

impl IinTable {
    fn new(iin: &[(u64, u64, usize, Vec<usize>)]) -> Result<IinTable, String> {
        let mut map: HashMap<(u8, u64), u64> = HashMap::new();
        let mut plens = Vec::new();
        for &(lo, hi, plen, ref lengths) in iin {
            if plen == 0
                || plen > 18
                || hi > 999_999_999_999_999_999
                || hi < lo
                || hi - lo > 10_000_000
            {
                return Err(format!(
                    "IIN entry ({lo}, {hi}, {plen}) out of the supported range"
                ));
            }
            let mut mask = 0u64;
            for &n in lengths {
                if n >= 64 {
                    return Err(format!("IIN card length {n} out of the supported range"));
                }
                mask |= 1 << n;
            }
            for p in lo..=hi {
                let key_len = p.to_string().len().max(plen) as u8; // len(str(p).zfill(plen))
                *map.entry((key_len, p)).or_insert(0) |= mask;
            }
            plens.push(plen);
        }
        plens.sort_unstable();
        plens.dedup();
        let mut direct: [Vec<u64>; 5] = Default::default();
        for (len, table) in direct.iter_mut().enumerate().skip(1) {
            *table = vec![0; 10usize.pow(len as u32)];
        }
        let mut entries = Vec::new();
        for ((len, value), mask) in map {
            if (len as usize) <= DIRECT_MAX {
                direct[len as usize][value as usize] = mask;
            } else {
                entries.push(((len, value), mask));
            }
        }
        entries.sort_unstable();
        let any_length = iin
            .iter()
            .flat_map(|(_, _, _, lengths)| lengths)
            .fold(0u64, |m, &n| m | 1 << n);
        Ok(IinTable {
            prefix_lengths: plens,
            direct,
            entries,
            any_length,
        })
    }

    #[inline]
    fn lengths(&self, len: u8, value: u64) -> u64 {
        if (len as usize) <= DIRECT_MAX {
            self.direct[len as usize]
                .get(value as usize)
                .copied()
                .unwrap_or(0)
        } else {
            self.entries
                .binary_search_by(|(k, _)| k.cmp(&(len, value)))
                .map_or(0, |i| self.entries[i].1)
        }
    }

    /// `in_iin_range(digits)` for a string of ASCII digits.
    #[inline]
    fn contains_ascii(&self, digits: &[u8]) -> bool {
        let n = digits.len();
        if n >= 64 || self.any_length >> n & 1 == 0 {
            return false; // no prefix allows that length
        }
        for &plen in &self.prefix_lengths {
            let prefix = &digits[..plen.min(n)];
            let value = prefix
                .iter()
                .fold(0u64, |acc, &b| acc * 10 + (b - b'0') as u64);
            if self.lengths(prefix.len() as u8, value) >> n & 1 == 1 {
                return true;
            }
        }
        false
    }

    /// `in_iin_range(digits)` where `digits` yields the characters of the digit string.
    fn contains<I: Iterator<Item = char> + Clone>(&self, digits: I, n: usize) -> bool {
        if n >= 64 || self.any_length >> n & 1 == 0 {
            return false;
        }
        for &plen in &self.prefix_lengths {
            // digits[:plen] must be a key: ASCII digits only (keys are decimal strings).
            let mut len = 0u8;
            let mut value = 0u64;
            let mut ok = true;
            for c in digits.clone().take(plen) {
                if !c.is_ascii_digit() {
                    ok = false;
                    break;
                }
                value = value * 10 + (c as u8 - b'0') as u64;
                len += 1;
            }
            if ok && self.lengths(len, value) >> n & 1 == 1 {
                return true;
            }
        }
        false
    }
}

/// Base confidences by pattern kind (a handful: a scan beats hashing the kind).
struct Bases(Vec<(String, f64)>);

impl Bases {
    fn new(map: HashMap<String, f64>) -> Bases {
        Bases(map.into_iter().collect())
    }

    #[inline]
    fn get(&self, kind: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == kind).map(|&(_, b)| b)
    }
}

/// The validators, configured from `ValidateTables`.
pub struct Validators {
    chars: PyChars,
    iin: IinTable,
    file_tlds: Vec<String>,
    ssn_base: Bases,
    ssn_blocklist: Vec<Vec<u8>>,
    hexcolon: Vec<char>,
    secret_base: Bases,
    placeholders: Vec<String>,
    key_end: regex::Regex,
    max_key_block: usize,
    max_base: HashMap<(Detector, String), f64>,
    iban: Iban,
    dates: Dates,
}

// Characters `_embedded` looks for.
const EMBED_BEFORE: &[char] = &['-', '_', '/', '#', '.', '$', '€', '£'];
const CURRENCY: &[char] = &['$', '€', '£'];
const EMBED_AFTER_DIGIT: &[char] = &['-', '_', '/', '.', ',', ':'];
const EMBED_AFTER_ALPHA: &[char] = &['-', '_'];

impl Validators {
    pub fn new(t: ValidateTables) -> Result<Validators, String> {
        if t.domain != DOMAIN {
            return Err(format!(
                "dlp._validate._DOMAIN changed ({:?}); validate.rs implements {DOMAIN:?}",
                t.domain
            ));
        }
        if t.key_body != KEY_BODY {
            return Err(format!(
                "dlp._validate._KEY_BODY changed ({:?}); validate.rs implements {KEY_BODY:?}",
                t.key_body
            ));
        }
        if t.checks.ipv4 != IPV4 {
            return Err(format!(
                "dlp._checks._IPV4 changed ({:?}); checks.rs implements {IPV4:?}",
                t.checks.ipv4
            ));
        }
        if t.placeholders.iter().any(|p| !p.is_ascii()) {
            return Err("secret placeholders must be ASCII".into());
        }
        let key_end =
            regex::Regex::new(&t.key_end).map_err(|e| format!("_KEY_END {:?}: {e}", t.key_end))?;
        Ok(Validators {
            chars: PyChars::new(t.unicode)?,
            iin: IinTable::new(&t.iin)?,
            // `tld.lower() in _FILE_TLDS` (the TLD is ASCII letters): an entry with an upper-case
            // letter can never be equal.
            file_tlds: t
                .file_tlds
                .into_iter()
                .filter(|t| !t.bytes().any(|b| b.is_ascii_uppercase()))
                .collect(),
            ssn_base: Bases::new(t.ssn_base),
            ssn_blocklist: t
                .checks
                .ssn_blocklist
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            hexcolon: t.hexcolon.chars().collect(),
            secret_base: Bases::new(t.secret_base),
            placeholders: t.placeholders,
            key_end,
            max_key_block: t.max_key_block,
            max_base: t
                .max_base
                .into_iter()
                .map(|(d, k, b)| ((d, k), b))
                .collect(),
            iban: Iban::new(t.checks.iban_countries, None)?,
            dates: Dates::new(t.dates)?,
        })
    }

    /// `Validators::new` from the JSON text of `dlp._validate.native_tables()`.
    pub fn from_json(json: &str) -> Result<Validators, String> {
        let tables: ValidateTables =
            serde_json::from_str(json).map_err(|e| format!("validate tables: {e}"))?;
        Validators::new(tables)
    }

    /// The verdict of stdnum's IBAN country modules (see the module doc); `None` rejects the IBANs
    /// of those countries.
    pub fn set_iban_module_check(&mut self, check: Option<IbanModuleCheck>) {
        self.iban.set_module_check(check);
    }

    /// The Python validator of `detector` for pattern `kind`, on the candidate `text[start..end]`.
    /// `today` is `dlp._dates._current_date()`.  PHONE (and NAME, ADDRESS) give `None`: the
    /// caller validates phones with the phone module.
    pub fn validate(
        &self,
        detector: Detector,
        kind: &str,
        text: &str,
        start: usize,
        end: usize,
        today: Date,
    ) -> Validated {
        if start > end || text.get(start..end).is_none() {
            return None;
        }
        match detector {
            Detector::Email => self.email(text, start, end),
            Detector::Ssn => self.ssn(text, start, end, kind),
            Detector::CreditCard => self.credit_card(text, start, end),
            Detector::Iban => self.iban(text, start, end),
            Detector::IpAddress => self.ip_address(text, start, end, kind),
            Detector::DateOfBirth => self.date_of_birth(text, start, end, kind, today),
            Detector::Secret => self.secret(text, start, end, kind),
            Detector::Phone | Detector::Name | Detector::Address => None,
        }
    }

    /// `dlp._validate.max_base(detector, kind)`; NaN for a pair Python has no entry for (it
    /// raises KeyError).
    pub fn max_base(&self, detector: Detector, kind: &str) -> f64 {
        self.max_base_checked(detector, kind).unwrap_or(f64::NAN)
    }

    pub fn max_base_checked(&self, detector: Detector, kind: &str) -> Option<f64> {
        // A HashMap keyed by (Detector, String) cannot be probed with a &str without allocating:
        // this is called once per pattern at start-up, so a scan is fine.
        self.max_base
            .iter()
            .find(|((d, k), _)| *d == detector && k == kind)
            .map(|(_, &b)| b)
    }

    /// Python's `str.isalnum`, `isalpha`, `isdigit` of one character (exposed for parity tests).
    pub fn py_chars(&self) -> &PyChars {
        &self.chars
    }

    // --- shared ------------------------------------------------------------------------------

    /// `_embedded(text, start, end)`: the digits are glued into a larger identifier.
    #[inline]
    fn embedded(&self, text: &str, start: usize, end: usize) -> bool {
        let mut before = text[..start].chars().rev();
        let b1 = before.next();
        if let Some(c1) = b1 {
            if EMBED_BEFORE.contains(&c1) {
                if let Some(c2) = before.next() {
                    if self.chars.isalnum(c2) {
                        return true;
                    }
                }
            }
            if CURRENCY.contains(&c1) {
                return true;
            }
        }
        let mut after = text[end..].chars();
        if let (Some(a1), Some(a2)) = (after.next(), after.next()) {
            if EMBED_AFTER_DIGIT.contains(&a1) && self.chars.isdigit(a2) {
                return true;
            }
            return EMBED_AFTER_ALPHA.contains(&a1) && self.chars.isalpha(a2);
        }
        false
    }

    // --- EMAIL -------------------------------------------------------------------------------

    fn email(&self, text: &str, start: usize, end: usize) -> Validated {
        let value = &text[start..end];
        let at = value.rfind('@')?; // Python: ValueError (every candidate has an '@')
        let local = value[..at].trim_start_matches(['.', '\'', '%', '+', '*', '-']);
        if local.is_empty() {
            return None;
        }
        let start = start + (at - local.len());
        let domain = &value[at + 1..];
        if local.ends_with('.') || local.contains("..") {
            return None;
        }
        if !domain_ok(domain.as_bytes()) {
            return None;
        }
        let tld = &domain[domain.rfind('.')? + 1..];
        if self.file_tlds.iter().any(|t| t.eq_ignore_ascii_case(tld)) {
            return None;
        }
        Some((0.9, start, end))
    }

    // --- SSN ---------------------------------------------------------------------------------

    fn ssn(&self, text: &str, start: usize, end: usize, kind: &str) -> Validated {
        if self.embedded(text, start, end) {
            return None;
        }
        let value = &text[start..end];
        let ok = if value.is_ascii() {
            let v = value.as_bytes();
            if kind == "bare" {
                checks::ssn_ok(v, &self.ssn_blocklist)?
            } else {
                // value[:3] + value[4:6] + value[7:]
                let mut buf = [0u8; 64];
                let parts = [
                    &v[..v.len().min(3)],
                    &v[v.len().min(4)..v.len().min(6)],
                    &v[v.len().min(7)..],
                ];
                let n: usize = parts.iter().map(|p| p.len()).sum();
                if n <= buf.len() {
                    let mut at = 0;
                    for p in parts {
                        buf[at..at + p.len()].copy_from_slice(p);
                        at += p.len();
                    }
                    checks::ssn_ok(&buf[..n], &self.ssn_blocklist)?
                } else {
                    checks::ssn_ok(&parts.concat(), &self.ssn_blocklist)?
                }
            }
        } else {
            // Not a shape any SSN pattern produces; Python's slicing is by characters.
            let chars: Vec<char> = value.chars().collect();
            let digits: Vec<char> = if kind == "bare" {
                chars
            } else {
                let n = chars.len();
                [
                    &chars[..n.min(3)],
                    &chars[n.min(4)..n.min(6)],
                    &chars[n.min(7)..],
                ]
                .concat()
            };
            ssn_ok_chars(&digits, &self.ssn_blocklist)?
        };
        if !ok {
            return None;
        }
        let base = self.ssn_base.get(kind)?;
        Some((base, start, end))
    }

    // --- CREDIT_CARD -------------------------------------------------------------------------

    /// `_card_grouping_ok(value)`.
    fn card_grouping_ok(&self, value: &str) -> bool {
        let v = value.as_bytes();
        if value.is_ascii() {
            if !v.is_empty() && v.iter().all(u8::is_ascii_digit) {
                return true;
            }
            return grouping_ok(
                v.iter().copied(),
                b'-',
                b' ',
                v.contains(&b'-'),
                v.contains(&b' '),
            );
        }
        if self.chars.str_isdigit(value) {
            return true;
        }
        grouping_ok(
            value.chars(),
            '-',
            ' ',
            value.contains('-'),
            value.contains(' '),
        )
    }

    /// `_card_at(text, start, end)`.
    fn card_at(&self, text: &str, start: usize, end: usize) -> Validated {
        let value = &text[start..end];
        if self.embedded(text, start, end) || !self.card_grouping_ok(value) {
            return None;
        }
        let v = value.as_bytes();
        let mut buf = [0u8; 64];
        let mut n = 0;
        let mut ascii_digits = v.len() <= buf.len();
        if ascii_digits {
            for &b in v {
                if b.is_ascii_digit() {
                    buf[n] = b;
                    n += 1;
                } else if b != b' ' && b != b'-' {
                    ascii_digits = false;
                    break;
                }
            }
        }
        if ascii_digits {
            // The candidates of the card pattern: ASCII digits, spaces and dashes.
            let digits = &buf[..n];
            if !self.iin.contains_ascii(digits) || !luhn_ok_ascii(digits) {
                return None;
            }
            return Some((if n == v.len() { 0.8 } else { 0.85 }, start, end));
        }
        let digits = value.chars().filter(|&c| c != ' ' && c != '-');
        let n = digits.clone().count();
        if !self.iin.contains(digits.clone(), n) || !checks::luhn_ok_chars(digits) {
            return None;
        }
        Some((
            if self.chars.str_isdigit(value) {
                0.8
            } else {
                0.85
            },
            start,
            end,
        ))
    }

    fn credit_card(&self, text: &str, start: usize, end: usize) -> Validated {
        let found = self.card_at(text, start, end);
        if found.is_some() {
            return found;
        }
        // _group_starts(value): after the first three separator runs, where a shorter number may begin.
        let value = &text[start..end];
        let mut starts = 0;
        let mut prev: Option<char> = None;
        for (i, c) in value.char_indices() {
            if let Some(p) = prev {
                if !self.chars.isdigit(p) && self.chars.isdigit(c) {
                    let found = self.card_at(text, start + i, end);
                    if found.is_some() {
                        return found;
                    }
                    starts += 1;
                    if starts == 3 {
                        break;
                    }
                }
            }
            prev = Some(c);
        }
        None
    }

    /// `in_iin_range(digits)` (exposed for tests).
    pub fn in_iin_range(&self, digits: &str) -> bool {
        self.iin.contains(digits.chars(), digits.chars().count())
    }

    // --- IBAN --------------------------------------------------------------------------------

    fn iban(&self, text: &str, start: usize, end: usize) -> Validated {
        let value = &text[start..end];
        if !value.is_ascii() {
            return None; // no IBAN pattern produces it (see the module doc)
        }
        let v = value.as_bytes();
        if v.contains(&b' ') {
            let mut sizes = v.split(|&b| b == b' ').map(<[u8]>::len).peekable();
            while let Some(s) = sizes.next() {
                if sizes.peek().is_some() {
                    if s != 4 {
                        return None;
                    }
                } else if s > 4 {
                    return None;
                }
            }
        }
        let mut buf = [0u8; 128];
        let heap: Vec<u8>;
        let compact: &[u8] = if v.len() <= buf.len() {
            let mut n = 0;
            for &b in v.iter().filter(|&&b| b != b' ') {
                buf[n] = b.to_ascii_uppercase();
                n += 1;
            }
            &buf[..n]
        } else {
            heap = v
                .iter()
                .filter(|&&b| b != b' ')
                .map(u8::to_ascii_uppercase)
                .collect();
            &heap
        };
        if !self.iban.ok(compact)? {
            return None;
        }
        // value[:2].isupper(): a cased character and no lower-case one.
        let head = &v[..v.len().min(2)];
        let upper =
            head.iter().any(u8::is_ascii_alphabetic) && !head.iter().any(u8::is_ascii_lowercase);
        Some((if upper { 0.95 } else { 0.75 }, start, end))
    }

    /// `_checks.iban_ok(compact)` (exposed for tests); `None` where Python raises.
    pub fn iban_ok(&self, compact: &str) -> Option<bool> {
        self.iban.ok(compact.as_bytes())
    }

    // --- IP_ADDRESS --------------------------------------------------------------------------

    fn ip_address(&self, text: &str, start: usize, end: usize, kind: &str) -> Validated {
        if kind == "v4" {
            let before = text[..start].chars().next_back();
            let mut after = text[end..].chars();
            let (a1, a2) = (after.next(), after.next());
            if matches!(before, Some('.') | Some('/'))
                || (a1 == Some('.') && a2.is_some_and(|c| self.chars.isdigit(c)))
            {
                return None; // part of a longer dotted sequence (OID, user-agent build)
            }
            let value = &text[start..end];
            if !checks::ipv4_ok(value.as_bytes()) {
                return None;
            }
            if value.starts_with("127.") || value == "0.0.0.0" {
                return Some((0.3, start, end));
            }
            return Some((0.85, start, end));
        }
        let value = text[start..end].trim_end_matches('.');
        let end = start + value.len();
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| self.hexcolon.contains(&c))
            || text[end..]
                .chars()
                .next()
                .is_some_and(|c| self.hexcolon.contains(&c))
        {
            return None;
        }
        let addr = checks::parse_ipv6(value)?;
        if value.split(':').filter(|g| !g.is_empty()).count() < 3 {
            return Some((0.4, start, end)); // ``a::b`` shapes are more often code than addresses
        }
        if addr == 1 || addr == 0 {
            return Some((0.3, start, end)); // loopback, unspecified
        }
        Some((0.85, start, end))
    }

    // --- DATE_OF_BIRTH -----------------------------------------------------------------------

    fn date_of_birth(
        &self,
        text: &str,
        start: usize,
        end: usize,
        kind: &str,
        today: Date,
    ) -> Validated {
        if self.embedded(text, start, end)
            || self
                .dates
                .parse_date(&text[start..end], DateKind::of(kind), today)
                .is_none()
        {
            return None;
        }
        Some((0.2, start, end)) // a date alone is not a birth date: context must raise it
    }

    /// `_dates.parse_date(value, kind)` with `today` (exposed for tests).
    pub fn parse_date(&self, value: &str, kind: &str, today: Date) -> Option<Date> {
        self.dates.parse_date(value, DateKind::of(kind), today)
    }

    // --- SECRET ------------------------------------------------------------------------------

    fn secret(&self, text: &str, start: usize, end: usize, kind: &str) -> Validated {
        match kind {
            "private_key" => {
                // _KEY_END.search(text, end, end + MAX_KEY_BLOCK): a window of characters.
                let rest = &text[end..];
                let window = if rest.len() <= self.max_key_block {
                    rest.len()
                } else if rest.as_bytes()[..self.max_key_block].is_ascii() {
                    self.max_key_block
                } else {
                    rest.char_indices()
                        .nth(self.max_key_block)
                        .map_or(rest.len(), |(i, _)| i)
                };
                if let Some(m) = self.key_end.find(&rest[..window]) {
                    return Some((0.99, start, end + m.end()));
                }
                // _KEY_BODY.match(text, end): at most 16384 characters of an ASCII class.
                let body = rest
                    .bytes()
                    .take(KEY_BODY_MAX)
                    .take_while(|&b| is_key_body(b))
                    .count();
                Some((0.99, start, end + body))
            }
            "jwt" => Some((
                if jwt_header_ok(&text[start..end]) {
                    0.95
                } else {
                    0.55
                },
                start,
                end,
            )),
            "assignment" => {
                let value = text[start..end].trim_end_matches(['.', ',', ';']);
                let end = start + value.len();
                if char_count_below(value, 8)
                    || distinct_below(value, 4)
                    || self.is_placeholder(value)
                {
                    return None;
                }
                Some((self.secret_base.get(kind)?, start, end))
            }
            _ => Some((self.secret_base.get(kind)?, start, end)),
        }
    }

    /// `value.lower() in _PLACEHOLDERS`.
    fn is_placeholder(&self, value: &str) -> bool {
        self.placeholders.iter().any(|p| {
            if value.is_ascii() {
                return p.len() == value.len()
                    && p.bytes()
                        .zip(value.bytes())
                        .all(|(a, b)| a == b.to_ascii_lowercase());
            }
            // Of all non-ASCII characters only U+212A KELVIN SIGN lower-cases to ASCII ('k'); the
            // others lower-case to something non-ASCII, which no (ASCII) placeholder equals.
            let mut pb = p.bytes();
            for c in value.chars() {
                let l = match c {
                    '\u{212A}' => b'k',
                    c if c.is_ascii() => (c as u8).to_ascii_lowercase(),
                    _ => return false,
                };
                if pb.next() != Some(l) {
                    return false;
                }
            }
            pb.next().is_none()
        })
    }
}

/// The rest of `_card_grouping_ok` (for a value that is not all digits): one pass over its
/// characters instead of `value.split(sep)`.
#[inline]
fn grouping_ok<T: Copy + PartialEq>(
    chars: impl Iterator<Item = T>,
    dash: T,
    space: T,
    has_dash: bool,
    has_space: bool,
) -> bool {
    let sep = if has_dash { dash } else { space };
    if has_dash && has_space {
        return false;
    }
    let mut count = 0usize; // groups finished
    let (mut s0, mut s1) = (0usize, 0usize);
    let mut all_but_last_4 = true;
    let mut size = 0usize;
    for c in chars {
        if c != sep {
            size += 1;
            continue;
        }
        // A group ends (and another follows): it is not the last one.
        if size == 0 {
            return false;
        }
        if size != 4 {
            all_but_last_4 = false;
        }
        match count {
            0 => s0 = size,
            1 => s1 = size,
            _ => {}
        }
        count += 1;
        size = 0;
    }
    // The last group.
    if size == 0 {
        return false;
    }
    if count == 2 && s0 == 4 && s1 == 6 {
        return size == 4 || size == 5; // Amex 4-6-5, Diners 4-6-4
    }
    all_but_last_4 && (1..=4).contains(&size)
}

/// `luhn_ok` for ASCII digits.
#[inline]
fn luhn_ok_ascii(digits: &[u8]) -> bool {
    const DOUBLE: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut total = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        let d = (b - b'0') as u32;
        total += if i % 2 == 1 { DOUBLE[d as usize] } else { d };
    }
    total.is_multiple_of(10)
}

/// `_DOMAIN.fullmatch(domain)`: dot-separated labels of letters, digits and inner hyphens (1 to 63),
/// then a top-level label of 1 to 63 ASCII letters.
#[inline]
fn domain_ok(d: &[u8]) -> bool {
    let Some(dot) = d.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let tld = &d[dot + 1..];
    if tld.is_empty() || tld.len() > 63 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return false;
    }
    d[..dot].split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label[0].is_ascii_alphanumeric()
            && label[label.len() - 1].is_ascii_alphanumeric()
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// `[A-Za-z0-9+/=\s:,\-]` with re.ASCII (`\s` is `[ \t\n\r\f\v]`).
#[inline]
fn is_key_body(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'+' | b'/' | b'=' | b':' | b',' | b'-' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
        )
}

/// `len(value) < n` (characters).
#[inline]
fn char_count_below(value: &str, n: usize) -> bool {
    if value.is_ascii() {
        value.len() < n
    } else {
        value.chars().take(n).count() < n
    }
}

/// `len(set(value)) < n`.
#[inline]
fn distinct_below(value: &str, n: usize) -> bool {
    let mut seen_ascii = 0u128;
    let mut seen_other: Vec<char> = Vec::new();
    let mut distinct = 0;
    for c in value.chars() {
        let new = if c.is_ascii() {
            let bit = 1u128 << (c as u32);
            let new = seen_ascii & bit == 0;
            seen_ascii |= bit;
            new
        } else if seen_other.contains(&c) {
            false
        } else {
            seen_other.push(c);
            true
        };
        if new {
            distinct += 1;
            if distinct >= n {
                return false;
            }
        }
    }
    true
}

/// `_jwt_header_ok(token)`: the part before the first '.' is base64url of something that starts
/// with `{` and holds `"alg"` or `"typ"` (bytes, not parsed as JSON: Python does not parse it).
pub fn jwt_header_ok(token: &str) -> bool {
    let head = token.split('.').next().unwrap_or("");
    // head + "=" * (-len(head) % 4), len in characters (a non-ASCII head fails to decode anyway).
    let pads = (4 - head.chars().count() % 4) % 4;
    let mut first: Option<u8> = None;
    let mut window = [0u8; 5];
    let mut seen = 0usize;
    let mut found = false;
    let ok = checks::urlsafe_b64decode_bytes(
        head.bytes().chain(std::iter::repeat_n(b'=', pads)),
        !head.is_ascii(),
        |b| {
            if first.is_none() {
                first = Some(b);
            }
            window.copy_within(1.., 0);
            window[4] = b;
            seen += 1;
            if seen >= 5 && (&window == b"\"alg\"" || &window == b"\"typ\"") {
                found = true;
            }
        },
    );
    ok && first == Some(b'{') && found
}

/// `ssn_ok` for a non-ASCII candidate (characters compared as Python compares strings).
fn ssn_ok_chars(digits: &[char], blocklist: &[Vec<u8>]) -> Option<bool> {
    let n = digits.len();
    let area = &digits[..n.min(3)];
    let first = *area.first()?;
    let eq = |s: &[char], lit: &str| s.iter().copied().eq(lit.chars());
    Some(
        !(eq(area, "000")
            || eq(area, "666")
            || first == '9'
            || eq(&digits[n.min(3)..n.min(5)], "00")
            || eq(&digits[n.min(5)..], "0000")
            || blocklist.iter().any(|b| {
                digits
                    .iter()
                    .copied()
                    .eq(String::from_utf8_lossy(b).chars())
            })),
    )
}

// The glue shares one `Validators` between threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Validators>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A cut-down `native_tables()` (the real one comes from Python; the parity test uses it).
    fn validators() -> Validators {
        let json = r#"{
            "iin": [[4, 4, 1, [13, 16, 19]], [51, 55, 2, [16]], [34, 34, 2, [15]], [37, 37, 2, [15]]],
            "file_tlds": ["png", "json"],
            "domain": "(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{1,63}",
            "ssn_base": {"dashed": 0.65, "spaced": 0.45, "bare": 0.3},
            "hexcolon": "0123456789:ABCDEFabcdef",
            "secret_base": {"aws_key_id": 0.95, "private_key": 0.99, "assignment": 0.8},
            "placeholders": ["changeme", "password"],
            "key_end": "-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----",
            "key_body": "[A-Za-z0-9+/=\\s:,\\-]{0,16384}",
            "max_key_block": 16384,
            "max_base": [["SSN", "dashed", 0.65], ["CREDIT_CARD", "card", 0.85]],
            "checks": {
                "ssn_blocklist": ["078051120"],
                "iban_countries": {
                    "GB": {"structure": "[A-Z]{4}[0-9]{6}[0-9]{8}", "module": false},
                    "BE": {"structure": "[0-9]{3}[0-9]{7}[0-9]{2}", "module": true}
                },
                "ipv4": "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
            },
            "dates": {"months": {"mar": 3, "m\u00e4r": 3}, "min_year": 1900, "numbers": "\\d{1,4}", "word": "[a-z\u00e4A-Z\u00c4]{3,}"},
            "unicode_version": "14.0.0",
            "unicode": {"alnum": [[233, 233], [1633, 1633]], "alpha": [[233, 233]], "digit": [[1633, 1633]]}
        }"#;
        Validators::from_json(json).unwrap()
    }

    const TODAY: Date = Date {
        year: 2026,
        month: 5,
        day: 17,
    };

    fn run(v: &Validators, d: Detector, kind: &str, text: &str, value: &str) -> Validated {
        let start = text.find(value).unwrap();
        v.validate(d, kind, text, start, start + value.len(), TODAY)
    }

    #[test]
    fn cards() {
        let v = validators();
        let t = "card 4111 1111 1111 1111 ok";
        assert_eq!(
            run(&v, Detector::CreditCard, "card", t, "4111 1111 1111 1111"),
            Some((0.85, 5, 24))
        );
        assert_eq!(
            run(
                &v,
                Detector::CreditCard,
                "card",
                "x 4111111111111111",
                "4111111111111111"
            ),
            Some((0.8, 2, 18))
        );
        // The card starts after the first separator.
        let t = "7 4111 1111 1111 1111";
        assert_eq!(
            run(&v, Detector::CreditCard, "card", t, t),
            Some((0.85, 2, 21))
        );
        assert_eq!(
            run(
                &v,
                Detector::CreditCard,
                "card",
                "ORD-4111111111111111",
                "4111111111111111"
            ),
            None
        );
        assert_eq!(
            run(
                &v,
                Detector::CreditCard,
                "card",
                "é.4111111111111111",
                "4111111111111111"
            ),
            None
        );
        assert_eq!(
            run(
                &v,
                Detector::CreditCard,
                "card",
                "4111111111111112",
                "4111111111111112"
            ),
            None
        );
    }

    #[test]
    fn ssns() {
        let v = validators();
        assert_eq!(
            run(
                &v,
                Detector::Ssn,
                "dashed",
                "SSN 123-45-6789.",
                "123-45-6789"
            ),
            Some((0.65, 4, 15))
        );
        assert_eq!(
            run(&v, Detector::Ssn, "dashed", "078-05-1120", "078-05-1120"),
            None
        );
        assert_eq!(
            run(
                &v,
                Detector::Ssn,
                "dashed",
                "123-45-6789-\u{661}",
                "123-45-6789"
            ),
            None
        );
        assert_eq!(
            run(&v, Detector::Ssn, "bare", "123456789", "123456789"),
            Some((0.3, 0, 9))
        );
        assert_eq!(
            run(&v, Detector::Ssn, "nope", "123456789", "123456789"),
            None
        );
        assert_eq!(v.max_base(Detector::Ssn, "dashed"), 0.65);
        assert!(v.max_base(Detector::Ssn, "nope").is_nan());
    }

    #[test]
    fn others() {
        let v = validators();
        assert_eq!(
            run(
                &v,
                Detector::Email,
                "email",
                "x ..a@example.com",
                "..a@example.com"
            ),
            Some((0.9, 4, 17))
        );
        assert_eq!(
            run(&v, Detector::Email, "email", "logo@2x.PNG", "logo@2x.PNG"),
            None
        );
        let t = "GB82 WEST 1234 5698 7654 32";
        assert_eq!(run(&v, Detector::Iban, "iban", t, t), Some((0.95, 0, 27)));
        let t = "gb82west12345698765432";
        assert_eq!(run(&v, Detector::Iban, "iban", t, t), Some((0.75, 0, 22)));
        let be = "BE32123456789002";
        assert_eq!(run(&v, Detector::Iban, "iban", be, be), None); // no country module check
        let mut v2 = validators();
        v2.set_iban_module_check(Some(Box::new(|c| c == "BE32123456789002")));
        assert_eq!(
            run(&v2, Detector::Iban, "iban", be, be),
            Some((0.95, 0, 16))
        );
        assert_eq!(
            run(&v, Detector::IpAddress, "v4", "ip 10.0.0.1", "10.0.0.1"),
            Some((0.85, 3, 11))
        );
        assert_eq!(
            run(&v, Detector::IpAddress, "v4", "127.0.0.1", "127.0.0.1"),
            Some((0.3, 0, 9))
        );
        assert_eq!(
            run(&v, Detector::IpAddress, "v4", "1.2.3.4.\u{661}", "1.2.3.4"),
            None
        );
        assert_eq!(
            run(&v, Detector::IpAddress, "v6", "at fe80::1. ok", "fe80::1."),
            Some((0.4, 3, 10))
        );
        assert_eq!(
            run(
                &v,
                Detector::IpAddress,
                "v6",
                "2001:db8::1:2",
                "2001:db8::1:2"
            ),
            Some((0.85, 0, 13))
        );
        let t = "3. März 1990";
        assert_eq!(
            run(&v, Detector::DateOfBirth, "text_dmy", t, t),
            Some((0.2, 0, 13))
        );
        assert_eq!(
            run(&v, Detector::DateOfBirth, "iso", "2030-01-01", "2030-01-01"),
            None
        );
        assert_eq!(
            run(
                &v,
                Detector::Secret,
                "assignment",
                "pwd=changeme;",
                "changeme;"
            ),
            None
        );
        let t = "pwd=s3cr3t-v4lue;";
        assert_eq!(
            run(&v, Detector::Secret, "assignment", t, "s3cr3t-v4lue;"),
            Some((0.8, 4, 16))
        );
        let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY----- x";
        let begin = "-----BEGIN PRIVATE KEY-----";
        assert_eq!(
            run(&v, Detector::Secret, "private_key", key, begin),
            Some((0.99, 0, key.len() - 2))
        );
        let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n=: x!";
        assert_eq!(
            run(&v, Detector::Secret, "private_key", key, begin),
            Some((0.99, 0, key.len() - 1))
        );
        assert_eq!(
            run(
                &v,
                Detector::Phone,
                "intl",
                "+1 212 555 0100",
                "+1 212 555 0100"
            ),
            None
        );
    }

    #[test]
    fn domains() {
        assert!(domain_ok(b"example.com"));
        assert!(domain_ok(b"a.b"));
        assert!(domain_ok(b"x-y.example.co"));
        assert!(!domain_ok(b"-x.com"));
        assert!(!domain_ok(b"x-.com"));
        assert!(!domain_ok(b"x..com"));
        assert!(!domain_ok(b".com"));
        assert!(!domain_ok(b"com"));
        assert!(!domain_ok(b"example.c0m"));
        assert!(!domain_ok(b"example.com."));
    }

    #[test]
    fn jwt() {
        assert!(jwt_header_ok("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"));
        assert!(!jwt_header_ok("eyJzdWIiOiIxIn0.eyJzdWIiOiIxIn0.sig"));
        assert!(!jwt_header_ok("eyJhb.x.y"));
    }

    #[test]
    fn distinct() {
        assert!(distinct_below("aaabbb", 4));
        assert!(!distinct_below("abcd", 4));
        assert!(char_count_below("abc", 8));
        assert!(!char_count_below("abcdefgh", 8));
        assert!(char_count_below("ééé", 8));
    }
}
