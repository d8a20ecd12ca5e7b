//! Phone-number validation: `dlp._validate.phone` and all of `dlp/_phone.py`.
//!
//! The numbering plans are phonenumbers' own metadata, exported by
//! `dlp._validate.phone_native_tables()` (= `dlp._phone.native_tables()` plus what the validator
//! reads): pattern strings, possible lengths, national prefix and its transform rule, the
//! international dialling prefix, leading digits, and the country code → regions map.  Each
//! region's patterns are compiled on first use (`OnceLock` per plan), so start-up only parses the
//! tables; `Phones::compile_all` compiles every plan (the tests use it to check every pattern).
//!
//! Pattern semantics.  Python's `re.fullmatch(p, s)` is `^(?:p)$` here, `re.match(p, s)` is
//! `^(?:p)` (leftmost-first, so the same match end and groups as Python's backtracking).  The
//! regexes are compiled without Unicode (`\d` = `[0-9]`): the numbers they see are ASCII digits
//! only (the validator checks the digit-group shape, ASCII-only, before any plan is consulted;
//! the public `valid_*` functions answer false for input that is not ASCII).  phonenumbers'
//! patterns use only digits, classes of digits, groups, alternation, counted repetition and
//! `$`, on which both engines agree for ASCII input (the parity tests check every pattern).
//! The transform rule is a Python `re.sub` template (`9\1`, `\2`); it is parsed once into
//! literal and group pieces and applied to the first match, as `count=1`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::util::syntax;
use regex_automata::Anchored;
use serde::Deserialize;

use crate::types::Validated;

// --- tables ------------------------------------------------------------------------------------

/// One `PhoneNumberDesc` group as `_phone._plan_data` exports it.
#[derive(Deserialize, Debug, Clone)]
pub struct DescData {
    /// Possible lengths (None: any).
    pub lengths: Option<Vec<u32>>,
    pub pattern: String,
}

/// One region's (or non-geographic entity's) plan as `_phone._plan_data` exports it.
#[derive(Deserialize, Debug, Clone)]
pub struct PlanData {
    pub country_code: u32,
    pub general: Option<DescData>,
    pub lengths: Vec<u32>,
    pub local_lengths: Vec<u32>,
    pub types: Vec<DescData>,
    pub national_prefix: Option<String>,
    pub transform: Option<String>,
    pub idd: Option<String>,
    pub leading_digits: Option<String>,
}

/// Sorted inclusive code point ranges for which a `str` predicate holds.
#[derive(Deserialize, Debug, Clone)]
pub struct CharClassData {
    pub isalnum: Vec<(u32, u32)>,
    pub isalpha: Vec<(u32, u32)>,
    pub isdigit: Vec<(u32, u32)>,
}

/// `json.loads(json.dumps(dlp._validate.phone_native_tables()))`.
#[derive(Deserialize, Debug, Clone)]
pub struct PhoneTables {
    pub min_nsn: usize,
    pub max_nsn: usize,
    pub max_cc: usize,
    pub non_geo_region: String,
    /// `COUNTRY_CODE_TO_REGION_CODE` as `[[cc, [region, ...]], ...]` (regions in phonenumbers' order).
    pub country_codes: Vec<(u32, Vec<String>)>,
    pub regions: HashMap<String, PlanData>,
    /// Non-geographic entities by country code (decimal string).
    pub non_geo: HashMap<String, PlanData>,
    pub regions_no_trunk: Vec<String>,
    pub regions_trunk_0: Vec<String>,
    pub char_classes: CharClassData,
}

// --- character classes (Python's str.isalnum / isalpha / isdigit) --------------------------------

#[derive(Debug, Clone)]
pub struct CharClass {
    ascii: u128,
    ranges: Vec<(u32, u32)>,
}

impl CharClass {
    fn new(mut ranges: Vec<(u32, u32)>) -> Result<CharClass, String> {
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if w[0].1 >= w[1].0 {
                return Err(format!("overlapping character ranges {:?}", w));
            }
        }
        let mut ascii = 0u128;
        for &(a, b) in &ranges {
            if a > b {
                return Err(format!("empty character range {a}..{b}"));
            }
            for cp in a..=b.min(127) {
                ascii |= 1 << cp;
            }
        }
        Ok(CharClass { ascii, ranges })
    }

    #[inline]
    pub fn contains(&self, c: char) -> bool {
        let cp = c as u32;
        if cp < 128 {
            return self.ascii >> cp & 1 == 1;
        }
        let i = self.ranges.partition_point(|&(_, last)| last < cp);
        i < self.ranges.len() && self.ranges[i].0 <= cp
    }
}

