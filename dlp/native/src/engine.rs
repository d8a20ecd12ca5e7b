//! The candidate engine: one pass over the text that finds every candidate of every pattern and
//! every context keyword — the port of `dlp._engine.scan_text` with its Hyperscan scanner.
//!
//! What Hyperscan gives (`HS_MODE_BLOCK`, `HS_FLAG_SOM_LEFTMOST` on every pattern, caseless where
//! asked, no UTF-8 mode): for every pattern and every end offset at which some match of it ends,
//! one report with the leftmost start of a match ending there. Patterns and text are bytes;
//! `\b`, `\d`, `\w` are ASCII, caseless folds ASCII only.
//!
//! Here (regex-automata, byte mode, Unicode off so that the same holds):
//! * one lazy DFA over all patterns and keywords, `MatchKind::All`, unanchored, searched
//!   overlapping: every (pattern, end) once, in order of end;
//! * for a pattern's end, a reverse lazy DFA anchored at that end and at that pattern
//!   (`MatchKind::All`, so the reverse search runs until the automaton dies and its last match is
//!   the smallest start): the leftmost start. Every pattern is bounded in length, so this costs at
//!   most the pattern's longest match per report;
//! * should a lazy DFA ever give up (it is configured so it cannot: no Unicode word boundary, so
//!   no quit byte, and no minimum cache efficiency), the scan is redone by a direct NFA simulation
//!   that tracks the leftmost start per NFA state ([`nfa_scan`]): slower, same answer.
//!
//! Then `scan_text`'s post-processing (sort, longest per start, left runs, extenders), in bytes.
//! The `extend` regexes are Python `re.ASCII` regexes; they are compiled in byte mode and must not
//! match any non-ASCII byte except as part of a literal (checked at construction), so that their
//! byte-level and character-level answers are the same.

use std::sync::Arc;

use regex_automata::{
    hybrid::{
        dfa::{Cache as DfaCache, OverlappingState, DFA},
        LazyStateID,
    },
    meta,
    nfa::thompson::{self, State, NFA},
    util::{
        pool::Pool,
        primitives::StateID,
        syntax,
    },
    Anchored, Input, MatchError, MatchKind,
};
use regex_syntax::hir::{Class, Hir, HirKind, Look};
use serde::Deserialize;

use crate::types::Detector;

/// One entry of `dlp._patterns.PATTERNS` (see `dlp._engine.native_tables`).
#[derive(Clone, Debug, Deserialize)]
pub struct PatternSpec {
    pub detector: Detector,
    pub kind: String,
    pub regex: String,
    pub caseless: bool,
    pub extend: Option<String>,
    pub all_ends: bool,
    pub value_after_anchor: bool,
    pub left_class: Option<String>,
    pub left_max: usize,
    /// The ASCII code points `left_class` matches under Python `re` (a cross-check).
    pub left_bytes: Option<Vec<u8>>,
}

/// `dlp._engine.native_tables()`: the pattern table and the context keywords.
#[derive(Clone, Debug, Deserialize)]
pub struct EngineTables {
    pub patterns: Vec<PatternSpec>,
    pub keywords: Vec<String>,
}

/// A candidate: pattern index, UTF-8 byte span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate {
    pub pattern: u32,
    pub start: usize,
    pub end: usize,
}

/// A context keyword hit: the keyword's own byte span and its index in `keywords`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub keyword: u32,
}

/// Per-pattern post-processing (what `scan_text` reads from the table).
struct Post {
    /// Every match has this length (the start needs no reverse search).
    fixed_len: Option<usize>,
    all_ends: bool,
    plain: bool,
    value_after: bool,
    /// Left run: byte set (ASCII only) and maximum length.
    left: Option<([bool; 256], usize)>,
    extend: Option<meta::Regex>,
}

struct Inner {
    fwd: DFA,
    /// Per pattern, the reverse automaton that finds starts (none for a fixed length).
    rev: Vec<Option<DFA>>,
    post: Vec<Post>,
    /// Keyword lengths in bytes (all ASCII).
    kw_len: Vec<usize>,
    n_patterns: usize,
}

struct Caches {
    fwd: DfaCache,
    rev: Vec<Option<DfaCache>>,
    walk: Walk,
    ext: Vec<Option<meta::Cache>>,
    nfa: NfaCache,
}

type CacheFn = Box<dyn Fn() -> Caches + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// The compiled engine. `Send + Sync`; each thread gets its own search caches from a pool.
pub struct Engine {
    inner: Arc<Inner>,
    pool: Pool<Caches, CacheFn>,
}

