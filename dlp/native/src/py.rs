//! The Python module `aegis_dlp_native`.

use pyo3::prelude::*;

#[pymodule]
fn aegis_dlp_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    crate::py_engine::register(m)?;
    Ok(())
}
