//! (being split)
mod machine;
pub use machine::*;