/// The lazy DFAs' cache per thread (each of the two automata). A cleared cache costs time, never
/// an answer; 4 MiB keeps the states of realistic traffic resident.
const CACHE_CAPACITY: usize = 4 << 20;
const REV_CACHE_CAPACITY: usize = 1 << 20;
/// Texts of at least `2 * CHUNK_MIN` bytes are walked in 2 or 4 chunks side by side.
const CHUNK_MIN: usize = 256;
/// How far past its chunk a forward walker may go to meet the next one.
const CONVERGE: usize = 512;
/// Reverse searches (for starts) walked side by side.
const REV_WALKERS: usize = 4;

/// A Hyperscan keyword pattern (`dlp._engine._keyword_regex`), caseless.
fn keyword_regex(word: &str) -> String {
    format!("(?i)(?:^|[^a-z0-9]){}[^a-z]", regex_syntax::escape(word))
}

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

fn parse(pattern: &str, caseless: bool) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(caseless)
        .build()
        .parse(pattern)
        .map_err(|e| format!("cannot parse {pattern:?}: {e}"))
}

/// Look-arounds both Hyperscan (no multi-line) and Python `re.ASCII` give the same meaning as
/// regex-automata: start of text and ASCII word boundaries. (`$` also matches before a final
/// newline in both, which regex-automata's `$` does not: refused.)
fn check_looks(hir: &Hir, what: &str) -> Result<(), String> {
    let bad = hir
        .properties()
        .look_set()
        .iter()
        .find(|l| !matches!(l, Look::Start | Look::WordAscii | Look::WordAsciiNegate));
    match bad {
        Some(l) => Err(format!("{what}: unsupported assertion {l:?}")),
        None => Ok(()),
    }
}

/// True when no class of `hir` matches a byte >= 0x80 (literals may hold non-ASCII characters:
/// they match whole UTF-8 sequences).
fn classes_ascii(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Bytes(c)) => c.ranges().iter().all(|r| r.end() < 0x80),
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().all(|r| (r.end() as u32) < 0x80),
        HirKind::Repetition(r) => classes_ascii(&r.sub),
        HirKind::Capture(c) => classes_ascii(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().all(classes_ascii),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Look(_) => true,
    }
}

/// The bytes a match of `hir` can begin (`first`) or end with, and whether it can be empty.
fn edge_bytes(hir: &Hir, first: bool) -> ([bool; 256], bool) {
    let mut set = [false; 256];
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => (set, true),
        HirKind::Literal(l) => match if first { l.0.first() } else { l.0.last() } {
            Some(&b) => {
                set[b as usize] = true;
                (set, false)
            }
            None => (set, true),
        },
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set[b as usize] = true;
                }
            }
            (set, false)
        }
        HirKind::Class(Class::Unicode(c)) => {
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    let mut buf = [0u8; 4];
                    let s = ch.encode_utf8(&mut buf);
                    let b = if first { s.as_bytes()[0] } else { s.as_bytes()[s.len() - 1] };
                    set[b as usize] = true;
                }
            }
            (set, false)
        }
        HirKind::Repetition(r) => {
            let (s, nullable) = edge_bytes(&r.sub, first);
            (s, nullable || r.min == 0)
        }
        HirKind::Capture(c) => edge_bytes(&c.sub, first),
        HirKind::Alternation(v) => {
            let mut nullable = false;
            for h in v {
                let (s, n) = edge_bytes(h, first);
                for b in 0..256 {
                    set[b] |= s[b];
                }
                nullable |= n;
            }
            (set, nullable)
        }
        HirKind::Concat(v) => {
            let mut go = |h: &Hir| {
                let (s, n) = edge_bytes(h, first);
                for b in 0..256 {
                    set[b] |= s[b];
                }
                n
            };
            let mut nullable = true;
            if first {
                for h in v.iter() {
                    if !go(h) {
                        nullable = false;
                        break;
                    }
                }
            } else {
                for h in v.iter().rev() {
                    if !go(h) {
                        nullable = false;
                        break;
                    }
                }
            }
            (set, nullable)
        }
    }
}

