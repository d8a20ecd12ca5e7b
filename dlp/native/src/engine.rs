//! The candidate engine: one pass over the text that finds every candidate of every pattern and
//! every context keyword — the port of `dlp._engine.scan_text` with its Hyperscan scanner.
//!
//! What Hyperscan gives (`HS_MODE_BLOCK`, `HS_FLAG_SOM_LEFTMOST` on every pattern, caseless where
//! asked, no UTF-8 mode): for every pattern and every end offset at which some match of it ends,
//! one report with the leftmost start of a match ending there. Patterns and text are bytes;
//! `\b`, `\d`, `\w` are ASCII, caseless folds ASCII only.
//!
//! Here (regex-automata, byte mode, Unicode off so that the same holds):
//! * one lazy DFA over all patterns and keywords, `MatchKind::All`, unanchored: walked over the
//!   text byte by byte, every match state gives every (pattern, end) once. A text of 512 bytes or
//!   more is walked as two halves side by side, the first walker going on past the cut until its
//!   state is the second walker's there (see `forward`);
//! * for a pattern's end, that pattern's reverse lazy DFA anchored at the end (`MatchKind::All`,
//!   so the reverse walk runs until the automaton dies, and its last match is the smallest start):
//!   the leftmost start. Every pattern is bounded, so a walk is at most the pattern's longest
//!   match; a few walks go side by side. Fixed-length patterns (and keywords) need none;
//! * should a lazy DFA ever give up (it is configured so it cannot: no Unicode word boundary, so
//!   no quit byte, and no minimum cache efficiency), the scan is redone by a direct NFA simulation
//!   that tracks the leftmost start per NFA state (`Inner::nfa_scan`): slower, same answer. A
//!   cache cleared during a walk of several walkers makes that walk start again with one.
//!
//! Then `scan_text`'s post-processing (sort, longest per start, left runs, extenders), in bytes.
//! The `extend` regexes are Python `re.ASCII` regexes; they are compiled in byte mode and must not
//! match any non-ASCII byte except as part of a literal (checked at construction), so that their
//! byte-level and character-level answers are the same.

use std::sync::Arc;

