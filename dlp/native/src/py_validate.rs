//! Test shim: `aegis_dlp_native.Validators` over `validate::Validators`, with Python character
//! offsets in and out (tests/dlp/native/test_validate_parity.py compares it with dlp._validate).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::checks;
use crate::types::{Date, Detector};
use crate::validate;

fn detector(name: &str) -> PyResult<Detector> {
    Detector::from_name(name).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!("unknown detector {name:?}"))
    })
}

fn date((year, month, day): (i32, u32, u32)) -> Date {
    Date { year, month, day }
}

/// Byte offset of character `i` of `text` (`None` past the end).
fn byte_at(text: &str, i: usize) -> Option<usize> {
    if text.is_ascii() {
        return (i <= text.len()).then_some(i);
    }
    text.char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .nth(i)
}

fn char_at(text: &str, b: usize) -> usize {
    if text.is_ascii() {
        b
    } else {
        text[..b].chars().count()
    }
}

#[pyclass(name = "Validators", module = "aegis_dlp_native", frozen)]
struct PyValidators {
    inner: validate::Validators,
}

#[pymethods]
impl PyValidators {
    /// `Validators(tables_json, iban_module_check=None)`; the callback takes a compact IBAN and
    /// returns whether stdnum's country module accepts it.
    #[new]
    #[pyo3(signature = (tables_json, iban_module_check=None))]
    fn new(tables_json: &str, iban_module_check: Option<Py<PyAny>>) -> PyResult<Self> {
        let mut inner = validate::Validators::from_json(tables_json)
            .map_err(pyo3::exceptions::PyValueError::new_err)?;
        if let Some(cb) = iban_module_check {
            inner.set_iban_module_check(Some(Box::new(move |compact: &str| {
                Python::attach(|py| {
                    cb.call1(py, (compact,))
                        .and_then(|r| r.bind(py).extract::<bool>())
                        .unwrap_or(false)
                })
            })));
        }
        Ok(PyValidators { inner })
    }

    /// The verdict for the candidate `text[start:end]` (character offsets), as the Python
    /// validator's tuple (offsets in characters), or None.
    fn validate(
        &self,
        detector_name: &str,
        kind: &str,
        text: &str,
        start: usize,
        end: usize,
        today: (i32, u32, u32),
    ) -> PyResult<Option<(f64, usize, usize)>> {
        let d = detector(detector_name)?;
        let (Some(bs), Some(be)) = (byte_at(text, start), byte_at(text, end)) else {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "offsets past the end of the text",
            ));
        };
        Ok(self
            .inner
            .validate(d, kind, text, bs, be, date(today))
            .map(|(c, s, e)| (c, char_at(text, s), char_at(text, e))))
    }

    /// Nanoseconds per `validate` call, over `n` calls in Rust (character offsets in).
    #[allow(clippy::too_many_arguments)]
    fn bench(
        &self,
        detector_name: &str,
        kind: &str,
        text: &str,
        start: usize,
        end: usize,
        today: (i32, u32, u32),
        n: usize,
    ) -> PyResult<f64> {
        let d = detector(detector_name)?;
        let (bs, be) = (
            byte_at(text, start).unwrap_or(0),
            byte_at(text, end).unwrap_or(0),
        );
        let today = date(today);
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(self.inner.validate(
                std::hint::black_box(d),
                std::hint::black_box(kind),
                std::hint::black_box(text),
                std::hint::black_box(bs),
                std::hint::black_box(be),
                today,
            ));
        }
        Ok(t.elapsed().as_nanos() as f64 / n.max(1) as f64)
    }

    fn max_base(&self, detector_name: &str, kind: &str) -> PyResult<Option<f64>> {
        Ok(self.inner.max_base_checked(detector(detector_name)?, kind))
    }

    /// Per character of `s`: bit 0 isalnum, bit 1 isalpha, bit 2 isdigit.
    fn char_classes(&self, s: &str) -> Vec<u8> {
        let c = self.inner.py_chars();
        s.chars()
            .map(|ch| c.isalnum(ch) as u8 | (c.isalpha(ch) as u8) << 1 | (c.isdigit(ch) as u8) << 2)
            .collect()
    }

    fn in_iin_range(&self, digits: &str) -> bool {
        self.inner.in_iin_range(digits)
    }

    fn iban_ok(&self, compact: &str) -> Option<bool> {
        self.inner.iban_ok(compact)
    }

    fn parse_date(
        &self,
        value: &str,
        kind: &str,
        today: (i32, u32, u32),
    ) -> Option<(i32, u32, u32)> {
        self.inner
            .parse_date(value, kind, date(today))
            .map(|d| (d.year, d.month, d.day))
    }
}

#[pyfunction]
fn validate_luhn_ok(digits: &str) -> bool {
    checks::luhn_ok_chars(digits.chars())
}

#[pyfunction]
fn validate_ipv4_ok(value: &str) -> bool {
    checks::ipv4_ok(value.as_bytes())
}

/// `int(ipaddress.IPv6Address(value))` as (high 64 bits, low 64 bits), or None where it raises.
#[pyfunction]
fn validate_parse_ipv6(value: &str) -> Option<(u64, u64)> {
    checks::parse_ipv6(value).map(|v| ((v >> 64) as u64, v as u64))
}

#[pyfunction]
fn validate_urlsafe_b64decode<'py>(py: Python<'py>, s: &str) -> Option<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    checks::urlsafe_b64decode(s, |b| out.push(b)).then(|| PyBytes::new(py, &out))
}

#[pyfunction]
fn validate_jwt_header_ok(token: &str) -> bool {
    validate::jwt_header_ok(token)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyValidators>()?;
    m.add_function(wrap_pyfunction!(validate_luhn_ok, m)?)?;
    m.add_function(wrap_pyfunction!(validate_ipv4_ok, m)?)?;
    m.add_function(wrap_pyfunction!(validate_parse_ipv6, m)?)?;
    m.add_function(wrap_pyfunction!(validate_urlsafe_b64decode, m)?)?;
    m.add_function(wrap_pyfunction!(validate_jwt_header_ok, m)?)?;
    Ok(())
}