impl Engine {
    pub fn new(tables: &EngineTables) -> Result<Engine, String> {
        let n = tables.patterns.len();
        let mut fwd_patterns: Vec<String> = Vec::with_capacity(n + tables.keywords.len());
        let mut post = Vec::with_capacity(n);
        for (i, p) in tables.patterns.iter().enumerate() {
            let what = format!("pattern {i} ({} {})", p.detector.name(), p.kind);
            let hir = parse(&p.regex, p.caseless).map_err(|e| format!("{what}: {e}"))?;
            check_looks(&hir, &what)?;
            if hir.properties().minimum_len().unwrap_or(0) == 0 {
                return Err(format!("{what}: can match the empty string"));
            }
            if hir.properties().maximum_len().is_none() {
                // Bounded patterns keep the reverse search for a start bounded (and linear).
                return Err(format!("{what}: unbounded repetition"));
            }
            // Offsets must fall on character boundaries (as `_map_offsets` assumes).
            for first in [true, false] {
                let (set, _) = edge_bytes(&hir, first);
                if set[0x80..].iter().any(|&b| b) {
                    return Err(format!("{what}: a match can {} with a non-ASCII byte", if first { "start" } else { "end" }));
                }
            }
            fwd_patterns.push(if p.caseless { format!("(?i:{})", p.regex) } else { p.regex.clone() });

            let extend = match &p.extend {
                None => None,
                Some(x) => {
                    let xhir = parse(x, false).map_err(|e| format!("{what} extend: {e}"))?;
                    check_looks(&xhir, &format!("{what} extend"))?;
                    if !classes_ascii(&xhir) {
                        return Err(format!("{what} extend: a class matches non-ASCII bytes"));
                    }
                    let re = meta::Regex::builder()
                        .syntax(syntax_config())
                        .configure(meta::Config::new().utf8_empty(false))
                        .build(x)
                        .map_err(|e| format!("{what} extend: {e}"))?;
                    Some(re)
                }
            };
            let left = match &p.left_class {
                None => None,
                Some(c) => {
                    let chir = parse(&format!("[{c}]"), false).map_err(|e| format!("{what} left_class: {e}"))?;
                    let mut set = [false; 256];
                    match chir.kind() {
                        HirKind::Class(Class::Bytes(cls)) => {
                            for r in cls.ranges() {
                                for b in r.start()..=r.end() {
                                    set[b as usize] = true;
                                }
                            }
                        }
                        HirKind::Literal(l) if l.0.len() == 1 => set[l.0[0] as usize] = true,
                        _ => return Err(format!("{what} left_class: not a class")),
                    }
                    if set[0x80..].iter().any(|&b| b) {
                        return Err(format!("{what} left_class: matches non-ASCII bytes"));
                    }
                    if let Some(py) = &p.left_bytes {
                        let mut theirs = [false; 256];
                        for &b in py {
                            theirs[b as usize] = true;
                        }
                        if theirs != set {
                            return Err(format!("{what} left_class: read differently from Python re"));
                        }
                    }
                    if p.left_max == 0 {
                        return Err(format!("{what}: left_class with left_max 0"));
                    }
                    Some((set, p.left_max))
                }
            };
            let props = hir.properties();
            let fixed_len = if props.minimum_len() == props.maximum_len() { props.minimum_len() } else { None };
            post.push(Post {
                fixed_len,
                all_ends: p.all_ends,
                plain: p.all_ends && p.extend.is_none() && p.left_class.is_none(),
                value_after: p.value_after_anchor,
                left,
                extend,
            });
        }
        let mut kw_len = Vec::with_capacity(tables.keywords.len());
        for k in &tables.keywords {
            if !k.is_ascii() || k.is_empty() {
                return Err(format!("keyword {k:?} must be non-empty ASCII"));
            }
            kw_len.push(k.len());
            fwd_patterns.push(keyword_regex(k));
        }

        let fwd = DFA::builder()
            .syntax(syntax_config())
            .thompson(thompson::Config::new().utf8(false))
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .unicode_word_boundary(false)
                    .cache_capacity(CACHE_CAPACITY)
                    .skip_cache_capacity_check(true),
            )
            .build_many(&fwd_patterns)
            .map_err(|e| format!("forward automaton: {e}"))?;
        let mut rev = Vec::with_capacity(n);
        for (i, pattern) in fwd_patterns[..n].iter().enumerate() {
            if post[i].fixed_len.is_some() {
                rev.push(None);
                continue;
            }
            let dfa = DFA::builder()
                .syntax(syntax_config())
                .thompson(thompson::Config::new().utf8(false).reverse(true))
                .configure(
                    DFA::config()
                        .match_kind(MatchKind::All)
                        .unicode_word_boundary(false)
                        .cache_capacity(REV_CACHE_CAPACITY)
                        .skip_cache_capacity_check(true),
                )
                .build(pattern)
                .map_err(|e| format!("reverse automaton of pattern {i}: {e}"))?;
            rev.push(Some(dfa));
        }

