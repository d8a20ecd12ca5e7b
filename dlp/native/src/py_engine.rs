//! Test shim: `aegis_dlp_native.Engine(tables_json)` with `scan(text)` -> (candidates, hits) in
//! UTF-8 byte offsets, for the differential test against `dlp._engine.scan_text`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::engine;

#[pyclass(frozen, name = "Engine")]
struct PyEngine {
    inner: engine::Engine,
}

type Scan = (Vec<(u32, usize, usize)>, Vec<(usize, usize, u32)>);

fn convert((c, h): (Vec<engine::Candidate>, Vec<engine::Hit>)) -> Scan {
    (
        c.into_iter().map(|c| (c.pattern, c.start, c.end)).collect(),
        h.into_iter().map(|h| (h.start, h.end, h.keyword)).collect(),
    )
}

#[pymethods]
impl PyEngine {
    /// `cache_bytes`: (forward, reverse) lazy DFA cache sizes instead of the defaults (tiny
    /// ones exercise the cleared-cache paths).
    #[new]
    #[pyo3(signature = (tables_json, cache_bytes = None))]
    fn new(tables_json: &str, cache_bytes: Option<(usize, usize)>) -> PyResult<Self> {
        let tables: engine::EngineTables =
            serde_json::from_str(tables_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let inner = match cache_bytes {
            None => engine::Engine::new(&tables),
            Some((f, r)) => engine::Engine::with_cache_capacity(&tables, f, r),
        }
        .map_err(PyValueError::new_err)?;
        Ok(PyEngine { inner })
    }

    /// `scan_text(text)` in byte offsets: ([(pattern, start, end)], [(start, end, keyword)]).
    fn scan(&self, py: Python<'_>, text: &str) -> Scan {
        py.detach(|| convert(self.inner.scan(text)))
    }

    /// The same through the NFA simulation (the lazy DFAs' fallback).
    fn scan_nfa(&self, py: Python<'_>, text: &str) -> Scan {
        py.detach(|| convert(self.inner.scan_nfa(text)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()
}
