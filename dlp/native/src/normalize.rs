//! The detection view of a text (`dlp/_normalize.py`): each character replaced by its NFKC
//! compatibility form on its own, format characters (the `FORMAT_CHARS` class) dropped, and a
//! map from the view back to the text.
//!
//! Python works in characters; here everything is UTF-8 bytes.  `index` holds two entries per
//! view byte: `index[2 * b]` and `index[2 * b + 1]` are the start and end (byte offsets in the
//! text) of the character that produced view byte `b`.  `original_span` then gives, for a view
//! span on character boundaries, what Python's `original_span` gives, in bytes: from the start of
//! the character that produced the first view character to the end of the one that produced
//! the last (format characters inside are covered, those around are not).
//!
//! NFKC is `unicode-normalization` 0.1.21, whose tables are Unicode 14.0, the version of Python
//! 3.11's `unicodedata`; tests/dlp/native/test_normalize_parity.py checks every code point.

use std::sync::OnceLock;

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// `dlp._normalize._CF_RANGES` (Unicode category Cf as of Unicode 14.0), inclusive ranges;
/// tests/dlp/native/test_normalize_parity.py checks it against `FORMAT_CHARS` on every code point.
pub const FORMAT_RANGES: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// `FORMAT_CHARS.match(ch)`.
#[inline]
pub fn is_format(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x600 {
        return cp == 0xAD;
    }
    let i = FORMAT_RANGES.partition_point(|&(_, last)| last < cp);
    i < FORMAT_RANGES.len() && FORMAT_RANGES[i].0 <= cp
}

// Per-character properties: canonical combining class (low 8 bits), NFKC quick-check value,
// format character.  The crate's quick-check lookup is a long `match` (~25 ns a character), so
// the BMP is tabulated, block by block on first use.
const QC_NO: u16 = 1 << 8;
const QC_MAYBE: u16 = 2 << 8;
const FORMAT: u16 = 1 << 10;

fn compute_props(c: char) -> u16 {
    let qc = match is_nfkc_quick(std::iter::once(c)) {
        IsNormalized::Yes => 0,
        IsNormalized::No => QC_NO,
        IsNormalized::Maybe => QC_MAYBE,
    };
    u16::from(canonical_combining_class(c)) | qc | if is_format(c) { FORMAT } else { 0 }
}

/// The properties of 256 BMP code points, and the NFKC of those that are not their own NFKC.
/// Tabulated on first use of the block (tens of microseconds), not for the whole BMP at once.
struct Block {
    props: [u16; 256],
    /// Sorted low bytes of the folded code points, and where their NFKC ends in `fold_text`
    /// (it starts where the previous one ends).
    fold_low: Vec<u8>,
    fold_ends: Vec<u32>,
    fold_text: String,
}

fn block(cp: u32) -> &'static Block {
    static BLOCKS: [OnceLock<Block>; 256] = [const { OnceLock::new() }; 256];
    let hi = (cp >> 8) as usize;
    BLOCKS[hi].get_or_init(|| {
        let mut b = Block {
            props: [0; 256],
            fold_low: Vec::new(),
            fold_ends: Vec::new(),
            fold_text: String::new(),
        };
        for low in 0..256u32 {
            let Some(c) = char::from_u32((hi as u32) << 8 | low) else {
                continue;
            };
            let p = compute_props(c);
            b.props[low as usize] = p;
            if p & (QC_NO | QC_MAYBE) != 0 {
                b.fold_text.extend(std::iter::once(c).nfkc());
                b.fold_low.push(low as u8);
                b.fold_ends.push(b.fold_text.len() as u32);
            }
        }
        b
    })
}

#[inline]
fn props(c: char) -> u16 {
    let cp = c as u32;
    if cp < 0x10000 {
        block(cp).props[(cp & 0xFF) as usize]
    } else {
        compute_props(c)
    }
}