        let inner = Arc::new(Inner { fwd, rev, post, kw_len, n_patterns: n });
        let for_pool = Arc::clone(&inner);
        let create: CacheFn = Box::new(move || Caches {
            fwd: for_pool.fwd.create_cache(),
            rev: for_pool.rev.iter().map(|d| d.as_ref().map(|d| d.create_cache())).collect(),
            ext: for_pool.post.iter().map(|p| p.extend.as_ref().map(|r| r.create_cache())).collect(),
            nfa: NfaCache::default(),
            walk: Walk::default(),
        });
        Ok(Engine { inner, pool: Pool::new(create) })
    }

    /// Number of patterns (keywords not counted).
    pub fn pattern_len(&self) -> usize {
        self.inner.n_patterns
    }

    /// `dlp._engine.scan_text(text)` with UTF-8 byte offsets: candidates sorted by start, longest
    /// first, and keyword hits sorted.
    pub fn scan(&self, text: &str) -> (Vec<Candidate>, Vec<Hit>) {
        let mut caches = self.pool.get();
        let mut raw: Vec<Candidate> = Vec::new();
        let mut hits: Vec<Hit> = Vec::new();
        let inner = &*self.inner;
        if inner.dfa_scan(&mut caches, text.as_bytes(), &mut raw, &mut hits).is_err() {
            raw.clear();
            hits.clear();
            inner.nfa_scan(&mut caches.nfa, text.as_bytes(), &mut raw, &mut hits);
        }
        let out = inner.post_process(&mut caches, text.as_bytes(), raw);
        hits.sort_unstable();
        (out, hits)
    }

    /// The same scan through the NFA simulation only (no lazy DFA): for tests.
    pub fn scan_nfa(&self, text: &str) -> (Vec<Candidate>, Vec<Hit>) {
        let mut caches = self.pool.get();
        let mut raw = Vec::new();
        let mut hits = Vec::new();
        let inner = &*self.inner;
        inner.nfa_scan(&mut caches.nfa, text.as_bytes(), &mut raw, &mut hits);
        let out = inner.post_process(&mut caches, text.as_bytes(), raw);
        hits.sort_unstable();
        (out, hits)
    }

    /// The raw reports (pattern, leftmost start, end) before post-processing, in no particular
    /// order, from the lazy DFAs (`nfa == false`) or the NFA simulation: for tests.
    pub fn raw_reports(&self, text: &str, nfa: bool) -> (Vec<Candidate>, Vec<Hit>) {
        let mut caches = self.pool.get();
        let mut raw = Vec::new();
        let mut hits = Vec::new();
        let inner = &*self.inner;
        if nfa {
            inner.nfa_scan(&mut caches.nfa, text.as_bytes(), &mut raw, &mut hits);
        } else {
            inner
                .dfa_scan(&mut caches, text.as_bytes(), &mut raw, &mut hits)
                .expect("lazy DFA gave up");
        }
        raw.sort_unstable();
        hits.sort_unstable();
        (raw, hits)
    }
}

impl Inner {
    /// Every (pattern, leftmost start, end) and every keyword hit, by the lazy DFAs.
    fn dfa_scan(
        &self,
        caches: &mut Caches,
        hay: &[u8],
        raw: &mut Vec<Candidate>,
        hits: &mut Vec<Hit>,
    ) -> Result<(), MatchError> {
        let n = self.n_patterns;
        let Caches { fwd, rev, walk, .. } = caches;
        walk.reports.clear();
        if !self.fwd_parallel(fwd, walk, hay)? {
            walk.reports.clear();
            self.fwd_sequential(fwd, hay, &mut walk.reports)?;
        }
        walk.pending.clear();
        for &(pid, end) in walk.reports.iter() {
            let pid = pid as usize;
            if pid < n {
                match self.post[pid].fixed_len {
                    Some(len) => raw.push(Candidate { pattern: pid as u32, start: end - len, end }),
                    None => walk.pending.push((pid as u32, end)),
                }
            } else {
                let k = pid - n;
                let e = end - 1;
                hits.push(Hit { start: e - self.kw_len[k], end: e, keyword: k as u32 });
            }
        }
        for group in walk.pending.chunks(REV_WALKERS) {
            if !self.starts_interleaved(rev, hay, group, raw)? {
                for &(pid, end) in group {
                    let start = self.start_one(rev, hay, pid, end)?;
                    raw.push(Candidate { pattern: pid, start, end });
                }
            }
        }
        Ok(())
    }

    /// Pushes every pattern of the match state `sid` as ending at `at`.
    #[inline]
    fn emit(&self, cache: &DfaCache, sid: LazyStateID, at: usize, out: &mut Vec<(u32, usize)>) {
        for i in 0..self.fwd.match_len(cache, sid) {
            out.push((self.fwd.match_pattern(cache, sid, i).as_u32(), at));
        }
    }

