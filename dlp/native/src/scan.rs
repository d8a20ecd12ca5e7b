//! Scanning: engine candidates → context → validators → thresholds → overlaps
//! (`dlp._scan._scan_joined`, `_settle_overlaps` and `scan_segments`), in byte offsets.

use crate::context::Context;
use crate::engine::{Engine, Hit};
use crate::normalize;
use crate::phone::Phones;
use crate::types::{Date, Detector};
use crate::validate::Validators;

/// A finding inside the scanner: (type, start, end, confidence), byte offsets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub detector: Detector,
    pub start: usize,
    pub end: usize,
    pub confidence: f64,
}

/// What the key holding a value says about it (`dlp._context.KeyHint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyHint {
    pub detector: Option<Detector>,
    pub negative: bool,
    pub version: bool,
}

/// The detectors asked for and their thresholds (indexed by `Detector::index`).
#[derive(Clone, Debug)]
pub struct Wanted {
    pub on: [bool; 10],
    pub limits: [f64; 10],
}

/// One pattern of the table, as the scanner needs it.
pub struct PatternInfo {
    pub detector: Detector,
    pub kind: String,
    pub max_base: f64,
}

pub const SEPARATOR: char = '\0';

fn lookalike_prone(d: Detector) -> bool {
    matches!(
        d,
        Detector::Phone | Detector::Ssn | Detector::CreditCard | Detector::Iban | Detector::IpAddress | Detector::DateOfBirth
    )
}

/// Tie-break between overlapping findings of equal confidence: the more specific type wins.
fn priority(d: Detector) -> u8 {
    match d {
        Detector::Secret => 0,
        Detector::CreditCard => 1,
        Detector::Iban => 2,
        Detector::Ssn => 3,
        Detector::Email => 4,
        Detector::IpAddress => 5,
        Detector::Phone => 6,
        Detector::DateOfBirth => 7,
        Detector::Name => 8,
        Detector::Address => 9,
    }
}

pub struct Scanner {
    pub engine: Engine,
    pub validators: Validators,
    pub phones: Phones,
    pub context: Context,
    pub patterns: Vec<PatternInfo>,
    own_token: regex::Regex,
    own_token_whole: regex::Regex,
}

impl Scanner {
    /// `own_token` is `dlp._modes.OWN_TOKEN`: our own redaction tokens, never redacted again.
    pub fn new(
        engine: Engine,
        validators: Validators,
        phones: Phones,
        context: Context,
        patterns: Vec<PatternInfo>,
        own_token: &str,
    ) -> Result<Scanner, String> {
        let compile = |p: &str| regex::Regex::new(p).map_err(|e| format!("OWN_TOKEN: {e}"));
        Ok(Scanner {
            engine,
            validators,
            phones,
            context,
            patterns,
            own_token: compile(own_token)?,
            own_token_whole: compile(&format!("^(?:{own_token})$"))?,
        })
    }

    /// `OWN_TOKEN.fullmatch(value)`: a value that is already one of our redaction tokens.
    pub fn own_token_fullmatch(&self, value: &str) -> bool {
        self.own_token_whole.is_match(value)
    }

    fn validate(&self, pid: usize, text: &str, start: usize, end: usize, today: Date) -> Option<(f64, usize, usize)> {
        let p = &self.patterns[pid];
        if p.detector == Detector::Phone {
            self.phones.validate(text, start, end, &p.kind)
        } else {
            self.validators.validate(p.detector, &p.kind, text, start, end, today)
        }
    }

    fn shift(&self, detector: Detector, hint: &KeyHint, text: &str, start: usize, floor: usize, hits: &[Hit]) -> f64 {
        let penalty = self.context.negative_penalty;
        let mut shift = if hint.negative && lookalike_prone(detector) { -penalty } else { 0.0 };
        if !hits.is_empty() {
            let word = self.context.word_context(detector, text, start, floor, hits);
            shift += if word > 0 {
                self.context.positive_boost
            } else if word < 0 {
                -penalty
            } else {
                0.0
            };
        }
        shift
    }

