//! The compiled core of `dlp.redact`: one engine pass, validators, context and JSON splicing,
//! configured from tables that the Python package exports from its own sources of truth
//! (the pattern table, phonenumbers' metadata, stdnum's IBAN registry).

pub mod engine;
pub mod types;

#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod py_engine;
