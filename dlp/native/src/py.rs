//! The Python module `aegis_dlp_native`: `Core` (the scanner, built once from the tables) and
//! `NativePlan` (one obligations plan: detectors, thresholds, mode, and the Python callbacks for
//! what stays in Python — key hints, non-mask replacements, path pieces — with their answers
//! cached per plan).

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::json::{self, Action, Host, Outcome};
use crate::scan::{KeyHint, Scanner, Wanted};
use crate::types::{Date, Detector};

type PyHint = (Option<String>, bool, bool);
/// (type, location, start, end, reason)
type PyRedaction = (&'static str, String, i64, i64, &'static str);

fn hint_of(h: PyHint) -> PyResult<KeyHint> {
    let detector = match h.0 {
        None => None,
        Some(name) => Some(
            Detector::from_name(&name).ok_or_else(|| PyValueError::new_err(format!("unknown detector {name:?}")))?,
        ),
    };
    Ok(KeyHint { detector, negative: h.1, version: h.2 })
}

fn wanted_of(detectors: Vec<String>, limits: HashMap<String, f64>) -> PyResult<Wanted> {
    let mut wanted = Wanted { on: [false; 10], limits: [1.0; 10] };
    for name in detectors {
        let d = Detector::from_name(&name).ok_or_else(|| PyValueError::new_err(format!("unknown detector {name:?}")))?;
        wanted.on[d.index()] = true;
    }
    for (name, limit) in limits {
        if let Some(d) = Detector::from_name(&name) {
            wanted.limits[d.index()] = limit;
        }
    }
    Ok(wanted)
}

fn date_of(today: (i32, u32, u32)) -> Date {
    Date { year: today.0, month: today.1, day: today.2 }
}

/// Cached answers grow with the keys of the documents seen; bounded like the Python tables.
const MAX_CACHED: usize = 4096;

#[pyclass(frozen)]
struct NativePlan {
    wanted: Wanted,
    mask: bool,
    key_entry: Py<PyAny>,
    key_hint: Py<PyAny>,
    replacement: Py<PyAny>,
    piece: Py<PyAny>,
    entries: Mutex<HashMap<(String, String), (KeyHint, Action)>>,
    hints: Mutex<HashMap<(String, String), KeyHint>>,
}

#[pymethods]
impl NativePlan {
    /// `key_entry(key, parent) -> (type | None, negative, version, action)` with action 0 scan,
    /// 1 named, 2 by detector; `key_hint(key, parent) -> (type | None, negative, version)`;
    /// `replacement(type, value, is_number) -> str` (modes other than mask); `piece(key) -> str`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        detectors: Vec<String>,
        limits: HashMap<String, f64>,
        mask: bool,
        key_entry: Py<PyAny>,
        key_hint: Py<PyAny>,
        replacement: Py<PyAny>,
        piece: Py<PyAny>,
    ) -> PyResult<Self> {
        Ok(NativePlan {
            wanted: wanted_of(detectors, limits)?,
            mask,
            key_entry,
            key_hint,
            replacement,
            piece,
            entries: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
        })
    }
}

/// The plan's callbacks, run with the GIL that the caller holds. A callback that raises makes
/// the whole call raise (the first error is kept).
struct PlanHost<'py> {
    py: Python<'py>,
    plan: &'py NativePlan,
    error: std::cell::RefCell<Option<PyErr>>,
}

impl PlanHost<'_> {
    fn fail(&self, err: PyErr) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(err);
        }
    }
}

