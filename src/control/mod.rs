//! (being split)
mod server;
pub use server::*;