/// `str.isalnum`, `str.isalpha`, `str.isdigit` of one character, from Python's Unicode database.
#[derive(Debug, Clone)]
pub struct CharClasses {
    pub isalnum: CharClass,
    pub isalpha: CharClass,
    pub isdigit: CharClass,
}

impl CharClasses {
    pub fn new(data: CharClassData) -> Result<CharClasses, String> {
        Ok(CharClasses {
            isalnum: CharClass::new(data.isalnum)?,
            isalpha: CharClass::new(data.isalpha)?,
            isdigit: CharClass::new(data.isdigit)?,
        })
    }

    /// `dlp._validate._embedded(text, start, end)`: the digits are glued into a larger identifier.
    pub fn embedded(&self, text: &str, start: usize, end: usize) -> bool {
        let mut before = text[..start].chars().rev();
        let b1 = before.next();
        let b2 = before.next();
        if let (Some(c1), Some(c2)) = (b1, b2) {
            if matches!(c1, '-' | '_' | '/' | '#' | '.' | '$' | '€' | '£')
                && self.isalnum.contains(c2)
            {
                return true;
            }
        }
        if let Some(c1) = b1 {
            if matches!(c1, '$' | '€' | '£') {
                return true;
            }
        }
        let mut after = text[end..].chars();
        if let (Some(a1), Some(a2)) = (after.next(), after.next()) {
            if matches!(a1, '-' | '_' | '/' | '.' | ',' | ':') && self.isdigit.contains(a2) {
                return true;
            }
            if matches!(a1, '-' | '_') && self.isalpha.contains(a2) {
                return true;
            }
        }
        false
    }
}

// --- plans -------------------------------------------------------------------------------------

/// Possible lengths as a bit set (`None`: any length).
type Lengths = Option<u64>;

fn length_mask(lengths: &[u32]) -> Result<u64, String> {
    let mut mask = 0u64;
    for &n in lengths {
        if n >= 64 {
            return Err(format!("possible length {n} out of range"));
        }
        mask |= 1 << n;
    }
    Ok(mask)
}

#[inline]
fn in_mask(mask: u64, n: usize) -> bool {
    n < 64 && mask >> n & 1 == 1
}

#[inline]
fn lengths_take(lengths: Lengths, n: usize) -> bool {
    match lengths {
        None => true,
        Some(mask) => in_mask(mask, n),
    }
}

/// A piece of a transform rule.
#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Group(usize),
}

/// Python's `re.sub` template syntax, as far as phonenumbers' transform rules use it: literal
/// text and `\N` group references (N one digit, 1-9, not followed by a digit).  Anything else is
/// refused, so new syntax in a future phonenumbers fails loudly at start-up.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            literal.push(c);
            continue;
        }
        let g = match chars.next() {
            Some(d @ '1'..='9') if !matches!(chars.peek(), Some('0'..='9')) => {
                d as usize - '0' as usize
            }
            _ => return Err(format!("unsupported transform rule {template:?}")),
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Group(g));
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// The capture groups of a Python pattern (for checking the transform rule's references).
fn capture_count(pattern: &str) -> Result<usize, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(true)
        .build()
        .parse(pattern)
        .map_err(|e| format!("pattern {pattern:?}: {e}"))?;
    Ok(hir.properties().explicit_captures_len())
}

fn compile(pattern: String) -> Result<Regex, String> {
    RegexBuilder::new(&pattern)
        .unicode(false)
        .size_limit(1 << 24)
        .build()
        .map_err(|e| format!("pattern {pattern:?}: {e}"))
}

/// A pattern as a fully compiled DFA, run anchored at the start of the number: no cache, no
/// lock, one table step a digit.  `full`: `re.fullmatch`; else `re.match` (its end: the DFA
/// has leftmost-first semantics, the match a backtracking engine such as Python's reports).
pub struct Dfa {
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
}