/// Appends the NFKC of `c` on its own (a character whose quick check is not "yes").
fn push_nfkc(view: &mut String, c: char) {
    let cp = c as u32;
    if cp < 0x10000 {
        let b = block(cp);
        if let Ok(i) = b.fold_low.binary_search(&((cp & 0xFF) as u8)) {
            let start = if i == 0 {
                0
            } else {
                b.fold_ends[i - 1] as usize
            };
            view.push_str(&b.fold_text[start..b.fold_ends[i] as usize]);
            return;
        }
    }
    view.extend(std::iter::once(c).nfkc());
}

/// `FORMAT_CHARS.search(text) is None and unicodedata.is_normalized("NFKC", text)`: the
/// quick check of UAX #15 (as `unicode_normalization::is_nfkc`), then the full comparison when
/// it answers "maybe".
fn is_own_view(text: &str) -> bool {
    let mut last_cc = 0u16;
    let mut maybe = false;
    for ch in text.chars() {
        if ch.is_ascii() {
            last_cc = 0;
            continue;
        }
        let p = props(ch);
        let cc = p & 0xFF;
        if p & (FORMAT | QC_NO) != 0 || (last_cc > cc && cc != 0) {
            return false;
        }
        maybe |= p & QC_MAYBE != 0;
        last_cc = cc;
    }
    !maybe || text.chars().eq(text.chars().nfkc())
}

/// `detection_view(text)`: None when Python's index is None (ASCII text, or NFKC text with no
/// format character: the view is the text); else the view and the byte index described above.
pub fn detection_view(text: &str) -> Option<(String, Vec<usize>)> {
    if text.is_ascii() || is_own_view(text) {
        return None;
    }
    let mut view = String::with_capacity(text.len());
    let mut index = Vec::with_capacity(2 * text.len());
    for (i, ch) in text.char_indices() {
        let end = i + ch.len_utf8();
        let before = view.len();
        if ch.is_ascii() {
            view.push(ch);
        } else {
            let p = props(ch);
            if p & FORMAT != 0 {
                continue;
            } else if p & (QC_NO | QC_MAYBE) == 0 {
                view.push(ch); // NFKC quick check "yes": the character is its own NFKC
            } else {
                push_nfkc(&mut view, ch);
            }
        }
        for _ in before..view.len() {
            index.push(i);
            index.push(end);
        }
    }
    Some((view, index))
}

/// `original_span(index, start, end)`: the span of the text that produced `view[start..end]`
/// (byte offsets on character boundaries of the view; `end > start`).
#[inline]
pub fn original_span(index: &[usize], start: usize, end: usize) -> (usize, usize) {
    // Python's index[end - 1] with end == 0 is the last entry.
    let last = if end == 0 {
        index.len() / 2 - 1
    } else {
        end - 1
    };
    (index[2 * start], index[2 * last + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_nfkc_text_are_their_own_view() {
        assert!(detection_view("").is_none());
        assert!(detection_view("call 555-0100").is_none());
        assert!(detection_view("café €").is_none());
    }

    #[test]
    fn full_width_and_zero_width() {
        let text = "ssn \u{ff11}\u{ff12}3\u{200b}-45";
        let (view, index) = detection_view(text).unwrap();
        assert_eq!(view, "ssn 123-45");
        let s = view.find('1').unwrap();
        let e = view.len();
        assert_eq!(original_span(&index, s, e), (4, text.len()));
        // the span that ends on "3" does not take the zero-width space after it
        let e3 = view.find('3').unwrap() + 1;
        assert_eq!(
            &text[original_span(&index, s, e3).0..original_span(&index, s, e3).1],
            "\u{ff11}\u{ff12}3"
        );
    }

    #[test]
    fn one_character_to_many() {
        let text = "x\u{fb01}y"; // the ligature fi
        let (view, index) = detection_view(text).unwrap();
        assert_eq!(view, "xfiy");
        assert_eq!(original_span(&index, 1, 2), (1, 4));
        assert_eq!(original_span(&index, 2, 3), (1, 4));
    }

    #[test]
    fn format_ranges_are_sorted() {
        for w in FORMAT_RANGES.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0);
        }
        assert!(
            is_format('\u{ad}')
                && is_format('\u{e007f}')
                && !is_format('a')
                && !is_format('\u{2065}')
        );
    }
}