    /// `_scan_joined`: findings in `text` (values joined by NUL; `floors` their starts).
    pub fn scan_joined(&self, text: &str, floors: &[usize], hints: &[KeyHint], wanted: &Wanted, today: Date) -> Vec<Span> {
        let (cands, hits) = self.engine.scan(text);
        if cands.is_empty() {
            return Vec::new();
        }
        let mut accepted: Vec<Span> = Vec::new();
        let mut covered = [usize::MAX; 10]; // detector -> end of its last accepted span (MAX: none)
        let mut reach: Option<usize> = None;
        let mut previous: Option<(Detector, usize, usize)> = None;
        let own: Vec<(usize, usize)> = if text.contains('[') {
            self.own_token.find_iter(text).map(|m| (m.start(), m.end())).collect()
        } else {
            Vec::new()
        };
        let single = floors.len() == 1;
        let key_match = self.context.key_match_confidence;
        for c in &cands {
            let (pid, mut start, mut end) = (c.pattern as usize, c.start, c.end);
            if let Some(r) = reach {
                if end <= r {
                    continue;
                }
            }
            let detector = self.patterns[pid].detector;
            let di = detector.index();
            if !wanted.on[di] {
                continue;
            }
            if covered[di] != usize::MAX && start < covered[di] {
                continue;
            }
            if !own.is_empty() {
                let i = own.partition_point(|&(a, _)| a <= start);
                if i > 0 && own[i - 1].1 > start {
                    continue; // inside our own redaction token
                }
            }
            if previous == Some((detector, start, end)) {
                continue;
            }
            previous = Some((detector, start, end));
            let mut seg = if single { 0 } else { floors.partition_point(|&f| f <= start) - 1 };
            let mut hint = &hints[seg];
            let limit = wanted.limits[di];
            let mut shift: Option<f64>;
            if hint.detector == Some(detector) {
                shift = None; // the key announces the type: at least KEY_MATCH
            } else if detector == Detector::IpAddress && hint.version {
                continue; // a dotted quad under a ``version`` key is a version
            } else {
                let s = self.shift(detector, hint, text, start, floors[seg], &hits);
                let best = self.patterns[pid].max_base + s;
                if (if best > 0.0 { best } else { 0.0 }) < limit {
                    continue;
                }
                shift = Some(s);
            }
            let (base, new_start, new_end) = match self.validate(pid, text, start, end, today) {
                Some(v) => v,
                None => continue,
            };
            end = new_end;
            if new_start != start {
                start = new_start;
                seg = if single { 0 } else { floors.partition_point(|&f| f <= start) - 1 };
                hint = &hints[seg];
                if shift.is_some() {
                    shift = Some(self.shift(detector, hint, text, start, floors[seg], &hits));
                }
            }
            let conf = match shift {
                None => {
                    if base > key_match {
                        base
                    } else {
                        key_match
                    }
                }
                Some(s) => {
                    let c = base + s;
                    if c < 0.0 {
                        0.0
                    } else if c > 0.99 {
                        0.99
                    } else {
                        c
                    }
                }
            };
            if conf >= limit {
                accepted.push(Span { detector, start, end, confidence: conf });
                covered[di] = end;
                if reach.map_or(true, |r| end > r) {
                    reach = Some(end);
                }
            }
        }
        settle_overlaps(accepted, text)
    }

    /// `scan_segments`: many values in one engine pass; findings per value, byte offsets
    /// relative to that value.
    pub fn scan_segments(&self, values: &[&str], hints: &[KeyHint], wanted: &Wanted, today: Date) -> Vec<Vec<Span>> {
        let mut out: Vec<Vec<Span>> = vec![Vec::new(); values.len()];
        if values.is_empty() || !wanted.on.iter().any(|&w| w) {
            return out;
        }
        let views: Vec<Option<(String, Vec<usize>)>> = values.iter().map(|v| normalize::detection_view(v)).collect();
        let any_view = views.iter().any(|v| v.is_some());
        let texts: Vec<&str> = values
            .iter()
            .zip(&views)
            .map(|(v, view)| match view {
                Some((s, _)) => s.as_str(),
                None => *v,
            })
            .collect();
        let mut joined = String::with_capacity(texts.iter().map(|t| t.len() + 1).sum());
        let mut floors = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            if i > 0 {
                joined.push(SEPARATOR);
            }
            floors.push(joined.len());
            joined.push_str(t);
        }
        for f in self.scan_joined(&joined, &floors, hints, wanted, today) {
            let seg = floors.partition_point(|&fl| fl <= f.start) - 1;
            let base = floors[seg];
            if f.end > base + texts[seg].len() {
                continue; // a value never contains the separator, but be sure
            }
            let (mut s, mut e) = (f.start - base, f.end - base);
            if any_view {
                if let Some((_, index)) = &views[seg] {
                    let (os, oe) = normalize::original_span(index, s, e);
                    s = os;
                    e = oe;
                }
            }
            out[seg].push(Span { start: s, end: e, ..f });
        }
        out
    }
}

/// Python's `round(x, 2)` (correctly rounded, ties to even on the exact binary value).
pub fn round2(x: f64) -> f64 {
    format!("{:.2}", x).parse().unwrap_or(x)
}

/// `_settle_overlaps`: keep the best of overlapping findings (confidence, then length, then
/// type priority); kept spans stay sorted by start.
pub fn settle_overlaps(found: Vec<Span>, text: &str) -> Vec<Span> {
    if found.len() < 2 || found.windows(2).all(|w| w[0].end <= w[1].start) {
        return found;
    }
    // Lengths in characters, as Python compares them.
    let mut ranked: Vec<(f64, usize, Span)> =
        found.iter().map(|f| (round2(f.confidence), text[f.start..f.end].chars().count(), *f)).collect();
    // Python's sorted() is stable, and so is sort_by: equal keys keep their order.
    ranked.sort_by(|(ra, la, a), (rb, lb, b)| {
        rb.partial_cmp(ra).unwrap().then(lb.cmp(la)).then(priority(a.detector).cmp(&priority(b.detector)))
    });
    let mut kept: Vec<Span> = Vec::new();
    for (_, _, f) in ranked {
        let i = kept.partition_point(|k| k.start < f.start);
        if i > 0 && kept[i - 1].end > f.start {
            continue;
        }
        if i < kept.len() && kept[i].start < f.end {
            continue;
        }
        kept.insert(i, f);
    }
    kept
}