impl Dfa {
    pub fn new(p: &str, full: bool) -> Result<Dfa, String> {
        let pattern = if full {
            format!("(?:{p})$")
        } else {
            format!("(?:{p})")
        };
        let dfa = dense::Builder::new()
            .configure(
                dense::DFA::config()
                    .start_kind(StartKind::Anchored)
                    .minimize(false)
                    .dfa_size_limit(Some(1 << 24))
                    .determinize_size_limit(Some(1 << 24)),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(true))
            .build(&pattern)
            .map_err(|e| format!("pattern {p:?}: {e}"))?;
        // The search always starts at the start of the number: no look-behind.
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| format!("pattern {p:?}: {e}"))?;
        Ok(Dfa { dfa, start })
    }

    /// The end of the leftmost-first match at the start of `s` (the "find_fwd" loop of
    /// regex-automata's `Automaton` docs, anchored; match states are delayed by one byte).
    #[inline]
    fn search(&self, s: &str) -> Option<usize> {
        let dfa = &self.dfa;
        let mut state = self.start;
        let mut last = if dfa.is_match_state(state) {
            Some(0)
        } else {
            None
        };
        for (i, &b) in s.as_bytes().iter().enumerate() {
            state = dfa.next_state(state, b);
            if dfa.is_special_state(state) {
                if dfa.is_match_state(state) {
                    last = Some(i);
                } else if dfa.is_dead_state(state) {
                    return last;
                }
                // no quit bytes are configured; start states are not special (no prefilter)
            }
        }
        state = dfa.next_eoi_state(state);
        if dfa.is_match_state(state) {
            last = Some(s.len());
        }
        last
    }

    /// `re.fullmatch(p, s) is not None` (for a DFA built with `full`: `$` ends every match).
    #[inline]
    pub fn is_full_match(&self, s: &str) -> bool {
        self.search(s).is_some()
    }

    /// `re.match(p, s).end()` (for a DFA built without `full`).
    #[inline]
    pub fn match_end(&self, s: &str) -> Option<usize> {
        self.search(s)
    }
}

/// A Python pattern as `re.match` with groups (for the national prefix with a transform rule).
pub fn compile_python_prefix_regex(p: &str) -> Result<Regex, String> {
    compile(format!("^(?:{p})"))
}

struct Compiled {
    general: Option<Dfa>,
    types: Vec<Dfa>,
    national_prefix: Option<Dfa>,
    /// The national prefix with its groups, when there is a transform rule to apply.
    national_prefix_groups: Option<Regex>,
    idd: Option<Dfa>,
    leading_digits: Option<Dfa>,
}

/// `_phone._Plan`: the lengths are read from the tables, the patterns compiled on first use.
struct Plan {
    region: String,
    /// `str(country_code)`.
    home_cc: String,
    data: PlanData,
    country_code: u32,
    has_general: bool,
    general_lengths: Lengths,
    lengths: u64,
    max_length: Option<usize>,
    local_lengths: u64,
    type_lengths: Vec<Lengths>,
    /// The transform rule (None when absent or empty), parsed.
    transform: Option<Vec<Piece>>,
    compiled: OnceLock<Compiled>,
}

