//! The port of dlp/_dates.py: `parse_date` for DATE_OF_BIRTH candidates (ISO, D/M/Y or M/D/Y,
//! English and German month names), plausible birth dates only (MIN_YEAR ..= today).

use std::collections::HashMap;

use serde::Deserialize;

use crate::types::Date;

/// `_dates.native_tables()`.
#[derive(Debug, Deserialize)]
pub struct DatesTables {
    pub months: HashMap<String, u32>,
    pub min_year: i32,
    /// `_NUMBERS.pattern` and `_WORD.pattern`: implemented by hand below, checked unchanged.
    pub numbers: String,
    pub word: String,
}

const NUMBERS: &str = r"\d{1,4}";
const WORD: &str = "[a-zäA-ZÄ]{3,}";

pub struct Dates {
    /// Month names by their (lower-case) three-character key, as chars.
    months: Vec<([char; 3], u32)>,
    min_year: i32,
}

/// The pattern kinds of DATE_OF_BIRTH.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DateKind {
    Iso,
    Dmy,
    /// Anything else (`text_dmy`, `text_mdy`): a month name and two numbers.
    Text,
}

impl DateKind {
    pub fn of(kind: &str) -> DateKind {
        match kind {
            "iso" => DateKind::Iso,
            "dmy" => DateKind::Dmy,
            _ => DateKind::Text,
        }
    }
}

#[inline]
fn is_leap(y: i32) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

#[inline]
fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// `_WORD` characters: `[a-zäA-ZÄ]`.
#[inline]
fn is_word(c: char) -> bool {
    c.is_ascii_alphabetic() || c == 'ä' || c == 'Ä'
}

impl Dates {
    pub fn new(t: DatesTables) -> Result<Dates, String> {
        if t.numbers != NUMBERS || t.word != WORD {
            return Err(format!(
                "dlp._dates regexes changed ({:?}, {:?}); validate.rs implements {NUMBERS:?}, {WORD:?}",
                t.numbers, t.word
            ));
        }
        let mut months = Vec::new();
        for (name, month) in t.months {
            let chars: Vec<char> = name.chars().collect();
            // A key is compared with the first three characters of a word, lower-cased.
            if chars.len() == 3 {
                months.push(([chars[0], chars[1], chars[2]], month));
            }
            // (A key of another length never equals `word[:3].lower()` for a _WORD match.)
        }
        Ok(Dates {
            months,
            min_year: t.min_year,
        })
    }

    /// `_dates._make(year, month, day)` with `today` as `_current_date()`.
    #[inline]
    pub fn make(&self, year: u32, month: u32, day: u32, today: Date) -> Option<Date> {
        let mut year = year as i32;
        if year < 100 {
            year += if year <= today.year.rem_euclid(100) {
                2000
            } else {
                1900
            };
        }
        // datetime.date(year, month, day): MINYEAR 1 ..= MAXYEAR 9999.
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
        {
            return None;
        }
        let value = Date { year, month, day };
        (year >= self.min_year && value <= today).then_some(value)
    }

    /// `_dates.parse_date(value, kind)`.
    pub fn parse_date(&self, value: &str, kind: DateKind, today: Date) -> Option<Date> {
        // nums = [int(n) for n in re.findall(r"\d{1,4}", value, re.ASCII)]: runs of ASCII digits
        // cut into pieces of four from the left.  Only the first three and the count matter.
        let mut nums = [0u32; 3];
        let mut count = 0usize;
        let bytes = value.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() {
                let mut n = 0u32;
                let mut k = 0;
                while k < 4 && i < bytes.len() && bytes[i].is_ascii_digit() {
                    n = n * 10 + (bytes[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                if count < 3 {
                    nums[count] = n;
                }
                count += 1;
            } else {
                i += 1;
            }
        }
        match kind {
            DateKind::Iso => {
                if count == 3 {
                    self.make(nums[0], nums[1], nums[2], today)
                } else {
                    None
                }
            }
            DateKind::Dmy => {
                if count != 3 {
                    return None;
                }
                self.make(nums[2], nums[1], nums[0], today)
                    .or_else(|| self.make(nums[2], nums[0], nums[1], today))
            }
            DateKind::Text => {
                // _WORD.search(value.replace(" of ", " ").replace(" OF ", " ")): the replacements
                // only remove a space-delimited two-letter run, which _WORD never matches and whose
                // removal joins no runs, so the first run of three or more word characters is the
                // same in `value`.
                let word = first_word(value)?;
                if count != 2 {
                    return None;
                }
                let key = [lower(word[0]), lower(word[1]), lower(word[2])];
                let month = self.months.iter().find(|(k, _)| *k == key)?.1;
                self.make(nums[1], month, nums[0], today)
            }
        }
    }
}

/// `str.lower()` of a `_WORD` character.
#[inline]
fn lower(c: char) -> char {
    if c == 'Ä' {
        'ä'
    } else {
        c.to_ascii_lowercase()
    }
}

/// The first three characters of the leftmost run of three or more `_WORD` characters.
#[inline]
fn first_word(value: &str) -> Option<[char; 3]> {
    let mut run = ['\0'; 3];
    let mut len = 0;
    for c in value.chars() {
        if is_word(c) {
            if len < 3 {
                run[len] = c;
            }
            len += 1;
            if len == 3 {
                return Some(run);
            }
        } else {
            len = 0;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates() -> Dates {
        let months = [
            ("jan", 1),
            ("feb", 2),
            ("mar", 3),
            ("mär", 3),
            ("mae", 3),
            ("apr", 4),
            ("may", 5),
            ("mai", 5),
            ("jun", 6),
            ("jul", 7),
            ("aug", 8),
            ("sep", 9),
            ("oct", 10),
            ("okt", 10),
            ("nov", 11),
            ("dec", 12),
            ("dez", 12),
        ];
        Dates::new(DatesTables {
            months: months.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            min_year: 1900,
            numbers: NUMBERS.into(),
            word: WORD.into(),
        })
        .unwrap()
    }

    const TODAY: Date = Date {
        year: 2026,
        month: 5,
        day: 17,
    };

    #[test]
    fn parses() {
        let d = dates();
        assert_eq!(
            d.parse_date("1985-03-04", DateKind::Iso, TODAY),
            Some(Date {
                year: 1985,
                month: 3,
                day: 4
            })
        );
        assert_eq!(
            d.parse_date("13/04/85", DateKind::Dmy, TODAY),
            Some(Date {
                year: 1985,
                month: 4,
                day: 13
            })
        );
        assert_eq!(
            d.parse_date("04/13/85", DateKind::Dmy, TODAY),
            Some(Date {
                year: 1985,
                month: 4,
                day: 13
            })
        );
        assert_eq!(
            d.parse_date("01/01/26", DateKind::Dmy, TODAY),
            Some(Date {
                year: 2026,
                month: 1,
                day: 1
            })
        );
        assert_eq!(
            d.parse_date("01/01/27", DateKind::Dmy, TODAY),
            Some(Date {
                year: 1927,
                month: 1,
                day: 1
            })
        );
        assert_eq!(d.parse_date("18/05/26", DateKind::Dmy, TODAY), None); // tomorrow
        assert_eq!(
            d.parse_date("3. März 1990", DateKind::Text, TODAY),
            Some(Date {
                year: 1990,
                month: 3,
                day: 3
            })
        );
        assert_eq!(d.parse_date("29 Feb 1991", DateKind::Text, TODAY), None);
        assert_eq!(d.parse_date("2030-01-01", DateKind::Iso, TODAY), None);
    }
}