impl Host for PlanHost<'_> {
    fn key_entry(&self, key: &str, parent: &str) -> (KeyHint, Action) {
        let cache_key = (key.to_owned(), parent.to_owned());
        if let Some(e) = self.plan.entries.lock().unwrap().get(&cache_key) {
            return *e;
        }
        let answer = self
            .plan
            .key_entry
            .call1(self.py, (key, parent))
            .and_then(|r| r.extract::<(Option<String>, bool, bool, u8)>(self.py))
            .and_then(|(t, n, v, a)| {
                let action = match a {
                    0 => Action::Scan,
                    1 => Action::Named,
                    2 => Action::ByDetector,
                    _ => return Err(PyValueError::new_err(format!("unknown key action {a}"))),
                };
                Ok((hint_of((t, n, v))?, action))
            });
        match answer {
            Ok(entry) => {
                let mut cache = self.plan.entries.lock().unwrap();
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(cache_key, entry);
                entry
            }
            Err(e) => {
                self.fail(e);
                (KeyHint::default(), Action::Scan)
            }
        }
    }

    fn key_hint(&self, key: &str, parent: &str) -> KeyHint {
        let cache_key = (key.to_owned(), parent.to_owned());
        if let Some(h) = self.plan.hints.lock().unwrap().get(&cache_key) {
            return *h;
        }
        let answer = self
            .plan
            .key_hint
            .call1(self.py, (key, parent))
            .and_then(|r| r.extract::<PyHint>(self.py))
            .and_then(hint_of);
        match answer {
            Ok(hint) => {
                let mut cache = self.plan.hints.lock().unwrap();
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(cache_key, hint);
                hint
            }
            Err(e) => {
                self.fail(e);
                KeyHint::default()
            }
        }
    }

    fn replacement(&self, type_name: &str, value: &str, number: bool) -> String {
        match self.plan.replacement.call1(self.py, (type_name, value, number)).and_then(|r| r.extract(self.py)) {
            Ok(s) => s,
            Err(e) => {
                self.fail(e);
                String::new()
            }
        }
    }

    fn piece(&self, key: &str) -> String {
        match self.plan.piece.call1(self.py, (key,)).and_then(|r| r.extract(self.py)) {
            Ok(s) => s,
            Err(e) => {
                self.fail(e);
                String::new()
            }
        }
    }
}

#[pyclass(frozen)]
struct Core {
    scanner: Scanner,
}

fn char_offset(s: &str, byte: usize) -> usize {
    if s.as_bytes()[..byte].is_ascii() {
        byte
    } else {
        s[..byte].chars().count()
    }
}

#[pymethods]
impl Core {
    /// `iban_module_check(compact) -> bool`: stdnum's country module check (BE, ES, ME, NO…).
    /// An exception in it counts as a rejection.
    #[new]
    fn new(tables_json: &str, iban_module_check: Py<PyAny>) -> PyResult<Self> {
        let check: crate::checks::IbanModuleCheck = Box::new(move |compact: &str| {
            Python::attach(|py| {
                iban_module_check.call1(py, (compact,)).and_then(|r| r.extract::<bool>(py)).unwrap_or(false)
            })
        });
        let scanner = crate::build(tables_json, Some(check)).map_err(PyValueError::new_err)?;
        Ok(Core { scanner })
    }

    /// `dlp._scan.scan_segments`: findings per value as (type, start, end, confidence), with
    /// character offsets into that value.
    fn scan_segments(
        &self,
        values: Vec<String>,
        hints: Vec<PyHint>,
        detectors: Vec<String>,
        limits: HashMap<String, f64>,
        today: (i32, u32, u32),
    ) -> PyResult<Vec<Vec<(&'static str, usize, usize, f64)>>> {
        if hints.len() != values.len() {
            return Err(PyValueError::new_err("one hint per value"));
        }
        let hints = hints.into_iter().map(hint_of).collect::<PyResult<Vec<_>>>()?;
        let wanted = wanted_of(detectors, limits)?;
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let found = self.scanner.scan_segments(&refs, &hints, &wanted, date_of(today));
        Ok(found
            .into_iter()
            .zip(&refs)
            .map(|(spans, v)| {
                spans
                    .into_iter()
                    .map(|s| (s.detector.name(), char_offset(v, s.start), char_offset(v, s.end), s.confidence))
                    .collect()
            })
            .collect())
    }

    /// `dlp._json.redact_text` for the common case: None when the Python path must run
    /// (see dlp/native/src/json.rs), else (new text or None when unchanged, redactions).
    fn redact_json(
        &self,
        py: Python<'_>,
        text: &str,
        plan: &NativePlan,
        prefix: &str,
        today: (i32, u32, u32),
    ) -> PyResult<Option<(Option<String>, Vec<PyRedaction>)>> {
        // SAFETY of lifetimes: the host only lives for this call.
        let host = PlanHost { py, plan, error: std::cell::RefCell::new(None) };
        let job = json::Job { wanted: &plan.wanted, mask: plan.mask, prefix, today: date_of(today), host: &host };
        let outcome = json::redact_text(text, &self.scanner, &job);
        if let Some(err) = host.error.into_inner() {
            return Err(err);
        }
        Ok(match outcome {
            Outcome::Defer => None,
            Outcome::Unchanged => Some((None, Vec::new())),
            Outcome::Redacted(new, found) => Some((
                Some(new),
                found.into_iter().map(|r| (r.type_name, r.location, r.start, r.end, r.reason)).collect(),
            )),
        })
    }
}

#[pymodule]
fn aegis_dlp_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Core>()?;
    m.add_class::<NativePlan>()?;
    crate::py_validate::register(m)?;
    crate::py_phone::register(m)?;
    crate::py_engine::register(m)?;
    Ok(())
}