impl Plan {
    fn new(region: &str, data: PlanData) -> Result<Plan, String> {
        let mask = |l: &Option<Vec<u32>>| -> Result<Lengths, String> {
            match l {
                None => Ok(None),
                Some(v) => Ok(Some(length_mask(v)?)),
            }
        };
        let transform = match data.transform.as_deref() {
            None | Some("") => None,
            Some(t) => Some(parse_template(t)?),
        };
        // Check every pattern parses (compilation itself is deferred) and that the transform
        // only names groups the national prefix has (Python would raise at `sub` otherwise).
        for p in data
            .general
            .iter()
            .map(|d| &d.pattern)
            .chain(data.types.iter().map(|d| &d.pattern))
            .chain(data.idd.iter())
            .chain(data.leading_digits.iter())
        {
            capture_count(p)?;
        }
        if let Some(np) = data.national_prefix.as_deref().filter(|p| !p.is_empty()) {
            let groups = capture_count(np)?;
            if let Some(pieces) = &transform {
                if groups > 0 {
                    for piece in pieces {
                        if let Piece::Group(g) = piece {
                            if *g > groups {
                                return Err(format!(
                                    "transform rule of {region} names group {g} of {groups}"
                                ));
                            }
                        }
                    }
                }
            }
        }
        let mut sorted = data.lengths.clone();
        sorted.sort_unstable();
        Ok(Plan {
            region: region.to_owned(),
            home_cc: data.country_code.to_string(),
            country_code: data.country_code,
            has_general: data.general.is_some(),
            general_lengths: match &data.general {
                Some(g) => mask(&g.lengths)?,
                None => None,
            },
            lengths: length_mask(&data.lengths)?,
            max_length: sorted.last().map(|&n| n as usize),
            local_lengths: length_mask(&data.local_lengths)?,
            type_lengths: data
                .types
                .iter()
                .map(|d| mask(&d.lengths))
                .collect::<Result<_, _>>()?,
            transform,
            data,
            compiled: OnceLock::new(),
        })
    }

    fn build(&self) -> Result<Compiled, String> {
        let d = &self.data;
        let np = d.national_prefix.as_deref().filter(|p| !p.is_empty());
        Ok(Compiled {
            general: d
                .general
                .as_ref()
                .map(|g| Dfa::new(&g.pattern, true))
                .transpose()?,
            types: d
                .types
                .iter()
                .map(|t| Dfa::new(&t.pattern, true))
                .collect::<Result<_, _>>()?,
            national_prefix: np.map(|p| Dfa::new(p, false)).transpose()?,
            national_prefix_groups: match (np, &self.transform) {
                (Some(p), Some(_)) => Some(compile_python_prefix_regex(p)?),
                _ => None,
            },
            idd: d.idd.as_deref().map(|p| Dfa::new(p, false)).transpose()?,
            leading_digits: d
                .leading_digits
                .as_deref()
                .map(|p| Dfa::new(p, false))
                .transpose()?,
        })
    }

    #[inline]
    fn re(&self) -> &Compiled {
        self.compiled.get_or_init(|| match self.build() {
            Ok(c) => c,
            // Every pattern parsed in `new`; only a size limit could fail here, and
            // `compile_all` (run by the tests on the real tables) shows none does.
            Err(e) => panic!("phone plan {}: {e}", self.region),
        })
    }

    fn try_compile(&self) -> Result<(), String> {
        if self.compiled.get().is_none() {
            let c = self.build()?;
            let _ = self.compiled.set(c);
        }
        Ok(())
    }

    /// `_type_known`: `_number_type_helper(nsn) != UNKNOWN`.
    fn type_known(&self, nsn: &str) -> bool {
        if !self.has_general || !lengths_take(self.general_lengths, nsn.len()) {
            return false;
        }
        let re = self.re();
        if !re.general.as_ref().is_some_and(|g| g.is_full_match(nsn)) {
            return false;
        }
        self.type_lengths
            .iter()
            .zip(&re.types)
            .any(|(&l, rx)| lengths_take(l, nsn.len()) && rx.is_full_match(nsn))
    }

    /// `general_match`: `_match_national_number` against the general description.
    fn general_match(&self, number: &str) -> bool {
        self.has_general
            && self
                .re()
                .general
                .as_ref()
                .is_some_and(|g| g.is_full_match(number))
    }

    fn length_ok(&self, number: &str) -> bool {
        let n = number.len();
        let Some(max) = self.max_length else {
            return false;
        };
        if in_mask(self.local_lengths, n) {
            return false;
        }
        n > max || in_mask(self.lengths, n)
    }

    fn too_long(&self, number: &str) -> bool {
        let n = number.len();
        matches!(self.max_length, Some(max) if !in_mask(self.local_lengths, n) && n > max)
    }