    /// Handles a tagged state of the forward walk: reports a match, refuses a quit.
    #[inline]
    fn fwd_tagged(&self, cache: &DfaCache, sid: LazyStateID, hay: &[u8], at: usize, out: &mut Vec<(u32, usize)>) -> Result<(), MatchError> {
        if sid.is_match() {
            self.emit(cache, sid, at, out);
        } else if sid.is_quit() {
            return Err(MatchError::quit(hay[at], at));
        }
        Ok(())
    }

    /// The forward automaton over the whole text, one byte after the other: (pattern, end) of
    /// every match (a match state is entered one byte after the match ends).
    fn fwd_sequential(&self, cache: &mut DfaCache, hay: &[u8], out: &mut Vec<(u32, usize)>) -> Result<(), MatchError> {
        let dfa = &self.fwd;
        let mut sid = dfa.start_state_forward(cache, &Input::new(hay))?;
        for (at, &b) in hay.iter().enumerate() {
            sid = dfa.next_state(cache, sid, b).map_err(|_| MatchError::gave_up(at))?;
            if sid.is_tagged() {
                self.fwd_tagged(cache, sid, hay, at, out)?;
            }
        }
        sid = dfa.next_eoi_state(cache, sid).map_err(|_| MatchError::gave_up(hay.len()))?;
        if sid.is_match() {
            self.emit(cache, sid, hay.len(), out);
        }
        Ok(())
    }

    /// The same reports, with the text cut in `K` chunks walked side by side (their
    /// transitions are independent loads, so the CPU overlaps them). Walker `i + 1` starts at
    /// its chunk's start knowing nothing of matches already under way; walker `i` then goes on
    /// past its chunk until its state is the very state walker `i + 1` had at the same offset
    /// (the matches under way at the cut have ended: all patterns are bounded), and from there
    /// walker `i + 1`'s reports are the truth. Returns false (the caller walks sequentially)
    /// when a text is too short, when no convergence comes within `CONVERGE` bytes, or when the
    /// cache was cleared on the way (which invalidates the other walkers' states).
    fn fwd_parallel(&self, cache: &mut DfaCache, walk: &mut Walk, hay: &[u8]) -> Result<bool, MatchError> {
        let len = hay.len();
        if len >= 4 * CHUNK_MIN {
            self.fwd_chunks::<4>(cache, walk, hay)
        } else if len >= 2 * CHUNK_MIN {
            self.fwd_chunks::<2>(cache, walk, hay)
        } else {
            Ok(false)
        }
    }

    #[inline(never)]
    fn fwd_chunks<const K: usize>(&self, cache: &mut DfaCache, walk: &mut Walk, hay: &[u8]) -> Result<bool, MatchError> {
        let dfa = &self.fwd;
        let len = hay.len();
        let mut bound = [0usize; 5];
        for (i, b) in bound.iter_mut().enumerate().take(K + 1) {
            *b = len * i / K;
        }
        let chunk = len / K; // the shortest chunk is at least this long (minus one)
        let window = CONVERGE.min(chunk - 1);
        walk.rec.clear();
        walk.rec.resize(K * window, LazyStateID::default());
        for out in walk.out.iter_mut() {
            out.clear();
        }
        let mut sid = [LazyStateID::default(); 4];
        for i in 0..K {
            sid[i] = dfa.start_state_forward(cache, &Input::new(hay).range(bound[i]..))?;
        }
        let clears = cache.clear_count();
        if clears != cache.clear_count() {
            return Ok(false);
        }
        let longest = (0..K).map(|i| bound[i + 1] - bound[i]).max().unwrap_or(0);
        for j in 0..longest {
            for i in 0..K {
                let at = bound[i] + j;
                if at >= bound[i + 1] {
                    continue;
                }
                let s = dfa.next_state(cache, sid[i], hay[at]).map_err(|_| MatchError::gave_up(at))?;
                if cache.clear_count() != clears {
                    return Ok(false);
                }
                sid[i] = s;
                if j < window {
                    walk.rec[i * window + j] = s;
                }
                if s.is_tagged() {
                    self.fwd_tagged(cache, s, hay, at, &mut walk.out[i])?;
                }
            }
        }
        // Walker i goes on into chunk i + 1 until it meets walker i + 1.
        let mut meet = [0usize; 4];
        for i in 0..K - 1 {
            let p = bound[i + 1];
            let mut s = sid[i];
            let mut met = None;
            for j in 0..window {
                let at = p + j;
                s = dfa.next_state(cache, s, hay[at]).map_err(|_| MatchError::gave_up(at))?;
                if cache.clear_count() != clears {
                    return Ok(false);
                }
                if s == walk.rec[(i + 1) * window + j] {
                    met = Some(at);
                    break;
                }
                if s.is_tagged() {
                    self.fwd_tagged(cache, s, hay, at, &mut walk.out[i])?;
                }
            }
            match met {
                Some(at) => meet[i] = at,
                None => return Ok(false),
            }
        }
        let last = dfa.next_eoi_state(cache, sid[K - 1]).map_err(|_| MatchError::gave_up(len))?;
        if cache.clear_count() != clears {
            return Ok(false);
        }
        if last.is_match() {
            self.emit(cache, last, len, &mut walk.out[K - 1]);
        }
        for i in 0..K {
            let from = if i == 0 { 0 } else { meet[i - 1] };
            let Walk { out, reports, .. } = walk;
            reports.extend(out[i].iter().filter(|&&(_, end)| end >= from));
        }
        Ok(true)
    }

