//! Nearby words: `dlp._context.word_context`, on the keyword hits of the engine pass.

use serde::Deserialize;

use crate::types::Detector;

/// From `dlp._context.native_tables()`.
#[derive(Deserialize)]
pub struct ContextTables {
    /// Characters before a candidate searched for keywords.
    pub window: usize,
    pub positive_boost: f64,
    pub negative_penalty: f64,
    pub key_match_confidence: f64,
    /// detector name -> what each keyword says about it (indexed by keyword: 1, -1 or 0).
    pub says: std::collections::HashMap<Detector, Vec<i8>>,
}

pub struct Context {
    pub window: usize,
    pub positive_boost: f64,
    pub negative_penalty: f64,
    pub key_match_confidence: f64,
    says: Vec<Option<Vec<i8>>>, // by Detector::index
}

/// A keyword hit of the engine pass: byte offsets and the keyword's index.
pub use crate::engine::Hit;

impl Context {
    pub fn new(tables: ContextTables) -> Context {
        let mut says: Vec<Option<Vec<i8>>> = vec![None; Detector::ALL.len()];
        for (d, v) in tables.says {
            says[d.index()] = Some(v);
        }
        Context {
            window: tables.window,
            positive_boost: tables.positive_boost,
            negative_penalty: tables.negative_penalty,
            key_match_confidence: tables.key_match_confidence,
            says,
        }
    }

    /// +1 if the nearest keyword before `start` announces `detector`, -1 for a look-alike word,
    /// else 0 (see the Python docstring). `hits` are sorted by start; offsets are bytes, the
    /// window is counted in characters as in Python.
    pub fn word_context(&self, detector: Detector, text: &str, start: usize, floor: usize, hits: &[Hit]) -> i32 {
        let says_of = match &self.says[detector.index()] {
            Some(v) => v,
            None => return 0,
        };
        // bisect_left(hit_starts, start): hits starting before `start`
        let mut i = hits.partition_point(|h| h.start < start);
        let lo = back_chars(text, start, self.window).max(floor);
        let bytes = text.as_bytes();
        while i > 0 {
            i -= 1;
            let h = &hits[i];
            if h.start < lo {
                return 0;
            }
            let says = says_of[h.keyword as usize];
            if says != 0 && h.end <= start {
                let between = &bytes[h.end..start];
                if find(between, b". ") || find(between, b"; ") || between.contains(&b'\n') {
                    return 0; // another sentence (and so is every keyword before this one)
                }
                return says as i32;
            }
        }
        0
    }
}

/// The byte offset `n` characters before `at` (or 0).
pub fn back_chars(text: &str, at: usize, n: usize) -> usize {
    let bytes = text.as_bytes();
    let mut pos = at;
    let mut count = 0;
    while pos > 0 && count < n {
        pos -= 1;
        // step over UTF-8 continuation bytes
        while pos > 0 && (bytes[pos] & 0xC0) == 0x80 {
            pos -= 1;
        }
        count += 1;
    }
    pos
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_chars_counts_characters() {
        assert_eq!(back_chars("abcdef", 6, 2), 4);
        assert_eq!(back_chars("aéé", 5, 2), 1);
        assert_eq!(back_chars("abc", 3, 10), 0);
    }
}