    /// `strip_national_prefix`: `_maybe_strip_national_prefix_carrier_code` (the number).
    fn strip_national_prefix<'a>(&self, number: &'a str) -> Cow<'a, str> {
        if number.is_empty() {
            return Cow::Borrowed(number);
        }
        let re = self.re();
        let Some(np) = &re.national_prefix else {
            return Cow::Borrowed(number);
        };
        let Some(end) = np.match_end(number) else {
            return Cow::Borrowed(number);
        };
        let stripped: Cow<'a, str> = match (&self.transform, &re.national_prefix_groups) {
            (Some(pieces), Some(groups)) => {
                let caps = groups.captures(number).expect("the DFA matched");
                let m = caps.get(0).expect("group 0");
                debug_assert_eq!(m.end(), end);
                let n_groups = caps.len() - 1;
                if n_groups == 0 || caps.get(n_groups).is_none() {
                    Cow::Borrowed(&number[m.end()..])
                } else {
                    // re.sub(np, transform, number, count=1): the first match is this one
                    // (a match at 0 exists, and search tries 0 first).
                    let mut out = String::with_capacity(number.len() + 8);
                    out.push_str(&number[..m.start()]);
                    for piece in pieces {
                        match piece {
                            Piece::Literal(s) => out.push_str(s),
                            Piece::Group(g) => {
                                out.push_str(caps.get(*g).map_or("", |c| c.as_str()))
                            }
                        }
                    }
                    out.push_str(&number[m.end()..]);
                    Cow::Owned(out)
                }
            }
            _ => Cow::Borrowed(&number[end..]),
        };
        let viable = self.general_match(number);
        if viable && !self.general_match(&stripped) {
            return Cow::Borrowed(number);
        }
        stripped
    }
}

/// One country code: its regions (phonenumbers' order) with their plans, and `_lengths_of`.
struct CountryCode {
    /// (region code, plan as `_plan(cc, region)` gives it).
    regions: Vec<(String, Option<usize>)>,
    lengths: Lengths,
}

/// Phone validation, configured from `phone_native_tables()`.  Send + Sync: the plans compile
/// once, on first use, whichever thread gets there first.
pub struct Phones {
    min_nsn: usize,
    max_nsn: usize,
    max_cc: usize,
    non_geo_region: String,
    plans: Vec<Plan>,
    by_region: HashMap<String, usize>,
    /// Indexed by the country code's value (< 10^max_cc).
    by_cc: Vec<Option<CountryCode>>,
    /// `PHONE_REGIONS_NO_TRUNK` / `PHONE_REGIONS_TRUNK_0` as plans (None: no metadata, never valid).
    regions_no_trunk: Vec<Option<usize>>,
    regions_trunk_0: Vec<Option<usize>>,
    classes: CharClasses,
}

#[inline]
fn is_group_sep(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-' | b'/' | b'(' | b')')
}

/// A candidate's digits (at most 15: more is refused anyway), with what `phone` counts.
struct Shape {
    digits: [u8; 15],
    len: usize,
    dots: usize,
    runs: usize,
}

/// `_PHONE_GROUPS.fullmatch(value)`: `\+?[ .\-/()]*[0-9]+(?:[ .\-/()]+[0-9]{2,}){0,5}` (ASCII),
/// in one pass that also collects the digits (`value.translate(_PHONE_PUNCT)`: once the shape
/// holds, everything else is punctuation) and counts the dots.  Separators and digits
/// alternate, so each run is taken whole: no backtracking could split one.  None when the shape
/// does not hold or there are more than 15 digits.
fn phone_shape(v: &[u8]) -> Option<Shape> {
    let n = v.len();
    let mut shape = Shape {
        digits: [0; 15],
        len: 0,
        dots: 0,
        runs: 0,
    };
    let mut i = usize::from(v.first() == Some(&b'+'));
    loop {
        // separators: any number before the first digits, at least one between runs
        let s = i;
        while i < n && is_group_sep(v[i]) {
            shape.dots += usize::from(v[i] == b'.');
            i += 1;
        }
        if shape.runs > 0 && (i == s || i == n) {
            return None; // another character, or separators at the end
        }
        let s = i;
        while i < n && v[i].is_ascii_digit() {
            if shape.len == shape.digits.len() {
                return None;
            }
            shape.digits[shape.len] = v[i];
            shape.len += 1;
            i += 1;
        }
        let run = i - s;
        if run == 0 || (shape.runs > 0 && run < 2) || shape.runs == 6 {
            return None;
        }
        shape.runs += 1;
        if i == n {
            return Some(shape);
        }
    }
}