    /// The leftmost start of a match of `pid` ending at `end`: the reverse automaton, anchored
    /// at `end` and at that pattern, run until it dies; with `MatchKind::All` its last match is
    /// the smallest start.
    fn start_one(&self, caches: &mut [Option<DfaCache>], hay: &[u8], pid: u32, end: usize) -> Result<usize, MatchError> {
        let (Some(dfa), Some(cache)) = (&self.rev[pid as usize], &mut caches[pid as usize]) else {
            return Err(MatchError::gave_up(end));
        };
        match dfa.try_search_rev(cache, &Input::new(hay).range(..end).anchored(Anchored::Yes))? {
            Some(m) => Ok(m.offset()),
            // The forward automaton saw a match ending here: the reverse one must too.
            None => Err(MatchError::gave_up(end)),
        }
    }

    /// `start_one` for up to `REV_WALKERS` reports at once, walked side by side. Returns false
    /// (nothing pushed) if the cache was cleared on the way.
    #[inline(never)]
    fn starts_interleaved(
        &self,
        caches: &mut [Option<DfaCache>],
        hay: &[u8],
        group: &[(u32, usize)],
        raw: &mut Vec<Candidate>,
    ) -> Result<bool, MatchError> {
        let mut sid = [LazyStateID::default(); REV_WALKERS];
        let mut at = [0usize; REV_WALKERS];
        let mut start = [usize::MAX; REV_WALKERS];
        let mut live = [false; REV_WALKERS];
        let mut clears = [0usize; REV_WALKERS];
        let mut n_live = 0;
        for (w, &(pid, end)) in group.iter().enumerate() {
            let (Some(dfa), Some(cache)) = (&self.rev[pid as usize], &mut caches[pid as usize]) else {
                return Err(MatchError::gave_up(end));
            };
            clears[w] = cache.clear_count();
            let s = dfa.start_state_reverse(cache, &Input::new(hay).range(..end).anchored(Anchored::Yes))?;
            if (0..w).any(|v| group[v].0 == pid && clears[v] != cache.clear_count()) || clears[w] != cache.clear_count() {
                return Ok(false);
            }
            if s.is_tagged() && !s.is_match() {
                if s.is_quit() {
                    return Err(MatchError::quit(hay[end], end));
                }
                continue; // dead: no match (reported as an inconsistency below)
            }
            sid[w] = s;
            at[w] = end;
            live[w] = true;
            n_live += 1;
        }
        while n_live > 0 {
            for w in 0..group.len() {
                if !live[w] {
                    continue;
                }
                let pid = group[w].0 as usize;
                let (Some(dfa), Some(cache)) = (&self.rev[pid], &mut caches[pid]) else { unreachable!() };
                let s = if at[w] == 0 {
                    live[w] = false;
                    n_live -= 1;
                    let s = dfa.next_eoi_state(cache, sid[w]).map_err(|_| MatchError::gave_up(0))?;
                    if s.is_match() {
                        start[w] = 0;
                    }
                    s
                } else {
                    at[w] -= 1;
                    let s = dfa.next_state(cache, sid[w], hay[at[w]]).map_err(|_| MatchError::gave_up(at[w]))?;
                    if s.is_tagged() {
                        if s.is_match() {
                            start[w] = at[w] + 1;
                        } else if s.is_dead() {
                            live[w] = false;
                            n_live -= 1;
                        } else if s.is_quit() {
                            return Err(MatchError::quit(hay[at[w]], at[w]));
                        }
                    }
                    s
                };
                // A cleared cache invalidates the states of the other walkers on it.
                if cache.clear_count() != clears[w] {
                    return Ok(false);
                }
                sid[w] = s;
            }
        }
        for (w, &(pid, end)) in group.iter().enumerate() {
            if start[w] == usize::MAX {
                return Err(MatchError::gave_up(end));
            }
            raw.push(Candidate { pattern: pid, start: start[w], end });
        }
        Ok(true)
    }

