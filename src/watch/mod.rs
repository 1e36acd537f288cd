//! (being split)
mod watcher;
pub use watcher::*;