use regex_automata::{
    hybrid::{
        dfa::{Cache as DfaCache, DFA},
        LazyStateID,
    },
    meta,
    nfa::thompson::{self, State, NFA},
    util::{pool::Pool, primitives::StateID, syntax},
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
    /// The longest match (no match starts further back from its end).
    max_len: usize,
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

/// The lazy DFAs' caches per thread: the forward automaton's, and each reverse one's. A cleared
/// cache costs time, never an answer; these keep the states of realistic traffic resident (the
/// 2 KB gateway ticket needs about 0.5 MB forward, under 0.1 MB for all reverse ones).
const CACHE_CAPACITY: usize = 4 << 20;
const REV_CACHE_CAPACITY: usize = 1 << 20;
/// Texts of at least `2 * CHUNK_MIN` bytes are walked in 2 chunks side by side.
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
                    let b = if first {
                        s.as_bytes()[0]
                    } else {
                        s.as_bytes()[s.len() - 1]
                    };
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
        Engine::with_cache_capacity(tables, CACHE_CAPACITY, REV_CACHE_CAPACITY)
    }

    /// `new` with other lazy DFA cache sizes (bytes per thread; the forward automaton's, and each
    /// reverse automaton's). Tiny caches are cleared all the time: slower, same answers.
    pub fn with_cache_capacity(tables: &EngineTables, forward: usize, reverse: usize) -> Result<Engine, String> {
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
                    return Err(format!(
                        "{what}: a match can {} with a non-ASCII byte",
                        if first { "start" } else { "end" }
                    ));
                }
            }
            fwd_patterns.push(if p.caseless {
                format!("(?i:{})", p.regex)
            } else {
                p.regex.clone()
            });

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
            let fixed_len = if props.minimum_len() == props.maximum_len() {
                props.minimum_len()
            } else {
                None
            };
            post.push(Post {
                fixed_len,
                max_len: props.maximum_len().unwrap_or(usize::MAX),
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
                    .cache_capacity(forward)
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
                        .cache_capacity(reverse)
                        .skip_cache_capacity_check(true),
                )
                .build(pattern)
                .map_err(|e| format!("reverse automaton of pattern {i}: {e}"))?;
            rev.push(Some(dfa));
        }

        let inner = Arc::new(Inner {
            fwd,
            rev,
            post,
            kw_len,
            n_patterns: n,
        });
        let for_pool = Arc::clone(&inner);
        let create: CacheFn = Box::new(move || Caches {
            fwd: for_pool.fwd.create_cache(),
            rev: for_pool
                .rev
                .iter()
                .map(|d| d.as_ref().map(|d| d.create_cache()))
                .collect(),
            ext: for_pool
                .post
                .iter()
                .map(|p| p.extend.as_ref().map(|r| r.create_cache()))
                .collect(),
            nfa: NfaCache::default(),
            walk: Walk::default(),
        });
        Ok(Engine {
            inner,
            pool: Pool::new(create),
        })
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
        if inner
            .dfa_scan(&mut caches, text.as_bytes(), &mut raw, &mut hits)
            .is_err()
        {
            raw.clear();
            hits.clear();
            inner.nfa_scan(&mut caches.nfa, text.as_bytes(), &mut raw, &mut hits);
        }
        let out = inner.post_process(&mut caches, text.as_bytes(), raw);
        hits.sort_unstable();
        (out, hits)
    }

    /// The same scan through the NFA simulation only (no lazy DFA; time linear in text × NFA
    /// size): for tests.
    #[doc(hidden)]
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

    /// The raw reports (pattern, leftmost start, end) before post-processing, sorted, from the
    /// lazy DFAs (`nfa == false`; panics if they give up) or the NFA simulation: for tests.
    #[doc(hidden)]
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
        self.forward(fwd, walk, hay)?;
        walk.pending.clear();
        for &(pid, end) in walk.reports.iter() {
            let pid = pid as usize;
            if pid < n {
                match self.post[pid].fixed_len {
                    Some(len) => raw.push(Candidate {
                        pattern: pid as u32,
                        start: end - len,
                        end,
                    }),
                    None => walk.pending.push((pid as u32, end)),
                }
            } else {
                let k = pid - n;
                let e = end - 1;
                hits.push(Hit {
                    start: e - self.kw_len[k],
                    end: e,
                    keyword: k as u32,
                });
            }
        }
        // By pattern (one reverse automaton and cache at a time), a few walks side by side.
        walk.pending.sort_unstable();
        for same in walk.pending.chunk_by(|a, b| a.0 == b.0) {
            let pid = same[0].0 as usize;
            let (Some(dfa), Some(cache)) = (&self.rev[pid], &mut rev[pid]) else {
                return Err(MatchError::gave_up(same[0].1));
            };
            let max_len = self.post[pid].max_len;
            for group in same.chunks(REV_WALKERS) {
                if !starts_interleaved(dfa, cache, hay, max_len, group, raw)? {
                    for &(pid, end) in group {
                        let input = Input::new(hay)
                            .range(end.saturating_sub(max_len)..end)
                            .anchored(Anchored::Yes);
                        match dfa.try_search_rev(cache, &input)? {
                            Some(m) => raw.push(Candidate {
                                pattern: pid,
                                start: m.offset(),
                                end,
                            }),
                            // The forward automaton saw a match ending here: the reverse one must too.
                            None => return Err(MatchError::gave_up(end)),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Pushes every pattern of the match state `sid` as ending at `at`.
    #[inline]
    fn emit(&self, cache: &DfaCache, memo: &mut Memo, sid: LazyStateID, at: usize, out: &mut Vec<(u32, usize)>) {
        let pids = memo.patterns(&self.fwd, cache, sid);
        out.extend(pids.iter().map(|&p| (p, at)));
    }

    /// One forward transition on `hay[at]`; a match state's patterns go to `out` as ending at
    /// `at` (a match state is entered one byte after the match ends).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        cache: &mut DfaCache,
        memo: &mut Memo,
        cur: LazyStateID,
        hay: &[u8],
        at: usize,
        guard: Guard,
        out: &mut Vec<(u32, usize)>,
    ) -> Result<LazyStateID, Stop> {
        if !cur.is_tagged() {
            let next = self.fwd.next_state_untagged(cache, cur, hay[at]);
            if !next.is_tagged() {
                return Ok(next);
            }
        }
        self.step_slow(cache, memo, cur, hay, at, guard, out)
    }

    /// `step` when the transition is not yet computed, or leads to or from a match state.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn step_slow(
        &self,
        cache: &mut DfaCache,
        memo: &mut Memo,
        cur: LazyStateID,
        hay: &[u8],
        at: usize,
        guard: Guard,
        out: &mut Vec<(u32, usize)>,
    ) -> Result<LazyStateID, Stop> {
        let next = self
            .fwd
            .next_state(cache, cur, hay[at])
            .map_err(|_| Stop::Fail(MatchError::gave_up(at)))?;
        if let Guard::Clears(c) = guard {
            if cache.clear_count() != c {
                return Err(Stop::Cleared);
            }
        }
        if next.is_match() {
            self.emit(cache, memo, next, at, out);
        } else if next.is_quit() {
            return Err(Stop::Fail(MatchError::quit(hay[at], at)));
        }
        Ok(next)
    }

    /// (pattern, end) of every forward match, in `walk.reports`.
    ///
    /// A text of `2 * CHUNK_MIN` bytes or more is cut in chunks walked side by side (their
    /// transitions are independent loads, which the CPU overlaps). Walker `i + 1` starts at its
    /// chunk's start knowing nothing of the matches under way there; walker `i` then goes on past
    /// its chunk until its state is the very state walker `i + 1` had at the same offset (the
    /// matches under way at the cut have ended: every pattern is bounded), and from there walker
    /// `i + 1`'s reports are the truth. If they do not meet within `CONVERGE` bytes, or the cache
    /// was cleared on the way (which invalidates the other walkers' states), the text is walked
    /// again in one piece.
    fn forward(&self, cache: &mut DfaCache, walk: &mut Walk, hay: &[u8]) -> Result<(), MatchError> {
        walk.reports.clear();
        // Two walkers: measured on the 2 KB ticket, three or more gain nothing more.
        if hay.len() >= 2 * CHUNK_MIN {
            match self.fwd_chunks::<2>(cache, walk, hay) {
                Ok(()) => return Ok(()),
                Err(Stop::Fail(e)) => return Err(e),
                Err(Stop::Cleared) => {
                    #[cfg(test)]
                    tests::WALKED_AGAIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    walk.reports.clear();
                }
            }
        }
        match self.fwd_chunks::<1>(cache, walk, hay) {
            Ok(()) => Ok(()),
            Err(Stop::Fail(e)) => Err(e),
            Err(Stop::Cleared) => unreachable!("a single walker survives a cleared cache"),
        }
    }

    #[inline(never)]
    fn fwd_chunks<const K: usize>(&self, cache: &mut DfaCache, walk: &mut Walk, hay: &[u8]) -> Result<(), Stop> {
        let dfa = &self.fwd;
        let len = hay.len();
        // Walker i covers [i * l, (i + 1) * l); the last one also the rest, [K * l, len).
        let l = len / K;
        let window = if K == 1 { 0 } else { CONVERGE.min(l) };
        // Every slot read is written first (walker i + 1's first `window` states).
        if walk.rec.len() < K * window {
            walk.rec.resize(K * window, LazyStateID::default());
        }
        for out in walk.out.iter_mut().take(K) {
            out.clear();
        }
        let clears = cache.clear_count();
        let mut sid = [LazyStateID::default(); K];
        for (i, s) in sid.iter_mut().enumerate() {
            *s = dfa
                .start_state_forward(cache, &Input::new(hay).range(i * l..))
                .map_err(Stop::Fail)?;
        }
        // One walker keeps its state valid through a cache clear; several do not (computing a
        // start state may clear the cache too).
        let g = if K == 1 { Guard::None } else { Guard::Clears(clears) };
        if K > 1 && cache.clear_count() != clears {
            return Err(Stop::Cleared);
        }
        let (rec, outs, memo) = (&mut walk.rec, &mut walk.out, &mut walk.memo);
        for j in 0..window {
            for i in 0..K {
                sid[i] = self.step(cache, memo, sid[i], hay, i * l + j, g, &mut outs[i])?;
                rec[i * window + j] = sid[i];
            }
        }
        for j in window..l {
            for i in 0..K {
                sid[i] = self.step(cache, memo, sid[i], hay, i * l + j, g, &mut outs[i])?;
            }
        }
        for at in K * l..len {
            sid[K - 1] = self.step(cache, memo, sid[K - 1], hay, at, g, &mut outs[K - 1])?;
        }
        // Walker i goes on into chunk i + 1 until it meets walker i + 1.
        let mut meet = [0usize; K];
        for i in 0..K - 1 {
            let p = (i + 1) * l;
            let mut s = sid[i];
            let mut met = false;
            for j in 0..window {
                s = self.step(cache, memo, s, hay, p + j, g, &mut Vec::new())?;
                if s == rec[(i + 1) * window + j] {
                    meet[i] = p + j;
                    met = true;
                    break;
                }
                // Not met: a match state's reports are walker i's (recomputed in order).
                if s.is_match() {
                    self.emit(cache, memo, s, p + j, &mut outs[i]);
                }
            }
            if !met {
                return Err(Stop::Cleared);
            }
        }
        let last = dfa
            .next_eoi_state(cache, sid[K - 1])
            .map_err(|_| Stop::Fail(MatchError::gave_up(len)))?;
        if let Guard::Clears(c) = g {
            if cache.clear_count() != c {
                return Err(Stop::Cleared);
            }
        }
        if last.is_match() {
            self.emit(cache, memo, last, len, &mut outs[K - 1]);
        }
        for i in 0..K {
            let from = if i == 0 { 0 } else { meet[i - 1] };
            walk.reports.extend(walk.out[i].iter().filter(|&&(_, end)| end >= from));
        }
        Ok(())
    }

    /// `scan_text`'s loop over the sorted reports.
    #[inline(never)]
    fn post_process(&self, caches: &mut Caches, hay: &[u8], mut raw: Vec<Candidate>) -> Vec<Candidate> {
        if raw.is_empty() {
            return raw;
        }
        // (start, -end, pattern): by start, longest first.
        raw.sort_unstable_by(|a, b| (a.start, b.end, a.pattern).cmp(&(b.start, a.end, b.pattern)));
        // Kept candidates are written back in place (each report gives at most one).
        let mut kept = 0;
        let mut moved = false;
        // seen[pid] == start + 1: that pattern already gave its longest match at that start
        // (reports come by start, so one slot per pattern is enough).
        let mut seen = [0usize; 64];
        let mut seen_big: Vec<usize> = Vec::new();
        if self.n_patterns > 64 {
            seen_big.resize(self.n_patterns, 0);
        }
        for r in 0..raw.len() {
            let c = raw[r];
            let pid = c.pattern as usize;
            let p = &self.post[pid];
            if p.plain {
                raw[kept] = c;
                kept += 1;
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
                None => {
                    raw[kept] = Candidate {
                        pattern: c.pattern,
                        start,
                        end,
                    };
                    kept += 1;
                }
                Some(re) => {
                    let cache = caches.ext[pid].as_mut().expect("extend cache");
                    let inp = Input::new(hay).range(end..).anchored(Anchored::Yes);
                    if let Some(m) = re.search_half_with(cache, &inp) {
                        raw[kept] = Candidate {
                            pattern: c.pattern,
                            start: if p.value_after { end } else { start },
                            end: m.offset(),
                        };
                        kept += 1;
                    }
                }
            }
        }
        raw.truncate(kept);
        if moved {
            // Stable, as Python's `sort`.
            raw.sort_by(|a, b| (a.start, b.end, a.pattern).cmp(&(b.start, a.end, b.pattern)));
        }
        raw
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
                        raw.push(Candidate {
                            pattern: pid as u32,
                            start: s,
                            end: at,
                        });
                    } else {
                        let k = pid - n;
                        let e = at - 1;
                        hits.push(Hit {
                            start: e - self.kw_len[k],
                            end: e,
                            keyword: k as u32,
                        });
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

/// The leftmost starts of matches of one pattern ending at `group`'s ends (up to
/// `REV_WALKERS`), pushed to `raw`: per end, the pattern's reverse automaton anchored there, run
/// until it dies (or `max_len` bytes back, where no match can start); with `MatchKind::All` its
/// last match is the smallest start. The walks go side by side. Returns false (nothing pushed)
/// if the cache was cleared on the way (which invalidates the other walks' states).
#[inline(never)]
fn starts_interleaved(
    dfa: &DFA,
    cache: &mut DfaCache,
    hay: &[u8],
    max_len: usize,
    group: &[(u32, usize)],
    raw: &mut Vec<Candidate>,
) -> Result<bool, MatchError> {
    let clears = cache.clear_count();
    let mut sid = [LazyStateID::default(); REV_WALKERS];
    let mut at = [0usize; REV_WALKERS];
    let mut lo = [0usize; REV_WALKERS];
    let mut start = [usize::MAX; REV_WALKERS];
    let mut live = [false; REV_WALKERS];
    let mut n_live = 0;
    for (w, &(_, end)) in group.iter().enumerate() {
        lo[w] = end.saturating_sub(max_len);
        let s = dfa.start_state_reverse(cache, &Input::new(hay).range(lo[w]..end).anchored(Anchored::Yes))?;
        if cache.clear_count() != clears {
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
            let cur = sid[w];
            if at[w] > lo[w] {
                at[w] -= 1;
                let b = hay[at[w]];
                if !cur.is_tagged() {
                    let next = dfa.next_state_untagged(cache, cur, b);
                    if !next.is_tagged() {
                        sid[w] = next;
                        continue;
                    }
                }
                let next = dfa.next_state(cache, cur, b).map_err(|_| MatchError::gave_up(at[w]))?;
                if cache.clear_count() != clears {
                    return Ok(false);
                }
                sid[w] = next;
                if next.is_match() {
                    start[w] = at[w] + 1;
                } else if next.is_dead() {
                    live[w] = false;
                    n_live -= 1;
                } else if next.is_quit() {
                    return Err(MatchError::quit(b, at[w]));
                }
            } else {
                // The range's start: the byte before it is look-behind context only.
                live[w] = false;
                n_live -= 1;
                let next = if lo[w] > 0 {
                    dfa.next_state(cache, cur, hay[lo[w] - 1])
                } else {
                    dfa.next_eoi_state(cache, cur)
                }
                .map_err(|_| MatchError::gave_up(lo[w]))?;
                if cache.clear_count() != clears {
                    return Ok(false);
                }
                if next.is_match() {
                    start[w] = lo[w];
                }
            }
        }
    }
    for (w, &(pid, end)) in group.iter().enumerate() {
        if start[w] == usize::MAX {
            return Err(MatchError::gave_up(end));
        }
        raw.push(Candidate {
            pattern: pid,
            start: start[w],
            end,
        });
    }
    Ok(true)
}

/// Why a walk of several walkers stopped.
enum Stop {
    /// The cache was cleared (or the walkers did not meet): walk again in one piece.
    Cleared,
    Fail(MatchError),
}

/// What a step checks after computing a transition: a cleared cache, when several walkers
/// hold states of it.
#[derive(Clone, Copy)]
enum Guard {
    None,
    Clears(usize),
}

/// Scratch space of the lazy DFA walks.
#[derive(Default)]
struct Walk {
    /// (pattern or keyword id, end) of every forward match.
    reports: Vec<(u32, usize)>,
    /// Reports still needing their start.
    pending: Vec<(u32, usize)>,
    /// Per forward walker: its reports, and its first states (for the convergence test).
    out: [Vec<(u32, usize)>; 2],
    rec: Vec<LazyStateID>,
    memo: Memo,
}

/// The patterns of forward match states, remembered by state (reading them from the lazy DFA
/// chases pointers): a direct-mapped table, forgotten when the cache is cleared.
#[derive(Default)]
struct Memo {
    clears: usize,
    /// Per slot: (state + 1, offset in `pids`, count); 0 = empty.
    slots: Vec<(u32, u32, u32)>,
    pids: Vec<u32>,
}

const MEMO_SLOTS: usize = 1024;

/// The bits of a state ID (regex-automata keeps its accessor private; its `Hash` writes them).
fn raw_id(sid: LazyStateID) -> u32 {
    use std::hash::{Hash, Hasher};
    struct Bits(u64);
    impl Hasher for Bits {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
        fn write_u32(&mut self, i: u32) {
            self.0 = u64::from(i);
        }
        fn finish(&self) -> u64 {
            self.0
        }
    }
    let mut h = Bits(0);
    sid.hash(&mut h);
    h.finish() as u32
}

impl Memo {
    fn patterns(&mut self, dfa: &DFA, cache: &DfaCache, sid: LazyStateID) -> &[u32] {
        if self.slots.is_empty() || self.clears != cache.clear_count() || self.pids.len() > 1 << 16 {
            self.slots.clear();
            self.slots.resize(MEMO_SLOTS, (0, 0, 0));
            self.pids.clear();
            self.clears = cache.clear_count();
        }
        let key = raw_id(sid);
        let slot = (key.wrapping_mul(0x9e37_79b1) >> 22) as usize % MEMO_SLOTS;
        let (k, off, n) = self.slots[slot];
        if k == key.wrapping_add(1) {
            return &self.pids[off as usize..(off + n) as usize];
        }
        let off = self.pids.len();
        for i in 0..dfa.match_len(cache, sid) {
            self.pids.push(dfa.match_pattern(cache, sid, i).as_u32());
        }
        let n = self.pids.len() - off;
        self.slots[slot] = (key.wrapping_add(1), off as u32, n as u32);
        &self.pids[off..]
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in the shape of `dlp._engine.native_tables()`, with patterns of the real table's
    /// kinds (the real one is checked against Python by tests/dlp/native/test_engine_parity.py).
    fn tables() -> EngineTables {
        let patterns = serde_json::json!([
            {"detector": "EMAIL", "kind": "email", "regex": "@[A-Za-z0-9]", "caseless": false,
             "extend": "[A-Za-z0-9.\\-]{0,252}\\.[A-Za-z]{2,24}\\b", "all_ends": false,
             "value_after_anchor": false, "left_class": "A-Za-z0-9._%+'*-", "left_max": 64, "left_bytes": null},
            {"detector": "PHONE", "kind": "intl", "regex": "(?:\\+|\\b00)[1-9][0-9 ().\\-/]{5,22}\\d\\b",
             "caseless": false, "extend": null, "all_ends": true, "value_after_anchor": false,
             "left_class": null, "left_max": 0, "left_bytes": null},
            {"detector": "PHONE", "kind": "national",
             "regex": "(?:\\(\\d{2,5}\\)[ .\\-]?|\\b\\d{2,5}[ .\\-/])\\d[\\d .\\-]{3,14}\\d\\b",
             "caseless": false, "extend": null, "all_ends": true, "value_after_anchor": false,
             "left_class": null, "left_max": 0, "left_bytes": null},
            {"detector": "PHONE", "kind": "bare", "regex": "\\b0?\\d{9,11}\\b", "caseless": false, "extend": null,
             "all_ends": false, "value_after_anchor": false, "left_class": null, "left_max": 0, "left_bytes": null},
            {"detector": "CREDIT_CARD", "kind": "card", "regex": "\\b\\d(?:[ \\-]?\\d){11,18}\\b", "caseless": false,
             "extend": null, "all_ends": true, "value_after_anchor": false, "left_class": null, "left_max": 0,
             "left_bytes": null},
            {"detector": "IP_ADDRESS", "kind": "v6",
             "regex": "(?:\\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::", "caseless": false,
             "extend": "[0-9A-Fa-f:.]{0,45}", "all_ends": false, "value_after_anchor": false,
             "left_class": null, "left_max": 0, "left_bytes": null},
            {"detector": "DATE_OF_BIRTH", "kind": "text_mdy",
             "regex": "\\b(?:jan|mar|märz|maerz|dec)[a-z]{0,7}\\.? \\d{1,2}(?:st|nd|rd|th)?\\.?,? \\d{4}\\b",
             "caseless": true, "extend": null, "all_ends": false, "value_after_anchor": false,
             "left_class": null, "left_max": 0, "left_bytes": null},
            {"detector": "SECRET", "kind": "aws_key_id", "regex": "\\b(?:AKIA|ASIA)[A-Z0-9]{16}\\b", "caseless": false,
             "extend": null, "all_ends": false, "value_after_anchor": false, "left_class": null, "left_max": 0,
             "left_bytes": null},
            {"detector": "SECRET", "kind": "assignment",
             "regex": "\\b(?:[a-z0-9]{1,20}[_\\-.])?(?:api[_\\-]?key|token|password)[\"']?[ \\t]{0,3}[:=][ \\t]{0,3}[\"']?",
             "caseless": true, "extend": "[A-Za-z0-9_\\-./+=~!@#$%^&*]{6,512}", "all_ends": false,
             "value_after_anchor": true, "left_class": null, "left_max": 0, "left_bytes": null}
        ]);
        let keywords = serde_json::json!(["date of birth", "dob", "phone", "ss#", "v"]);
        serde_json::from_value(serde_json::json!({"patterns": patterns, "keywords": keywords})).unwrap()
    }

    fn spans<'a>(text: &'a str, engine: &Engine) -> Vec<(u32, &'a str)> {
        engine
            .scan(text)
            .0
            .iter()
            .map(|c| (c.pattern, &text[c.start..c.end]))
            .collect()
    }

    #[test]
    fn candidates_after_post_processing() {
        let e = Engine::new(&tables()).unwrap();
        let text = "mail jane.roe@example.com, API_KEY = 'abcdefgh123' at fe80::1:2 or +1 415-555-0142!";
        assert_eq!(
            spans(text, &e),
            vec![
                (0, "jane.roe@example.com"),
                (8, "abcdefgh123"),
                (5, "fe80::1:2"),
                (1, "+1 415-555-0142"),
                (1, "+1 415-555"),
                (2, "415-555-0142"),
            ]
        );
        // No value after the anchor: no candidate.
        assert_eq!(spans("x@example and token= ab", &e), vec![]);
    }

    #[test]
    fn leftmost_start_of_every_end() {
        let e = Engine::new(&tables()).unwrap();
        // Every end of the card shape, each once, with its leftmost start (`1111 1111 1111 1`
        // also ends at 21: not reported).
        let text = "4111 1111 1111 1111 1";
        let got: Vec<_> = e
            .scan(text)
            .0
            .into_iter()
            .filter(|c| c.pattern == 4)
            .map(|c| (c.start, c.end))
            .collect();
        assert_eq!(got, vec![(0, 21), (0, 19), (0, 14)]);
        let got: Vec<_> = e
            .scan("x 1111 1111 1111 1")
            .0
            .into_iter()
            .map(|c| (c.pattern, c.start, c.end))
            .collect();
        assert_eq!(got, vec![(2, 2, 18), (4, 2, 18), (2, 2, 16), (4, 2, 16)]);
    }

    #[test]
    fn keyword_hits() {
        let e = Engine::new(&tables()).unwrap();
        let text = "Phone: 1, DOB(x), ss# 1, v2, dobby, xphone 1, date of birth\u{0}";
        let hits: Vec<_> = e
            .scan(text)
            .1
            .iter()
            .map(|h| (&text[h.start..h.end], h.keyword))
            .collect();
        assert_eq!(
            hits,
            vec![("Phone", 2), ("DOB", 1), ("ss#", 3), ("v", 4), ("date of birth", 0)]
        );
    }

    #[test]
    fn bytes_not_characters() {
        let e = Engine::new(&tables()).unwrap();
        // A non-ASCII literal matches its UTF-8 bytes; caseless folds ASCII only.
        assert_eq!(spans("born märz 3, 1990", &e), vec![(6, "märz 3, 1990")]);
        assert_eq!(spans("born MÄRZ 3, 1990", &e), vec![]);
        assert_eq!(spans("born MäRZ 3, 1990", &e), vec![(6, "MäRZ 3, 1990")]);
        // Non-ASCII characters are non-word: boundaries next to them.
        assert_eq!(spans("é4111111111111111€", &e), vec![(4, "4111111111111111")]);
        assert_eq!(spans("😀jane@example.com😀", &e), vec![(0, "jane@example.com")]);
    }

    #[test]
    fn refuses_what_it_cannot_reproduce() {
        let with = |f: &dyn Fn(&mut PatternSpec)| {
            let mut t = tables();
            f(&mut t.patterns[0]);
            Engine::new(&t).err()
        };
        assert!(with(&|p| p.regex = "@[a-z]$".into()).unwrap().contains("assertion"));
        assert!(with(&|p| p.regex = "@?".into()).unwrap().contains("empty"));
        assert!(with(&|p| p.regex = "@[a-z]+".into()).unwrap().contains("unbounded"));
        assert!(with(&|p| p.regex = "[^a]@".into()).unwrap().contains("non-ASCII"));
        assert!(with(&|p| p.extend = Some("[^\"]{1,5}".into()))
            .unwrap()
            .contains("non-ASCII"));
        assert!(with(&|p| p.left_bytes = Some(vec![b'a'])).unwrap().contains("Python"));
        assert!(with(&|p| p.left_class = Some("^a".into()))
            .unwrap()
            .contains("non-ASCII"));
        let mut t = tables();
        t.keywords.push("né".into());
        assert!(Engine::new(&t).is_err());
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const TOKENS: &[&str] = &[
        "0",
        "1",
        "4",
        "9",
        "00",
        " ",
        " ",
        "-",
        ".",
        "/",
        ":",
        "(",
        ")",
        "+",
        "@",
        "_",
        "=",
        "'",
        "\"",
        "\t",
        "a",
        "x",
        "Z",
        "ä",
        "€",
        "😀",
        "\u{0}",
        "\n",
        "phone",
        "DOB",
        "v",
        "ss#",
        "date of birth",
        "AKIA",
        "api_key=",
        "Token:",
        "DE89",
        "::",
        "fe80",
        "märz",
        "MÄRZ",
        "Mar",
        "1st",
        "@ex.com",
        "jane",
        "4111 1111 1111 1111",
        "+1 415-555-0142",
        "1234567890",
    ];

    fn random_text(rng: &mut Rng, tokens: usize) -> String {
        (0..tokens).map(|_| TOKENS[rng.below(TOKENS.len())]).collect()
    }

    #[test]
    fn lazy_dfas_agree_with_the_nfa_simulation() {
        let e = Engine::new(&tables()).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            // Short texts walk in one piece, longer ones (>= 512 bytes) in two.
            let n = if i % 5 == 0 {
                150 + rng.below(400)
            } else {
                rng.below(60)
            };
            let text = random_text(&mut rng, n);
            assert_eq!(e.raw_reports(&text, false), e.raw_reports(&text, true), "{text:?}");
            assert_eq!(e.scan(&text), e.scan_nfa(&text), "{text:?}");
        }
    }

    #[test]
    fn cleared_caches_give_the_same_answers() {
        let big = Engine::new(&tables()).unwrap();
        let tiny = Engine::with_cache_capacity(&tables(), 0, 0).unwrap();
        let mut rng = Rng(7);
        for _ in 0..300 {
            let n = 100 + rng.below(300);
            let text = random_text(&mut rng, n);
            assert_eq!(tiny.scan(&text), big.scan(&text), "{text:?}");
        }
    }

    pub(super) static WALKED_AGAIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn walkers_that_do_not_meet_walk_again() {
        let mut t = tables();
        t.patterns.push(
            serde_json::from_value(serde_json::json!({"detector": "SECRET", "kind": "long",
                "regex": "\\bx[a-z]{0,1000}y", "caseless": false, "extend": null, "all_ends": false,
                "value_after_anchor": false, "left_class": null, "left_max": 0, "left_bytes": null}))
            .unwrap(),
        );
        let e = Engine::new(&t).unwrap();
        // A match under way across the cut for longer than walkers may go to meet.
        let text = format!("{} x{}y {}", "1 ".repeat(200), "a".repeat(900), "phone 1 ".repeat(20));
        let before = WALKED_AGAIN.load(std::sync::atomic::Ordering::Relaxed);
        let got = e.scan(&text);
        assert!(WALKED_AGAIN.load(std::sync::atomic::Ordering::Relaxed) > before);
        assert_eq!(got, e.scan_nfa(&text));
        assert!(got.0.contains(&Candidate {
            pattern: 9,
            start: 401,
            end: 1303
        }));
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }
}