    /// `scan_text`'s loop over the sorted reports.
    #[inline(never)]
    fn post_process(&self, caches: &mut Caches, hay: &[u8], mut raw: Vec<Candidate>) -> Vec<Candidate> {
        if raw.is_empty() {
            return raw;
        }
        // (start, -end, pattern): by start, longest first.
        raw.sort_unstable_by(|a, b| (a.start, b.end, a.pattern).cmp(&(b.start, a.end, b.pattern)));
        let mut out: Vec<Candidate> = Vec::with_capacity(raw.len());
        let mut moved = false;
        // seen[pid] == start + 1: that pattern already gave its longest match at that start
        // (reports come by start, so one slot per pattern is enough).
        let mut seen = [0usize; 64];
        let mut seen_big: Vec<usize> = Vec::new();
        if self.n_patterns > 64 {
            seen_big.resize(self.n_patterns, 0);
        }
        for c in raw {
            let pid = c.pattern as usize;
            let p = &self.post[pid];
            if p.plain {
                out.push(c);
                continue;
            }
            let mut start = c.start;
            let end = c.end;
            if !p.all_ends {
                let slot = if pid < 64 { &mut seen[pid] } else { &mut seen_big[pid] };
                if *slot == start + 1 {
                    continue;
                }
                *slot = start + 1;
            }
            if let Some((set, max)) = &p.left {
                let lo = start.saturating_sub(*max);
                let mut s = start;
                while s > lo && set[hay[s - 1] as usize] {
                    s -= 1;
                }
                if s == start {
                    continue;
                }
                start = s;
                moved = true;
            }
            match &p.extend {
                None => out.push(Candidate { pattern: c.pattern, start, end }),
                Some(re) => {
                    let cache = caches.ext[pid].as_mut().expect("extend cache");
                    let inp = Input::new(hay).range(end..).anchored(Anchored::Yes);
                    if let Some(m) = re.search_half_with(cache, &inp) {
                        out.push(Candidate {
                            pattern: c.pattern,
                            start: if p.value_after { end } else { start },
                            end: m.offset(),
                        });
                    }
                }
            }
        }
        if moved {
            out.sort_by(|a, b| (a.start, b.end, a.pattern).cmp(&(b.start, a.end, b.pattern)));
        }
        out
    }

    /// Every (pattern, leftmost start, end) and keyword hit by simulating the forward NFA,
    /// each thread carrying the start of its match; threads are kept in order of start so the
    /// first to reach an NFA state holds the leftmost start. O(text × NFA states).
    fn nfa_scan(&self, cache: &mut NfaCache, hay: &[u8], raw: &mut Vec<Candidate>, hits: &mut Vec<Hit>) {
        let nfa: &NFA = self.fwd.get_nfa();
        let n = self.n_patterns;
        cache.init(nfa.states().len());
        let start_id = nfa.start_anchored();
        let NfaCache { clist, nlist, stack } = cache;
        clist.clear();
        closure(nfa, hay, 0, start_id, 0, clist, stack);
        let mut at = 0;
        loop {
            for &(sid, s) in clist.dense.iter() {
                if let State::Match { pattern_id } = nfa.state(sid) {
                    let pid = pattern_id.as_usize();
                    if pid < n {
                        raw.push(Candidate { pattern: pid as u32, start: s, end: at });
                    } else {
                        let k = pid - n;
                        let e = at - 1;
                        hits.push(Hit { start: e - self.kw_len[k], end: e, keyword: k as u32 });
                    }
                }
            }
            if at == hay.len() {
                break;
            }
            let b = hay[at];
            nlist.clear();
            for &(sid, s) in clist.dense.iter() {
                let next = match nfa.state(sid) {
                    State::ByteRange { trans } => trans.matches_byte(b).then_some(trans.next),
                    State::Sparse(t) => t.matches_byte(b),
                    State::Dense(t) => t.matches_byte(b),
                    _ => None,
                };
                if let Some(next) = next {
                    closure(nfa, hay, at + 1, next, s, nlist, stack);
                }
            }
            closure(nfa, hay, at + 1, start_id, at + 1, nlist, stack);
            std::mem::swap(clist, nlist);
            at += 1;
        }
    }
}

/// Scratch space of the lazy DFA walks.
#[derive(Default)]
struct Walk {
    /// (pattern or keyword id, end) of every forward match.
    reports: Vec<(u32, usize)>,
    /// Reports still needing their start.
    pending: Vec<(u32, usize)>,
    /// Per forward walker: its reports, and its first states (for the convergence test).
    out: [Vec<(u32, usize)>; 4],
    rec: Vec<LazyStateID>,
}

