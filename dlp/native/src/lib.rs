//! The compiled core of `dlp.redact`: one engine pass, validators, context and JSON
//! redaction, configured from tables that the Python package exports from its own sources of
//! truth (the pattern table, the keyword lists, phonenumbers' metadata, stdnum's IBAN registry).
//! The Python implementation stays the reference; tests/dlp/native checks they agree.

pub mod checks;
pub mod context;
pub mod dates;
pub mod engine;
pub mod json;
pub mod normalize;
pub mod phone;
pub mod scan;
pub mod types;
pub mod validate;

use serde::Deserialize;

use crate::types::Detector;

/// Everything `dlp._native.tables()` exports, as one JSON document.
#[derive(Deserialize)]
pub struct Tables {
    pub engine: engine::EngineTables,
    pub validate: validate::ValidateTables,
    pub phone: phone::PhoneTables,
    pub context: context::ContextTables,
    /// (detector, kind) of each pattern, in the engine's pattern order.
    pub patterns: Vec<(Detector, String)>,
    pub own_token: String,
}

/// Build the scanner from the tables' JSON text; `iban_module_check` is stdnum's country
/// module check for the countries that have one (see `validate`).
pub fn build(tables_json: &str, iban_module_check: Option<checks::IbanModuleCheck>) -> Result<scan::Scanner, String> {
    let tables: Tables = serde_json::from_str(tables_json).map_err(|e| format!("native tables: {e}"))?;
    let engine = engine::Engine::new(&tables.engine)?;
    let mut validators = validate::Validators::new(tables.validate)?;
    validators.set_iban_module_check(iban_module_check);
    let phones = phone::Phones::new(tables.phone)?;
    let patterns = tables
        .patterns
        .iter()
        .map(|(detector, kind)| scan::PatternInfo {
            detector: *detector,
            kind: kind.clone(),
            max_base: validators.max_base(*detector, kind),
        })
        .collect();
    let context = context::Context::new(tables.context);
    scan::Scanner::new(engine, validators, phones, context, patterns, &tables.own_token)
}

#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod py_engine;
#[cfg(feature = "python")]
mod py_phone;
#[cfg(feature = "python")]
mod py_validate;