/// `_PHONE_GROUPS.fullmatch(value)` for values of at most 15 digits (tests).
#[cfg(test)]
fn phone_groups(v: &[u8]) -> bool {
    let digits = v.iter().filter(|b| b.is_ascii_digit()).count();
    digits <= 15 && phone_shape(v).is_some()
}

/// `_DATE_SHAPE.fullmatch(value)`: `\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}` (ASCII).
fn date_shape(v: &[u8]) -> bool {
    let n = v.len();
    let mut i = 0;
    for (k, max) in [4usize, 2, 4].into_iter().enumerate() {
        let s = i;
        while i < n && v[i].is_ascii_digit() {
            i += 1;
        }
        if i == s || i - s > max {
            return false;
        }
        if k < 2 {
            if i < n && matches!(v[i], b'.' | b'/' | b'-') {
                i += 1;
            } else {
                return false;
            }
        }
    }
    i == n
}

impl Phones {
    pub fn new(tables: PhoneTables) -> Result<Phones, String> {
        let PhoneTables {
            min_nsn,
            max_nsn,
            max_cc,
            non_geo_region,
            country_codes,
            regions,
            non_geo,
            regions_no_trunk,
            regions_trunk_0,
            char_classes,
        } = tables;
        if !(1..=6).contains(&max_cc) {
            return Err(format!("max_cc {max_cc} out of range"));
        }
        let mut plans = Vec::new();
        let mut by_region = HashMap::new();
        let mut regions: Vec<(String, PlanData)> = regions.into_iter().collect();
        regions.sort_by(|a, b| a.0.cmp(&b.0));
        for (region, data) in regions {
            if data.country_code == 0 {
                return Err(format!("region {region} has no country code"));
            }
            by_region.insert(region.clone(), plans.len());
            plans.push(Plan::new(&region, data)?);
        }
        let mut non_geo_plans = HashMap::new();
        for (cc, data) in non_geo {
            let cc: u32 = cc
                .parse()
                .map_err(|_| format!("non-geo country code {cc:?}"))?;
            non_geo_plans.insert(cc, plans.len());
            plans.push(Plan::new(&non_geo_region, data)?);
        }
        let limit = 10usize.pow(max_cc as u32);
        let mut by_cc: Vec<Option<CountryCode>> = (0..limit).map(|_| None).collect();
        for (cc, rs) in country_codes {
            if cc == 0 || cc as usize >= limit {
                return Err(format!("country code {cc} out of range"));
            }
            let regions: Vec<(String, Option<usize>)> = rs
                .into_iter()
                .map(|r| {
                    let plan = if r == non_geo_region {
                        non_geo_plans.get(&cc).copied()
                    } else {
                        by_region.get(&r).copied()
                    };
                    (r, plan)
                })
                .collect();
            // _lengths_of(cc)
            let mut union: Lengths = Some(0);
            for (_, plan) in &regions {
                let Some(p) = plan.map(|i| &plans[i]) else {
                    continue;
                };
                if !p.has_general {
                    continue;
                }
                match p.general_lengths {
                    None => {
                        union = None;
                        break;
                    }
                    Some(m) => union = union.map(|u| u | m),
                }
            }
            by_cc[cc as usize] = Some(CountryCode {
                regions,
                lengths: union,
            });
        }
        Ok(Phones {
            min_nsn,
            max_nsn,
            max_cc,
            non_geo_region,
            plans,
            by_cc,
            regions_no_trunk: regions_no_trunk
                .iter()
                .map(|r| by_region.get(r).copied())
                .collect(),
            regions_trunk_0: regions_trunk_0
                .iter()
                .map(|r| by_region.get(r).copied())
                .collect(),
            by_region,
            classes: CharClasses::new(char_classes)?,
        })
    }

    /// Compiles every plan now (else each compiles on first use); the first error, if any.
    pub fn compile_all(&self) -> Result<(), String> {
        for p in &self.plans {
            p.try_compile()
                .map_err(|e| format!("phone plan {}: {e}", p.region))?;
        }
        Ok(())
    }

    /// The character classes the validator uses (`_embedded`).
    pub fn char_classes(&self) -> &CharClasses {
        &self.classes
    }

