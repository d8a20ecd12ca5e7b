//! Python shim for the parity tests of `phone` and `normalize` (tests/dlp/native/
//! test_phone_parity.py, test_normalize_parity.py): the Rust functions as they are, byte offsets
//! in and out, plus timing loops that measure them without the Python call overhead.

use std::hint::black_box;
use std::time::Instant;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::normalize;
use crate::phone::{compile_python_prefix_regex, Dfa, PhoneTables, Phones};

fn load(tables_json: &str) -> PyResult<Phones> {
    let tables: PhoneTables =
        serde_json::from_str(tables_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Phones::new(tables).map_err(PyValueError::new_err)
}

/// `Phones` from `json.dumps(dlp._validate.phone_native_tables())`.
#[pyclass(frozen, name = "PhoneParity")]
struct PyPhones {
    inner: Phones,
}

#[pymethods]
impl PyPhones {
    #[new]
    fn new(tables_json: &str) -> PyResult<Self> {
        Ok(PyPhones {
            inner: load(tables_json)?,
        })
    }

    fn compile_all(&self) -> PyResult<()> {
        self.inner.compile_all().map_err(PyValueError::new_err)
    }

    fn validate(
        &self,
        text: &str,
        start: usize,
        end: usize,
        kind: &str,
    ) -> Option<(f64, usize, usize)> {
        self.inner.validate(text, start, end, kind)
    }

    fn valid_international(&self, digits: &str) -> bool {
        self.inner.valid_international(digits)
    }

    fn valid_national(&self, digits: &str, region: &str) -> bool {
        self.inner.valid_national(digits, region)
    }

    fn region_of(&self, cc: u32) -> String {
        self.inner.region_of(cc).to_owned()
    }

    /// `[getattr(ch, name)() for ch in text]` from the exported classes.
    fn char_class(&self, name: &str, text: &str) -> PyResult<Vec<bool>> {
        let c = self.inner.char_classes();
        let class = match name {
            "isalnum" => &c.isalnum,
            "isalpha" => &c.isalpha,
            "isdigit" => &c.isdigit,
            _ => return Err(PyValueError::new_err(format!("no class {name}"))),
        };
        Ok(text.chars().map(|ch| class.contains(ch)).collect())
    }

    fn embedded(&self, text: &str, start: usize, end: usize) -> bool {
        self.inner.char_classes().embedded(text, start, end)
    }

    /// Mean ns per `validate` call over `n` calls (after one warm-up call).
    fn bench_validate(
        &self,
        py: Python<'_>,
        text: &str,
        start: usize,
        end: usize,
        kind: &str,
        n: u32,
    ) -> f64 {
        py.detach(|| {
            black_box(self.inner.validate(text, start, end, kind));
            let t = Instant::now();
            for _ in 0..n {
                black_box(
                    self.inner
                        .validate(black_box(text), black_box(start), end, kind),
                );
            }
            t.elapsed().as_nanos() as f64 / f64::from(n.max(1))
        })
    }
}

/// (ns to parse the JSON, ns for `Phones::new`, ns for `compile_all`).
#[pyfunction]
fn phone_startup_ns(tables_json: &str) -> PyResult<(f64, f64, f64)> {
    let t = Instant::now();
    let tables: PhoneTables =
        serde_json::from_str(tables_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let parsed = t.elapsed().as_nanos() as f64;
    let t = Instant::now();
    let phones = Phones::new(tables).map_err(PyValueError::new_err)?;
    let built = t.elapsed().as_nanos() as f64;
    let t = Instant::now();
    phones.compile_all().map_err(PyValueError::new_err)?;
    Ok((parsed, built, t.elapsed().as_nanos() as f64))
}

/// For each text: (`re.fullmatch(p, t) is not None`, `re.match(p, t)` as (end, [group spans]) or
/// None), with the pattern compiled as `Phones` compiles it: the DFAs for the verdict and the
/// end, the regex for the groups (which must agree with the DFA on the end).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn phone_pattern_probe(
    pattern: &str,
    texts: Vec<String>,
) -> PyResult<Vec<(bool, Option<(usize, Vec<Option<(usize, usize)>>)>)>> {
    let full = Dfa::new(pattern, true).map_err(PyValueError::new_err)?;
    let prefix = Dfa::new(pattern, false).map_err(PyValueError::new_err)?;
    let groups = compile_python_prefix_regex(pattern).map_err(PyValueError::new_err)?;
    texts
        .iter()
        .map(|t| {
            let end = prefix.match_end(t);
            let caps = groups.captures(t);
            if end != caps.as_ref().map(|c| c.get(0).expect("group 0").end()) {
                return Err(PyValueError::new_err(format!(
                    "DFA and regex disagree on {pattern:?} {t:?}"
                )));
            }
            let m = caps.map(|c| {
                let spans = (1..c.len())
                    .map(|g| c.get(g).map(|m| (m.start(), m.end())))
                    .collect();
                (c.get(0).expect("group 0").end(), spans)
            });
            Ok((full.is_full_match(t), m))
        })
        .collect()
}

/// `detection_view(text)` as (view, index or None); see `normalize`.
#[pyfunction]
fn normalize_detection_view(text: &str) -> (String, Option<Vec<usize>>) {
    match normalize::detection_view(text) {
        None => (text.to_owned(), None),
        Some((view, index)) => (view, Some(index)),
    }
}

#[pyfunction]
fn normalize_original_span(index: Vec<usize>, start: usize, end: usize) -> (usize, usize) {
    normalize::original_span(&index, start, end)
}

/// `[FORMAT_CHARS.match(ch) is not None for ch in text]`.
#[pyfunction]
fn normalize_format_chars(text: &str) -> Vec<bool> {
    text.chars().map(normalize::is_format).collect()
}

/// Every code point whose NFKC on its own is not itself, with what it becomes.
#[pyfunction]
fn normalize_nfkc_changes() -> Vec<(u32, String)> {
    use unicode_normalization::UnicodeNormalization;
    (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter_map(|c| {
            let s: String = std::iter::once(c).nfkc().collect();
            let mut it = s.chars();
            if it.next() == Some(c) && it.next().is_none() {
                None
            } else {
                Some((c as u32, s))
            }
        })
        .collect()
}

/// `unicodedata.is_normalized("NFKC", text)`.
#[pyfunction]
fn normalize_is_nfkc(text: &str) -> bool {
    unicode_normalization::is_nfkc(text)
}

/// Mean ns per `detection_view` call over `n` calls.
#[pyfunction]
fn normalize_bench_detection_view(py: Python<'_>, text: &str, n: u32) -> f64 {
    py.detach(|| {
        let t = Instant::now();
        for _ in 0..n {
            black_box(normalize::detection_view(black_box(text)));
        }
        t.elapsed().as_nanos() as f64 / f64::from(n.max(1))
    })
}

/// Registers the shim (one line in py.rs).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPhones>()?;
    m.add_function(wrap_pyfunction!(phone_startup_ns, m)?)?;
    m.add_function(wrap_pyfunction!(phone_pattern_probe, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_detection_view, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_original_span, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_format_chars, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_nfkc_changes, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_is_nfkc, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_bench_detection_view, m)?)?;
    Ok(())
}