/// A set of NFA states in insertion order, each with the start of the thread that reached it.
#[derive(Default)]
struct SparseSet {
    dense: Vec<(StateID, usize)>,
    sparse: Vec<u32>,
}

impl SparseSet {
    fn resize(&mut self, n: usize) {
        if self.sparse.len() != n {
            self.sparse = vec![0; n];
            self.dense.clear();
        }
    }
    fn clear(&mut self) {
        self.dense.clear();
    }
    fn contains(&self, id: StateID) -> bool {
        let i = self.sparse[id.as_usize()] as usize;
        i < self.dense.len() && self.dense[i].0 == id
    }
    fn insert(&mut self, id: StateID, start: usize) -> bool {
        if self.contains(id) {
            return false;
        }
        self.sparse[id.as_usize()] = self.dense.len() as u32;
        self.dense.push((id, start));
        true
    }
}

#[derive(Default)]
struct NfaCache {
    clist: SparseSet,
    nlist: SparseSet,
    stack: Vec<StateID>,
}

impl NfaCache {
    fn init(&mut self, states: usize) {
        self.clist.resize(states);
        self.nlist.resize(states);
    }
}

/// Adds the epsilon closure of `id` at position `at` to `set`, every state with `start` unless
/// already there (with a start as far left or further).
fn closure(nfa: &NFA, hay: &[u8], at: usize, id: StateID, start: usize, set: &mut SparseSet, stack: &mut Vec<StateID>) {
    stack.push(id);
    while let Some(id) = stack.pop() {
        if !set.insert(id, start) {
            continue;
        }
        match nfa.state(id) {
            State::ByteRange { .. } | State::Sparse(_) | State::Dense(_) | State::Match { .. } | State::Fail => {}
            State::Look { look, next } => {
                if nfa.look_matcher().matches(*look, hay, at) {
                    stack.push(*next);
                }
            }
            State::Union { alternates } => stack.extend(alternates.iter().rev()),
            State::BinaryUnion { alt1, alt2 } => {
                stack.push(*alt2);
                stack.push(*alt1);
            }
            State::Capture { next, .. } => stack.push(*next),
        }
    }
}

#[doc(hidden)]
pub mod probe {
    use super::*;
    pub fn fwd_only(e: &Engine, text: &str) -> usize {
        let mut caches = e.pool.get();
        let input = Input::new(text.as_bytes());
        let mut state = OverlappingState::start();
        let mut n = 0;
        loop {
            e.inner.fwd.try_search_overlapping_fwd(&mut caches.fwd, &input, &mut state).unwrap();
            if state.get_match().is_none() { break }
            n += 1;
        }
        n
    }
    pub fn fwd_walk(e: &Engine, text: &str) -> usize {
        let mut caches = e.pool.get();
        let dfa = &e.inner.fwd;
        let cache = &mut caches.fwd;
        let input = Input::new(text.as_bytes());
        let mut sid = dfa.start_state_forward(cache, &input).unwrap();
        let mut n = 0;
        for &b in text.as_bytes() {
            sid = dfa.next_state(cache, sid, b).unwrap();
            if sid.is_match() { n += dfa.match_len(cache, sid); }
        }
        n
    }
    pub fn build_dfa(pats: &[String]) -> DFA {
        DFA::builder()
            .syntax(syntax_config())
            .thompson(thompson::Config::new().utf8(false))
            .configure(DFA::config().match_kind(MatchKind::All).unicode_word_boundary(false).cache_capacity(CACHE_CAPACITY).skip_cache_capacity_check(true))
            .build_many(pats).unwrap()
    }
    pub fn walk(dfa: &DFA, cache: &mut DfaCache, text: &str) -> usize {
        let input = Input::new(text.as_bytes());
        let mut sid = dfa.start_state_forward(cache, &input).unwrap();
        let mut n = 0;
        for &b in text.as_bytes() {
            sid = dfa.next_state(cache, sid, b).unwrap();
            if sid.is_match() { n += dfa.match_len(cache, sid); }
        }
        n
    }
    pub fn kw(w: &str) -> String { keyword_regex(w) }
    pub fn stats(e: &Engine) -> String {
        let caches = e.pool.get();
        format!("fwd clears {} mem {} | rev clears {} mem {} | nfa states {}", caches.fwd.clear_count(), caches.fwd.memory_usage(), caches.rev.iter().flatten().map(|c| c.clear_count()).sum::<usize>(), caches.rev.iter().flatten().map(|c| c.memory_usage()).sum::<usize>(), e.inner.fwd.get_nfa().states().len())
    }
}