    fn cc(&self, cc: u32) -> Option<&CountryCode> {
        self.by_cc.get(cc as usize).and_then(|c| c.as_ref())
    }

    /// `_extract_country_code`: (0, number) when none.
    fn extract_country_code<'a>(&self, number: &'a str) -> (u32, &'a str) {
        let b = number.as_bytes();
        if b.is_empty() || b[0] == b'0' {
            return (0, number);
        }
        let mut value = 0u32;
        for i in 1..=b.len().min(self.max_cc) {
            let d = b[i - 1];
            if !d.is_ascii_digit() {
                break; // no country code has this prefix
            }
            value = value * 10 + u32::from(d - b'0');
            if self.cc(value).is_some() {
                return (value, &number[i..]);
            }
        }
        (0, number)
    }

    fn region_plan(&self, cc: u32) -> Option<&Plan> {
        self.cc(cc)?.regions.first()?.1.map(|i| &self.plans[i])
    }

    /// `region_of(cc)`: the main region of a country code (`ZZ` when unknown).
    pub fn region_of(&self, cc: u32) -> &str {
        self.cc(cc)
            .and_then(|c| c.regions.first())
            .map_or("ZZ", |r| r.0.as_str())
    }

    /// `_valid(country_code, nsn)`.
    fn valid(&self, cc: u32, nsn: &str) -> bool {
        let Some(info) = self.cc(cc) else {
            return false;
        };
        if info.regions.is_empty() {
            return false;
        }
        if !lengths_take(info.lengths, nsn.len()) {
            return false;
        }
        let mut region = Some(&info.regions[0]);
        if info.regions.len() > 1 {
            region = None;
            for entry in &info.regions {
                let plan = if entry.0 != self.non_geo_region {
                    entry.1.map(|i| &self.plans[i])
                } else {
                    None
                };
                let Some(plan) = plan else { continue };
                if let Some(ld) = &plan.re().leading_digits {
                    if ld.match_end(nsn).is_some() {
                        region = Some(entry);
                        break;
                    }
                } else if plan.type_known(nsn) {
                    return true;
                }
            }
        }
        let Some((name, plan)) = region else {
            return false;
        };
        let Some(plan) = plan.map(|i| &self.plans[i]) else {
            return false;
        };
        if *name != self.non_geo_region && plan.country_code != cc {
            return false;
        }
        plan.type_known(nsn)
    }

    /// `_finish`: the end of `parse` (national prefix, length checks), then `is_valid_number`.
    fn finish(&self, cc: u32, number: &str, plan: Option<&Plan>) -> bool {
        if number.len() < self.min_nsn {
            return false;
        }
        let number = match plan {
            Some(plan) => {
                let stripped = plan.strip_national_prefix(number);
                if plan.length_ok(&stripped) {
                    stripped
                } else {
                    Cow::Borrowed(number)
                }
            }
            None => Cow::Borrowed(number),
        };
        if !(self.min_nsn..=self.max_nsn).contains(&number.len()) {
            return false;
        }
        self.valid(cc, &number)
    }

    /// `valid_international(digits)`: `is_valid_number(parse("+" + digits))` for ASCII digits
    /// (false for anything that is not ASCII).
    pub fn valid_international(&self, digits: &str) -> bool {
        if !digits.is_ascii() || digits.len() <= self.min_nsn {
            return false;
        }
        let (cc, rest) = self.extract_country_code(digits);
        if cc == 0 {
            return false;
        }
        self.finish(cc, rest, self.region_plan(cc))
    }

    /// `valid_national(digits, region)`: `is_valid_number(parse(digits, region))` for ASCII
    /// digits (false for anything that is not ASCII).
    pub fn valid_national(&self, digits: &str, region: &str) -> bool {
        let Some(&pi) = self.by_region.get(region) else {
            return false;
        };
        self.valid_national_plan(digits, &self.plans[pi])
    }

    fn valid_national_plan(&self, digits: &str, plan: &Plan) -> bool {
        if digits.is_empty() || !digits.is_ascii() {
            return false;
        }
        if let Some(idd) = &plan.re().idd {
            if let Some(end) = idd.match_end(digits) {
                if digits.as_bytes().get(end) != Some(&b'0') {
                    let rest = &digits[end..];
                    if rest.len() <= self.min_nsn {
                        return false;
                    }
                    let (cc, rest) = self.extract_country_code(rest);
                    if cc == 0 {
                        return false;
                    }
                    let target = if self.region_of(cc) != plan.region {
                        self.region_plan(cc)
                    } else {
                        Some(plan)
                    };
                    return self.finish(cc, rest, target);
                }
            }
        }
        if let Some(tail) = digits.strip_prefix(plan.home_cc.as_str()) {
            let potential = plan.strip_national_prefix(tail);
            if (!plan.general_match(digits) && plan.general_match(&potential))
                || plan.too_long(digits)
            {
                return self.finish(plan.country_code, &potential, Some(plan));
            }
        }
        self.finish(plan.country_code, digits, Some(plan))
    }

    /// `dlp._validate.phone(text, start, end, kind)`, byte offsets (None as well for a span that
    /// is not one of `text`).
    pub fn validate(&self, text: &str, start: usize, end: usize, kind: &str) -> Validated {
        let value = text.get(start..end)?;
        let v = value.as_bytes();
        if kind != "intl" {
            let mut before = text[..start].chars().rev();
            if let (Some(c1), Some(c2)) = (before.next(), before.next()) {
                if matches!(c1, ' ' | '.' | '-' | '/') && self.classes.isdigit.contains(c2) {
                    return None; // the tail of a longer run of digit groups
                }
            }
        }
        // The shape first: it admits ASCII only, so byte counts are character counts below.
        let shape = phone_shape(v)?;
        let n = shape.len;
        if n < 7 || shape.dots == 3 || self.classes.embedded(text, start, end) {
            return None;
        }
        // a date has three digit runs, the first at the start
        if shape.runs == 3 && v[0].is_ascii_digit() && date_shape(v) {
            return None;
        }
        let digits = std::str::from_utf8(&shape.digits[..n]).ok()?;
        if kind == "intl" {
            let number = if v.starts_with(b"00") {
                &digits[2..]
            } else {
                digits
            };
            return if self.valid_international(number) {
                Some((0.9, start, end))
            } else {
                None
            };
        }
        let regions = if digits.starts_with('0') {
            &self.regions_trunk_0
        } else {
            &self.regions_no_trunk
        };
        if !regions
            .iter()
            .any(|r| r.is_some_and(|i| self.valid_national_plan(digits, &self.plans[i])))
        {
            return None;
        }
        Some((if kind == "national" { 0.6 } else { 0.35 }, start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_dates() {
        assert!(phone_groups(b"+1 (415) 555-0100"));
        assert!(phone_groups(b"4155550100"));
        assert!(!phone_groups(b"1 2 3"));
        assert!(!phone_groups(b"1 22 33 44 55 66 77"));
        assert!(phone_groups(b"1 22 33 44 55 66"));
        assert!(!phone_groups(b""));
        assert!(!phone_groups(b"12 "));
        assert!(!phone_groups(b"1+2"));
        assert!(!phone_groups(b"+"));
        assert!(phone_groups(b"+()1"));
        assert!(!phone_groups(b"1 2"));
        assert!(phone_groups(b"1 23"));
        assert!(!phone_groups(b"12 34 "));
        assert!(!phone_groups(b"12a34"));
        let s = phone_shape(b"+1 (415) 555.0100").unwrap();
        assert_eq!(
            (&s.digits[..s.len], s.dots, s.runs),
            (&b"14155550100"[..], 1, 4)
        );
        assert!(phone_shape(b"1234567890123456").is_none());
        assert!(date_shape(b"2024-01-05"));
        assert!(date_shape(b"1.2.3"));
        assert!(!date_shape(b"12345-1-1"));
        assert!(!date_shape(b"1-123-1"));
        assert!(!date_shape(b"1-1-"));
    }

    #[test]
    fn templates() {
        assert!(matches!(
            parse_template(r"9\1").unwrap()[..],
            [Piece::Literal(_), Piece::Group(1)]
        ));
        assert!(parse_template(r"\0").is_err());
        assert!(parse_template(r"\12").is_err());
        assert!(parse_template(r"\g<1>").is_err());
    }

    #[test]
    fn phones_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Phones>();
    }
}
